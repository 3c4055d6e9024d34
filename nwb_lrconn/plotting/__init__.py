"""Figures from results (matplotlib is imported inside the functions, never at import time).

Every function takes result dataclasses from :mod:`nwb_lrconn.data` and an optional ``ax`` (or
``fig`` for multi-panel figures) and returns what it drew on. Save with :func:`save_figure`
(PNG and PDF).
"""

from __future__ import annotations

from ._common import save_figure
from .activity import expected_activity, plot_fitted_activity, tiles_time
from .behaviour import plot_latent_behaviour
from .connectivity import cluster_order, plot_connectivity, plot_dissimilarity
from .degeneracy import plot_degeneracy_spectrum
from .distribution import plot_gmm_curves
from .latents import fixed_point_visits, latent_extent, plot_latent_dynamics
from .loadings import plot_loading_direction, plot_loadings
from .summary import plot_summary, summary_text
from .training import plot_flow_training, plot_training_curves

__all__ = [
    "save_figure",
    "expected_activity",
    "plot_fitted_activity",
    "tiles_time",
    "plot_latent_behaviour",
    "cluster_order",
    "plot_connectivity",
    "plot_dissimilarity",
    "plot_degeneracy_spectrum",
    "plot_gmm_curves",
    "latent_extent",
    "fixed_point_visits",
    "plot_latent_dynamics",
    "plot_loading_direction",
    "plot_loadings",
    "plot_summary",
    "summary_text",
    "plot_flow_training",
    "plot_training_curves",
]
