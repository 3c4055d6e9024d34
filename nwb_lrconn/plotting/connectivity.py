"""Connectivity matrix ordered by cluster, and dissimilarity matrices between distributions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data import LowRankFit
from ._common import new_axes

__all__ = ["cluster_order", "plot_connectivity", "plot_dissimilarity"]


def cluster_order(
    loadings: np.ndarray, *, n_clusters: int | None = None, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Order units by cluster of their loadings, then by their first loading.

    Parameters
    ----------
    loadings : ndarray of shape (n_units, n_features)
        Per-unit loadings (e.g. ``np.hstack([M, K])``).
    n_clusters : int, optional
        Number of k-means clusters; default ``min(4, n_units)``.
    random_state : int, default: 0
        Seed of k-means.

    Returns
    -------
    order : ndarray of shape (n_units,), int
        Unit indices, cluster by cluster.
    labels : ndarray of shape (n_units,), int
        Cluster label of each unit (in the original order).
    """
    from sklearn.cluster import KMeans

    loadings = np.asarray(loadings, dtype=float)
    n_units = loadings.shape[0]
    n_clusters = min(4, n_units) if n_clusters is None else min(n_clusters, n_units)
    labels = KMeans(n_clusters=n_clusters, n_init=4, random_state=random_state).fit_predict(
        loadings
    )
    centres = np.array([loadings[labels == c, 0].mean() for c in range(n_clusters)])
    rank_of = np.argsort(np.argsort(centres))
    labels = rank_of[labels]
    order = np.lexsort((loadings[:, 0], labels))
    return order, labels


def plot_connectivity(
    fit: LowRankFit, *, ax: Any = None, n_clusters: int | None = None, max_units: int = 400
) -> Any:
    """Plot J = M Kᵀ / N with units ordered by cluster of their loadings (m, k).

    Parameters
    ----------
    fit : LowRankFit
        Loadings.
    ax : matplotlib Axes, optional
        Where to draw.
    n_clusters : int, optional
        Clusters used for the ordering (see :func:`cluster_order`).
    max_units : int, default: 400
        Larger networks show an evenly spaced subset of this many units.

    Returns
    -------
    matplotlib Axes
        One image (symmetric colour scale around 0) with a colour bar; cluster boundaries as
        thin lines.
    """
    ax = new_axes(ax)
    keep = np.unique(np.linspace(0, fit.n_units - 1, min(max_units, fit.n_units)).astype(int))
    M, K = fit.M[keep], fit.K[keep]
    order, labels = cluster_order(np.hstack([M, K]), n_clusters=n_clusters)
    J = (M @ K.T / fit.n_units)[np.ix_(order, order)]
    lim = float(np.abs(J).max()) or 1.0
    image = ax.imshow(J, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    bounds = np.flatnonzero(np.diff(labels[order])) + 0.5
    for b in bounds:
        ax.axhline(b, color="k", lw=0.5)
        ax.axvline(b, color="k", lw=0.5)
    ax.set_xlabel("presynaptic unit (ordered by cluster)")
    ax.set_ylabel("postsynaptic unit (ordered by cluster)")
    ax.set_title(f"connectivity J = M Kᵀ/N ({len(keep)} of {fit.n_units} units)", fontsize=9)
    ax.figure.colorbar(image, ax=ax, label="weight (a.u.)")
    return ax


def plot_dissimilarity(
    matrix: np.ndarray,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str] | None = None,
    ax: Any = None,
    normalize: bool = True,
) -> Any:
    """Plot a dissimilarity matrix between connectivity distributions, with values written in.

    Parameters
    ----------
    matrix : ndarray of shape (n_rows, n_cols)
        D(A_i, B_j), e.g. Sinkhorn-W₂ between z samples plus the conditional-mean distance.
    row_labels, col_labels : sequence of str
        Names of the rows (e.g. ground truth) and columns (e.g. inferred); columns default to
        the rows.
    ax : matplotlib Axes, optional
        Where to draw.
    normalize : bool, default: True
        Divide by the largest entry.

    Returns
    -------
    matplotlib Axes
        One image and one text per cell.
    """
    ax = new_axes(ax)
    matrix = np.asarray(matrix, dtype=float)
    col_labels = list(row_labels) if col_labels is None else list(col_labels)
    if matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"matrix must have shape ({len(row_labels)}, {len(col_labels)}) to match the labels; "
            f"got {matrix.shape}."
        )
    shown = matrix / matrix.max() if normalize and matrix.max() > 0 else matrix
    image = ax.imshow(shown, cmap="viridis")
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            colour = "w" if shown[i, j] < 0.5 * shown.max() else "k"
            ax.text(j, i, f"{shown[i, j]:.2f}", ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xlabel("inferred")
    ax.set_ylabel("reference")
    label = "dissimilarity (normalised)" if normalize else "dissimilarity"
    ax.figure.colorbar(image, ax=ax, label=label)
    return ax
