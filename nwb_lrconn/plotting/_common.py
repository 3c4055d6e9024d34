"""Shared helpers of the plotting room: new axes without global state, and saving figures.

matplotlib is imported inside functions only, and figures are created with
``matplotlib.figure.Figure`` (not ``pyplot``), so plotting never changes the global backend and
works on headless machines and in worker processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["new_axes", "new_figure", "save_figure", "phi"]


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

    figure = fig.figure if isinstance(fig, Axes) else fig
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        figure.savefig(path, format=fmt, dpi=dpi)
        out.append(path)
    return out


def phi(x: np.ndarray, nonlinearity: str) -> np.ndarray:
    """The single-unit nonlinearity φ (numpy)."""
    if nonlinearity == "tanh":
        return np.tanh(x)
    if nonlinearity == "relu":
        return np.maximum(x, 0.0)
    return np.logaddexp(0.0, x)
