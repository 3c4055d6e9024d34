"""Benchmark: the structured ("blocks") Laplace posterior against dense, and against the
previous structured form, in one run.

Part 1, accuracy. Synthetic fits (ground-truth loadings as the fit; Poisson or Gaussian
observations) of N = 20, 50, 100, 150 units, rank 2 and 3, on a well-sampled state space
(trials start all over the latent space) and a poorly sampled one (every trial starts near one
point and relaxes to the same fixed point). Each fit is analysed by the dense posterior and the
structured one (``structure="blocks"`` forced, default tolerance), and the table prints, for the
structured form against dense: the per-unit identifiability scores (median and 95th percentile of
the relative error), the constrained count and the log-determinant of the covariance (relative
difference), and the posterior standard deviations of M and K (95th percentile and maximum of the
relative error). The same columns are printed for the previous structured form
(``_previous_blocks.py``), which holds the readout, against the dense posterior that holds it too.

Part 2, what holding the readout changes: dense posteriors with the readout held and
marginalised, on the same fits.

Part 3, scale: N = 2000, rank 4, Poisson, 200 trials × 100 bins; the full analysis
(``laplace_posterior`` + ``compute_degeneracy``, structure chosen by cost) and the previous
structured form, each in its own subprocess so that its peak resident memory (``ru_maxrss``,
which includes building the synthetic data) is its own. Wall and CPU seconds (all threads) are
printed with the machine's load average, since the machine may be shared.

Part 4 (``--scale-accuracy``, slow): dense against structured at N = 500, rank 4, Poisson,
200 × 100, with the default coupling and with its rank capped at the value the time budget
allows at N = 2000, to show the accuracy when the budget, not the tolerance, stops the coupling.

Run::

    python tests/benchmarks/bench_posterior.py [--threads 2] [--skip-accuracy] [--skip-scale]
        [--scale-accuracy]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TARGET_SECONDS, TARGET_GB = 60.0, 4.0
sys.path.insert(0, str(Path(__file__).parent))


def build_case(
    n_units: int,
    rank: int,
    n_trials: int,
    n_time: int,
    *,
    observation: str = "poisson",
    sampling: str = "well",
    seed: int = 0,
):
    """A sampled ground-truth network, its latents and observations, as fit + recording."""
    from nwb_lrconn.data import LowRankFit, Recording
    from nwb_lrconn.model.networks import phi, simulate_latents

    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n_units, rank))
    K = 1.6 * M + np.sqrt(4 - 1.6**2) * rng.normal(size=(n_units, rank))
    d = np.zeros(n_units)
    if sampling == "well":
        initial = rng.uniform(-2, 2, (n_trials, rank))
    else:
        start = simulate_latents(M, K, np.full((1, rank), 0.8), 400)[0, -1]
        initial = start + 0.05 * rng.normal(size=(n_trials, rank))
    latents = simulate_latents(M, K, initial, n_time)
    bin_width = 0.02
    if observation == "poisson":
        gain, offset = rng.uniform(1, 5, n_units), rng.uniform(1.5, 15, n_units)  # 1–30 Hz
        rate = np.logaddexp(0, gain * phi(latents @ M.T) + offset)
        data = rng.poisson(bin_width * rate).astype(np.float64)
        noise = np.ones(n_units)
        del rate
    else:
        gain, offset, noise = np.ones(n_units), np.zeros(n_units), np.full(n_units, 0.5)
        data = phi(latents @ M.T) + noise * rng.normal(size=(n_trials, n_time, n_units))
    mask = np.ones((n_trials, n_time), bool)
    ids = np.arange(n_units)
    starts = np.arange(n_trials) * n_time * bin_width
    recording = Recording(
        data=data,
        mask=mask,
        bin_width=bin_width,
        kind="spikes" if observation == "poisson" else "rates",
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
        noise_std=noise,
        rank=rank,
        nonlinearity="tanh",
        alpha=0.1,
        bin_width=bin_width,
        observation=observation,
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


def _summary(post, report) -> dict:
    from nwb_lrconn.inference.laplace import PosteriorSampler

    laplace = PosteriorSampler(post)
    return {
        "unit_scores": report.unit_scores,
        "n_constrained": report.n_constrained,
        "logdet": laplace.logdet_covariance(),
        "variance": laplace.variance,
    }


def _errors(est: dict, ref: dict, n_units: int, rank: int) -> dict:
    rel = np.abs(est["unit_scores"] - ref["unit_scores"]) / np.abs(ref["unit_scores"])
    sd_rel = np.abs(np.sqrt(est["variance"]) / np.sqrt(ref["variance"]) - 1.0)
    nr = n_units * rank
    return {
        "score_med": float(np.median(rel)),
        "score_p95": float(np.quantile(rel, 0.95)),
        "count": abs(est["n_constrained"] - ref["n_constrained"]) / max(ref["n_constrained"], 1),
        "logdet": abs(est["logdet"] - ref["logdet"]) / abs(ref["logdet"]),
        "sd_m_p95": float(np.quantile(sd_rel[:nr], 0.95)),
        "sd_m_max": float(sd_rel[:nr].max()),
        "sd_k_p95": float(np.quantile(sd_rel[nr : 2 * nr], 0.95)),
        "sd_k_max": float(sd_rel[nr : 2 * nr].max()),
    }


def accuracy_case(n_units, rank, observation, sampling, n_trials, n_time) -> dict:
    """Dense vs structured (readout marginalised) and dense vs previous (readout held)."""
    from _previous_blocks import previous_blocks

    from nwb_lrconn.inference.degeneracy import compute_degeneracy
    from nwb_lrconn.inference.laplace import laplace_posterior

    fit, rec = build_case(
        n_units, rank, n_trials, n_time, observation=observation, sampling=sampling
    )
    out = {"n_params": n_units * (2 * rank + 1)}
    timings = {}
    results = {}
    for name, kwargs in (
        ("dense", dict(structure="dense")),
        ("blocks", dict(structure="blocks")),
        ("dense_held", dict(structure="dense", readout="held")),
    ):
        start = time.process_time()
        post = laplace_posterior(fit, rec, **kwargs)
        report = compute_degeneracy(fit, rec, post)
        timings[name] = time.process_time() - start
        results[name] = _summary(post, report)
        if name == "blocks":
            out["coupling_rank"] = post.coupling_vectors.shape[1]
            out["residual"] = post.coupling_residual
    start = time.process_time()
    results["previous"] = previous_blocks(fit, rec)
    timings["previous"] = time.process_time() - start
    out["new"] = _errors(results["blocks"], results["dense"], n_units, rank)
    out["old"] = _errors(results["previous"], results["dense_held"], n_units, rank)
    held, marg = results["dense_held"], results["dense"]
    nr = n_units * rank
    sd_ratio = np.sqrt(marg["variance"] / held["variance"])
    out["readout"] = {
        "score_change": float(
            np.median((marg["unit_scores"] - held["unit_scores"]) / held["unit_scores"])
        ),
        "sd_m": float(np.median(sd_ratio[:nr])),
        "sd_k": float(np.median(sd_ratio[nr : 2 * nr])),
        "sd_d": float(np.median(sd_ratio[2 * nr :])),
        "count_held": held["n_constrained"],
        "count_marginal": marg["n_constrained"],
    }
    out["cpu_s"] = timings
    return out


def scale_accuracy_worker(n_units: int, rank: int, n_trials: int, n_time: int, cap: int) -> dict:
    """Structured (capped coupling rank, and the default rank) against dense at a size where
    dense is still feasible, to show the accuracy when the time budget caps the coupling."""
    from nwb_lrconn.inference.degeneracy import compute_degeneracy
    from nwb_lrconn.inference.laplace import laplace_posterior

    fit, rec = build_case(n_units, rank, n_trials, n_time)
    out = {}
    results = {}
    for name, kwargs in (
        ("dense", dict(structure="dense")),
        ("blocks", dict(structure="blocks")),
        ("capped", dict(structure="blocks", max_coupling_rank=cap)),
    ):
        start = time.process_time()
        post = laplace_posterior(fit, rec, **kwargs)
        results[name] = _summary(post, compute_degeneracy(fit, rec, post))
        out[f"{name}_cpu_s"] = time.process_time() - start
        if name != "dense":
            out[f"{name}_residual"] = post.coupling_residual
    out["blocks"] = _errors(results["blocks"], results["dense"], n_units, rank)
    out["capped"] = _errors(results["capped"], results["dense"], n_units, rank)
    return out


def scale_worker(form: str, n_units: int, rank: int, n_trials: int, n_time: int) -> dict:
    """Time one full analysis at scale; return the numbers as a dict."""
    from nwb_lrconn.inference.degeneracy import compute_degeneracy
    from nwb_lrconn.inference.laplace import laplace_posterior

    fit, recording = build_case(n_units, rank, n_trials, n_time)
    wall, cpu = time.perf_counter(), time.process_time()
    out = {"form": form}
    if form == "previous":
        from _previous_blocks import previous_blocks

        result = previous_blocks(fit, recording)
        out.update(n_constrained=result["n_constrained"], structure="previous blocks")
    else:
        post = laplace_posterior(fit, recording)
        report = compute_degeneracy(fit, recording, post)
        out.update(n_constrained=report.n_constrained, structure=post.structure)
        if post.structure == "blocks":
            out.update(
                coupling_columns=post.coupling_vectors.shape[1],
                residual=post.coupling_residual,
            )
    out.update(
        wall_s=time.perf_counter() - wall,
        cpu_s=time.process_time() - cpu,
        peak_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        n_params=n_units * (2 * rank + 1),
    )
    return out


def _run(args: list[str], threads: int) -> dict:
    cmd = [sys.executable, __file__, "--threads", str(threads), *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _fmt_errors(e: dict) -> str:
    return (
        f"{e['score_med']:>6.1%} {e['score_p95']:>6.1%} {e['count']:>6.1%} {e['logdet']:>6.2%} "
        f"{e['sd_m_p95']:>6.1%} {e['sd_m_max']:>6.1%} {e['sd_k_p95']:>6.2%} {e['sd_k_max']:>6.2%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--n-trials", type=int, default=100, help="trials of the accuracy fits")
    parser.add_argument("--n-time", type=int, default=50, help="bins of the accuracy fits")
    parser.add_argument("--accuracy-worker", nargs=4, metavar=("N", "R", "OBS", "SAMPLING"))
    parser.add_argument("--scale-worker", nargs=5, metavar=("FORM", "N", "R", "TRIALS", "TIME"))
    parser.add_argument(
        "--scale-accuracy",
        action="store_true",
        help="also compare dense and structured at N=500, rank 4, 200 x 100 (slow)",
    )
    parser.add_argument("--scale-accuracy-worker", nargs=5, metavar=("N", "R", "T", "B", "CAP"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.accuracy_worker:
        n, r, obs, sampling = args.accuracy_worker
        result = accuracy_case(int(n), int(r), obs, sampling, args.n_trials, args.n_time)
        print(json.dumps(result))
        return
    if args.scale_worker:
        form, n, r, trials, n_time = args.scale_worker
        print(json.dumps(scale_worker(form, int(n), int(r), int(trials), int(n_time))))
        return
    if args.scale_accuracy_worker:
        print(json.dumps(scale_accuracy_worker(*map(int, args.scale_accuracy_worker))))
        return

    print(f"threads: {args.threads}; load average at start: {os.getloadavg()}")
    if not args.skip_accuracy:
        print(
            f"\nAccuracy against dense ({args.n_trials} trials x {args.n_time} bins; relative "
            "errors; 'new' = structured vs dense, readout marginalised; 'old' = previous "
            "structured form vs dense, readout held)"
        )
        head = (
            f"{'N':>4} {'R':>2} {'obs':>8} {'states':>6} {'P':>5} {'cols':>5} {'resid':>8} "
            f"{'form':>4} {'sc med':>6} {'sc p95':>6} {'count':>6} {'logdet':>6} "
            f"{'sdM p95':>6} {'sdM max':>6} {'sdK p95':>6} {'sdK max':>6}"
        )
        print(head)
        worst = {"score_p95": 0.0, "count": 0.0, "logdet": 0.0, "sd_m_max": 0.0, "sd_k_max": 0.0}
        readout_rows = []
        for sampling in ("well", "poor"):
            for obs in ("poisson", "gaussian"):
                for rank in (2, 3):
                    for n in (20, 50, 100, 150):
                        row = _run(
                            [
                                "--accuracy-worker", str(n), str(rank), obs, sampling,
                                "--n-trials", str(args.n_trials), "--n-time", str(args.n_time),
                            ],
                            args.threads,
                        )  # fmt: skip
                        lead = (
                            f"{n:>4} {rank:>2} {obs:>8} {sampling:>6} {row['n_params']:>5} "
                            f"{row['coupling_rank']:>5} {row['residual']:>8.1e}"
                        )
                        print(f"{lead}  new {_fmt_errors(row['new'])}")
                        print(f"{'':>{len(lead)}}  old {_fmt_errors(row['old'])}", flush=True)
                        for key in worst:
                            worst[key] = max(worst[key], row["new"][key])
                        readout_rows.append((n, rank, obs, sampling, row["readout"]))
        print(
            "worst over all cases, structured vs dense: "
            f"score p95 {worst['score_p95']:.1%}, count {worst['count']:.1%}, "
            f"logdet {worst['logdet']:.2%}, sd M max {worst['sd_m_max']:.1%}, "
            f"sd K max {worst['sd_k_max']:.2%}"
        )
        print("\nWhat holding the readout changes (dense, marginalised / held)")
        print(
            f"{'N':>4} {'R':>2} {'obs':>8} {'states':>6} {'score chg':>9} {'sd M':>6} "
            f"{'sd K':>6} {'sd d':>6} {'count held':>10} {'count marg':>10}"
        )
        for n, rank, obs, sampling, r in readout_rows:
            print(
                f"{n:>4} {rank:>2} {obs:>8} {sampling:>6} {r['score_change']:>9.1%} "
                f"{r['sd_m']:>6.3f} {r['sd_k']:>6.4f} {r['sd_d']:>6.3f} "
                f"{r['count_held']:>10} {r['count_marginal']:>10}"
            )
    if args.scale_accuracy:
        cap = 256
        row = _run(["--scale-accuracy-worker", "500", "4", "200", "100", str(cap)], args.threads)
        print(
            "\nStructured vs dense at N=500, rank 4, Poisson, 200 trials x 100 bins "
            f"(default coupling, residual {row['blocks_residual']:.1e}; coupling rank capped at "
            f"{cap}, residual {row['capped_residual']:.1e}); CPU s: dense "
            f"{row['dense_cpu_s']:.0f}, structured {row['blocks_cpu_s']:.0f}, capped "
            f"{row['capped_cpu_s']:.0f}"
        )
        print(f"{'default':>8}  {_fmt_errors(row['blocks'])}")
        print(f"{'capped':>8}  {_fmt_errors(row['capped'])}")
    if not args.skip_scale:
        config = ("2000", "4", "200", "100")
        print(f"\nScale: N=2000, rank 4, Poisson, 200 trials x 100 bins; load {os.getloadavg()}")
        rows = [
            _run(["--scale-worker", form, *config], args.threads) for form in ("new", "previous")
        ]
        print(
            f"{'form':>16} {'structure':>15} {'wall s':>7} {'cpu s':>7} {'peak GB':>8} "
            f"{'constrained':>11} {'cols':>5} {'resid':>8}"
        )
        for row in rows:
            print(
                f"{row['form']:>16} {row['structure']:>15} {row['wall_s']:>7.1f} "
                f"{row['cpu_s']:>7.1f} {row['peak_gb']:>8.2f} {row['n_constrained']:>11} "
                f"{row.get('coupling_columns', 0):>5} {row.get('residual', 0.0):>8.1e}"
            )
        new = rows[0]
        ok = new["wall_s"] < TARGET_SECONDS and new["peak_gb"] < TARGET_GB
        print(
            f"target N=2000: {new['wall_s']:.1f} s wall (< {TARGET_SECONDS:.0f}), "
            f"{new['peak_gb']:.2f} GB (< {TARGET_GB:.0f}): {'PASS' if ok else 'FAIL'}; "
            f"load average at end {os.getloadavg()}"
        )


if __name__ == "__main__":
    main()
