"""Closed-form pieces of the output side: the state matrix Φ, the K-block Fisher and ridge K̂.

With the latents κ and the input side (M, B, d) held fixed, the latent update of the model
is linear in the output loadings K:

    Y_t = κ(t+1) − (1 − α) κ(t) = (α/N) Φ_t K + ξ(t),     Φ_{t,i} = φ(m_i·κ(t) + b_i·u(t) + d_i).

With Gaussian noise ξ ~ N(0, σ² I) on the updates and a Gaussian prior K ~ N(0, I/λ) this is
Bayesian linear regression, so the Laplace posterior over K is exact:

- data precision (Fisher) ``F_K = (α/N)² ΦᵀΦ ⊗ I_R / σ²`` (K flattened in C order, entry
  ``K[i, r]`` at ``i·R + r``); its null space {Δ : ΦΔ = 0} has dimension ``R·(N − rank Φ)``;
- posterior mean (ridge) ``K̂ = (XᵀX + σ²λ I)⁻¹ XᵀY`` with ``X = (α/N)Φ``.

λ convention: ``prior_precision`` is the precision of the prior on each entry of K and
``noise_std`` the σ of the update noise, so the ridge strength is ``σ²λ``. With ``noise_std=1``
this is the published code's ``min ‖Y − (α/S)Φk‖² + λ‖k‖²`` (S = N), whose closed form is
``k̂ = (S/α)(ΦᵀΦ + λS²/α² I)⁻¹ΦᵀY``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg

from .._validation import check_array, check_positive, check_positive_int
from ..model.nonlinearity import phi as _phi
from ..model.ridge import solve_output_loadings

__all__ = [
    "state_matrix",
    "latent_updates",
    "k_block_fisher",
    "ridge_output_loadings",
    "least_squares_output_loadings",
]


def _check_latents(latents, mask, M, B, d, inputs):
    latents = check_array(latents, "latents", ndim=3, dtype=np.float64, finite=True)
    n_trials, n_time, rank = latents.shape
    mask = check_array(mask, "mask", shape=(n_trials, n_time), dtype=bool)
    M = check_array(M, "M", shape=(None, rank), dtype=np.float64, finite=True)
    n_units = M.shape[0]
    if d is not None:
        d = check_array(d, "d", shape=(n_units,), dtype=np.float64)
    if inputs is not None:
        inputs = check_array(inputs, "inputs", ndim=3, dtype=np.float64)
        if inputs.shape[:2] != (n_trials, n_time):
            raise ValueError(
                f"inputs must have shape ({n_trials}, {n_time}, n_inputs) to match latents; "
                f"got {inputs.shape}."
            )
        if B is None:
            raise ValueError("inputs were given without input weights B.")
        B = check_array(B, "B", shape=(n_units, inputs.shape[2]), dtype=np.float64)
    return latents, mask, M, B, d, inputs


def _potentials(latents, M, B, d, inputs):
    x = latents @ M.T
    if inputs is not None and B is not None and B.shape[1] > 0:
        x = x + inputs @ B.T
    if d is not None:
        x = x + d
    return x


def state_matrix(
    latents: np.ndarray,
    mask: np.ndarray,
    M: np.ndarray,
    *,
    B: np.ndarray | None = None,
    d: np.ndarray | None = None,
    inputs: np.ndarray | None = None,
    nonlinearity: str = "tanh",
    updates_only: bool = False,
) -> np.ndarray:
    """Return the state matrix Φ, one row per visited state and one column per unit.

    Parameters
    ----------
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t) per trial.
    mask : ndarray of shape (n_trials, n_time), bool
        Visited (valid) bins.
    M : ndarray of shape (n_units, rank)
        Input-side loadings.
    B : ndarray of shape (n_units, n_inputs), optional
        Input weights (needed when ``inputs`` is given).
    d : ndarray of shape (n_units,), optional
        Biases.
    inputs : ndarray of shape (n_trials, n_time, n_inputs), optional
        u(t).
    nonlinearity : {"tanh", "relu", "softplus"}, default: "tanh"
        φ.
    updates_only : bool, default: False
        Keep only the states t whose successor t + 1 is also valid (the rows of the latent
        update regression).

    Returns
    -------
    ndarray of shape (n_states, n_units)
        ``Φ[s, i] = φ(m_i·κ_s + b_i·u_s + d_i)`` over the selected states, in (trial, time)
        order.

    Raises
    ------
    ValueError
        When the shapes do not match.
    """
    latents, mask, M, B, d, inputs = _check_latents(latents, mask, M, B, d, inputs)
    rows = _update_rows(mask) if updates_only else mask
    x = _potentials(latents, M, B, d, inputs)[rows]
    return _phi(x, nonlinearity)


def _update_rows(mask: np.ndarray) -> np.ndarray:
    rows = np.zeros_like(mask)
    rows[:, :-1] = mask[:, :-1] & mask[:, 1:]
    return rows


def latent_updates(latents: np.ndarray, mask: np.ndarray, *, alpha: float) -> np.ndarray:
    """Return the latent updates ``Y_t = κ(t+1) − (1 − α) κ(t)`` over valid consecutive bins.

    Parameters
    ----------
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t).
    mask : ndarray of shape (n_trials, n_time), bool
        Valid bins.
    alpha : float
        Euler step Δt/τ.

    Returns
    -------
    ndarray of shape (n_states, rank)
        Rows in the order of ``state_matrix(..., updates_only=True)``.
    """
    latents = check_array(latents, "latents", ndim=3, dtype=np.float64)
    mask = check_array(mask, "mask", shape=latents.shape[:2], dtype=bool)
    alpha = check_positive(alpha, "alpha")
    y = np.zeros_like(latents)
    y[:, :-1] = latents[:, 1:] - (1 - alpha) * latents[:, :-1]
    return y[_update_rows(mask)]


def k_block_fisher(
    Phi: np.ndarray, *, alpha: float, n_units: int, rank: int, noise_std: float = 1.0
) -> np.ndarray:
    """Return the exact Fisher matrix of K for Gaussian noise on the latent updates.

    ``F_K = (α/N)² ΦᵀΦ ⊗ I_R / σ²``, with K flattened in C order (``K[i, r]`` at ``i·R + r``).

    Parameters
    ----------
    Phi : ndarray of shape (n_states, n_units)
        State matrix (:func:`state_matrix` with ``updates_only=True``).
    alpha : float
        Euler step Δt/τ.
    n_units : int
        N (the 1/N of the model; normally ``Phi.shape[1]``).
    rank : int
        R.
    noise_std : float, default: 1.0
        σ of the update noise.

    Returns
    -------
    ndarray of shape (n_units·rank, n_units·rank)
        F_K (dense; meant for N·R up to a few thousand).

    Raises
    ------
    ValueError
        When ``Phi`` does not have ``n_units`` columns.
    """
    Phi = check_array(Phi, "Phi", ndim=2, dtype=np.float64, finite=True)
    n_units = check_positive_int(n_units, "n_units")
    rank = check_positive_int(rank, "rank")
    if Phi.shape[1] != n_units:
        raise ValueError(f"Phi must have n_units={n_units} columns; got shape {Phi.shape}.")
    scale = (check_positive(alpha, "alpha") / n_units) ** 2 / check_positive(
        noise_std, "noise_std"
    ) ** 2
    return scale * np.kron(Phi.T @ Phi, np.eye(rank))


def _regression(latents, mask, M, B, d, inputs, alpha, nonlinearity):
    latents, mask, M, B, d, inputs = _check_latents(latents, mask, M, B, d, inputs)
    alpha = check_positive(alpha, "alpha")
    Phi = state_matrix(
        latents, mask, M, B=B, d=d, inputs=inputs, nonlinearity=nonlinearity, updates_only=True
    )
    if Phi.shape[0] == 0:
        raise ValueError("mask leaves no pair of consecutive valid bins to regress on.")
    Y = latent_updates(latents, mask, alpha=alpha)
    return (alpha / M.shape[0]) * Phi, Y


def ridge_output_loadings(
    latents: np.ndarray,
    mask: np.ndarray,
    M: np.ndarray,
    *,
    alpha: float,
    prior_precision: float,
    noise_std: float = 1.0,
    B: np.ndarray | None = None,
    d: np.ndarray | None = None,
    inputs: np.ndarray | None = None,
    nonlinearity: str = "tanh",
) -> np.ndarray:
    """Return the ridge (= exact Laplace posterior mean) output loadings K̂ given κ and M.

    Solves ``min_K ‖Y − (α/N)ΦK‖² / σ² + λ‖K‖²`` over the latent updates Y (see the module
    docstring for the λ convention).

    Parameters
    ----------
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t).
    mask : ndarray of shape (n_trials, n_time), bool
        Valid bins.
    M : ndarray of shape (n_units, rank)
        Input-side loadings.
    alpha : float
        Euler step Δt/τ.
    prior_precision : float
        λ, prior precision of each entry of K.
    noise_std : float, default: 1.0
        σ of the update noise.
    B, d, inputs, nonlinearity
        As in :func:`state_matrix`.

    Returns
    -------
    ndarray of shape (n_units, rank)
        K̂.
    """
    X, Y = _regression(latents, mask, M, B, d, inputs, alpha, nonlinearity)
    K = solve_output_loadings(
        torch.from_numpy(X * (M.shape[0] / alpha)),
        torch.from_numpy(Y),
        alpha=alpha,
        prior_precision=check_positive(prior_precision, "prior_precision"),
        noise_std=check_positive(noise_std, "noise_std"),
    )
    return K.numpy()


def least_squares_output_loadings(
    latents: np.ndarray,
    mask: np.ndarray,
    M: np.ndarray,
    *,
    alpha: float,
    B: np.ndarray | None = None,
    d: np.ndarray | None = None,
    inputs: np.ndarray | None = None,
    nonlinearity: str = "tanh",
) -> np.ndarray:
    """Return an unregularised least-squares solution for the output loadings (no prior).

    Solves the normal equations ``(XᵀX) K = XᵀY`` with ``X = (α/N)Φ`` by an LU factorisation
    and no regularisation: what a plain (prior-free) fit of K to the latent updates returns. It
    reproduces the dynamics, but XᵀX is numerically singular (its null space is the set of
    output loadings the data cannot see), so the solve lands on an arbitrary point of that null
    space, with huge entries. The minimum-norm solution is instead the λ → 0 limit of
    :func:`ridge_output_loadings`.

    Parameters
    ----------
    latents, mask, M, alpha, B, d, inputs, nonlinearity
        As in :func:`ridge_output_loadings`.

    Returns
    -------
    ndarray of shape (n_units, rank)
        K̂ (least squares).
    """
    X, Y = _regression(latents, mask, M, B, d, inputs, alpha, nonlinearity)
    with warnings.catch_warnings():
        # Ill-conditioning is the point of this estimator; do not warn about it.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.solve(X.T @ X, X.T @ Y, assume_a="gen")
