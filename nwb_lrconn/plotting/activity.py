"""Fitted against observed activity for a few units on a held-out trial."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import LowRankFit, Recording
from ._common import new_figure, phi

__all__ = ["expected_activity", "plot_fitted_activity"]


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


def plot_fitted_activity(
    fit: LowRankFit,
    recording: Recording,
    *,
    units: np.ndarray | None = None,
    n_units: int = 4,
    trial: int | None = None,
    smooth_bins: int = 5,
    fig: Any = None,
) -> Any:
    """Plot observed and fitted activity of a few units on one (held-out) trial.

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
    trial : int, optional
        Trial to show; default the first held-out trial (else trial 0).
    smooth_bins : int, default: 5
        Width (bins) of the boxcar that smooths observed spike counts into rates.
    fig : matplotlib Figure, optional
        Figure to draw into; default a new one.

    Returns
    -------
    matplotlib Figure
        One Axes per unit; time in seconds from trial start; rates in spikes/s for spikes.
    """
    if recording.n_units != fit.n_units:
        raise ValueError(
            f"recording has {recording.n_units} units but the fit has {fit.n_units}; pass the "
            "recording the fit was made from."
        )
    if trial is None:
        trial = int(fit.test_trials[0]) if len(fit.test_trials) else 0
    if units is None:
        order = np.argsort(-np.nan_to_num(fit.unit_quality, nan=-np.inf), kind="stable")
        units = order[: min(n_units, fit.n_units)]
    units = np.asarray(units, dtype=int)
    inputs = None if recording.inputs is None else recording.inputs[trial]
    predicted = expected_activity(fit, trial, inputs=inputs)
    observed = recording.data[trial]
    valid = recording.mask[trial]
    time = np.arange(recording.n_time) * recording.bin_width
    spikes = recording.kind == "spikes"
    if spikes:
        kernel = np.ones(smooth_bins) / smooth_bins
        observed = (
            np.stack(
                [
                    np.convolve(observed[:, i], kernel, mode="same")
                    for i in range(observed.shape[1])
                ],
                axis=1,
            )
            / recording.bin_width
        )
        ylabel = "rate (spikes/s)"
    else:
        ylabel = "activity (a.u.)" if recording.kind == "calcium" else "rate (a.u.)"
    fig = fig if fig is not None else new_figure(figsize=(6.0, 1.6 * len(units) + 0.6))
    axes = fig.subplots(len(units), 1, sharex=True, squeeze=False)[:, 0]
    held = "held-out " if trial in set(np.asarray(fit.test_trials).tolist()) else ""
    for ax, unit in zip(axes, units):
        ax.plot(time[valid], observed[valid, unit], color="0.5", lw=1, label="observed")
        ax.plot(time[valid], predicted[valid, unit], color="C3", lw=1.5, label="fitted")
        ax.set_ylabel(ylabel)
        ax.set_title(
            f"unit {recording.unit_ids[unit]} (quality {fit.unit_quality[unit]:.2f})", fontsize=9
        )
    axes[0].legend(frameon=False, fontsize=8, loc="upper right")
    axes[-1].set_xlabel(f"time from {held}trial {trial} start (s)")
    return fig
