"""The GL(R) gauge of low-rank networks: the canonical gauge and alignment to a reference.

For any invertible A (R×R), the map

    κ → A κ,   M → M A⁻¹,   K → K Aᵀ,   B, d unchanged

leaves every potential x = M κ + B u + d and every trajectory unchanged (``tutorials/model.md``,
"The gauge").

**Canonical gauge** (what the estimator reports), deterministic given a fit:

1. whiten the latents over the visited states: A₁ = C^{-1/2} with C = E[κ κᵀ] over every
   observed bin of every trial (the second moment, not centred, so the map stays linear);
2. rotate by the eigenvectors of (M A₁⁻¹)ᵀ(M A₁⁻¹), so that MᵀM is diagonal with descending
   entries (the latents stay white);
3. fix signs so that the entry of largest magnitude in each column of M is positive.

**Alignment** to a reference (e.g. ground truth): affine least squares
``reference ≈ latents @ Aᵀ + c`` over observed bins (:func:`align_latents`), then
:func:`apply_gauge` maps (M, K, B, d, latents) through (A, c).
"""

from __future__ import annotations

import numpy as np

from .._validation import check_array

__all__ = ["canonical_gauge", "align_latents", "apply_gauge"]


def _visited(latents: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    latents = check_array(latents, "latents", ndim=3, dtype=np.float64)
    if mask is None:
        return latents.reshape(-1, latents.shape[2])
    mask = check_array(mask, "mask", shape=latents.shape[:2], dtype=bool)
    if not mask.any():
        raise ValueError("mask selects no bin: cannot compute a gauge from zero visited states.")
    return latents[mask]


def canonical_gauge(latents: np.ndarray, M: np.ndarray, mask: np.ndarray | None = None):
    """Return the matrix A that maps a fit into the canonical gauge.

    Parameters
    ----------
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t) in the current gauge.
    M : ndarray of shape (n_units, rank)
        Input-side loadings in the current gauge.
    mask : ndarray of shape (n_trials, n_time), bool, optional
        Observed bins (default: all).

    Returns
    -------
    ndarray of shape (rank, rank)
        A; apply it with :func:`apply_gauge`.

    Raises
    ------
    ValueError
        When the visited latents do not span R dimensions (the second moment is singular).
    """
    points = _visited(latents, mask)
    M = check_array(M, "M", shape=(None, points.shape[1]), dtype=np.float64)
    second = points.T @ points / points.shape[0]
    evals, evecs = np.linalg.eigh(second)
    if evals.min() <= 1e-12 * max(evals.max(), 1e-300):
        raise ValueError(
            f"The visited latents span fewer than {points.shape[1]} dimensions "
            f"(second-moment eigenvalues {evals.tolist()}); cannot whiten them."
        )
    whiten = evecs @ np.diag(evals**-0.5) @ evecs.T
    M_white = M @ np.linalg.inv(whiten)
    gram = M_white.T @ M_white
    g_evals, rotation = np.linalg.eigh(gram)
    rotation = rotation[:, np.argsort(g_evals)[::-1]]
    M_rot = M_white @ rotation
    largest = M_rot[np.argmax(np.abs(M_rot), axis=0), np.arange(M_rot.shape[1])]
    signs = np.where(largest < 0, -1.0, 1.0)
    # κ' = diag(s) Rᵀ W κ, hence A = diag(s) Rᵀ W.
    return (signs[:, None] * rotation.T) @ whiten


def align_latents(
    latents: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    affine: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares map of ``latents`` onto ``reference``: reference ≈ A κ + c.

    Parameters
    ----------
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t) to align.
    reference : ndarray of shape (n_trials, n_time, rank_ref)
        Target latents (e.g. the ground truth).
    mask : ndarray of shape (n_trials, n_time), bool, optional
        Bins to use (default: all).
    affine : bool, default: True
        Fit the offset c; when False, c = 0 (a purely linear gauge map).

    Returns
    -------
    A : ndarray of shape (rank_ref, rank)
        Linear part.
    c : ndarray of shape (rank_ref,)
        Offset.
    """
    x = _visited(latents, mask)
    reference = check_array(reference, "reference", ndim=3, dtype=np.float64)
    if reference.shape[:2] != np.shape(latents)[:2]:
        raise ValueError(
            "reference must cover the same trials and bins as latents: got shapes "
            f"{reference.shape[:2]} and {np.shape(latents)[:2]}."
        )
    y = _visited(reference, mask)
    design = np.hstack([x, np.ones((x.shape[0], 1))]) if affine else x
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    A = coef[: x.shape[1]].T
    c = coef[x.shape[1]] if affine else np.zeros(y.shape[1])
    return A, c


def apply_gauge(
    M: np.ndarray,
    K: np.ndarray,
    B: np.ndarray,
    d: np.ndarray,
    latents: np.ndarray,
    A: np.ndarray,
    c: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Map a fit through κ → A κ + c.

    Parameters
    ----------
    M, K : ndarray of shape (n_units, rank)
        Loadings.
    B : ndarray of shape (n_units, n_inputs)
        Input weights (unchanged).
    d : ndarray of shape (n_units,)
        Biases; become d − M A⁻¹ c so that the potentials are unchanged.
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t).
    A : ndarray of shape (rank, rank)
        Invertible linear part.
    c : ndarray of shape (rank,), optional
        Offset (default 0).

    Returns
    -------
    M, K, B, d, latents
        In the new coordinates: M A⁻¹, K Aᵀ, B, d − M A⁻¹ c, κ Aᵀ + c. Potentials are exactly
        preserved; the dynamics are exactly preserved when c = 0 (an offset adds a constant
        α c drift that the latent form cannot hold, so compare flow fields through
        F'(κ') = A F(A⁻¹(κ' − c)) then).
    """
    A = check_array(A, "A", ndim=2, dtype=np.float64)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be square (rank, rank); got shape {A.shape}.")
    A_inv = np.linalg.inv(A)
    M_new = np.asarray(M, np.float64) @ A_inv
    d_new = np.asarray(d, np.float64).copy()
    lat_new = np.asarray(latents, np.float64) @ A.T
    if c is not None:
        c = np.asarray(c, np.float64)
        d_new = d_new - M_new @ c
        lat_new = lat_new + c
    return M_new, np.asarray(K, np.float64) @ A.T, np.asarray(B, np.float64), d_new, lat_new
