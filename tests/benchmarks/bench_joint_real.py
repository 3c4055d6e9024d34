"""Benchmark: a joint fit of two pseudo-sessions cut from one real recording against separate fits.

Run: ``python tests/benchmarks/bench_joint_real.py [--datasets hd fly] [--seeds 0 1 2]
[--max-epochs 500] [--splits "EPG|EPG" "EPG|PEN1"] [--raw-heading]`` with ``NWB_LRCONN_DATA``
pointing at the shared data folder.

Data, read with the package's readers and the settings of the behaviour benchmark
(``behaviour_head_direction.py``, setting ``bin100ms_win1s``) and of the real-data acceptance
tests (``tests/model/test_acceptance_real.py``):

- ``hd``: the Peyrache et al. 2015 ADn session ``Mouse12-120806`` (19 head-direction cells,
  100-ms bins, 1-s windows of the moving periods), head direction from
  ``processing/behavior/CompassDirection/head_direction``; default rank-2 fit (Poisson,
  α = 0.1);
- ``fly``: the seven Turner-Evans et al. 2017 ellipsoid-body dark trials (one fly), 1-s windows
  of z-scored traces (11 or 12 volumes each, masked), heading from
  ``processing/behavior/CompassDirection/heading``, turned per trial by the trial's mean offset
  to the EPG bump (in darkness that offset is arbitrary and differs between trials, while one
  decoder spans every trial; ``--raw-heading`` keeps the heading as recorded); rank 2,
  τ = 0.5 s, batch size 32 (calcium observation). Two splits: the 16 EPG wedges into random
  halves (``EPG|EPG``), and by cell type, the 16 EPG wedges against the 16 PEN1 wedges of the
  same files (``EPG|PEN1``).

Pseudo-sessions, per seed: the units are split at random into two disjoint halves and the
windows into two disjoint halves (cell-type split: the units by type, the windows at random);
session A is the first units on the first windows, session B the others on the others.
:class:`~nwb_lrconn.model.joint.JointLowRankRNN` fits one network to both (each session its
own held-out windows, the separate fits on the same training windows).

Printed per session: held-out log-likelihood per value, joint and separate, their paired
difference ± standard error (``compare_to_separate``; ``worse`` when below −2 s.e.); held-out
bits/spike (spikes) or R² (calcium) of both; and the held-out circular R² of head direction /
heading decoded from the joint latents, the separate fit's latents and the fair baselines (PCA
of z-scored activity and, for spikes, of square-root counts, on single bins and on bins
smoothed over the time constant), each by the same affine map fitted on the session's training
windows (:func:`~nwb_lrconn.inference.behaviour.relate_to_behaviour`, gauge-invariant), with
the 95% bootstrap interval (held-out windows) of the joint latent's score minus the best fair
single-bin baseline's. Per seed: wall time of the joint fit (its separate fits included; the
gauge match between the separate fits, ``match_gauge``, timed apart) against the sum of
the separate fits. Then means over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from nwb_lrconn.config import ReadConfig, RunConfig
from nwb_lrconn.data import Recording
from nwb_lrconn.inference.behaviour import PCA_SQRT, PCA_ZSCORE, relate_to_behaviour
from nwb_lrconn.io import read_ophys, read_timeseries
from nwb_lrconn.model import joint as joint_module
from nwb_lrconn.model.estimator import LowRankRNNEstimator, metrics_from_expected
from nwb_lrconn.model.joint import JointLowRankRNN
from nwb_lrconn.model.networks import default_data_dir
from nwb_lrconn.pipeline import read_recording

HD_FILE = "peyrache2015-adn-hd-19cells/Mouse12-120806_ADn19_wake_DERIVED.nwb"
HD_SERIES = "processing/behavior/CompassDirection/head_direction"
FLY_DIR = "turner-evans2017-fly-central-complex/derived_nwb"
FLY_SERIES = "processing/ophys/Fluorescence/{}"
FLY_HEADING = "processing/behavior/CompassDirection/heading"


class _Timed(LowRankRNNEstimator):
    """The estimator, each fit's wall time appended to ``_Timed.seconds`` (clones included)."""

    seconds: list[float] = []

    def fit(self, recording):
        start = time.perf_counter()
        out = super().fit(recording)
        _Timed.seconds.append(time.perf_counter() - start)
        return out


def _timed_gauge_match(seconds: list[float]):
    """``joint.match_gauge`` with its wall time appended to ``seconds`` (restore afterwards)."""
    original = joint_module.match_gauge

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return out

    return original, timed


# ---------------------------------------------------------------------- data
def read_hd() -> tuple[dict[str, Recording], np.ndarray, dict]:
    """The ADn recording (one entry, all 19 cells), head direction on its bins, fit settings."""
    path = default_data_dir() / HD_FILE
    config = RunConfig(read=ReadConfig(bin_width=0.1, epochs="epochs", window_length=1.0))
    rec = read_recording(config, str(path))
    head = read_timeseries(path, HD_SERIES, rec, reduce="circmean")[..., 0]
    return {"all": rec}, head, {"rank": 2}


def read_fly(aligned: bool = True) -> tuple[dict[str, Recording], np.ndarray, dict]:
    """EPG and PEN1 of the EB dark trials (1-s windows), heading, fit settings.

    ``aligned``: each trial's heading is turned by that trial's mean offset to the EPG bump
    (population-vector phase of the 16 wedges); in darkness the bump's offset to the heading
    is arbitrary and differs between trials, and one decoder spans all trials.
    """
    files = sorted((default_data_dir() / FLY_DIR).glob("EB_*Dark*_DERIVED.nwb"))
    if not files:
        raise SystemExit(f"no EB dark-trial files in {default_data_dir() / FLY_DIR}")
    parts: dict[str, list[Recording]] = {"EPG": [], "PEN1": []}
    headings = []
    for path in files:
        for kind, chunks in parts.items():
            series = FLY_SERIES.format(kind)
            chunks.append(
                read_ophys(path, series_path=series, window_length=1.0, normalize="zscore")
            )
        epg = parts["EPG"][-1]
        heading = read_timeseries(path, FLY_HEADING, epg, reduce="circmean")[..., 0]
        if aligned:
            wedges = np.exp(2j * np.pi * np.arange(epg.n_units) / epg.n_units)
            phase = np.angle(epg.data @ wedges)
            heading = heading + np.angle(np.mean(np.exp(1j * (phase - heading))[epg.mask]))
        headings.append(np.where(epg.mask, heading, np.nan))
    recordings = {kind: _concatenate(chunks) for kind, chunks in parts.items()}
    n_time = recordings["EPG"].n_time
    heading = np.concatenate(
        [np.pad(h, ((0, 0), (0, n_time - h.shape[1])), constant_values=np.nan) for h in headings]
    )
    return recordings, heading, {"rank": 2, "tau": 0.5, "batch_size": 32}


def _concatenate(parts: list[Recording]) -> Recording:
    """The windows of several trials of the same units as one recording (padded, masked)."""
    n_time = max(p.n_time for p in parts)

    def pad(x: np.ndarray) -> np.ndarray:
        return np.pad(x, [(0, 0), (0, n_time - x.shape[1])] + [(0, 0)] * (x.ndim - 2))

    return Recording(
        data=np.concatenate([pad(p.data) for p in parts]),
        mask=np.concatenate([pad(p.mask) for p in parts]),
        bin_width=parts[0].bin_width,
        kind=parts[0].kind,
        unit_ids=parts[0].unit_ids,
        unit_rows=parts[0].unit_rows,
        trial_start_times=np.concatenate([p.trial_start_times for p in parts]),
    )


def pseudo_sessions(recordings: dict, behaviour: np.ndarray, split: str, seed: int):
    """Two sessions (Recording, behaviour) with disjoint units and disjoint windows."""
    rng = np.random.default_rng(seed)
    first = next(iter(recordings.values()))
    windows = rng.permutation(first.n_trials)
    halves = np.sort(windows[: first.n_trials // 2]), np.sort(windows[first.n_trials // 2 :])
    if split == "EPG|PEN1":
        sources = [recordings["EPG"], recordings["PEN1"]]
        units = [np.arange(rec.n_units) for rec in sources]
    else:
        rec = recordings["EPG"] if "EPG" in recordings else recordings["all"]
        order = rng.permutation(rec.n_units)
        cut = (rec.n_units + 1) // 2
        sources = [rec, rec]
        units = [np.sort(order[:cut]), np.sort(order[cut:])]
    return [
        (src.select_units(u).select_trials(w), behaviour[w])
        for src, u, w in zip(sources, units, halves)
    ]


# ---------------------------------------------------------------------- one seed
def _separate_fit(joint: JointLowRankRNN, s: int, rec: Recording):
    """The separate fit of session ``s`` as a LowRankFit over all the session's windows (the
    held-out windows' latents inferred with its network fixed), and its held-out metrics."""
    est, view = joint.separate_[s], joint.sessions_[s]
    test = rec.select_trials(view.test_trials)
    latents = np.zeros((rec.n_trials, rec.n_time, est.model_.rank))
    latents[view.train_trials] = est.latents_
    latents[view.test_trials] = est.transform(test)
    metrics, _ = metrics_from_expected(
        test.data, est.predict(test), test.mask, est.observation_, noise_std=est.noise_std_
    )
    fit = dataclasses.replace(
        est.fit_,
        latents=latents,
        latent_mask=rec.mask.copy(),
        trial_start_times=rec.trial_start_times.copy(),
        train_trials=view.train_trials,
        test_trials=view.test_trials,
    )
    return fit, metrics


def run_seed(recordings, behaviour, split, seed, settings, max_epochs) -> dict:
    sessions = pseudo_sessions(recordings, behaviour, split, seed)
    recs = [rec for rec, _ in sessions]
    template = _Timed(**settings, max_epochs=max_epochs, random_state=seed)
    _Timed.seconds, matching = [], []
    original, joint_module.match_gauge = _timed_gauge_match(matching)
    start = time.perf_counter()
    try:
        joint = JointLowRankRNN(template).fit(recs)
    finally:
        joint_module.match_gauge = original
    total = time.perf_counter() - start
    separate_time = float(sum(_Timed.seconds))
    compared = joint.compare_to_separate(recs)
    quality = "bits_per_spike" if recs[0].kind == "spikes" else "r2"
    rows = []
    for s, ((rec, values), cmp) in enumerate(zip(sessions, compared)):
        sep_fit, sep_metrics = _separate_fit(joint, s, rec)
        joint_fit = joint.session_fit(s, rec)
        tau_bins = max(1, round(1.0 / joint.alpha_))
        scores = {}
        for smooth in sorted({1, min(tau_bins, rec.n_time)}):
            reports = {
                name: relate_to_behaviour(
                    fit, rec, values, variable="angle", kind="angle", smooth_bins=smooth
                )
                for name, fit in (("joint", joint_fit), ("separate", sep_fit))
            }
            if smooth == 1:
                scores["joint"] = reports["joint"].scores["latent"]
                scores["separate"] = reports["separate"].scores["latent"]
                scores["joint_interval"] = reports["joint"].interval
            suffix = "" if smooth == 1 else f" ({smooth}-bin)"
            for name, value in reports["joint"].scores.items():
                base = name.split(",")[0]
                if base in (PCA_ZSCORE, PCA_SQRT):
                    scores[_short(base) + suffix] = value
        single = [v for k, v in scores.items() if k.startswith("PCA") and "bin)" not in k]
        smoothed = [v for k, v in scores.items() if k.startswith("PCA") and "bin)" in k]
        rows.append(
            {
                "session": "AB"[s],
                "units": rec.n_units,
                "windows": rec.n_trials,
                "test": len(joint.sessions_[s].test_trials),
                "cmp": cmp,
                "quality": (joint.sessions_[s].metrics[quality], sep_metrics[quality]),
                "scores": scores,
                "best_fair": (max(single), max(smoothed, default=np.nan)),
            }
        )
    return {
        "rows": rows,
        "joint_time": total,
        "separate_time": separate_time,
        "match_time": float(sum(matching)),
    }


def _short(name: str) -> str:
    return {PCA_ZSCORE: "PCA-z", PCA_SQRT: "PCA-sqrt"}[name]


# ---------------------------------------------------------------------- printing
def print_seed(dataset, split, seed, result, quality_name) -> None:
    for row in result["rows"]:
        cmp = row["cmp"]
        scores = "  ".join(
            f"{k} {v:6.3f}" for k, v in row["scores"].items() if k != "joint_interval"
        )
        low, high = row["scores"]["joint_interval"]
        print(
            f"{dataset:4s} {split:9s} seed {seed} {row['session']} | {row['units']:2d} units, "
            f"{row['windows']} windows ({row['test']} held out) | log-lik/value joint "
            f"{cmp['joint']:.5f} sep {cmp['separate']:.5f} diff {cmp['difference']:+.5f} "
            f"± {cmp['stderr']:.5f}{' WORSE' if cmp['worse'] else ''} | {quality_name} joint "
            f"{row['quality'][0]:.3f} sep {row['quality'][1]:.3f} | circ R²: {scores} | "
            f"joint − best fair 1-bin [{low:+.3f}, {high:+.3f}]",
            flush=True,
        )
    ratio = result["joint_time"] / result["separate_time"]
    print(
        f"{dataset:4s} {split:9s} seed {seed} time: joint {result['joint_time']:.0f} s (of which "
        f"the separate fits {result['separate_time']:.0f} s and the gauge match "
        f"{result['match_time']:.0f} s), sum of separate fits {result['separate_time']:.0f} s, "
        f"joint / separate {ratio:.2f}",
        flush=True,
    )


def print_summary(results) -> None:
    print("\nmean over seeds, per session (log-lik per value in nats; circular R² held out):")
    for (dataset, split, quality_name), seeds in results.items():
        for s in range(2):
            rows = [r["rows"][s] for r in seeds]
            diff = np.mean([r["cmp"]["difference"] for r in rows])
            se = np.mean([r["cmp"]["stderr"] for r in rows])
            worse = sum(r["cmp"]["worse"] for r in rows)
            ok = sum(r["cmp"]["difference"] >= -2 * r["cmp"]["stderr"] for r in rows)
            keys = [k for k in rows[0]["scores"] if k != "joint_interval"]
            scores = "  ".join(f"{k} {np.mean([r['scores'][k] for r in rows]):6.3f}" for k in keys)
            beats = [sum(r["scores"]["joint"] >= r["best_fair"][i] for r in rows) for i in (0, 1)]
            print(
                f"{dataset:4s} {split:9s} {'AB'[s]}, {len(rows)} seeds | diff {diff:+.5f} "
                f"(mean s.e. {se:.5f}); joint ≥ separate − 2 s.e. in {ok}/{len(rows)}, flagged "
                f"worse {worse} | {quality_name} joint "
                f"{np.mean([r['quality'][0] for r in rows]):.3f} sep "
                f"{np.mean([r['quality'][1] for r in rows]):.3f} | {scores} | joint ≥ best fair "
                f"1-bin in {beats[0]}/{len(rows)}, τ-smoothed in {beats[1]}/{len(rows)}"
            )
        joint_t = sum(r["joint_time"] for r in seeds)
        sep_t = sum(r["separate_time"] for r in seeds)
        match_t = sum(r["match_time"] for r in seeds)
        print(
            f"{dataset:4s} {split:9s} time over {len(seeds)} seeds: joint {joint_t:.0f} s (gauge "
            f"match {match_t:.0f} s, joint training and the rest "
            f"{joint_t - sep_t - match_t:.0f} s), sum of separate fits {sep_t:.0f} s, ratio "
            f"{joint_t / sep_t:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=["hd", "fly"], default=["hd", "fly"])
    parser.add_argument("--splits", nargs="+", default=None, help="fly: EPG|EPG and/or EPG|PEN1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=500)
    parser.add_argument("--raw-heading", action="store_true", help="fly: no per-trial offset")
    args = parser.parse_args()
    torch.set_num_threads(1)  # timings comparable on a shared machine
    results = {}
    for dataset in args.datasets:
        if dataset == "hd":
            recordings, behaviour, settings = read_hd()
        else:
            recordings, behaviour, settings = read_fly(aligned=not args.raw_heading)
        splits = ["units|units"] if dataset == "hd" else (args.splits or ["EPG|EPG", "EPG|PEN1"])
        quality_name = "bits/spike" if dataset == "hd" else "R²"
        for split in splits:
            key = (dataset, split, quality_name)
            for seed in args.seeds:
                result = run_seed(recordings, behaviour, split, seed, settings, args.max_epochs)
                results.setdefault(key, []).append(result)
                print_seed(dataset, split, seed, result, quality_name)
    print_summary(results)


if __name__ == "__main__":
    main()
