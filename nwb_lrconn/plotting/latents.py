"""Latent trajectories over the flow field, with fixed points and their stability."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import LowRankFit
from ..inference.dynamics import FixedPoint, find_fixed_points, flow_field
from ._common import new_axes

__all__ = ["latent_extent", "plot_latent_dynamics"]


def latent_extent(fit: LowRankFit) -> float:
    """Half-width of the square that frames the visited latents of the first two dimensions.

    1.3 times the 99th percentile of |κ₁|, |κ₂| over the visited states, so a few outlying
    bins do not shrink the interesting region.
    """
    visited = fit.latents[fit.latent_mask][:, :2]
    if not visited.size:
        return 1.0
    return max(float(np.percentile(np.abs(visited), 99)) * 1.3, 1e-3)


def plot_latent_dynamics(
    fit: LowRankFit,
    *,
    ax: Any = None,
    n_trials: int = 20,
    fixed_points: list[FixedPoint] | None = None,
    n_grid: int = 20,
) -> Any:
    """Plot latent trajectories κ(t) over the flow field F(κ), with fixed points.

    For rank 2 the flow field of the fitted network (inputs at zero) is drawn as arrows and the
    fixed points are marked: filled circles are stable, open circles unstable. For other ranks
    the first two latent dimensions (rank ≥ 2) or κ₁ against time (rank 1) are drawn without a
    flow field.

    Parameters
    ----------
    fit : LowRankFit
        Loadings and latents.
    ax : matplotlib Axes, optional
        Where to draw.
    n_trials : int, default: 20
        Number of trials drawn (evenly spaced over all trials).
    fixed_points : list of FixedPoint, optional
        Fixed points to mark; default found with :func:`~nwb_lrconn.inference.dynamics.
        find_fixed_points` (rank 2 only) within :func:`latent_extent`.
    n_grid : int, default: 20
        Arrows per side of the flow-field grid.

    Returns
    -------
    matplotlib Axes
        Trajectories as lines, the flow field as a quiver, fixed points as two marker lines
        labelled "stable fixed point" and "unstable fixed point".
    """
    ax = new_axes(ax)
    latents, mask = fit.latents, fit.latent_mask
    picks = np.unique(np.linspace(0, latents.shape[0] - 1, min(n_trials, latents.shape[0])))
    picks = picks.astype(int)
    if fit.rank == 1:
        time = np.arange(latents.shape[1]) * fit.bin_width
        for i in picks:
            ax.plot(time[mask[i]], latents[i, mask[i], 0], lw=0.8, color="C0", alpha=0.6)
        ax.set_xlabel("time from trial start (s)")
        ax.set_ylabel("latent κ₁ (a.u.)")
        ax.set_title("latent trajectories (rank 1)")
        return ax
    extent = latent_extent(fit)
    if fit.rank == 2:
        points, velocity = flow_field(
            fit.M, fit.K, extent=extent, n_grid=n_grid, d=fit.d, nonlinearity=fit.nonlinearity
        )
        speed = np.linalg.norm(velocity, axis=-1)
        ax.quiver(
            points[..., 0],
            points[..., 1],
            velocity[..., 0],
            velocity[..., 1],
            speed,
            cmap="Greys",
            alpha=0.6,
            angles="xy",
        )
        if fixed_points is None:
            fixed_points = find_fixed_points(
                fit.M, fit.K, d=fit.d, nonlinearity=fit.nonlinearity, extent=extent
            )
    for i in picks:
        ax.plot(latents[i, mask[i], 0], latents[i, mask[i], 1], lw=0.8, color="C0", alpha=0.6)
    for stable, style, label in ((True, "C3", "stable"), (False, "none", "unstable")):
        chosen = [fp.location[:2] for fp in fixed_points or [] if fp.stable == stable]
        if chosen:
            xy = np.asarray(chosen)
            ax.plot(
                xy[:, 0],
                xy[:, 1],
                "o",
                ms=8,
                mfc=style,
                mec="C3",
                mew=1.5,
                ls="none",
                label=f"{label} fixed point",
            )
    ax.set_xlabel("latent κ₁ (a.u.)")
    ax.set_ylabel("latent κ₂ (a.u.)")
    title = "latent dynamics" if fit.rank == 2 else f"latent dims 1–2 of rank {fit.rank}"
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    if fixed_points:
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
    return ax
