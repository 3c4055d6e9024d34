"""Reproduce the Connector results (DESIGN.md §6–§8) in one command.

Run: ``python tests/benchmarks/reproduce_connector.py [--device cpu|cuda] [--threads 2]``.
Needs the published networks (``$NWB_LRCONN_DATA``).

Prints, for the quadstable (QA), bistable (BA), limit-cycle (LC) and ring (RA) networks fitted
with true latents and M: the flow-A / flow-B / flow-field checks and attractors of 1000 sampled
units (``sample`` defaults: quasi-random z, k on flow B's core; the same checks with i.i.d. z on
the next line); the cross-validated GMM curves of QA (truth, Connector at σ = 1,
gradient-descent baseline); the silencing of each QA population; the 4×4 dissimilarity matrix
D(true, inferred) normalised by its maximum next to the Valente baseline; a heavy-tailed network
against a single-Gaussian fit; and timings.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_connector import evaluate, published_data  # noqa: E402

from nwb_lrconn.inference.connector import ConnectorData, ConnectorEstimator  # noqa: E402
from nwb_lrconn.inference.dynamics import (  # noqa: E402
    find_fixed_points,
    find_limit_cycle,
    flow_field,
    flow_field_rmse,
)
from nwb_lrconn.inference.metrics import (  # noqa: E402
    connectivity_dissimilarity,
    gmm_cv_log_likelihood,
    gradient_descent_output_loadings,
    population_labels,
    silence_population,
    valente_dissimilarity,
)
from nwb_lrconn.model.networks import (  # noqa: E402
    NETWORK_NAMES,
    conditional_mean,
    grid_initial_conditions,
    sample_heavy_tailed_network,
    simulate_latents,
)

SHORT = {"quadstable": "QA", "bistable": "BA", "limit_cycle": "LC", "ring": "RA"}


def _stable(M, K):
    return np.array([f.location for f in find_fixed_points(M, K) if f.stable]).reshape(-1, 2)


def _ring_radius(M, K):
    ends = simulate_latents(M, K, grid_initial_conditions(6), 300)[:, -1]
    return float(np.median(np.linalg.norm(ends, axis=1)))


def attractor_check(name, net, m, k) -> str:
    """Compare the attractor of the sampled network with the truth's, as one line."""
    if name in ("quadstable", "bistable"):
        truth, found = _stable(net.M, net.K), _stable(m, k)
        if len(found) != len(truth):
            return f"{len(found)} stable points (truth {len(truth)}): FAIL"
        dist = np.linalg.norm(found[:, None] - truth[None], axis=-1).min(1).max()
        verdict = "ok" if dist < 0.15 else "FAIL"
        return f"{len(found)} stable points, max distance {dist:.3f} ({verdict})"
    if name == "limit_cycle":
        truth, found = find_limit_cycle(net.M, net.K), find_limit_cycle(m, k)
        if found is None:
            return "no limit cycle: FAIL"
        diff = abs(found.radius - truth.radius)
        return (
            f"cycle radius {found.radius:.3f} (truth {truth.radius:.3f}, "
            f"{'ok' if diff < 0.05 else 'FAIL'})"
        )
    r_true, r_found = _ring_radius(net.M, net.K), _ring_radius(m, k)
    ok = abs(r_true - r_found) < 0.05
    return f"ring radius {r_found:.3f} (truth {r_true:.3f}, {'ok' if ok else 'FAIL'})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fast", action="store_true", help="tiny fits: a smoke test only")
    args = parser.parse_args(argv)
    params = {"n_steps_a": 200, "n_steps_b": 30} if args.fast else {}
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    fits, samples = {}, {}
    print("== Fits with true latents and M (400 trials, 100 steps, α = 0.1) ==")
    for name in NETWORK_NAMES:
        net, lat, data = published_data(name)
        t0, c0 = time.perf_counter(), time.process_time()
        est = ConnectorEstimator(random_state=0, device=args.device, **params).fit(data)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        r = evaluate(name, net, est)
        z, k = est.sample(1000, random_state=1)
        fits[name], samples[name] = (net, lat, est), (z[:, :2], k)
        print(
            f"{SHORT[name]}: fit {wall:6.1f} s wall, {cpu:6.1f} s CPU "
            f"(steps A {est.n_steps_a_}, B {est.n_steps_b_}); Sinkhorn(m) {r['sinkhorn']:.4f}; "
            f"mean/cov diff {r['mean_diff']:.3f}/{r['cov_diff']:.3f}; "
            f"‖k − g‖² {r['cond_err']:.3f}; flow-field RMSE {r['ff_rmse']:.4f}; "
            + attractor_check(name, net, z[:, :2], k)
        )
        z_iid, k_iid = est.sample(1000, quasi_random=False, random_state=1)
        _, v_iid = flow_field(z_iid[:, :2], k_iid)
        print(
            f"    with i.i.d. instead of quasi-random draws: flow-field RMSE "
            f"{flow_field_rmse(flow_field(net.M, net.K)[1], v_iid):.4f}; "
            + attractor_check(name, net, z_iid[:, :2], k_iid)
        )

    print("\n== Quadstable structure: cross-validated GMM log-likelihood per unit, k = 1..9 ==")
    net, lat, est = fits["quadstable"]
    z1, k1 = est.sample(1000, sigma=1.0, random_state=2)
    k_gd = gradient_descent_output_loadings(net.M, lat, alpha=0.1, random_state=0)
    curves = {
        "truth": gmm_cv_log_likelihood(np.c_[net.M, net.K]),
        "Connector σ=1": gmm_cv_log_likelihood(np.c_[z1[:, :2], k1]),
        "GD baseline": gmm_cv_log_likelihood(np.c_[net.M, k_gd]),
    }
    for label, curve in curves.items():
        print(
            f"{label:14s} "
            + " ".join(f"{v:7.3f}" for v in curve)
            + f"   argmax k={np.argmax(curve) + 1}"
        )
    gap = curves["Connector σ=1"][3] - curves["truth"][3]
    print(
        f"at k = 4: Connector − truth = {gap:+.3f} nats; "
        f"GD − truth = {curves['GD baseline'][3] - curves['truth'][3]:+.3f} nats; "
        f"GD K std {k_gd.std():.1f} (truth {net.K.std():.1f})"
    )

    print("\n== Silencing each quadstable population (k-means on [m, k], m ← 0) ==")
    m0, k0 = samples["quadstable"]
    lab_t, lab_s = population_labels(np.c_[net.M, net.K]), population_labels(np.c_[m0, k0])
    for p in range(4):
        centre = net.M[lab_t == p].mean(0)
        q = int(np.argmin([np.linalg.norm(m0[lab_s == j].mean(0) - centre) for j in range(4)]))
        m_t, m_s = silence_population(net.M, lab_t, p), silence_population(m0, lab_s, q)
        _, v_t = flow_field(m_t, net.K)
        _, v_s = flow_field(m_s, k0)
        n_t, n_s = len(_stable(m_t, net.K)), len(_stable(m_s, k0))
        print(
            f"population at m ≈ ({centre[0]:+.2f}, {centre[1]:+.2f}): flow-field RMSE vs truth "
            f"{flow_field_rmse(v_t, v_s):.4f}; stable points {n_s} (truth {n_t})"
        )

    print(
        "\n== Dissimilarity D(true, inferred), normalised by its max (rows true, cols inferred) =="
    )
    names = list(NETWORK_NAMES)
    D = np.zeros((4, 4))
    V = np.zeros((4, 4))
    for i, a in enumerate(names):
        net_a = fits[a][0]
        for j, b in enumerate(names):
            m_b, k_b = samples[b]
            D[i, j] = connectivity_dissimilarity(net_a.M, m_b, k_b, partial(conditional_mean, a))
            V[i, j] = valente_dissimilarity(net_a.M, net_a.K, m_b, k_b)
    for label, mat in (("ours", D / D.max()), ("Valente", V / V.max())):
        print(f"{label:8s} " + " ".join(f"{SHORT[n]:>6s}" for n in names))
        for i, a in enumerate(names):
            print(f"{SHORT[a]:8s} " + " ".join(f"{v:6.2f}" for v in mat[i]))
        diag_min = all(np.argmin(mat[i]) == i and np.argmin(mat[:, i]) == i for i in range(4))
        off = mat[~np.eye(4, dtype=bool)]
        print(
            f"  diagonal minimal in every row and column: {diag_min}; max diagonal "
            f"{np.diag(mat).max():.2f}; min off-diagonal {off.min():.2f}\n"
        )

    print("== Heavy-tailed network (Student-t, df 5, N = 4000) vs a single-Gaussian fit ==")
    ht = sample_heavy_tailed_network(4000, random_state=0)
    lat_ht = simulate_latents(ht.M, ht.K, grid_initial_conditions(10), 50)
    est_ht = ConnectorEstimator(**{"n_steps_b": 50, **params}, random_state=0, device=args.device)
    est_ht.fit(ConnectorData.from_loadings(ht.M, lat_ht, alpha=0.1))
    m_ht = est_ht.sample(100_000, random_state=0)[0][:, :2]
    gauss = np.random.default_rng(0).multivariate_normal(ht.M.mean(0), np.cov(ht.M.T), 100_000)

    def tails(x):
        q = np.quantile(np.abs(x), [0.99, 0.999])
        kurt = np.mean((x - x.mean(0)) ** 4, 0) / np.var(x, 0) ** 2
        return np.r_[q, kurt.mean()]

    truth = tails(ht.M)
    for label, x in (("truth", ht.M), ("Connector", m_ht), ("Gaussian", gauss)):
        st = tails(x)
        rel = np.abs(st / truth - 1)
        print(
            f"{label:10s} |m| q99 {st[0]:.3f}  q99.9 {st[1]:.3f}  kurtosis {st[2]:.2f}  "
            f"max rel. error {rel.max():.2f} ({'within' if rel.max() < 0.2 else 'outside'} 20 %)"
        )
    print(f"\ntotal wall time {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
