"""Shared helpers of the plotting subpackage: new axes without global state, and saving figures.

matplotlib is imported inside functions only, and figures are created with
``matplotlib.figure.Figure`` (not ``pyplot``), so plotting never changes the global backend and
works on headless machines and in worker processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..model.nonlinearity import phi

__all__ = ["new_axes", "new_figure", "save_figure", "phi", "quality_label", "log_scale"]


def new_figure(*, figsize: tuple[float, float] = (5.0, 4.0)) -> Any:
    """Return a new ``matplotlib.figure.Figure`` (not registered with pyplot)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def new_axes(ax: Any = None, *, figsize: tuple[float, float] = (5.0, 4.0)) -> Any:
    """Return ``ax`` when given, otherwise the Axes of a new figure."""
    if ax is not None:
        return ax
    return new_figure(figsize=figsize).add_subplot()


def save_figure(
    fig: Any, path_stem: str | os.PathLike, *, formats: tuple[str, ...] = ("png", "pdf"), dpi=150
) -> list[Path]:
    """Save ``fig`` once per format as ``<path_stem>.<format>``.

    Parameters
    ----------
    fig : matplotlib Figure, or an Axes (its figure is saved)
        What to save.
    path_stem : path
        Output path without suffix; missing parent folders are created.
    formats : tuple of str, default: ("png", "pdf")
        File formats.
    dpi : int, default: 150
        Resolution of raster formats.

    Returns
    -------
    list of Path
        The written files, one per format.
    """
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

    figure = fig.figure if isinstance(fig, Axes) else fig
    while isinstance(figure, SubFigure):  # an Axes of a subfigure: save the whole figure
        figure = figure.figure
    if not isinstance(figure, Figure):
        raise TypeError(f"fig must be a matplotlib Figure or Axes; got {type(fig).__name__}.")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    engine = figure.get_layout_engine()
    out = []
    try:
        for i, fmt in enumerate(formats):
            path = stem.with_name(f"{stem.name}.{fmt}")
            figure.savefig(path, format=fmt, dpi=dpi)
            out.append(path)
            if i == 0 and engine is not None:
                # The layout is solved once (it is most of the cost of a save); the other
                # formats reuse the positions.
                figure.set_layout_engine("none")
    finally:
        if engine is not None and figure.get_layout_engine() is not engine:
            figure.set_layout_engine(engine)
    return out


def quality_label(kind: str) -> str:
    """Name of the per-unit held-out quality: bits/spike for spike counts, R² otherwise."""
    return "bits/spike" if kind == "spikes" else "R²"


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def log_scale(ax: Any, axis: str = "y") -> None:
    """Log-scale one axis with decade labels written as 10³ (plain text, no mathtext: parsing
    mathtext tick labels is most of the cost of drawing a small figure)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    def decade(value: float, _pos: int) -> str:
        if value <= 0:
            return ""
        exponent = np.log10(value)
        if not np.isclose(exponent, round(exponent)):
            return ""
        return "10" + str(int(round(exponent))).translate(_SUPERSCRIPT)

    target = ax.yaxis if axis == "y" else ax.xaxis

    def between(value: float, _pos: int) -> str:
        # Ranges narrower than two decades also label 2× and 5× each decade.
        low, high = sorted(target.get_view_interval())
        if low <= 0 or np.log10(high / low) >= 2:
            return ""
        mantissa = value / 10 ** np.floor(np.log10(value))
        return f"{value:g}" if np.isclose(mantissa, 2) or np.isclose(mantissa, 5) else ""

    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10, numticks=8))
    target.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0), numticks=8))
    target.set_major_formatter(FuncFormatter(decade))
    target.set_minor_formatter(FuncFormatter(between))
