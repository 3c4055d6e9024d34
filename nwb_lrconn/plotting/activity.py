"""Fitted against observed activity: units ranked by held-out quality, and the best of them
over a long stretch of session time or averaged over held-out trials."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_choice
from ..data import LowRankFit, Recording
from ._common import new_figure, phi, quality_label

__all__ = ["expected_activity", "plot_fitted_activity", "tiles_time"]

VIEWS = ("auto", "span", "average")


def expected_activity(fit: LowRankFit, trial: int, *, inputs: np.ndarray | None = None):
    """Expected observation of every unit on one trial, from the stored latents.

    Parameters
    ----------
    fit : LowRankFit
        Loadings, readout and latents.
    trial : int
        Trial index into ``fit.latents``.
    inputs : ndarray of shape (n_time, n_inputs), optional
        External inputs u(t) of that trial.

    Returns
    -------
    ndarray of shape (n_time, n_units)
        Rates in spikes/s for the Poisson model (softplus(g φ(x) + c)); the readout
        g φ(x) + c otherwise (the indicator kernel of calcium fits is applied as the per-bin
        exponential filter ``y(t) = decay·y(t−1) + (1 − decay)·r(t)``).
    """
    x = fit.latents[trial] @ fit.M.T + fit.d
    if inputs is not None and fit.B.shape[1]:
        x = x + np.asarray(inputs, dtype=float) @ fit.B.T
    drive = fit.readout_gain * phi(x, fit.nonlinearity) + fit.readout_offset
    if fit.observation == "poisson":
        return np.logaddexp(0.0, drive)
    if fit.observation == "calcium" and fit.calcium_decay > 0:
        out = np.empty_like(drive)
        state = drive[0]
        for t in range(drive.shape[0]):
            state = fit.calcium_decay * state + (1 - fit.calcium_decay) * drive[t]
            out[t] = state
        return out
    return drive


def tiles_time(recording: Recording) -> bool:
    """True when the trials are consecutive windows of a continuous recording (most trials
    start where the previous one ends), False for event-aligned trials."""
    if recording.n_trials < 2:
        return False
    order = np.argsort(recording.trial_start_times)
    starts = recording.trial_start_times[order]
    lengths = recording.mask[order].sum(axis=1) * recording.bin_width
    joined = np.abs(starts[1:] - (starts[:-1] + lengths[:-1])) < 0.5 * recording.bin_width
    return bool(joined.mean() >= 0.5)


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Centred boxcar along axis 0 (edges averaged over the bins that exist)."""
    if width <= 1:
        return values
    kernel = np.ones(width)
    total = np.stack([np.convolve(v, kernel, mode="same") for v in values.T], axis=1)
    count = np.convolve(np.ones(values.shape[0]), kernel, mode="same")
    return total / count[:, None]


def _span_trials(recording: Recording, held_out: set, span: float) -> np.ndarray:
    """Consecutive windows covering about ``span`` seconds, holding the most held-out ones."""
    order = np.argsort(recording.trial_start_times)
    starts = recording.trial_start_times[order]
    ends = starts + recording.mask[order].sum(axis=1) * recording.bin_width
    best, best_key = order[:1], (-1, -1.0)
    for i in range(order.size):
        j = i
        while j + 1 < order.size and ends[j + 1] - starts[i] <= span:
            if abs(starts[j + 1] - ends[j]) >= 0.5 * recording.bin_width:
                break
            j += 1
        chosen = order[i : j + 1]
        key = (sum(int(t) in held_out for t in chosen), ends[j] - starts[i])
        if key > best_key:
            best, best_key = chosen, key
    return best


def plot_fitted_activity(
    fit: LowRankFit,
    recording: Recording,
    *,
    units: np.ndarray | None = None,
    n_units: int = 4,
    view: str = "auto",
    span: float = 30.0,
    smooth_bins: int | None = None,
    unit_labels: list[str] | None = None,
    fig: Any = None,
) -> Any:
    """Plot fitted against observed activity of the best units, beside every unit's quality.

    Two views. ``"span"``: a stretch of about ``span`` seconds of consecutive windows (chosen
    to hold the most held-out ones, which are shaded), on the session clock, observed and
    fitted rates smoothed by the same boxcar. ``"average"``: the mean over the held-out trials
    against time from trial start (a PSTH for event-aligned trials), with the standard error
    of the observed mean.

    Parameters
    ----------
    fit : LowRankFit
        The fit.
    recording : Recording
        The recording it was fitted to (same trials and units).
    units : array of int, optional
        Column indices of the units to show; default the ``n_units`` best held-out units.
    n_units : int, default: 4
        Number of units shown when ``units`` is not given.
    view : {"auto", "span", "average"}, default: "auto"
        ``"auto"``: ``"span"`` when the trials tile the session (:func:`tiles_time`), else
        ``"average"``.
    span : float, default: 30.0
        Length in seconds of the ``"span"`` view.
    smooth_bins : int, optional
        Boxcar width in bins for the ``"span"`` view; default the odd number of bins closest
        to 0.25 s.
    unit_labels : list of str, optional
        One label per unit (e.g. ``"7 · ADn"``); default the unit ids.
    fig : matplotlib Figure, optional
        Figure to draw into; default a new one.

    Returns
    -------
    matplotlib Figure
        Axes 0: held-out quality of every unit, ranked (shown units in red); then one Axes per
        shown unit with two lines, observed (grey) then fitted (red). Rates in spikes/s for
        spike counts.
    """
    check_choice(view, "view", VIEWS)
    if recording.n_units != fit.n_units:
        raise ValueError(
            f"recording has {recording.n_units} units but the fit has {fit.n_units}; pass the "
            "recording the fit was made from."
        )
    labels = [str(u) for u in recording.unit_ids] if unit_labels is None else list(unit_labels)
    quality = np.nan_to_num(np.asarray(fit.unit_quality, float), nan=-np.inf)
    ranking = np.argsort(-quality, kind="stable")
    if units is None:
        units = ranking[: min(n_units, fit.n_units)]
    units = np.asarray(units, dtype=int)
    if view == "auto":
        view = "span" if tiles_time(recording) else "average"
    held_out = {int(t) for t in fit.test_trials}
    spikes = recording.kind == "spikes"
    scale = 1.0 / recording.bin_width if spikes else 1.0
    ylabel = (
        "rate (spikes/s)"
        if spikes
        else ("activity (a.u.)" if recording.kind == "calcium" else "rate (a.u.)")
    )
    fig = fig if fig is not None else new_figure(figsize=(11.0, 1.5 * len(units) + 1.2))
    grid = fig.add_gridspec(len(units), 2, width_ratios=[1.0, 3.2])
    ax_rank = fig.add_subplot(grid[:, 0])
    _plot_ranking(ax_rank, fit, ranking, units, labels)
    axes = [fig.add_subplot(grid[i, 1]) for i in range(len(units))]
    for ax in axes[1:]:
        ax.sharex(axes[0])
    if view == "span":
        trials = _span_trials(recording, held_out, span)
        if smooth_bins is None:  # an odd number of bins spanning about 0.25 s
            smooth_bins = 2 * round(0.125 / recording.bin_width) + 1
        width = smooth_bins
        times, observed_parts, fitted_parts = [], [], []
        for trial in trials:
            valid = recording.mask[trial]
            start = recording.trial_start_times[trial]
            times.append(start + recording.bin_width * np.arange(valid.sum()))
            observed_parts.append(recording.data[trial][valid] * scale)
            inputs = None if recording.inputs is None else recording.inputs[trial]
            fitted_parts.append(expected_activity(fit, trial, inputs=inputs)[valid])
        time = np.concatenate(times)
        observed = _smooth(np.concatenate(observed_parts), width)
        fitted = _smooth(np.concatenate(fitted_parts), width)
        for ax, unit in zip(axes, units):
            for trial in trials:
                if int(trial) in held_out:
                    start = recording.trial_start_times[trial]
                    length = recording.mask[trial].sum() * recording.bin_width
                    ax.axvspan(start, start + length, color="0.92", lw=0)
            ax.plot(time, observed[:, unit], color="0.45", lw=1, label="observed")
            ax.plot(time, fitted[:, unit], color="C3", lw=1.3, label="fitted")
        smoothing = f"; {width * recording.bin_width:g}-s boxcar" if width > 1 else ""
        axes[-1].set_xlabel(f"session time (s); held-out windows shaded{smoothing}")
    else:
        trials = np.asarray(sorted(held_out) if held_out else range(recording.n_trials), int)
        time = np.arange(recording.n_time) * recording.bin_width
        mask = recording.mask[trials]
        observed = np.where(mask[..., None], recording.data[trials] * scale, np.nan)
        fitted = np.stack(
            [
                expected_activity(
                    fit, t, inputs=None if recording.inputs is None else recording.inputs[t]
                )
                for t in trials
            ]
        )
        fitted = np.where(mask[..., None], fitted, np.nan)
        count = mask.sum(axis=0)
        shown = count > 0
        mean_obs = np.nanmean(observed[:, shown], axis=0)
        sem = np.nanstd(observed[:, shown], axis=0) / np.sqrt(count[shown])[:, None]
        mean_fit = np.nanmean(fitted[:, shown], axis=0)
        for ax, unit in zip(axes, units):
            ax.fill_between(
                time[shown],
                (mean_obs - sem)[:, unit],
                (mean_obs + sem)[:, unit],
                color="0.85",
                lw=0,
            )
            ax.plot(time[shown], mean_obs[:, unit], color="0.45", lw=1, label="observed")
            ax.plot(time[shown], mean_fit[:, unit], color="C3", lw=1.3, label="fitted")
        axes[-1].set_xlabel(
            f"time from trial start (s); mean ± s.e.m. over {trials.size} held-out trials"
        )
    for ax, unit in zip(axes, units):
        rank = int(np.flatnonzero(ranking == unit)[0]) + 1
        ax.set_title(
            f"unit {labels[unit]}: held-out {quality_label(recording.kind)} "
            f"{fit.unit_quality[unit]:.3g} (rank {rank} of {fit.n_units})",
            fontsize=9,
            loc="left",
        )
        ax.set_ylabel(ylabel, fontsize=8)
        if ax is not axes[-1]:
            ax.tick_params(labelbottom=False)
    axes[0].legend(frameon=False, fontsize=8, loc="upper right", ncols=2)
    return fig


def _plot_ranking(ax: Any, fit: LowRankFit, ranking: np.ndarray, shown, labels, top=30) -> None:
    """Horizontal bars of held-out quality, best unit on top; the shown units in red."""
    picked = ranking[:top]
    y = np.arange(picked.size)[::-1]
    values = np.nan_to_num(fit.unit_quality[picked], nan=0.0)
    colours = ["C3" if u in set(np.asarray(shown).tolist()) else "0.6" for u in picked]
    ax.barh(y, values, color=colours)
    ax.set_yticks(y, [labels[u] for u in picked], fontsize=7 if picked.size > 15 else 8)
    ax.axvline(0, color="0.3", lw=0.6)
    more = f" ({top} best of {fit.n_units})" if fit.n_units > top else ""
    ax.set_title(f"units ranked by held-out quality{more}", fontsize=9)
    ax.set_xlabel(quality_label("spikes" if fit.observation == "poisson" else "other"))
