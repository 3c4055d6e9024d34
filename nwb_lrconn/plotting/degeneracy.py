"""Degeneracy spectrum: data precision of each direction against the prior-precision threshold."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import DegeneracyReport
from ._common import log_scale, new_axes

__all__ = ["plot_degeneracy_spectrum"]


def plot_degeneracy_spectrum(report: DegeneracyReport, *, ax: Any = None) -> Any:
    """Plot the eigen-spectrum of the data precision with the threshold and the counts.

    Directions above the threshold (the prior precision) are constrained by the data; those
    below are degenerate: the data leave them to the prior. Gauge directions are excluded from
    the spectrum and only counted.

    Parameters
    ----------
    report : DegeneracyReport
        Uses ``spectrum``, ``threshold`` and the counts.
    ax : matplotlib Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib Axes
        Two scatter collections (constrained, degenerate), one horizontal threshold line, log
        y-axis; the counts (of all directions) are in the title. When the report holds only the
        leading part of the spectrum (large problems), the x label says how much is shown.
    """
    ax = new_axes(ax)
    spectrum = np.sort(np.asarray(report.spectrum, dtype=float))[::-1]
    positive = spectrum[spectrum > 0]
    floor = (positive.min() if positive.size else report.threshold) * 1e-2
    floor = min(floor, report.threshold * 1e-3)
    shown = np.maximum(spectrum, floor)
    index = np.arange(1, spectrum.size + 1)
    above = spectrum > report.threshold
    ax.scatter(index[above], shown[above], s=8, color="C0", label="constrained")
    ax.scatter(index[~above], shown[~above], s=8, color="C7", label="degenerate")
    ax.axhline(report.threshold, color="C3", ls="--", lw=1, label="threshold (prior precision)")
    log_scale(ax, "y")
    n_directions = report.n_total - report.n_gauge
    if spectrum.size < n_directions:
        # Structured (blocks) posteriors keep only leading eigenpairs (by default those of the
        # output-side block F_KK); the counts in the title still cover every direction.
        ax.set_xlabel(
            f"eigen-direction (sorted)\nthe {spectrum.size} computed of {n_directions}; "
            "the counts cover all"
        )
    else:
        ax.set_xlabel("direction (sorted)")
    ax.set_ylabel("data precision (1/variance)")
    ax.set_title(
        f"{report.n_constrained} constrained, {report.n_degenerate} degenerate, "
        f"{report.n_gauge} gauge of {report.n_total}",
        fontsize=9,
    )
    ax.legend(frameon=False, fontsize=8)
    return ax
