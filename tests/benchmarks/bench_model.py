"""Benchmark of the lrRNN core (not collected by pytest).

    python tests/benchmarks/bench_model.py            # epoch time, latent form vs dense J
    python tests/benchmarks/bench_model.py --fits     # + wall time to a converged fit per network

1. Time of one training epoch (forward + backward over 400 trials × 100 steps, N = 1000, R = 2, in
   minibatches of 64 trials as the estimator uses by default) of the package's latent form
   against a naive implementation that forms the dense N×N matrix J = M Kᵀ/N at every step and
   iterates the N-dimensional potentials. Two objectives, the same on both sides:
   - ``mse``: the squared error of φ(x) against the data (the dynamics dominate);
   - ``training``: the estimator's own objective, ``batch_loss`` (Gaussian observation with the
     per-unit readout, noise scale and trial mask); the naive side evaluates the same
     ``expected_observation`` / ``observation_nll`` at every step.
   Both run here, in one process, with the same threads; each ratio is printed.
2. With ``--fits``: wall time of ``LowRankRNNEstimator().fit`` on each published network
   (noiseless rates, paper setting), with its held-out R² and flow-field RMSE.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from nwb_lrconn.model._train import Batch, TrainConfig, batch_loss
from nwb_lrconn.model.lowrank import LowRankRNN
from nwb_lrconn.model.networks import (
    NETWORK_NAMES,
    default_data_dir,
    grid_initial_conditions,
    load_published_network,
    sample_network,
)
from nwb_lrconn.model.observation import expected_observation, observation_nll

ALPHA = 0.1


def _naive_step_loss(objective, model, y, batch, t, count):
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
    if objective == "training":
        batch_loss(model, initial, batch, config).backward()
        return
    count = batch.data.numel()

    def mse(activity, start, stop):
        return F.mse_loss(activity, batch.data[:, start:stop], reduction="sum") / count

    model.rollout_loss(initial, batch.data.shape[1], mse).backward()


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


def bench_fits(names=NETWORK_NAMES):
    import numpy as np

    from nwb_lrconn.inference.dynamics import flow_field, flow_field_rmse, latent_velocity
    from nwb_lrconn.model.estimator import LowRankRNNEstimator
    from nwb_lrconn.model.gauge import align_latents
    from nwb_lrconn.model.simulate import simulate_rates

    for name in names:
        net = load_published_network(name, default_data_dir())
        session = simulate_rates(net)  # 400 trials on the 20×20 grid, 100 steps, noiseless
        rec = session.to_recording()
        start, cpu = time.perf_counter(), time.process_time()
        est = LowRankRNNEstimator(rank=2, max_epochs=300, random_state=0).fit(rec)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        A, c = align_latents(est.latents_, session.latents, rec.mask)
        points, true_flow = flow_field(net.M, net.K)
        fitted = latent_velocity((points - c) @ np.linalg.inv(A).T, est.M_, est.K_, d=est.d_)
        rmse = flow_field_rmse(true_flow, fitted @ A.T)
        print(
            f"fit {name}: wall {wall:.1f} s (CPU {cpu:.1f} s, {torch.get_num_threads()} threads), "
            f"{len(est.loss_history_) - 1} epochs/rounds, held-out R² {est.metrics_['r2']:.5f}, "
            f"flow-field RMSE {rmse:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", action="store_true", help="also time full fits")
    parser.add_argument(
        "--network", choices=NETWORK_NAMES, action="append", help="fit only these (with --fits)"
    )
    parser.add_argument("--no-epoch", action="store_true", help="skip the epoch benchmark")
    args = parser.parse_args()
    if not args.no_epoch:
        bench_epoch()
    if args.fits:
        bench_fits(args.network or NETWORK_NAMES)
