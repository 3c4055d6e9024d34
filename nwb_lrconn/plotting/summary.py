"""One-page summary figure of one fit."""

from __future__ import annotations

from typing import Any

from ..data import Results
from ..inference.dynamics import FixedPoint
from ._common import new_figure
from .connectivity import plot_connectivity
from .degeneracy import plot_degeneracy_spectrum
from .latents import plot_latent_dynamics
from .loadings import plot_loading_direction
from .training import plot_training_curves

__all__ = ["plot_summary", "summary_text"]


def summary_text(results: Results) -> list[str]:
    """Short lines describing a fit: size, held-out metrics, degeneracy counts, distribution.

    Parameters
    ----------
    results : Results
        One run.

    Returns
    -------
    list of str
        Lines for the text panel of :func:`plot_summary`.
    """
    fit = results.fit
    lines = [
        f"{results.name}",
        f"{fit.n_units} units, rank {fit.rank}, {fit.observation} observations",
        f"bin {fit.bin_width * 1e3:g} ms, alpha {fit.alpha:.3g}, {fit.latents.shape[0]} trials",
    ]
    for key in ("log_likelihood", "bits_per_spike", "r2"):
        if key in fit.metrics:
            lines.append(f"held-out {key}: {fit.metrics[key]:.4g}")
    if "selected_rank" in fit.metrics:
        lines.append(f"rank selected by held-out likelihood: {int(fit.metrics['selected_rank'])}")
    if results.degeneracy is not None:
        deg = results.degeneracy
        lines += [
            f"directions: {deg.n_constrained} constrained, {deg.n_degenerate} degenerate,",
            f"  {deg.n_gauge} gauge (of {deg.n_total})",
            f"state richness: {'sufficient' if deg.identifiable else 'NOT sufficient'} "
            f"(Φ rank {deg.phi_effective_rank})",
        ]
    if results.distribution is not None:
        dist = results.distribution
        lines.append(f"distribution: {len(dist.samples_k)} samples at σ={dist.sigma:g}")
    return lines


def plot_summary(
    results: Results,
    *,
    fig: Any = None,
    fixed_points: list[FixedPoint] | None = None,
    unit_labels: list[str] | None = None,
    regions: list[str] | None = None,
) -> Any:
    """Draw the one-page summary of a fit: six panels.

    Panels: training curves; latent dynamics (flow field and fixed points for rank 2; for one
    session of a joint fit, the whole network's flow); the
    degeneracy spectrum (when computed); loadings m₁ against k₁ (fitted and sampled); the
    connectivity matrix ordered by cluster; a text panel (:func:`summary_text`).

    Parameters
    ----------
    results : Results
        One run.
    fig : matplotlib Figure, optional
        Figure to draw into; default a new A4-landscape-sized figure.
    fixed_points : list of FixedPoint, optional
        Passed to :func:`~nwb_lrconn.plotting.plot_latent_dynamics` (default: found there).
    unit_labels, regions : list of str, optional
        Passed to :func:`~nwb_lrconn.plotting.plot_connectivity`.

    Returns
    -------
    matplotlib Figure
        With six main Axes (plus a colour bar).
    """
    fig = fig if fig is not None else new_figure(figsize=(14.0, 8.5))
    grid = fig.subplots(2, 3)
    fit = results.fit
    plot_training_curves(fit, ax=grid[0, 0])
    # one session of a joint fit: its latents under the whole network's flow
    dynamics = fit if results.joint is None else results.joint.network_fit(fit)
    plot_latent_dynamics(dynamics, ax=grid[0, 1], fixed_points=fixed_points)
    if results.degeneracy is not None:
        plot_degeneracy_spectrum(results.degeneracy, ax=grid[0, 2])
    else:
        grid[0, 2].text(0.5, 0.5, "degeneracy not computed", ha="center", va="center")
        grid[0, 2].set_axis_off()
    plot_loading_direction(fit, results.distribution, 0, ax=grid[1, 0])
    grid[1, 0].legend(frameon=False, fontsize=8)
    plot_connectivity(fit, ax=grid[1, 1], unit_labels=unit_labels, regions=regions)
    text_ax = grid[1, 2]
    text_ax.set_axis_off()
    text_ax.text(
        0.0,
        1.0,
        "\n".join(summary_text(results)),
        va="top",
        ha="left",
        family="monospace",
        fontsize=8,
        transform=text_ax.transAxes,
    )
    fig.suptitle(f"nwb_lrconn fit '{results.name}'")
    return fig
