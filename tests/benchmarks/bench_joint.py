"""Benchmark of the joint multi-session fit (not collected by pytest).

    python tests/benchmarks/bench_joint.py                      # rates and spikes, 3 sessions
    python tests/benchmarks/bench_joint.py --kind spikes --sessions 5 --units 150
    python tests/benchmarks/bench_joint.py --kind spikes --seed 2 --fit-seed 1   # same data
    python tests/benchmarks/bench_joint.py --kind spikes --seed 2 --fit-seed 0 1 2 --no-bound
    python tests/benchmarks/bench_joint.py --distribution --kind rates --other bistable
    python tests/benchmarks/bench_joint.py --distribution --kind spikes --fit-seed 1 2 --other

The published quadstable network (N = 1000, from ``$NWB_LRCONN_DATA``) is recorded as several
sessions, each through its own disjoint random subset of units and with its own trials (κ(0)
uniform on [−2.4, 2.4]², different draws per session): noiseless rates (the paper's setting) or
Poisson spikes (20-ms bins). One run prints, per kind:

- the flow-field RMSE against the truth (|F|_rms ≈ 0.67) of each session's separate fit (the
  joint fit's own starting fits, ``separate_``, on that session's training trials, gauge aligned
  on their latents), of the joint fit (gauge aligned on all sessions' latents together, and on
  each session's alone: without shared units a symmetry of the flow may turn sessions against
  each other at no cost in likelihood), and of one fit to every unit on every trial (the
  all-units bound);
- each session's held-out log-likelihood, joint against separate, with the paired standard error
  (``compare_to_separate``);
- wall time: the joint fit, of which its separate fits, against the all-units fit;
- with several fit seeds (each one draw of the training split and of every fit's random start,
  on the same data), per session the mean and standard error over draws of the separate and the
  joint fits' flow-field RMSE and of their paired difference, and in how many draws the joint
  fit is below every separate fit (likewise for ``--distribution``: each law's Sinkhorn(m) and
  ‖k − g(m)‖² against the pooled law's, and in how many draws the pooled law beats them all).

With ``--engine``: the time of one training step (``batch_loss`` forward and backward, 64 trials ×
100 bins × 600 units) without unit masks, with an all-True mask and with three sessions' masks,
side by side in one run (the masked path's cost; the unmasked path is the estimator's).

With ``--distribution``: stage 3 of the joint fit (:func:`~nwb_lrconn.inference.pooled.
pooled_distribution`, 3 sessions): each candidate symmetry's flow asymmetry per session and the
one applied; against the truth, Sinkhorn(m), mean ‖k − g(m)‖² and the flow-field RMSE of the
pooled distribution (aligned on the reference session's latents, and on all sessions' together),
of each session's own separate fit's distribution and of its distribution in the joint gauge;
each session's residual turn against the reference in truth coordinates; the D matrix, floors,
D / floor and ``compare_to_separate``'s flags; then the same D table with session 2 recorded
from another published network (``--other``, default bistable and limit_cycle).

Everything runs in this process on one thread (``torch.set_num_threads(1)``); pin it to a core
(``taskset -c N``) and say whether the machine was shared.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_connector import loading_metrics  # noqa: E402

from nwb_lrconn.inference.distribution import fit_distribution  # noqa: E402
from nwb_lrconn.inference.dynamics import flow_field, flow_field_rmse, latent_velocity  # noqa: E402
from nwb_lrconn.inference.pooled import (  # noqa: E402
    FLAG_RATIO,
    candidate_symmetries,
    flow_asymmetry,
    pooled_distribution,
)
from nwb_lrconn.model.estimator import LowRankRNNEstimator  # noqa: E402
from nwb_lrconn.model.gauge import align_latents  # noqa: E402
from nwb_lrconn.model.joint import JointLowRankRNN  # noqa: E402
from nwb_lrconn.model.networks import load_published_network  # noqa: E402
from nwb_lrconn.model.simulate import simulate_rates, simulate_spikes  # noqa: E402


def bench_engine(repeats: int = 20) -> None:
    from nwb_lrconn.model._engine.objective import Batch, TrainConfig, batch_loss
    from nwb_lrconn.model.lowrank import LowRankRNN

    gen = torch.Generator().manual_seed(0)
    n_trials, n_time, n_units = 64, 100, 600
    model = LowRankRNN(n_units, 2)
    with torch.no_grad():
        model.M.normal_(generator=gen)
        model.K.normal_(generator=gen)
    initial = torch.randn(n_trials, 2, generator=gen, requires_grad=True)
    mask = torch.ones(n_trials, n_time, dtype=torch.bool)
    sessions = torch.zeros(n_trials, n_units, dtype=torch.bool)
    for s in range(3):
        sessions[s::3, s * 200 : (s + 1) * 200] = True
    print(f"\none training step, {n_trials} trials × {n_time} bins × {n_units} units (ms):")
    for observation in ("gaussian", "poisson"):
        config = TrainConfig(observation, 0.02, 0.0, 1, 1e-3, None, 1, 0.0, 0.0, False)
        data = torch.poisson(torch.full((n_trials, n_time, n_units), 0.5), generator=gen)
        cases = {
            "no mask": Batch(data, mask, None),
            "all-True": Batch(data, mask, None, units=torch.ones_like(sessions)),
            "3 sessions": Batch(data, mask, None, units=sessions),
        }
        times = {}
        for name, batch in cases.items():
            batch = batch.with_log_factorial() if observation == "poisson" else batch
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                batch_loss(model, initial, batch, config).backward()
                runs.append(time.perf_counter() - start)
            times[name] = 1e3 * float(np.median(runs))
        base = times["no mask"]
        print(
            f"  {observation:9s} "
            + "  ".join(f"{k} {v:6.1f} (×{v / base:.2f})" for k, v in times.items()),
            flush=True,
        )


def _flow_rmse(net, latents, truth, mask, M, K, d) -> float:
    A, c = align_latents(latents, truth, mask)
    points, true_flow = flow_field(net.M, net.K)
    fitted = latent_velocity((points - c) @ np.linalg.inv(A).T, M, K, d=d) @ A.T
    return flow_field_rmse(true_flow, fitted)


def _sessions(net, kind, n_sessions, n_units, n_trials, seed, other=None):
    """Sessions of disjoint units of ``net``; with ``other``, the last one records that network.

    Every session of ``net`` comes from one simulation of all sessions' trials: a unit's spike
    readout (floor, ceiling, sign) is drawn once, as in one circuit recorded several times, so
    that the recording of every unit on every trial (returned last; the all-units bound) is one
    a single network can explain. Simulated session by session, each unit's readout would be
    redrawn per block of trials (its sign flipped in half of them).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(net.n_units)
    initial = [rng.uniform(-2.4, 2.4, (n_trials, 2)) for _ in range(n_sessions)]
    n_own = n_sessions - 1 if other is not None else n_sessions

    def simulate(source, start, random_state):
        if kind == "rates":
            return simulate_rates(source, initial=start, n_time=100)
        return simulate_spikes(source, initial=start, n_time=100, random_state=random_state)

    sim = simulate(net, np.concatenate(initial[:n_own]), seed + 1)
    whole = sim.to_recording()
    blocks = [np.arange(s * n_trials, (s + 1) * n_trials) for s in range(n_own)]
    full = [whole.select_trials(trials) for trials in blocks]
    truths = [sim.latents[trials] for trials in blocks]
    if other is not None:
        odd = simulate(other, initial[-1], seed + n_sessions)
        full.append(odd.to_recording())
        truths.append(odd.latents)
    recordings = [
        rec.select_units(np.sort(order[s * n_units : (s + 1) * n_units]))
        for s, rec in enumerate(full)
    ]
    return recordings, truths, whole


def bench(
    kind: str, n_sessions: int, n_units: int, n_trials: int, seed: int, bound: bool, fit_seed: int
) -> tuple[list[float], list[float]]:
    """One joint fit and its separate fits; returns their per-session flow-field RMSEs."""
    net = load_published_network("quadstable")
    recordings, truths, everything = _sessions(net, kind, n_sessions, n_units, n_trials, seed)
    template = LowRankRNNEstimator(rank=2, random_state=fit_seed)
    separate_time = [0.0]
    original = LowRankRNNEstimator.fit

    @functools.wraps(original)
    def timed(self, recording):
        start = time.perf_counter()
        try:
            return original(self, recording)
        finally:
            separate_time[0] += time.perf_counter() - start

    LowRankRNNEstimator.fit = timed  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        joint = JointLowRankRNN(template).fit(recordings)
        joint_time = time.perf_counter() - start
    finally:
        LowRankRNNEstimator.fit = original  # type: ignore[method-assign]
    if bound:
        start = time.perf_counter()
        alone_all = LowRankRNNEstimator(rank=2, random_state=fit_seed).fit(everything)
        all_time = time.perf_counter() - start

    print(
        f"\n{kind}: {n_sessions} sessions × {n_units} units × {n_trials} trials × 100 bins "
        f"(N = {net.n_units}, reference session {joint.seed_session_}; data seed {seed}, fit "
        f"seed {fit_seed})"
    )
    params = {n: getattr(joint.model_, n).detach().double().numpy() for n in ("M", "K", "d")}
    rows = joint.compare_to_separate(recordings)
    print(
        f"{'session':>8s} {'separate':>9s} {'joint(own)':>10s}   held-out LL: "
        f"{'separate':>9s} {'joint':>9s} {'diff':>9s} {'± s.e.':>8s}  worse"
    )
    errors: tuple[list[float], list[float]] = ([], [])
    for s, (view, single, row) in enumerate(zip(joint.sessions_, joint.separate_, rows)):
        train = view.train_trials
        alone = _flow_rmse(
            net,
            single.latents_,
            truths[s][train],
            view.latent_mask[train],
            single.M_,
            single.K_,
            single.d_,
        )
        own = _flow_rmse(
            net, view.latents, truths[s], view.latent_mask, params["M"], params["K"], params["d"]
        )
        errors[0].append(alone)
        errors[1].append(own)
        print(
            f"{s:8d} {alone:9.4f} {own:10.4f}                {row['separate']:9.4f} "
            f"{row['joint']:9.4f} {row['difference']:9.2e} {row['stderr']:8.1e}  {row['worse']}"
        )
    together = _flow_rmse(
        net,
        np.concatenate([v.latents for v in joint.sessions_]),
        np.concatenate(truths),
        np.concatenate([v.latent_mask for v in joint.sessions_]),
        params["M"],
        params["K"],
        params["d"],
    )
    print(f"flow-field RMSE: joint, gauge aligned on all sessions together {together:.4f}")
    # How the sessions sit against each other, in the truth's coordinates: S = A_s A_ref⁻¹ with
    # A_s the map of session s's joint latents onto the truth (S = I when they share a gauge; a
    # symmetry of the truth's flow when a session was turned by it).
    maps = [align_latents(v.latents, t, v.latent_mask) for v, t in zip(joint.sessions_, truths)]
    A_ref = maps[joint.seed_session_][0]
    for s, (A, _) in enumerate(maps):
        relative = np.round(A @ np.linalg.inv(A_ref), 2).tolist()
        print(f"session {s}: its gauge against the reference session's, in truth coordinates "
              f"{relative}")  # fmt: skip
    print(
        f"time: joint fit {joint_time:.1f} s, of which its {n_sessions} separate fits "
        f"{separate_time[0]:.1f} s (joining + joint training {joint_time - separate_time[0]:.1f} "
        "s)",
        flush=True,
    )
    if bound:
        all_units = _flow_rmse(
            net, alone_all.latents_, np.concatenate(truths), everything.mask,
            alone_all.M_, alone_all.K_, alone_all.d_,
        )  # fmt: skip
        print(
            f"all {net.n_units} units on all trials: flow-field RMSE {all_units:.4f}, "
            f"{all_time:.1f} s",
            flush=True,
        )
    return errors


def summarise(kind: str, fit_seeds, draws) -> None:
    """Per session, the flow-field RMSE of separate and joint fits over several fit seeds.

    Each fit seed is one draw of the training split and of every fit's random start on the same
    data: a single draw compares two random errors, the mean over draws their expectations.
    """
    separate = np.array([d[0] for d in draws])  # (n_draws, n_sessions)
    joint = np.array([d[1] for d in draws])
    n = len(draws)
    print(f"\n{kind}: flow-field RMSE over fit seeds {list(fit_seeds)} (mean ± s.e. over draws)")
    header = f"{'separate':>16s} {'joint':>16s} {'joint − separate':>18s}"
    print(f"{'session':>8s} {header}  joint lower")
    for s in range(separate.shape[1]):
        diff = joint[:, s] - separate[:, s]
        print(
            f"{s:8d} {_mean_se(separate[:, s]):>16s} {_mean_se(joint[:, s]):>16s} "
            f"{_mean_se(diff, '+'):>18s}  {int((diff < 0).sum())} of {n}"
        )
    below_all = (joint.max(axis=1) < separate.min(axis=1)).sum()
    print(f"draws whose joint fit is below every separate fit of the draw: {below_all} of {n}")


def _mean_se(values: np.ndarray, sign: str = "") -> str:
    """Mean ± standard error of draws, as text (the error is 0 for one draw)."""
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return f"{values.mean():{sign}.4f} ± {se:.4f}"


def _truth_metrics(dist, net, latents, truth, mask) -> dict:
    """Sinkhorn(m), ‖k − g(m)‖² and flow-field RMSE of ``dist``'s drawn units against the truth,
    the gauge read off ``latents`` (the frame of ``dist``) against the true latents."""
    A, c = align_latents(latents, truth, mask)
    z, k = dist.samples_z, dist.samples_k
    return loading_metrics("quadstable", net.M, net.K, z[:, :2], k, d=z[:, 2], A=A, c=c)


def _print_distances(result, rows) -> None:
    n = len(result.sessions)
    print("D between session distributions (shared gauge), floors (two halves of a session):")
    print("         " + " ".join(f"{t:>8d}" for t in range(n)) + "    floor  min D/floor  worse")
    for s in range(n):
        ratio = min(
            result.dissimilarity[s, t] / max(result.floor[s], result.floor[t])
            for t in range(n)
            if t != s
        )
        print(
            f"{s:8d} " + " ".join(f"{v:8.4f}" for v in result.dissimilarity[s])
            + f" {result.floor[s]:8.4f} {ratio:12.2f}  {rows[s]['worse']}"
        )  # fmt: skip
    print(f"flagged (D > {FLAG_RATIO:g} × floor to every other session): {list(result.flagged)}")


def bench_distribution(
    kind: str, n_units: int, n_trials: int, seed: int, others, fit_seed: int
) -> dict[str, tuple[float, float]]:
    """Stage 3 of a joint fit against the truth, then with one session of another network.

    Returns each distribution's (Sinkhorn(m), ‖k − g(m)‖²) against the truth, by label.
    """
    net = load_published_network("quadstable")
    recordings, truths, _ = _sessions(net, kind, 3, n_units, n_trials, seed)
    start = time.perf_counter()
    joint = JointLowRankRNN(LowRankRNNEstimator(rank=2, random_state=fit_seed)).fit(recordings)
    fit_time = time.perf_counter() - start
    start = time.perf_counter()
    result = pooled_distribution(joint, recordings, random_state=fit_seed)
    dist_time = time.perf_counter() - start
    print(
        f"\n{kind}: 3 sessions × {n_units} units × {n_trials} trials of the quadstable network; "
        f"pooled: {result.reason}"
    )
    print("flow asymmetry of the candidate symmetries on each session's states (row: session):")
    M, K, d = (getattr(joint.model_, n).detach().double().numpy() for n in ("M", "K", "d"))
    candidates = candidate_symmetries(2)
    print("  " + " ".join(f"{str(np.round(S).astype(int).tolist()):>17s}" for S in candidates))
    for s, view in enumerate(joint.sessions_):
        states = view.latents[view.latent_mask]
        errors = [flow_asymmetry(S, states, M, K, d) for S in candidates]
        applied = np.round(result.symmetry[s]).astype(int).tolist()
        print(f"{s} " + " ".join(f"{e:17.3f}" for e in errors) + f"   applied {applied}")
    turned = [v.latents @ S.T for v, S in zip(joint.sessions_, result.symmetry)]
    masks = [v.latent_mask for v in joint.sessions_]
    # The pooled distribution lives in the reference session's gauge; aligned on every session's
    # latents together it also pays for any session left turned by a symmetry that its law
    # shares (which pooling does not mind, and the loadings cannot tell).
    ref = result.reference
    table = [
        ("pooled (ref)", result.pooled, turned[ref], truths[ref], [masks[ref]]),
        ("pooled (all)", result.pooled, np.concatenate(turned), np.concatenate(truths), masks),
    ]
    for s, (view, single) in enumerate(zip(joint.sessions_, joint.separate_)):
        train = view.train_trials
        own = fit_distribution(single.fit_, random_state=fit_seed)
        table.append((f"{s} own fit", own, single.latents_, truths[s][train], [masks[s][train]]))
        table.append((f"{s} joint", result.sessions[s], turned[s], truths[s], [masks[s]]))
    print(
        f"{'distribution':>13s} {'model':>8s} Sinkhorn(m) |k-g(m)|²  FF RMSE   (data seed {seed}, "
        f"fit seed {fit_seed})"
    )
    scores = {}
    for label, dist, latents, truth, mask in table:
        r = _truth_metrics(dist, net, latents, truth, np.concatenate(mask))
        scores[label] = (r["sinkhorn"], r["cond_err"])
        print(
            f"{label:>13s} {dist.model:>8s} {r['sinkhorn']:11.4f} {r['cond_err']:9.3f} "
            f"{r['ff_rmse']:8.4f}"
        )
    maps = [align_latents(t, truth, m)[0] for t, truth, m in zip(turned, truths, masks)]
    for s, A in enumerate(maps):
        relative = np.round(A @ np.linalg.inv(maps[ref]), 2).tolist()
        print(
            f"session {s} after its turn, against the reference, in truth coordinates {relative}"
        )
    _print_distances(result, joint.compare_to_separate(recordings))
    print(f"time: joint fit {fit_time:.1f} s, pooled_distribution {dist_time:.1f} s", flush=True)

    for name in others:
        odd = load_published_network(name)
        recordings, _, _ = _sessions(net, kind, 3, n_units, n_trials, seed, other=odd)
        estimator = LowRankRNNEstimator(rank=2, random_state=fit_seed)
        joint = JointLowRankRNN(estimator).fit(recordings)
        result = pooled_distribution(joint, recordings, random_state=fit_seed)
        print(f"\n{kind}: sessions 0 and 1 quadstable, session 2 the {name} network")
        _print_distances(result, joint.compare_to_separate(recordings))
    return scores


def summarise_distributions(kind: str, fit_seeds, draws) -> None:
    """Each distribution's Sinkhorn(m) and ‖k − g(m)‖² over several fit seeds, against the
    pooled one's (in the reference session's gauge), and how often the pooled one beats every
    single-session distribution of its draw."""
    pooled = "pooled (ref)"
    singles = [label for label in draws[0] if not label.startswith("pooled")]
    n = len(draws)
    print(f"\n{kind}: stage 3 over fit seeds {list(fit_seeds)} (mean ± s.e. over draws)")
    for index, metric in enumerate(("Sinkhorn(m)", "|k-g(m)|²")):
        ref = np.array([d[pooled][index] for d in draws])
        print(f"{metric}: pooled {_mean_se(ref)}")
        for label in singles:
            values = np.array([d[label][index] for d in draws])
            diff = ref - values
            print(
                f"{label:>13s} {_mean_se(values):>16s}   pooled − it {_mean_se(diff, '+')}, "
                f"pooled lower in {int((diff < 0).sum())} of {n}"
            )
        best = sum(d[pooled][index] < min(d[label][index] for label in singles) for d in draws)
        print(f"draws whose pooled {metric} beats every single-session law: {best} of {n}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["rates", "spikes"], nargs="+", default=None)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated sessions")
    parser.add_argument(
        "--fit-seed", type=int, nargs="+", help="estimators' random_state (default: --seed); "
        "the spread of the flow-field RMSE over fit seeds on the same data is the resolution of "
        "its comparisons: with several, a summary over them follows"
    )  # fmt: skip
    parser.add_argument("--engine", action="store_true", help="only the training-step timing")
    parser.add_argument(
        "--distribution", action="store_true", help="only the pooled distribution (stage 3)"
    )
    parser.add_argument(
        "--other", nargs="*", default=["bistable", "limit_cycle"], help="odd sessions' networks"
    )
    parser.add_argument(
        "--no-bound", action="store_true", help="skip the all-units fit (the slowest part)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.engine:
        bench_engine()
        raise SystemExit
    fit_seeds = [args.seed] if args.fit_seed is None else args.fit_seed
    if args.distribution:
        for kind in args.kind or ["rates", "spikes"]:
            scores = [
                bench_distribution(kind, args.units, args.trials, args.seed, args.other, f)
                for f in fit_seeds
            ]
            if len(scores) > 1:
                summarise_distributions(kind, fit_seeds, scores)
        raise SystemExit
    for kind in args.kind or ["rates", "spikes"]:
        draws = [
            bench(kind, args.sessions, args.units, args.trials, args.seed, not args.no_bound, f)
            for f in fit_seeds
        ]
        if len(draws) > 1:
            summarise(kind, fit_seeds, draws)
