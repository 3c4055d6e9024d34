"""How well the fitted latents follow a behavioural variable, against fair baselines.

The latents of a low-rank RNN are defined up to an invertible linear map (the gauge: rotations,
reflections and scalings of the latent plane), so they are never compared with behaviour
directly. Instead a decoder is fitted on the training trials and scored on the held-out trials:

- an **angle** (head direction, heading, phase) is decoded by the least-squares affine map from
  the features to (cos θ, sin θ); the decoded angle is scored by its circular R² (see
  :func:`circular_r2`) and its median absolute error;
- any other variable is decoded by the least-squares affine map to its values and scored by
  the held-out R².

An affine map absorbs every invertible linear transform of the features, so the scores are
exactly gauge-invariant. The same decoder is fitted to baselines of the same dimension computed
from the same bins: the leading principal components of the z-scored activity and (for spike
counts) of the square-root counts. PCA of the raw counts is reported for reference only: one
high-rate unit dominates it, which makes it a weak baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import check_array, check_choice, check_positive_int, make_rng
from ..data import LowRankFit, Recording

__all__ = [
    "BehaviourReport",
    "relate_to_behaviour",
    "circular_r2",
    "decode_scores",
    "resolve_kind",
    "smooth_within_trials",
]

KINDS = ("auto", "angle", "linear")
ANGLE_UNITS = {"radian": 1.0, "radians": 1.0, "rad": 1.0}
DEGREE_UNITS = {"degree", "degrees", "deg"}
LATENT = "latent"
PCA_ZSCORE = "PCA of z-scored activity"
PCA_SQRT = "PCA of square-root counts"
PCA_RAW = "PCA of raw counts (reference)"


@dataclass(frozen=True)
class BehaviourReport:
    """The fitted latents against one behavioural variable, on held-out trials.

    Attributes
    ----------
    variable : str
        Name of the variable (e.g. the TimeSeries path).
    kind : {"angle", "linear"}
        How it was decoded and scored (see the module docstring).
    measure : str
        What ``scores`` holds: "circular R²" (angle) or "R²" (linear); 1 is perfect, 0 is no
        better than predicting the mean.
    scores : dict of str to float
        Held-out score of the latent (key ``"latent"``) and of every baseline.
    errors : dict of str to float
        Held-out error, same keys: median absolute angular error in degrees (angle), or root
        mean squared error in the variable's units (linear).
    fair_baselines : tuple of str
        The baselines the latent is judged against (the raw-count PCA is not one of them).
    best_baseline : str
        The fair baseline with the highest score.
    difference : float
        ``scores["latent"] - scores[best_baseline]``.
    interval : tuple of float
        95% bootstrap interval of ``difference`` over resampled held-out trials (decoders
        fixed).
    n_components : int
        Dimension of the latent and of each baseline (the fit's rank).
    n_train_bins, n_test_bins : int
        Bins used to fit the decoders and to score them.
    n_test_trials : int
        Held-out trials scored.
    values : ndarray of shape (n_trials, n_time, n_channels)
        The variable on the recording's bins (radians for an angle); NaN where absent.
    decoded : ndarray of shape (n_trials, n_time, n_channels)
        The latent decoder's prediction on the held-out trials; NaN elsewhere.
    verdict : str
        The comparison in one sentence.
    """

    variable: str
    kind: str
    measure: str
    scores: dict[str, float]
    errors: dict[str, float]
    fair_baselines: tuple[str, ...]
    best_baseline: str
    difference: float
    interval: tuple[float, float]
    n_components: int
    n_train_bins: int
    n_test_bins: int
    n_test_trials: int
    values: np.ndarray = field(repr=False)
    decoded: np.ndarray = field(repr=False)
    verdict: str = ""

    def summary_lines(self) -> list[str]:
        """Plain-text lines: one per score, then the verdict."""
        unit = "median |error|" if self.kind == "angle" else "RMSE"
        suffix = "°" if self.kind == "angle" else ""
        lines = [
            f"{self.variable} ({self.kind}; held-out {self.measure}, {self.n_components}-D "
            f"features, {self.n_test_trials} held-out trials, {self.n_test_bins} bins):"
        ]
        for name, score in self.scores.items():
            lines.append(f"  {name:<34s} {score:6.3f}   ({unit} {self.errors[name]:.3g}{suffix})")
        lines.append(f"  {self.verdict}")
        return lines


def circular_r2(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Circular R² of predicted angles (radians): 1 − Σ(1 − cos(θ̂ − θ)) / Σ(1 − cos(θ − θ̄)).

    θ̄ is the circular mean of ``truth``. 1 when ``predicted == truth``; 0 for always
    predicting the mean direction; negative when worse than that. The circular analogue of the
    coefficient of determination (1 − cos is half the squared chord between the two points on
    the unit circle).
    """
    predicted, truth = np.asarray(predicted, dtype=float), np.asarray(truth, dtype=float)
    mean = np.angle(np.mean(np.exp(1j * truth)))
    total = np.sum(1.0 - np.cos(truth - mean))
    if total <= 0:
        return float("nan")
    return float(1.0 - np.sum(1.0 - np.cos(predicted - truth)) / total)


def _affine_decoder(train_x: np.ndarray, train_y: np.ndarray) -> np.ndarray:
    design = np.hstack([train_x, np.ones((train_x.shape[0], 1))])
    weights, *_ = np.linalg.lstsq(design, train_y, rcond=None)
    return weights


def _predict(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    return x @ weights[:-1] + weights[-1]


def _angle_targets(theta: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(theta), np.sin(theta)], axis=-1)


def _score(kind: str, truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(score, error) of a prediction; both of shape (n, n_channels) (radians for an angle)."""
    if kind == "angle":
        truth, predicted = truth[:, 0], predicted[:, 0]
        error = np.abs(np.angle(np.exp(1j * (predicted - truth))))
        return circular_r2(predicted, truth), float(np.degrees(np.median(error)))
    residual = np.sum((truth - predicted) ** 2)
    total = np.sum((truth - truth.mean(axis=0)) ** 2)
    score = 1.0 - residual / total if total > 0 else float("nan")
    return float(score), float(np.sqrt(residual / truth.size))


def decode_scores(
    features: np.ndarray,
    values: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    kind: str,
) -> tuple[float, float, np.ndarray]:
    """Fit the affine decoder on the ``train`` rows and score it on the ``test`` rows.

    Parameters
    ----------
    features : ndarray of shape (n_bins, n_features)
        Latents or baseline components, one row per bin.
    values : ndarray of shape (n_bins, n_channels)
        The variable per bin (radians, one channel, for an angle).
    train, test : ndarray of bool, shape (n_bins,)
        Rows used to fit and to score.
    kind : {"angle", "linear"}
        See the module docstring.

    Returns
    -------
    score : float
        Held-out circular R² (angle) or R² (linear).
    error : float
        Median absolute error in degrees (angle) or RMSE (linear).
    predicted : ndarray of shape (n_test, n_channels)
        The prediction on the test rows (radians for an angle).
    """
    check_choice(kind, "kind", ("angle", "linear"))
    if kind == "angle":
        weights = _affine_decoder(features[train], _angle_targets(values[train, 0]))
        xy = _predict(weights, features[test])
        predicted = np.arctan2(xy[:, 1], xy[:, 0])[:, None]
    else:
        weights = _affine_decoder(features[train], values[train])
        predicted = _predict(weights, features[test])
    score, error = _score(kind, values[test], predicted)
    return score, error, predicted


def _pca_features(
    activity: np.ndarray, train: np.ndarray, n_components: int, *, standardize: bool
) -> np.ndarray:
    """Leading principal components of ``activity`` (bins × units), fitted on ``train`` rows."""
    mean = activity[train].mean(axis=0)
    centred = activity - mean
    if standardize:
        std = activity[train].std(axis=0)
        centred = centred / np.where(std > 0, std, 1.0)
    _, _, vt = np.linalg.svd(centred[train], full_matrices=False)
    return centred @ vt[:n_components].T


def smooth_within_trials(data: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """Centred boxcar of ``width`` bins along time, inside each trial, over valid bins only.

    Parameters
    ----------
    data : ndarray of shape (n_trials, n_time, n_units)
    mask : ndarray of shape (n_trials, n_time), bool
    width : int
        Bins; 1 returns ``data`` unchanged.

    Returns
    -------
    ndarray of shape (n_trials, n_time, n_units)
        The mean of the valid bins within ``width // 2`` bins on either side (0 on invalid
        bins).
    """
    if width <= 1:
        return data
    valid = mask[..., None].astype(float)
    kernel = np.ones(width)

    def along_time(x: np.ndarray) -> np.ndarray:
        return np.apply_along_axis(np.convolve, 1, x, kernel, mode="same")

    total = along_time(data * valid)
    count = along_time(valid)
    return np.where(count > 0, total / np.maximum(count, 1e-12), 0.0) * valid


def _baselines(
    recording: Recording, bins: np.ndarray, train: np.ndarray, n: int, smooth_bins: int
) -> tuple[dict[str, np.ndarray], set[str]]:
    """Baseline features by name, and the names that are for reference only (not fair)."""
    activity = smooth_within_trials(recording.data, recording.mask, smooth_bins)[bins]
    out = {PCA_ZSCORE: _pca_features(activity, train, n, standardize=True)}
    if recording.kind == "spikes":
        out[PCA_SQRT] = _pca_features(np.sqrt(activity), train, n, standardize=False)
        reference = PCA_RAW
    else:
        reference = "PCA of raw activity (reference)"
    out[reference] = _pca_features(activity, train, n, standardize=False)
    suffix = f", {smooth_bins}-bin smoothed" if smooth_bins > 1 else ""
    return {f"{name}{suffix}": x for name, x in out.items()}, {f"{reference}{suffix}"}


def resolve_kind(kind: str, unit: str) -> tuple[str, float]:
    """The decoding kind for ``kind="auto"`` and the factor that turns values into radians.

    ``"auto"`` means angle when ``unit`` names radians or degrees, linear otherwise.
    """
    check_choice(kind, "kind", KINDS)
    unit = (unit or "").strip().lower()
    to_radians = np.pi / 180.0 if unit in DEGREE_UNITS else 1.0
    if kind == "auto":
        kind = "angle" if unit in ANGLE_UNITS or unit in DEGREE_UNITS else "linear"
    return kind, to_radians


def relate_to_behaviour(
    fit: LowRankFit,
    recording: Recording,
    behaviour: np.ndarray,
    *,
    variable: str = "behaviour",
    kind: str = "auto",
    unit: str = "",
    train_trials: np.ndarray | None = None,
    test_trials: np.ndarray | None = None,
    smooth_bins: int = 1,
    n_bootstrap: int = 500,
    random_state=0,
) -> BehaviourReport:
    """Relate the fitted latents to a behavioural variable on held-out trials.

    Parameters
    ----------
    fit : LowRankFit
        The fit; its latents (all ``fit.rank`` dimensions) are the features.
    recording : Recording
        The recording it was fitted to (same trials, bins and units): the baselines are
        computed from its activity on the same bins.
    behaviour : ndarray of shape (n_trials, n_time) or (n_trials, n_time, n_channels)
        The variable on the recording's bins, e.g. from
        :func:`nwb_lrconn.io.read_timeseries`; NaN bins are left out. An angle has one
        channel.
    variable : str, default: "behaviour"
        Its name in the report.
    kind : {"auto", "angle", "linear"}, default: "auto"
        ``"auto"``: angle when ``unit`` is radians or degrees, linear otherwise.
    unit : str, default: ""
        Unit of ``behaviour`` (e.g. the TimeSeries' ``unit``); degrees are converted.
    train_trials, test_trials : array of int, optional
        Trials used to fit and to score the decoders; default the fit's split.
    smooth_bins : int, default: 1
        Width of a centred boxcar (bins, within trials) applied to the activity before the
        baseline PCA; 1 compares with single bins. A width of about the fit's time constant
        asks whether the latent adds anything beyond temporal smoothing.
    n_bootstrap : int, default: 500
        Resamples of the held-out trials for the interval of the difference.
    random_state : int, numpy Generator or None, default: 0
        Randomness of the bootstrap.

    Returns
    -------
    BehaviourReport
        Scores of the latent and of the baselines, the best fair baseline and the verdict.

    Raises
    ------
    ValueError
        When the recording or the behaviour does not match the fit, an angle has several
        channels, or too few bins hold the variable.
    """
    kind, to_radians = resolve_kind(kind, unit)
    n_bootstrap = check_positive_int(n_bootstrap, "n_bootstrap")
    smooth_bins = check_positive_int(smooth_bins, "smooth_bins")
    n_trials, n_time = fit.latents.shape[:2]
    if recording.data.shape[:2] != (n_trials, n_time) or recording.n_units != fit.n_units:
        raise ValueError(
            f"recording has shape {recording.data.shape} (trials, bins, units) but the fit has "
            f"{n_trials} trials of {n_time} bins and {fit.n_units} units; pass the recording "
            "the fit was made from."
        )
    values = np.asarray(behaviour, dtype=float)
    if values.ndim == 2:
        values = values[..., None]
    values = check_array(values, "behaviour", shape=(n_trials, n_time, None), dtype=np.float64)
    if kind == "angle":
        if values.shape[2] != 1:
            raise ValueError(
                f"an angle must have one channel; {variable!r} has {values.shape[2]}. Pass "
                "kind='linear' or one channel."
            )
        values = np.angle(np.exp(1j * values * to_radians))
    train_trials = np.asarray(fit.train_trials if train_trials is None else train_trials, int)
    test_trials = np.asarray(fit.test_trials if test_trials is None else test_trials, int)
    usable = fit.latent_mask & recording.mask & np.isfinite(values).all(axis=2)
    is_train = np.zeros(n_trials, bool)
    is_train[train_trials] = True
    is_test = np.zeros(n_trials, bool)
    is_test[test_trials] = True
    bins = usable & (is_train | is_test)[:, None]
    train = is_train[np.nonzero(bins)[0]]
    test = is_test[np.nonzero(bins)[0]] & ~train
    n_components = fit.rank
    if train.sum() <= n_components + 2 or test.sum() < 2:
        raise ValueError(
            f"{variable!r} is present on {int(train.sum())} training and {int(test.sum())} "
            "held-out bins; at least rank + 3 training and 2 held-out bins are needed. Check "
            "that the series covers the fitted trials."
        )
    baselines, references = _baselines(recording, bins, train, n_components, smooth_bins)
    features = {LATENT: fit.latents[bins], **baselines}
    flat = values[bins]
    scores, errors, predictions = {}, {}, {}
    for name, x in features.items():
        scores[name], errors[name], predictions[name] = decode_scores(
            x, flat, train, test, kind=kind
        )
    fair = tuple(n for n in baselines if n not in references)
    best = max(fair, key=lambda n: scores[n])
    difference = scores[LATENT] - scores[best]
    interval = _bootstrap_difference(
        kind,
        flat[test],
        predictions[LATENT],
        predictions[best],
        np.nonzero(bins)[0][test],
        n_bootstrap,
        random_state,
    )
    decoded = np.full_like(values, np.nan)
    test_bins = np.zeros_like(bins)
    test_bins[bins] = test
    decoded[test_bins] = predictions[LATENT]
    report: dict[str, Any] = dict(
        variable=variable,
        kind=kind,
        measure="circular R²" if kind == "angle" else "R²",
        scores=scores,
        errors=errors,
        fair_baselines=fair,
        best_baseline=best,
        difference=float(difference),
        interval=interval,
        n_components=n_components,
        n_train_bins=int(train.sum()),
        n_test_bins=int(test.sum()),
        n_test_trials=int(np.unique(np.nonzero(test_bins)[0]).size),
        values=values,
        decoded=decoded,
    )
    return BehaviourReport(**report, verdict=_verdict(report))


def _bootstrap_difference(
    kind: str,
    truth: np.ndarray,
    latent: np.ndarray,
    baseline: np.ndarray,
    trial_of_bin: np.ndarray,
    n_bootstrap: int,
    random_state,
) -> tuple[float, float]:
    """95% interval of score(latent) − score(baseline) over held-out trials drawn with
    replacement (whole trials, since bins within a trial are correlated).

    Both scores are ratios of sums over bins, so each resample is computed from per-trial sums
    weighted by how often the trial was drawn.
    """
    rng = make_rng(random_state)
    trials, inverse = np.unique(trial_of_bin, return_inverse=True)

    def per_trial(values: np.ndarray) -> np.ndarray:
        return np.stack(
            [np.bincount(inverse, weights=v, minlength=trials.size) for v in values.T], axis=1
        )

    n = np.bincount(inverse, minlength=trials.size).astype(float)
    if kind == "angle":
        theta = truth[:, 0]
        loss = per_trial(
            np.stack(
                [1 - np.cos(latent[:, 0] - theta), 1 - np.cos(baseline[:, 0] - theta)], axis=1
            )
        )
        direction = per_trial(np.stack([np.cos(theta), np.sin(theta)], axis=1))
    else:
        loss = per_trial(
            np.stack(
                [((truth - latent) ** 2).sum(axis=1), ((truth - baseline) ** 2).sum(axis=1)],
                axis=1,
            )
        )
        sums = per_trial(truth)
        squares = per_trial((truth**2).sum(axis=1, keepdims=True))[:, 0]
    draws = rng.integers(trials.size, size=(n_bootstrap, trials.size))
    weights = np.zeros((n_bootstrap, trials.size))
    np.add.at(weights, (np.arange(n_bootstrap)[:, None], draws), 1.0)
    count = weights @ n
    if kind == "angle":
        total = count - np.linalg.norm(weights @ direction, axis=1)
    else:
        total = weights @ squares - ((weights @ sums) ** 2).sum(axis=1) / count
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = 1.0 - (weights @ loss) / total[:, None]
    low, high = np.nanpercentile(scores[:, 0] - scores[:, 1], [2.5, 97.5])
    return float(low), float(high)


def _verdict(r: dict) -> str:
    latent, best = r["scores"][LATENT], r["scores"][r["best_baseline"]]
    low, high = r["interval"]
    what = "latent angle" if r["kind"] == "angle" else "latent decoding"
    head = (
        f"the {what} reaches {latent:.3f} against {best:.3f} for the best fair baseline "
        f"({r['best_baseline']}, same {r['n_components']} dimensions, same bins): difference "
        f"{r['difference']:+.3f} (95% interval {low:+.3f} to {high:+.3f})"
    )
    if low > 0:
        verdict = f"{head}; the latent is clearly better."
    elif high < 0:
        verdict = f"{head}; the latent is WORSE than this baseline."
    else:
        verdict = f"{head}; the latent does NOT clearly beat this baseline."
    errors = r["errors"]
    lower_error = [n for n in r["fair_baselines"] if errors[n] < errors[LATENT]]
    if lower_error:
        name = min(lower_error, key=errors.get)
        unit = "°" if r["kind"] == "angle" else ""
        what = "median error" if r["kind"] == "angle" else "RMSE"
        verdict += (
            f" Its {what} ({errors[LATENT]:.3g}{unit}) is larger than that of {name} "
            f"({errors[name]:.3g}{unit})."
        )
    return verdict
