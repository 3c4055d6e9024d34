"""Benchmark Connector against the published implementation's numbers and its naive ridge step.

Run: ``python tests/benchmarks/bench_connector.py [--networks quadstable ...] [--threads 2]
[--jobs 1] [--device cpu]``. Needs the published networks (``$NWB_LRCONN_DATA``).

For each network (true latents and M: 400 trials on the 20×20 grid, 100 steps, α = 0.1) it fits
:class:`ConnectorEstimator` with its defaults and prints wall and CPU time, Sinkhorn(m),
mean ‖k − g(m)‖² at σ = 0 and the flow-field RMSE, next to the published run on the quadstable
network (2 CPU cores: 847 s wall; Sinkhorn 0.0071; ‖k − g‖² 0.086; ridge floor 0.045). It then
times one flow-B target step of ours (quadrature rows, one Cholesky solve) against a same-run
reimplementation of the published per-epoch work (three 1000×1000 ridge systems, train /
validation / test trial folds, formed from every transition and inverted), and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context

import numpy as np
import torch

from nwb_lrconn.inference.connector import (
    ConnectorData,
    ConnectorEstimator,
    build_state_quadrature,
    quadrature_ridge_targets,
)
from nwb_lrconn.inference.dynamics import flow_field, flow_field_rmse, latent_velocity
from nwb_lrconn.inference.metrics import conditional_mean_error, sinkhorn_divergence
from nwb_lrconn.model.networks import (
    NETWORK_NAMES,
    conditional_mean,
    grid_initial_conditions,
    load_published_network,
    simulate_latents,
)

PUBLISHED = {"wall_s": 847.0, "sinkhorn": 0.0071, "cond_err": 0.086, "ridge_floor": 0.045}


def published_data(name: str) -> tuple:
    """Published network, its latents on the 400-trial grid (100 steps) and the ConnectorData."""
    net = load_published_network(name)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(), 100)
    return net, lat, ConnectorData.from_loadings(net.M, lat, alpha=0.1)


def loading_metrics(name: str, M_true, K_true, m, k, *, d=None, A=None, c=None) -> dict:
    """Sinkhorn(m), mean/cov errors of m, mean ‖k − g(m)‖² and flow-field RMSE against the truth.

    (m, k, d) may live in another frame, where the true latents are κ_true = A κ + c (default: the
    truth's own frame): loadings map to (m A⁻¹, k Aᵀ) and the flow field to
    F'(κ') = A F(A⁻¹(κ' − c)).
    """
    A = np.eye(2) if A is None else A
    c = np.zeros(2) if c is None else c
    A_inv = np.linalg.inv(A)
    m_t, k_t = m @ A_inv, k @ A.T
    points, v_true = flow_field(M_true, K_true)
    v_fit = latent_velocity((points - c) @ A_inv.T, m, k, d=d) @ A.T
    return {
        "sinkhorn": sinkhorn_divergence(M_true, m_t),
        "mean_diff": float(np.abs(m_t.mean(0) - M_true.mean(0)).max()),
        "cov_diff": float(np.abs(np.cov(m_t.T) - np.cov(M_true.T)).max()),
        "cond_err": conditional_mean_error(m_t, k_t, partial(conditional_mean, name)),
        "ff_rmse": flow_field_rmse(v_true, v_fit),
    }


def evaluate(name: str, net, est: ConnectorEstimator, *, random_state: int = 1) -> dict:
    """:func:`loading_metrics` of 1000 units sampled at σ = 0."""
    z, k = est.sample(1000, random_state=random_state)
    return loading_metrics(name, net.M, net.K, z[:, :2], k)


def fit_one(name: str, threads: int, device: str, params: dict | None = None) -> dict:
    """Fit one network with the estimator's defaults (plus ``params``) and evaluate it."""
    torch.set_num_threads(threads)
    net, _, data = published_data(name)
    est = ConnectorEstimator(random_state=0, device=device, **(params or {}))
    wall, cpu = time.perf_counter(), time.process_time()
    est.fit(data)
    out = {
        "name": name,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "steps_a": est.n_steps_a_,
        "steps_b": est.n_steps_b_,
        "rows": est.n_quadrature_rows_,
    }
    out.update(evaluate(name, net, est))
    return out


def time_stage_b(name: str, threads: int, *, repeats: int = 5) -> dict:
    """Seconds per flow-B target step: ours vs the naive per-epoch triple solve."""
    torch.set_num_threads(threads)
    net, lat, data = published_data(name)
    rng = np.random.default_rng(0)
    folds = np.array_split(rng.permutation(lat.shape[0]), 5)
    train = np.concatenate(folds[2:])
    z = torch.as_tensor(np.c_[net.M, np.zeros(1000)])
    s, alpha, lam = 1000, 0.1, 1e-4

    feats, updates = data.transitions(train)
    quad = build_state_quadrature(feats, updates, resolution=0.1)
    q = [torch.as_tensor(a) for a in (quad.features, quad.update_sums, quad.weights)]

    def ours():
        return quadrature_ridge_targets(*q, z, alpha=alpha, ridge_lambda=lam)

    fold_data = [
        [torch.as_tensor(a, dtype=torch.float32) for a in data.transitions(idx)]
        for idx in (train, folds[0], folds[1])
    ]
    z32 = z.float()

    def naive():  # the published per-epoch work: 3 full-row systems, explicit inverses
        out = []
        for f, y in fold_data:
            phi = torch.tanh(f @ z32.T)
            inv = torch.linalg.inv(phi.T @ phi + lam * s**2 / alpha**2 * torch.eye(s))
            out.append((s / alpha) * inv @ phi.T @ y)
        return out

    def best(fn):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    k_ours = ours().numpy()
    k_naive = naive()[0].double().numpy()
    return {
        "ours_s": best(ours),
        "naive_s": best(naive),
        "rows_ours": int(q[2].numel()),
        "rows_naive": int(sum(f.shape[0] for f, _ in fold_data)),
        "max_rel_diff": float(np.abs(k_ours - k_naive).max() / np.abs(k_naive).max()),
    }


def _print_stage_b(threads: int) -> None:
    print("\nstage-B target step (quadstable, S = 1000, λ = 1e-4):")
    sb = time_stage_b("quadstable", threads)
    print(
        f"  ours {sb['ours_s'] * 1e3:8.1f} ms ({sb['rows_ours']} quadrature rows, 1 Cholesky)\n"
        f"  naive {sb['naive_s'] * 1e3:7.1f} ms ({sb['rows_naive']} rows, 3 inverses)\n"
        f"  speed-up ×{sb['naive_s'] / sb['ours_s']:.1f}; "
        f"max |k_ours − k_naive| / max |k| = {sb['max_rel_diff']:.2e}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=list(NETWORK_NAMES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1, help="networks fitted in parallel")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--params", default="{}", help="JSON overrides of estimator defaults")
    parser.add_argument("--skip-stage-b", action="store_true", help="skip the ridge timing")
    args = parser.parse_args(argv)
    params = json.loads(args.params)

    print(
        f"torch threads per fit: {args.threads}; parallel fits: {args.jobs}; {args.device}; "
        f"overrides {params}"
    )
    if not args.skip_stage_b:
        _print_stage_b(args.threads)

    run = partial(fit_one, threads=args.threads, device=args.device, params=params)
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run, args.networks))
    else:
        results = [run(name) for name in args.networks]
    header = (
        f"{'network':12s} {'wall s':>7s} {'cpu s':>7s} {'steps A/B':>10s} {'rows':>5s} "
        f"{'Sinkhorn':>9s} {'|k-g|^2':>8s} {'FF RMSE':>8s} {'mean d':>7s} {'cov d':>6s}"
    )
    print("\n" + header)
    for r in results:
        print(
            f"{r['name']:12s} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} "
            f"{r['steps_a']:>5d}/{r['steps_b']:<4d} {r['rows']:5d} {r['sinkhorn']:9.4f} "
            f"{r['cond_err']:8.3f} {r['ff_rmse']:8.4f} {r['mean_diff']:7.3f} {r['cov_diff']:6.3f}"
        )
    p = PUBLISHED
    print(
        f"{'published QA':12s} {p['wall_s']:7.1f} {'':>7s} {'':>10s} {'':>5s} "
        f"{p['sinkhorn']:9.4f} {p['cond_err']:8.3f}"
    )
    qa = next((r for r in results if r["name"] == "quadstable"), None)
    if qa is not None:
        print(
            f"\nquadstable vs published: wall ×{p['wall_s'] / qa['wall_s']:.1f} faster; "
            f"Sinkhorn {qa['sinkhorn']:.4f} vs {p['sinkhorn']} "
            f"(target ≤ 0.0071); ‖k − g‖² {qa['cond_err']:.3f} vs {p['cond_err']} "
            "(target ≤ 0.06 in ≤ 170 s)"
        )


if __name__ == "__main__":
    main()
