"""Benchmark: Laplace posterior + degeneracy report, matrix-free ("blocks") against dense.

Target (issue 5): N = 2000 units, rank 4, Poisson counts, 200 trials × 100 bins; the full
analysis (``laplace_posterior`` + ``compute_degeneracy``) in under 60 s and 4 GB of peak memory
on 2 cores. The dense path is measured in the same run at a size where it still fits,
next to the matrix-free path at that size (N = 40: forming F densely costs
O(n_trials · n_time · N · P²)).

Each configuration runs in its own subprocess, so its peak resident memory (``ru_maxrss``,
which includes building the synthetic data) is its own. Run::

    python tests/benchmarks/bench_posterior.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

TARGET_SECONDS, TARGET_GB = 60.0, 4.0


def build_case(n_units: int, rank: int, n_trials: int, n_time: int, seed: int = 0):
    """A sampled ground-truth network, its latents and Poisson counts, as fit + recording."""
    from nwb_lrconn.data import LowRankFit, Recording
    from nwb_lrconn.model.networks import phi, simulate_latents

    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n_units, rank))
    K = 1.6 * M + np.sqrt(4 - 1.6**2) * rng.normal(size=(n_units, rank))
    d = np.zeros(n_units)
    latents = simulate_latents(M, K, rng.uniform(-2, 2, (n_trials, rank)), n_time)
    bin_width = 0.02
    gain, offset = rng.uniform(1, 5, n_units), rng.uniform(1.5, 15, n_units)  # 1–30 Hz
    rate = np.logaddexp(0, gain * phi(latents @ M.T) + offset)
    counts = rng.poisson(bin_width * rate).astype(np.float64)
    del rate
    mask = np.ones((n_trials, n_time), bool)
    ids = np.arange(n_units)
    starts = np.arange(n_trials) * n_time * bin_width
    recording = Recording(
        data=counts,
        mask=mask,
        bin_width=bin_width,
        kind="spikes",
        unit_ids=ids,
        unit_rows=ids,
        trial_start_times=starts,
    )
    fit = LowRankFit(
        M=M,
        K=K,
        B=np.zeros((n_units, 0)),
        d=d,
        readout_gain=gain,
        readout_offset=offset,
        noise_std=np.ones(n_units),
        rank=rank,
        nonlinearity="tanh",
        alpha=0.1,
        bin_width=bin_width,
        observation="poisson",
        latents=latents,
        latent_mask=mask,
        trial_start_times=starts,
        loss_history=np.zeros((0, 2)),
        metrics={},
        unit_quality=np.zeros(n_units),
        train_trials=np.arange(n_trials),
        test_trials=np.arange(0),
        unit_ids=ids,
    )
    return fit, recording


def worker(n_units: int, rank: int, n_trials: int, n_time: int, structure: str) -> dict:
    """Time one full analysis; return the numbers as a dict."""
    from nwb_lrconn.inference.degeneracy import compute_degeneracy
    from nwb_lrconn.inference.laplace import laplace_posterior

    fit, recording = build_case(n_units, rank, n_trials, n_time)
    start = time.perf_counter()
    post = laplace_posterior(fit, recording, prior_precision=1.0, structure=structure)
    mid = time.perf_counter()
    report = compute_degeneracy(fit, recording, post)
    end = time.perf_counter()
    return {
        "structure": structure,
        "n_units": n_units,
        "n_params": post.n_params,
        "posterior_s": mid - start,
        "degeneracy_s": end - mid,
        "total_s": end - start,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "n_constrained": report.n_constrained,
        "phi_rank": report.phi_effective_rank,
        "identifiable": report.identifiable,
    }


def run(config: tuple, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", *map(str, config), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=5, metavar=("N", "R", "TRIALS", "TIME", "STRUCTURE"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        n, r, trials, n_time, structure = args.worker
        print(json.dumps(worker(int(n), int(r), int(trials), int(n_time), structure)))
        return
    rows = [
        run((2000, 4, 200, 100, "blocks"), args.threads),
        run((40, 4, 200, 100, "blocks"), args.threads),
        run((40, 4, 200, 100, "dense"), args.threads),
    ]
    print(f"threads: {args.threads}; Poisson, rank 4, 200 trials x 100 bins")
    header = f"{'structure':>9} {'N':>5} {'params':>7} {'posterior s':>12} {'degeneracy s':>13}"
    print(header + f" {'total s':>8} {'peak GB':>8} {'constrained':>12} {'rank Φ':>7}")
    for row in rows:
        print(
            f"{row['structure']:>9} {row['n_units']:>5} {row['n_params']:>7} "
            f"{row['posterior_s']:>12.2f} {row['degeneracy_s']:>13.2f} {row['total_s']:>8.2f} "
            f"{row['peak_gb']:>8.2f} {row['n_constrained']:>12} {row['phi_rank']:>7}"
        )
    big, small_blocks, small_dense = rows
    ratio_t = small_dense["total_s"] / small_blocks["total_s"]
    ratio_m = small_dense["peak_gb"] / small_blocks["peak_gb"]
    print(f"N=40: dense / blocks time ratio {ratio_t:.1f}, peak memory ratio {ratio_m:.2f}")
    p = big["n_params"]
    print(
        f"N=2000 dense would hold P×P = {p}² float64 matrices: {p * p * 8 / 1e9:.1f} GB each "
        "(F, covariance, eigenvectors), and its Jacobian pass scales as P × observations."
    )
    ok = big["total_s"] < TARGET_SECONDS and big["peak_gb"] < TARGET_GB
    print(
        f"target N=2000: {big['total_s']:.1f} s (< {TARGET_SECONDS:.0f}), "
        f"{big['peak_gb']:.2f} GB (< {TARGET_GB:.0f}): {'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
