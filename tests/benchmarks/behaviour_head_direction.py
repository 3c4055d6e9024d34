"""Benchmark: does the fitted latent follow head direction better than fair baselines?

Run: ``python tests/benchmarks/behaviour_head_direction.py [--seeds 0 1 2] [--setting NAME]``
with ``NWB_LRCONN_DATA`` pointing at the shared data folder (the Peyrache et al. 2015 ADn
session ``Mouse12-120806``, 19 head-direction cells, moving periods of the wake epoch).

For each setting and seed the default pipeline fits a rank-2 network (stage 1 only: the
posterior and the distribution do not change the latents) through ``run_file``, then the report
code re-reads the recording and the head direction on the same bins and compares, on the
held-out windows, the latent with PCA of z-scored activity and of square-root counts (fair
baselines) and of raw counts (reference), each 2-D and decoded by the same affine map to
(cos θ, sin θ) fitted on the training windows. The baselines are computed on single bins and
on bins smoothed over the fit's time constant (does the latent add anything beyond smoothing?).

Printed per fit: held-out bits/spike, circular R² (1 = exact, 0 = always the mean direction)
and median |error| of each feature set, and the latent's difference to the best fair baseline
with its 95% bootstrap interval over held-out windows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from nwb_lrconn.config import FitConfig, ReadConfig, RunConfig
from nwb_lrconn.extension import read_results
from nwb_lrconn.inference.behaviour import relate_to_behaviour
from nwb_lrconn.io import read_timeseries
from nwb_lrconn.model.networks import default_data_dir
from nwb_lrconn.pipeline import run_file
from nwb_lrconn.report import load_recording

PATH = default_data_dir() / "peyrache2015-adn-hd-19cells" / "Mouse12-120806_ADn19_wake_DERIVED.nwb"
SERIES = "processing/behavior/CompassDirection/head_direction"
# name: (bin width s, window s, time constant τ s or None for the default alpha 0.1)
SETTINGS = {
    "bin100ms_win1s": (0.1, 1.0, None),
    "bin100ms_win1s_tau0.3s": (0.1, 1.0, 0.3),
    "bin50ms_win2s": (0.05, 2.0, None),
}


def fit_once(setting: str, seed: int, folder: Path, max_epochs: int) -> Path:
    bin_width, window, tau = SETTINGS[setting]
    config = RunConfig(
        read=ReadConfig(bin_width=bin_width, epochs="epochs", window_length=window),
        fit=FitConfig(rank=2, tau=tau, max_epochs=max_epochs),
        seed=seed,
        name=f"{setting.replace('.', 'p')}_seed{seed}",
    ).with_overrides(**{"posterior.enabled": False, "distribution.enabled": False})
    return run_file(PATH, folder / f"{config.name}.nwb", config, overwrite=True, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--setting", choices=sorted(SETTINGS), nargs="+", default=list(SETTINGS))
    parser.add_argument("--max-epochs", type=int, default=500)
    args = parser.parse_args()
    if not PATH.is_file():
        raise SystemExit(f"data not found at {PATH}; set NWB_LRCONN_DATA.")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.setting:
            for seed in args.seeds:
                start = time.perf_counter()
                output = fit_once(setting, seed, Path(tmp), args.max_epochs)
                fitted = time.perf_counter() - start
                results = read_results(output)
                recording, source = load_recording(results, output)
                head = read_timeseries(source, SERIES, recording, reduce="circmean")
                fit = results.fit
                tau_bins = max(1, round(1.0 / fit.alpha))  # τ in bins
                for smooth in sorted({1, min(tau_bins, recording.n_time)}):
                    report = relate_to_behaviour(
                        fit,
                        recording,
                        head,
                        variable="head direction",
                        kind="angle",
                        smooth_bins=smooth,
                    )
                    rows.append((setting, seed, smooth, fit, report, fitted))
                    print_row(*rows[-1])
    print()
    print_summary(rows)


def _short(name: str) -> str:
    for long, short in (
        ("PCA of z-scored activity", "PCA-z"),
        ("PCA of square-root counts", "PCA-sqrt"),
        ("PCA of raw counts (reference)", "PCA-raw"),
    ):
        if name.startswith(long):
            return short
    return name


def print_row(setting, seed, smooth, fit, report, fitted) -> None:
    parts = "  ".join(
        f"{_short(n)} {s:6.3f} ({report.errors[n]:4.1f}°)" for n, s in report.scores.items()
    )
    low, high = report.interval
    print(
        f"{setting:24s} seed {seed} baselines {smooth:2d}-bin | {fit.n_units} units, "
        f"{len(fit.test_trials)} held-out windows, bits/spike "
        f"{fit.metrics.get('bits_per_spike', np.nan):.3f}, fit {fitted:.0f} s | {parts} | "
        f"latent − {_short(report.best_baseline)} {report.difference:+.3f} "
        f"[{low:+.3f}, {high:+.3f}]",
        flush=True,
    )


def print_summary(rows) -> None:
    print("mean over seeds (circular R²; median |error| in degrees):")
    keys = sorted({(r[0], r[2]) for r in rows})
    for setting, smooth in keys:
        chosen = [r for r in rows if (r[0], r[2]) == (setting, smooth)]
        names = list(chosen[0][4].scores)
        cells = "  ".join(
            f"{_short(n)} {np.mean([r[4].scores[n] for r in chosen]):6.3f} "
            f"({np.mean([r[4].errors[n] for r in chosen]):4.1f}°)"
            for n in names
        )
        clear = sum(r[4].interval[0] > 0 for r in chosen)
        print(
            f"{setting:24s} baselines {smooth:2d}-bin, {len(chosen)} seeds: {cells}; latent "
            f"clearly better than the best fair baseline in {clear} of {len(chosen)}"
        )


if __name__ == "__main__":
    main()
