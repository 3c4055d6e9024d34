"""The fitted latents against a behavioural variable: the latent plane coloured by it, the
held-out decoding, and the scores of the latent and of the baselines."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from ..data import LowRankFit
from ..inference.behaviour import LATENT, BehaviourReport
from ._common import new_figure

__all__ = ["plot_latent_behaviour"]


def plot_latent_behaviour(
    fit: LowRankFit, report: BehaviourReport, *, fig: Any = None, max_points: int = 20000
) -> Any:
    """Three panels: the latents coloured by the variable, decoded against true on held-out
    trials, and the held-out score of the latent beside those of the baselines.

    Parameters
    ----------
    fit : LowRankFit
        The fit whose latents ``report`` was computed from.
    report : BehaviourReport
        From :func:`~nwb_lrconn.inference.behaviour.relate_to_behaviour`.
    fig : matplotlib Figure, optional
        Figure to draw into.
    max_points : int, default: 20000
        At most this many bins are drawn in each scatter (evenly spaced).

    Returns
    -------
    matplotlib Figure
        Axes 0: κ₁ against κ₂ (κ₁ against the variable for rank 1), one point per bin, coloured
        by the variable (a cyclic colour map for angles) with a colour bar; Axes 1: decoded
        against true on the held-out bins; Axes 2: horizontal bars, one per feature set.
    """
    fig = fig if fig is not None else new_figure(figsize=(13.0, 4.2))
    ax_plane, ax_decoded, ax_scores = fig.subplots(1, 3, width_ratios=[1.1, 1.0, 1.1])
    values = report.values[..., 0]
    angle = report.kind == "angle"
    valid = fit.latent_mask & np.isfinite(values)
    step = max(1, int(valid.sum()) // max_points)
    shown = values[valid][::step]
    latents = fit.latents[valid][::step]
    shown_values = np.degrees(shown) if angle else shown
    label = f"{_short(report.variable)}{' (deg)' if angle else ''}"
    colour = dict(c=shown_values, s=3, alpha=0.6, rasterized=True, linewidths=0)
    if angle:
        colour.update(cmap="twilight", vmin=-180, vmax=180)
    if fit.rank >= 2:
        points = ax_plane.scatter(latents[:, 0], latents[:, 1], **colour)
        ax_plane.set_xlabel("latent κ₁ (a.u.)")
        ax_plane.set_ylabel("latent κ₂ (a.u.)")
        ax_plane.set_aspect("equal", adjustable="datalim")
    else:
        points = ax_plane.scatter(shown_values, latents[:, 0], **colour)
        ax_plane.set_xlabel(label)
        ax_plane.set_ylabel("latent κ₁ (a.u.)")
    ax_plane.set_title("latents, coloured by the variable (all bins)", fontsize=9)
    fig.colorbar(points, ax=ax_plane, label=label)

    decoded = report.decoded[..., 0]
    tested = np.isfinite(decoded) & np.isfinite(values)
    truth, guess = values[tested], decoded[tested]
    if angle:
        truth, guess = np.degrees(truth), np.degrees(guess)
        ax_decoded.set_xlim(-180, 180)
        ax_decoded.set_ylim(-180, 180)
        ax_decoded.set_xticks([-180, -90, 0, 90, 180])
        ax_decoded.set_yticks([-180, -90, 0, 90, 180])
    step = max(1, truth.size // max_points)
    ax_decoded.plot(
        truth[::step], guess[::step], ".", ms=2, alpha=0.4, color="C0", rasterized=True
    )
    low, high = (-180, 180) if angle else (np.nanmin(truth), np.nanmax(truth))
    ax_decoded.plot([low, high], [low, high], color="0.3", lw=0.8, ls="--")
    ax_decoded.set_xlabel(f"true {label}")
    ax_decoded.set_ylabel(f"decoded from the latent{' (deg)' if angle else ''}")
    ax_decoded.set_title(
        f"held-out: {report.measure} {report.scores[LATENT]:.3f} ({report.n_test_trials} trials)",
        fontsize=9,
    )

    names = list(report.scores)
    scores = [report.scores[n] for n in names]
    colours = [
        "C3" if n == LATENT else ("C0" if n in report.fair_baselines else "0.7") for n in names
    ]
    y = np.arange(len(names))[::-1]
    ax_scores.barh(y, scores, color=colours)
    ax_scores.set_yticks(y, [textwrap.fill(n, 22) for n in names], fontsize=8)
    for yi, score in zip(y, scores):  # values right of the bar (of zero for negative bars)
        ax_scores.text(max(score, 0.0), yi, f" {score:.3f}", va="center", fontsize=8)
    ax_scores.set_xlim(min(0.0, min(scores)) - 0.05, 1.15)
    ax_scores.axvline(0, color="0.3", lw=0.6)
    ax_scores.set_xlabel(f"held-out {report.measure}")
    ax_scores.set_title(
        f"latent vs baselines ({report.n_components}-D each, same bins)", fontsize=9
    )
    fig.suptitle(textwrap.fill(report.verdict, 150), fontsize=9)
    return fig


def _short(name: str) -> str:
    """The last part of an object path (``processing/behavior/X/head_direction`` →
    ``head_direction``)."""
    return name.rstrip("/").rsplit("/", 1)[-1]
