"""Connectivity matrix ordered by cluster, and dissimilarity matrices between distributions."""

from __future__ import annotations

import functools
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
    loadings = np.ascontiguousarray(loadings, dtype=float)
    if random_state is None or isinstance(random_state, (int, np.integer)):
        # The summary and the connectivity figure order the same loadings: k-means runs once.
        order, labels = _cached_order(loadings.tobytes(), loadings.shape, n_clusters, random_state)
        return order.copy(), labels.copy()
    return _cluster_order(loadings, n_clusters, random_state)


@functools.lru_cache(maxsize=8)
def _cached_order(raw: bytes, shape: tuple, n_clusters, random_state):
    return _cluster_order(np.frombuffer(raw).reshape(shape), n_clusters, random_state)


def _cluster_order(loadings: np.ndarray, n_clusters, random_state):
    from sklearn.cluster import KMeans

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
    fit: LowRankFit,
    *,
    ax: Any = None,
    n_clusters: int | None = None,
    max_units: int = 400,
    unit_labels: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    max_ticks: int = 40,
) -> Any:
    """Plot J = M Kᵀ / N with units grouped by region, then ordered by cluster of (m, k).

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
    unit_labels : sequence of str, optional
        One tick label per unit; default the unit ids.
    regions : sequence of str, optional
        Region (e.g. the Units table's ``location``) of each unit: units are grouped by region,
        the groups separated by lines and named on the top and right edges.
    max_ticks : int, default: 40
        Up to this many units every unit gets a tick with its label; beyond, none.

    Returns
    -------
    matplotlib Axes
        One image (symmetric colour scale around 0) with a colour bar; group boundaries
        (regions when given, else clusters) as thin lines.
    """
    ax = new_axes(ax)
    keep = np.unique(np.linspace(0, fit.n_units - 1, min(max_units, fit.n_units)).astype(int))
    M, K = fit.M[keep], fit.K[keep]
    order, labels = cluster_order(np.hstack([M, K]), n_clusters=n_clusters)
    groups = None
    if regions is not None and len(set(regions)) > 1:
        region = np.asarray([str(r) for r in regions], dtype=object)[keep]
        names = sorted(set(region))
        groups = np.array([names.index(r) for r in region])
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        order = np.lexsort((position, groups))
        labels = groups
    J = (M @ K.T / fit.n_units)[np.ix_(order, order)]
    lim = float(np.abs(J).max()) or 1.0
    image = ax.imshow(J, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    bounds = np.flatnonzero(np.diff(labels[order])) + 0.5
    for b in bounds:
        ax.axhline(b, color="k", lw=0.8 if groups is not None else 0.5)
        ax.axvline(b, color="k", lw=0.8 if groups is not None else 0.5)
    ids = [str(u) for u in fit.unit_ids] if unit_labels is None else list(unit_labels)
    ticks = np.arange(order.size)
    if order.size <= max_ticks:
        small = 7 if order.size > 20 else 8
        ax.set_xticks(ticks, [ids[keep[i]] for i in order], rotation=90, fontsize=small)
        ax.set_yticks(ticks, [ids[keep[i]] for i in order], fontsize=small)
        what = "unit id"
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        what = f"{order.size} units"
    grouping = "by region, then cluster" if groups is not None else "by cluster"
    ax.set_xlabel(f"presynaptic {what} (grouped {grouping})")
    ax.set_ylabel(f"postsynaptic {what}")
    if groups is not None:
        edges = np.r_[-0.5, bounds, order.size - 0.5]
        centres = (edges[:-1] + edges[1:]) / 2
        names = [sorted(set(region))[g] for g in np.unique(groups[order])]
        top = ax.secondary_xaxis("top")
        top.set_xticks(centres, names, fontsize=8)
        right = ax.secondary_yaxis("right")
        right.set_yticks(centres, names, fontsize=8, rotation=90, va="center")
    ax.set_title(f"connectivity J = M Kᵀ/N ({len(keep)} of {fit.n_units} units)", fontsize=9)
    pad = 0.08 if groups is not None else 0.05  # room for the region names on the right
    ax.figure.colorbar(image, ax=ax, label="weight (a.u.)", pad=pad)
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
