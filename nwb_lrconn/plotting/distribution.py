"""Cross-validated Gaussian-mixture curves: how many clusters the loadings support."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._common import new_axes

__all__ = ["plot_gmm_curves"]


def plot_gmm_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    ax: Any = None,
    notes: Sequence[str] = (),
) -> Any:
    """Plot held-out Gaussian-mixture log-likelihood against the number of components.

    Parameters
    ----------
    curves : mapping of str to (n_components, log_likelihood)
        One curve per label (e.g. "ground truth", "sampled σ=1", "gradient descent"); each a
        pair of 1-D arrays of equal length: numbers of components and the cross-validated
        log-likelihood per unit (nats).
    ax : matplotlib Axes, optional
        Where to draw.
    notes : sequence of str, optional
        Lines written under the curves (e.g. why a curve is missing).

    Returns
    -------
    matplotlib Axes
        One line per curve; the best number of components of each is marked.
    """
    ax = new_axes(ax)
    for i, (label, (n_components, loglik)) in enumerate(curves.items()):
        n_components = np.asarray(n_components)
        loglik = np.asarray(loglik, dtype=float)
        if n_components.shape != loglik.shape:
            raise ValueError(
                f"curve {label!r}: n_components and log_likelihood must have the same shape; "
                f"got {n_components.shape} and {loglik.shape}."
            )
        ax.plot(n_components, loglik, "o-", color=f"C{i}", ms=4, label=label)
        best = int(np.argmax(loglik))
        ax.plot(n_components[best], loglik[best], "*", color=f"C{i}", ms=12)
    ax.set_xlabel("number of mixture components")
    ax.set_ylabel("held-out log-likelihood per unit (nats)")
    ax.set_title(
        "cluster structure of the loadings\n(★ = best; a best above 1 = distinct populations)",
        fontsize=9,
    )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False, fontsize=8)
    for i, note in enumerate(notes):
        ax.text(
            0.02,
            0.03 + 0.06 * i,
            note,
            transform=ax.transAxes,
            fontsize=7,
            color="0.4",
            wrap=True,
        )
    return ax
