"""Ridge (maximum-entropy prior) targets of flow B over a quadrature of the visited states.

The latent updates Y_t = κ_{t+1} − (1−α)κ_t are regressed onto (α/S)Φ, the activations of S
virtual units at the visited states, with ridge strength λ. Visited states closer than a
resolution share one weighted row (:func:`build_state_quadrature`), and each system is solved by
Cholesky in the smaller of its S×S and rows×rows forms (:func:`quadrature_ridge_targets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..._validation import (
    check_positive,
)
from ...model.rollout import activation

__all__ = [
    "StateQuadrature",
    "build_state_quadrature",
    "quadrature_ridge_targets",
    "ridge_state_coefficients",
]


@dataclass(frozen=True)
class StateQuadrature:
    """Visited states merged into weighted rows: Σ_t f(X_t) ≈ Σ_b w_b f(X̄_b).

    Attributes
    ----------
    features : ndarray of shape (n_rows, n_z)
        Mean features X̄_b of each group of merged states.
    update_sums : ndarray of shape (n_rows, rank)
        Sum of the updates Y_t of each group.
    weights : ndarray of shape (n_rows,)
        Number of merged states per group.
    """

    features: np.ndarray
    update_sums: np.ndarray
    weights: np.ndarray


def build_state_quadrature(
    features: np.ndarray, updates: np.ndarray, *, resolution: float | None
) -> StateQuadrature:
    """Merge visited states that fall in the same cell of a grid (exact when ``resolution=None``).

    Cells have width ``resolution`` × (standard deviation of each varying feature column). The
    ridge normal equations only need Σ_t φ_tφ_tᵀ and Σ_t φ_t Y_tᵀ, so merging states that differ
    by δ changes them by O(δ²) (features are averaged within a cell, updates summed).

    Parameters
    ----------
    features : ndarray of shape (n_states, n_z)
        X_t.
    updates : ndarray of shape (n_states, rank)
        Y_t.
    resolution : float or None
        Cell width in standard deviations; None keeps every state.

    Returns
    -------
    StateQuadrature
    """
    if resolution is None:
        return StateQuadrature(features, updates, np.ones(features.shape[0]))
    check_positive(resolution, "state_resolution")
    std = features.std(axis=0)
    free = std > 0
    key = np.floor(features[:, free] / (resolution * std[free])).astype(np.int64)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    feat = np.zeros((counts.size, features.shape[1]))
    sums = np.zeros((counts.size, updates.shape[1]))
    np.add.at(feat, inverse, features)
    np.add.at(sums, inverse, updates)
    return StateQuadrature(feat / counts[:, None], sums, counts.astype(np.float64))


def quadrature_ridge_targets(
    features: Tensor,
    update_sums: Tensor,
    weights: Tensor,
    z: Tensor,
    *,
    alpha: float,
    ridge_lambda: float,
    nonlinearity: str = "tanh",
) -> Tensor:
    """Ridge output loadings k̂ = argmin ‖Y − (α/S) Φ k‖² + λ‖k‖² of S virtual units.

    With A = diag(√w) Φ and c = λ S²/α², the solution is
    ``k̂ = (S/α) (AᵀA + cI)⁻¹ Φᵀ Y_sum = (S/α) Aᵀ (AAᵀ + cI)⁻¹ (Y_sum / √w)``; the smaller of the
    two systems is solved by Cholesky.

    Parameters
    ----------
    features : Tensor of shape (n_rows, n_z)
        State features X_t = (κ_t, u_t, 1) (quadrature rows).
    update_sums : Tensor of shape (n_rows, rank)
        Sum of Y_t per row.
    weights : Tensor of shape (n_rows,)
        Number of states per row (ones when exact).
    z : Tensor of shape (S, n_z)
        Virtual units (m, b, d).
    alpha : float
        Δt/τ.
    ridge_lambda : float
        λ.
    nonlinearity : str, default: "tanh"
        φ.

    Returns
    -------
    Tensor of shape (S, rank)
        k̂, in the dtype of ``features``.
    """
    n_virtual = z.shape[0]
    root_w = weights.sqrt()[:, None]
    phi = activation(features @ z.to(features.dtype).T, nonlinearity)  # (n_rows, S)
    a = phi * root_w
    c = ridge_lambda * n_virtual**2 / alpha**2
    if a.shape[0] >= n_virtual:
        gram = a.T @ a
        gram.diagonal().add_(c)
        chol = torch.linalg.cholesky(gram)
        k = torch.cholesky_solve(phi.T @ update_sums, chol)
    else:
        gram = a @ a.T
        gram.diagonal().add_(c)
        chol = torch.linalg.cholesky(gram)
        k = a.T @ torch.cholesky_solve(update_sums / root_w, chol)
    return (n_virtual / alpha) * k


def ridge_state_coefficients(
    features: Tensor,
    update_sums: Tensor,
    weights: Tensor,
    z_sets: list[Tensor],
    *,
    alpha: float,
    ridge_lambda: float,
    nonlinearity: str = "tanh",
) -> Tensor:
    """The ridge conditional mean as a function of z: g*(z) = Σ_b φ(X̄_b · z) β_b.

    By the push-through form of :func:`quadrature_ridge_targets`, the ridge loadings of a set of
    S virtual units are ``k̂_s = (S/α) Σ_b √w_b φ(X̄_b · z_s) u_b`` with
    ``u = (AAᵀ + cI)⁻¹ (Y_sum / √w)``: a fixed combination of the visited states' activations,
    defined for every z. Averaging the rows × rows Gram matrix AAᵀ over several sets removes the
    set-to-set jitter of finite S while keeping the ridge strength of S units (c = λS²/α²).

    Parameters
    ----------
    features, update_sums, weights : Tensor
        Quadrature rows, as for :func:`quadrature_ridge_targets`.
    z_sets : list of Tensor of shape (S, n_z)
        Sets of S virtual units drawn from p(z).
    alpha, ridge_lambda : float
        Δt/τ and λ.
    nonlinearity : str, default: "tanh"
        φ.

    Returns
    -------
    Tensor of shape (n_rows, rank)
        β, in the dtype of ``features``.
    """
    n_virtual = z_sets[0].shape[0]
    root_w = weights.sqrt()[:, None]
    gram = torch.zeros(features.shape[0], features.shape[0], dtype=features.dtype)
    for z in z_sets:
        a = activation(features @ z.to(features.dtype).T, nonlinearity) * root_w
        gram += a @ a.T
    gram /= len(z_sets)
    gram.diagonal().add_(ridge_lambda * n_virtual**2 / alpha**2)
    u = torch.cholesky_solve(update_sums / root_w, torch.linalg.cholesky(gram))
    return (n_virtual / alpha) * root_w * u
