"""Latent trajectories over the flow field, with fixed points, their stability and how many
trials visit them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import LowRankFit
from ..inference.dynamics import FixedPoint, find_fixed_points, flow_field
from ._common import new_axes

__all__ = ["latent_extent", "fixed_point_visits", "plot_latent_dynamics"]


def latent_extent(fit: LowRankFit) -> float:
    """Half-width of the square that frames the visited latents of the first two dimensions.

    1.3 times the 99th percentile of |κ₁|, |κ₂| over the visited states, so a few outlying
    bins do not shrink the interesting region.
    """
    visited = fit.latents[fit.latent_mask][:, :2]
    if not visited.size:
        return 1.0
    return max(float(np.percentile(np.abs(visited), 99)) * 1.3, 1e-3)


def fixed_point_visits(
    fit: LowRankFit, fixed_points: list[FixedPoint], radius: float
) -> np.ndarray:
    """Number of trials whose latent trajectory passes within ``radius`` of each fixed point.

    Parameters
    ----------
    fit : LowRankFit
        Latents (all dimensions) and their mask.
    fixed_points : list of FixedPoint
        Locations of the same dimension as the latents.
    radius : float
        Distance in latent units.

    Returns
    -------
    ndarray of shape (len(fixed_points),), int
    """
    if not fixed_points:
        return np.zeros(0, dtype=int)
    where = np.stack([fp.location for fp in fixed_points])
    counts = np.zeros(len(fixed_points), dtype=int)
    for trial in range(fit.latents.shape[0]):
        path = fit.latents[trial, fit.latent_mask[trial]]
        if path.size:
            gap = np.linalg.norm(path[:, None, :] - where[None], axis=-1).min(axis=0)
            counts += gap <= radius
    return counts


def plot_latent_dynamics(
    fit: LowRankFit,
    *,
    ax: Any = None,
    n_trials: int = 40,
    fixed_points: list[FixedPoint] | None = None,
    n_grid: int = 20,
) -> Any:
    """Plot latent trajectories κ(t) over the flow field F(κ), with fixed points.

    The states visited by all trials are shaded (log count per cell) under the trajectories.
    For rank 2 the flow field of the fitted network (inputs at zero) is drawn as arrows and the
    fixed points inside the view are marked: filled circles are stable, open circles unstable;
    each is named by a letter, and the legend (right of the plane) says how many trials pass
    within 10% of the view's half-width of it (:func:`fixed_point_visits`), so a fixed point
    the data never approach can be told apart. For other ranks
    the first two latent dimensions (rank ≥ 2) or κ₁ against time (rank 1) are drawn without a
    flow field.

    Parameters
    ----------
    fit : LowRankFit
        Loadings and latents.
    ax : matplotlib Axes, optional
        Where to draw.
    n_trials : int, default: 40
        Number of trials drawn (evenly spaced over all trials).
    fixed_points : list of FixedPoint, optional
        Fixed points to mark; default found with :func:`~nwb_lrconn.inference.dynamics.
        find_fixed_points` (rank 2 only) within :func:`latent_extent`.
    n_grid : int, default: 20
        Arrows per side of the flow-field grid.

    Returns
    -------
    matplotlib Axes
        The visited-state density as an image, trajectories as lines, the flow field as a
        quiver, fixed points as two marker lines
        labelled "stable fixed point" and "unstable fixed point", one letter per fixed point
        and one legend entry "<letter>: <stable|unstable>, <n> trials" per fixed point.
    """
    ax = new_axes(ax, figsize=(6.5, 4.5))
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
    visited = latents[mask][:, :2]
    density, _, _ = np.histogram2d(
        visited[:, 0], visited[:, 1], bins=60, range=[[-extent, extent], [-extent, extent]]
    )
    ax.imshow(
        np.log1p(density.T),
        origin="lower",
        extent=(-extent, extent, -extent, extent),
        cmap="Blues",
        alpha=0.5,
        interpolation="nearest",
        aspect="auto",
    )
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
            alpha=0.5,
            angles="xy",
        )
        if fixed_points is None:
            fixed_points = find_fixed_points(
                fit.M, fit.K, d=fit.d, nonlinearity=fit.nonlinearity, extent=extent
            )
    for i in picks:
        ax.plot(latents[i, mask[i], 0], latents[i, mask[i], 1], lw=1.0, color="C0", alpha=0.7)
    inside = [fp for fp in fixed_points or [] if np.all(np.abs(fp.location[:2]) <= extent)]
    radius = 0.1 * extent
    visits = fixed_point_visits(fit, inside, radius)
    for stable, style, label in ((True, "C3", "stable"), (False, "none", "unstable")):
        chosen = [fp.location[:2] for fp in inside if fp.stable == stable]
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
    # Letters beside the points, counts in the legend: close fixed points stay readable.
    entries = []
    for letter, fp, count in zip(_letters(len(inside)), inside, visits):
        ax.annotate(
            letter,
            fp.location[:2],
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=7,
            color="C3",
            zorder=5,
        )
        kind = "stable" if fp.stable else "unstable"
        entries.append(f"{letter}: {kind}, {count} trials")
    ax.set_xlabel("latent κ₁ (a.u.)")
    ax.set_ylabel("latent κ₂ (a.u.)")
    if fit.rank == 2:
        n_stable = sum(fp.stable for fp in inside)
        title = (
            f"latent dynamics: {n_stable} stable, {len(inside) - n_stable} unstable fixed "
            f"points\nshading: visited states; trials: of {latents.shape[0]}, passing within "
            f"{radius:.2g}"
        )
    else:
        title = f"latent dims 1–2 of rank {fit.rank}"
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    if inside:
        from matplotlib.lines import Line2D

        handles, labels = ax.get_legend_handles_labels()
        handles += [Line2D([], [], ls="none") for _ in entries]
        ax.legend(
            handles,
            labels + entries,
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            frameon=False,
            handlelength=1.0,
        )
    return ax


def _letters(n: int) -> list[str]:
    """A, B, …, Z, AA, AB, … (one short name per fixed point)."""
    out = []
    for i in range(n):
        name = ""
        i += 1
        while i:
            i, r = divmod(i - 1, 26)
            name = chr(65 + r) + name
        out.append(name)
    return out
