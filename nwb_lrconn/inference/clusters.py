"""Cluster structure of per-unit loadings: cross-validated Gaussian-mixture curves and k-means
population labels (numpy and scikit-learn only, so reports can draw them without torch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validation import check_array, check_positive_int, make_rng

__all__ = ["gmm_cv_log_likelihood", "population_labels"]


def gmm_cv_log_likelihood(
    X: np.ndarray,
    *,
    n_components: Sequence[int] = tuple(range(1, 10)),
    n_folds: int = 5,
    random_state: int | None = 0,
) -> np.ndarray:
    """Cross-validated Gaussian-mixture log-likelihood per unit versus the number of components.

    For each k, a full-covariance ``sklearn.mixture.GaussianMixture`` is fitted on k-fold
    training splits of the rows of X and scored on the held-out rows.

    Parameters
    ----------
    X : ndarray of shape (n_units, n_features)
        E.g. ``[m, k]`` per unit.
    n_components : sequence of int, default: 1..9
        Numbers of components to try.
    n_folds : int, default: 5
        Folds.
    random_state : int or None, default: 0
        Seed of the fold split and of the mixtures.

    Returns
    -------
    ndarray of shape (len(n_components),)
        Mean held-out log-likelihood per unit (nats), averaged over folds.
    """
    from sklearn.mixture import GaussianMixture
    from sklearn.model_selection import KFold

    X = check_array(X, "X", ndim=2, dtype=np.float64, finite=True)
    n_folds = check_positive_int(n_folds, "n_folds", minimum=2)
    seed = int(make_rng(random_state).integers(2**31))
    folds = list(KFold(n_folds, shuffle=True, random_state=seed).split(X))
    out = []
    for n in n_components:
        check_positive_int(n, "n_components")
        scores = [
            GaussianMixture(n, n_init=2, random_state=seed).fit(X[tr]).score(X[te])
            for tr, te in folds
        ]
        out.append(float(np.mean(scores)))
    return np.asarray(out)


def population_labels(
    X: np.ndarray, *, n_populations: int = 4, random_state: int | None = 0
) -> np.ndarray:
    """k-means population labels of units (e.g. on ``[m, k]``).

    Parameters
    ----------
    X : ndarray of shape (n_units, n_features)
        Per-unit features.
    n_populations : int, default: 4
        Number of clusters.
    random_state : int or None, default: 0
        Seed of k-means.

    Returns
    -------
    ndarray of shape (n_units,), int
        Labels in ``range(n_populations)``.
    """
    from sklearn.cluster import KMeans

    X = check_array(X, "X", ndim=2, dtype=np.float64, finite=True)
    n_populations = check_positive_int(n_populations, "n_populations")
    seed = int(make_rng(random_state).integers(2**31))
    return KMeans(n_populations, n_init=10, random_state=seed).fit_predict(X)
