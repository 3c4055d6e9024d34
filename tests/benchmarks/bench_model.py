"""Benchmark of the lrRNN core (not collected by pytest).

    python tests/benchmarks/bench_model.py            # epoch time, latent form vs dense J
    python tests/benchmarks/bench_model.py --fits     # + stage-1 fits, before vs after (small)
    python tests/benchmarks/bench_model.py --fits --full --no-epoch   # + the full-size fits

1. Time of one training epoch (forward + backward over 400 trials × 100 steps, N = 1000, R = 2, in
   minibatches of 64 trials as the estimator uses by default) of the package's latent form
   against a naive implementation that forms the dense N×N matrix J = M Kᵀ/N at every step and
   iterates the N-dimensional potentials. Two objectives, the same on both sides:
   - ``mse``: the squared error of φ(x) against the data (the dynamics dominate);
   - ``training``: the estimator's own objective, ``batch_loss`` (Gaussian observation with the
     per-unit readout, noise scale and trial mask); the naive side evaluates the same
     ``expected_observation`` / ``observation_nll`` at every step.
   Both run here, in one process, with the same threads; each ratio is printed.
2. With ``--fits``: ``LowRankRNNEstimator(rank=2, random_state=0).fit`` side by side, "before"
   (the package at ``--baseline``, default fce26d6, extracted with ``git archive`` and run with
   its own defaults) and "after" (this checkout), each in its own subprocess on one thread, one
   after the other, on the same data. Printed per fit: the time of each phase (init, Adam,
   L-BFGS, unit refit, final held-out inference and reporting), the epochs / rounds, and the
   quality, all evaluated here with the current package: held-out R² (rates) or bits/spike
   (spikes), and the flow-field RMSE against the generating network after aligning the fitted
   latents onto the true ones. Cases:
   - ``small``: Poisson spikes of 20 units × 600 windows of 10 bins (0.1 s), from a 20-unit
     quadstable network (κ(0) uniform on [−2, 2]²);
   - ``head-direction``: the shared head-direction cells (19 units, 1-s wake windows, 0.1-s
     bins; no ground truth, so no flow field);
   - with ``--full``: ``rates``, the published quadstable network (N = 1000) from noiseless rates
     in the paper setting (400 trials on the 20×20 grid × 100 steps; "before" with
     ``max_epochs=300`` as in the published timing), and ``spikes-quadstable`` / ``spikes-ring``,
     Poisson spikes of fresh 500-unit networks (400 trials × 2 s, 20-ms bins).
   ``--case`` picks cases. Other processes on the machine slow both sides alike; say so when
   reporting (the timings are wall-clock seconds of the fit, CPU seconds in brackets).
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ALPHA = 0.1
REPO = Path(__file__).resolve().parents[2]
SMALL_CASES = ("small", "head-direction")
FULL_CASES = ("rates", "spikes-quadstable", "spikes-ring")
HD_FILE = "peyrache2015-adn-hd-19cells/Mouse12-120806_ADn19_wake_DERIVED.nwb"


# ---------------------------------------------------------------------- 1. one epoch
def _naive_step_loss(objective, model, y, batch, t, count):
    from nwb_lrconn.model.observation import expected_observation, observation_nll

    if objective == "mse":
        return F.mse_loss(y, batch.data[:, t], reduction="sum") / count
    expected = expected_observation(model.readout(y), "gaussian", bin_width=0.01)
    nll = observation_nll(
        batch.data[:, t], expected, "gaussian", noise_std=model.log_noise_std.exp()
    )
    return (nll * batch.mask[:, t, None]).sum() / count


def _naive_batch(objective, model, initial, batch):
    """Dense-J recurrence on the potentials x, J formed at every step."""
    n_units = model.n_units
    count = float(batch.mask.sum()) * n_units
    x = initial @ model.M.T + model.d
    loss = 0.0
    for t in range(batch.data.shape[1]):
        y = torch.tanh(x)
        loss = loss + _naive_step_loss(objective, model, y, batch, t, count)
        J = model.M @ model.K.T / n_units  # the dense connectivity, formed every step
        x = (1 - ALPHA) * x + ALPHA * (y @ J.T + model.d)
    loss.backward()


def _latent_batch(objective, model, initial, batch, config):
    from nwb_lrconn.model._engine.chunk_loss import network_rollout_loss
    from nwb_lrconn.model._engine.objective import batch_loss

    if objective == "training":
        batch_loss(model, initial, batch, config).backward()
        return
    count = batch.data.numel()

    def mse(activity, start, stop):
        return F.mse_loss(activity, batch.data[:, start:stop], reduction="sum") / count

    network_rollout_loss(model, initial, batch.data.shape[1], mse).backward()


def _epoch(step, initial, batch, batch_size):
    for start in range(0, initial.shape[0], batch_size):
        index = torch.arange(start, min(start + batch_size, initial.shape[0]))
        step(initial[index], batch.take(index))


def _best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_epoch(n_units=1000, rank=2, n_per_side=20, n_time=100, batch_size=64, repeats=5):
    from nwb_lrconn.model._engine.objective import Batch, TrainConfig
    from nwb_lrconn.model.lowrank import LowRankRNN
    from nwb_lrconn.model.networks import grid_initial_conditions, sample_network

    net = sample_network("ring", n_units, random_state=0)
    initial = torch.as_tensor(grid_initial_conditions(n_per_side), dtype=torch.float32)
    model = LowRankRNN(n_units, rank, alpha=ALPHA)
    with torch.no_grad():
        model.M.copy_(torch.as_tensor(net.M))
        model.K.copy_(torch.as_tensor(net.K))
        _, activity = model(initial, n_time)
    g = torch.Generator().manual_seed(0)
    data = activity + 0.1 * torch.randn(activity.shape, generator=g)
    batch = Batch(data, torch.ones(data.shape[:2], dtype=torch.bool), None)
    config = TrainConfig("gaussian", 0.01, 0.0, 1, 1e-3, batch_size, 1, 0.0, 0.0, False)
    print(
        f"epoch = forward + backward over {initial.shape[0]} trials × {n_time} steps in "
        f"minibatches of {batch_size}; N={n_units}, R={rank}, {torch.get_num_threads()} threads"
    )
    for objective in ("mse", "training"):
        _compare(objective, model, initial, batch, config, batch_size, repeats)


def _compare(objective, model, initial, batch, config, batch_size, repeats):
    def latent_epoch():
        _epoch(
            lambda i, b: _latent_batch(objective, model, i, b, config), initial, batch, batch_size
        )

    def naive_epoch():
        _epoch(lambda i, b: _naive_batch(objective, model, i, b), initial, batch, batch_size)

    latent = _best_of(latent_epoch, repeats)
    naive = _best_of(naive_epoch, max(2, repeats // 2))
    print(
        f"  {objective:<9} latent {latent:.3f} s   dense-J {naive:.3f} s   "
        f"speed-up ×{naive / latent:.1f}"
    )


# ---------------------------------------------------------------------- 2. stage-1 fits
def make_case(name: str, data_dir: Path | None = None) -> dict:
    """Recording, estimator keywords per side and the truth (None for real data) of a case."""
    from nwb_lrconn.model.networks import load_published_network, sample_network
    from nwb_lrconn.model.simulate import simulate_rates, simulate_spikes

    if name == "small":
        net = sample_network("quadstable", 20, random_state=0)
        initial = np.random.default_rng(0).uniform(-2.0, 2.0, (600, 2))
        session = simulate_spikes(net, initial=initial, n_time=10, bin_width=0.1, random_state=1)
        return {"recording": session.to_recording(), "net": net, "latents": session.latents}
    if name == "head-direction":
        from nwb_lrconn.io import read_units

        path = Path(data_dir or os.environ.get("NWB_LRCONN_DATA", REPO.parent / "shared/data"))
        rec = read_units(path / HD_FILE, bin_width=0.1, epochs="epochs", window_length=1.0)
        rec = rec.select_trials(np.flatnonzero(rec.mask.all(axis=1)))
        return {"recording": rec, "net": None, "latents": None, "kwargs": {"tau": 0.1}}
    if name == "rates":
        net = load_published_network("quadstable")
        session = simulate_rates(net)  # 400 trials on the 20×20 grid, 100 steps, noiseless
        return {
            "recording": session.to_recording(),
            "net": net,
            "latents": session.latents,
            "before": {"max_epochs": 300},
        }
    network = name.split("-", 1)[1]
    net = sample_network(network, 500, random_state=0)
    session = simulate_spikes(net, bin_width=0.02, random_state=1)  # 400 trials × 2 s
    return {"recording": session.to_recording(), "net": net, "latents": session.latents}


_PHASES = {  # phase → functions timed in the fitted package (those that exist there)
    "Adam": ("_adam_phase",),
    "L-BFGS": ("_lbfgs_phase", "_refine_lbfgs"),
    "refit": ("_refit_phase",),
}


def _worker(spec_path: str) -> None:
    """Fit one case with whatever ``nwb_lrconn`` is importable; pickle what the parent needs."""
    import functools

    from nwb_lrconn.model import estimator

    try:  # the training loop's home since the engine moved into its own subpackage
        from nwb_lrconn.model._engine import loop as _train
    except ImportError:  # an older checkout
        from nwb_lrconn.model import _train

    with open(spec_path, "rb") as fh:
        spec = pickle.load(fh)
    torch.set_num_threads(1)
    clock: dict[str, float] = {}

    def timed(module, name, label):
        original = getattr(module, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            clock.setdefault(f"{label}_start", start)
            try:
                return original(*args, **kwargs)
            finally:
                clock[label] = clock.get(label, 0.0) + time.perf_counter() - start

        setattr(module, name, wrapper)

    timed(estimator, "train", "train")
    for label, names in _PHASES.items():
        for name in names:
            if hasattr(_train, name):
                timed(_train, name, label)
    start, cpu = time.perf_counter(), time.process_time()
    est = estimator.LowRankRNNEstimator(rank=2, random_state=0, **spec["kwargs"])
    est.fit(spec["recording"])
    total, cpu = time.perf_counter() - start, time.process_time() - cpu
    phases = {
        "init": clock["train_start"] - start,
        "L-BFGS": clock.get("L-BFGS", 0.0),
        "refit": clock.get("refit", 0.0),
        "final": total - (clock["train_start"] - start) - clock["train"],
    }
    phases["Adam"] = clock["train"] - phases["L-BFGS"] - phases["refit"]
    out = {
        "phases": phases,
        "total": total,
        "cpu": cpu,
        "rows": len(est.loss_history_) - 1,
        "metrics": dict(est.metrics_),
        "M": est.M_,
        "K": est.K_,
        "d": est.d_,
        "latents": est.latents_,
    }
    with open(spec_path, "wb") as fh:
        pickle.dump(out, fh)


def _run_side(root: Path, case: dict, kwargs: dict, tmp: Path, cpu: int | None) -> dict:
    spec = tmp / "spec.pkl"
    with spec.open("wb") as fh:
        pickle.dump({"recording": case["recording"], "kwargs": kwargs}, fh)
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--worker", str(spec)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    subprocess.run(command, env=env, check=True, cwd=tmp)
    with spec.open("rb") as fh:
        return pickle.load(fh)


def _quality(case: dict, out: dict) -> str:
    from nwb_lrconn.inference.dynamics import flow_field, flow_field_rmse, latent_velocity
    from nwb_lrconn.model.gauge import align_latents

    metrics = out["metrics"]
    key = "bits_per_spike" if "bits_per_spike" in metrics else "r2"
    text = f"{'bits/spike' if key == 'bits_per_spike' else 'R²'} {metrics[key]:.{6}f}"
    if case["net"] is not None:
        rec, net = case["recording"], case["net"]
        truth = case["latents"][:, : rec.n_time]
        A, c = align_latents(out["latents"], truth, rec.mask)
        points, true_flow = flow_field(net.M, net.K)
        fitted = latent_velocity((points - c) @ np.linalg.inv(A).T, out["M"], out["K"], d=out["d"])
        text += f", flow-field RMSE {flow_field_rmse(true_flow, fitted @ A.T):.4f}"
    return text


def bench_fits(cases, baseline: str, cpu: int | None, before_root: str | None = None) -> None:
    print(
        f"\nStage-1 fits, one thread each, before = {baseline} (its defaults), after = this "
        "checkout (defaults); seconds of wall time per phase:"
    )
    header = (
        f"{'case':18s} {'side':6s} {'init':>6s} {'Adam':>7s} {'L-BFGS':>7s} {'refit':>6s} "
        f"{'final':>6s} {'total':>7s} {'(CPU)':>7s} {'rows':>5s}  quality"
    )
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old_root = Path(before_root) if before_root else tmp / "before"
        if not before_root:
            old_root.mkdir()
            archive = subprocess.run(
                ["git", "archive", baseline, "nwb_lrconn"],
                cwd=REPO,
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive, check=True)
        for name in cases:
            case = make_case(name)
            totals = {}
            for side, root in (("before", old_root), ("after", REPO)):
                kwargs = {**case.get("kwargs", {}), **case.get(side, {})}
                out = _run_side(root, case, kwargs, tmp, cpu)
                totals[side] = out["total"]
                p = out["phases"]
                print(
                    f"{name:18s} {side:6s} {p['init']:6.1f} {p['Adam']:7.1f} {p['L-BFGS']:7.1f} "
                    f"{p['refit']:6.1f} {p['final']:6.1f} {out['total']:7.1f} "
                    f"({out['cpu']:5.1f}) {out['rows']:5d}  {_quality(case, out)}",
                    flush=True,
                )
            print(f"{'':18s} speed-up ×{totals['before'] / totals['after']:.1f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", action="store_true", help="stage-1 fits, before vs after")
    parser.add_argument("--full", action="store_true", help="with --fits: the full-size cases")
    parser.add_argument(
        "--case", choices=SMALL_CASES + FULL_CASES, action="append", help="fit only these"
    )
    parser.add_argument("--baseline", default="fce26d6", help="git revision of 'before'")
    parser.add_argument(
        "--before-root", help="folder holding the 'before' nwb_lrconn (instead of git archive)"
    )
    parser.add_argument("--cpu", type=int, help="pin each fit to this CPU (taskset)")
    parser.add_argument("--no-epoch", action="store_true", help="skip the epoch benchmark")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker)
        sys.exit(0)
    if not args.no_epoch:
        bench_epoch()
    if args.fits:
        chosen = args.case or list(SMALL_CASES + (FULL_CASES if args.full else ()))
        bench_fits(chosen, args.baseline, args.cpu, args.before_root)
