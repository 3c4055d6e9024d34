"""Per-rank scatter of input-side against output-side loadings, fitted and sampled."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import ConnectivityDistribution, LowRankFit
from ._common import new_axes, new_figure

__all__ = ["plot_loadings", "plot_loading_direction"]


def plot_loadings(
    fit: LowRankFit,
    distribution: ConnectivityDistribution | None = None,
    *,
    fig: Any = None,
    max_points: int = 2000,
) -> Any:
    """Scatter m_r against k_r for each rank r: fitted units and, if given, sampled units.

    Parameters
    ----------
    fit : LowRankFit
        Fitted loadings M, K of shape (n_units, rank).
    distribution : ConnectivityDistribution, optional
        Sampled loadings: ``samples_z[:, :rank]`` (m) and ``samples_k`` (k), drawn at
        ``distribution.sigma``.
    fig : matplotlib Figure, optional
        Figure to draw into.
    max_points : int, default: 2000
        At most this many sampled points are drawn per panel.

    Returns
    -------
    matplotlib Figure
        One Axes per rank; each has the fitted units (label "fitted") and the samples
        (label "sampled, σ=…") as separate collections.
    """
    rank = fit.rank
    fig = fig if fig is not None else new_figure(figsize=(3.2 * rank, 3.2))
    axes = fig.subplots(1, rank, squeeze=False)[0]
    for r, ax in enumerate(axes):
        plot_loading_direction(fit, distribution, r, ax=ax, max_points=max_points)
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def plot_loading_direction(
    fit: LowRankFit,
    distribution: ConnectivityDistribution | None,
    direction: int,
    *,
    ax: Any = None,
    max_points: int = 2000,
) -> Any:
    """Scatter m_r against k_r for one rank direction r (0-based); see :func:`plot_loadings`.

    Returns
    -------
    matplotlib Axes
        The sampled units (if any) then the fitted units, as two collections.
    """
    ax = new_axes(ax, figsize=(3.5, 3.2))
    r = direction
    if distribution is not None:
        z = np.asarray(distribution.samples_z)[:max_points]
        k = np.asarray(distribution.samples_k)[:max_points]
        ax.scatter(
            z[:, r],
            k[:, r],
            s=4,
            color="C1",
            alpha=0.4,
            label=f"sampled, σ={distribution.sigma:g}",
        )
    ax.scatter(fit.M[:, r], fit.K[:, r], s=8, color="C0", alpha=0.8, label="fitted")
    ax.set_xlabel(f"input loading m{r + 1} (a.u.)")
    ax.set_ylabel(f"output loading k{r + 1} (a.u.)")
    ax.set_title(f"rank direction {r + 1}")
    return ax
