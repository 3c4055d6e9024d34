"""The structured Laplace posterior: exact per-unit blocks plus the latent coupling, compressed.

Every cross-unit term of the Gauss–Newton matrix runs through the shared latent trajectory: a
change of unit j's parameters forces the latents, ``f = C δθ``, and the latents move every unit
(see :mod:`nwb_lrconn.inference.curvature`). With ``J = D + L̃`` (D block-diagonal over units,
L̃ the latent-mediated part) the structured form restricts the *forcing* to a subspace V of θ,

    J̃ = D + L̃ Π_V,   Π_V = V Vᵀ,

and uses the Gauss–Newton matrix of J̃ (κ(0) profiled, the readout marginalised or held), which
is exactly

    Π = B + Y Vᵀ + V Yᵀ + V H Vᵀ − X̃ᵀ F_κκ⁺ X̃,        X̃ = X_d + X_l Vᵀ,

with B the per-unit blocks ``DᵢᵀWDᵢ + λI``, ``Y = DᵀWL̃V``, ``H = VᵀL̃ᵀWL̃V``, and X_d, X_l the
direct and latent cross terms of κ(0). This is block-diagonal plus a low-rank term of rank
``2·dim V + n_trials·R``, so the covariance, its per-unit blocks, densities, samples, the
log-determinant and the eigenvalue counts follow exactly from the Woodbury identity and Sylvester's
law of inertia, at cost O(P·r²) for r the rank.

Choice of V: the leading eigenspace of the latent-mediated Fisher ``L̃ᵀWL̃ = Cᵀ H_κ C``, found by
a randomized range finder: blocks of ``L̃ᵀ z`` (z standard normal on the weighted latents) are
added until a fresh block has a squared residual outside V below ``tol`` times its squared
norm (an unbiased estimate of the fraction of the trace of ``L̃ᵀWL̃`` that V misses), or the
rank reaches ``max_rank``. The R² gauge directions are always in V, so they stay exact null
vectors of the data precision. The approximation error vanishes with the residual: the
structured matrix is the exact Gauss–Newton matrix of a model whose latent forcing is confined to
V, and ``(1 − ε − ε²)(F + λI) ≼ Π ≼ (1 + ε + ε²)(F + λI)`` with ``ε² = ‖(I − Π_V) L̃ᵀWL̃ (I − Π_V)‖
/ λ`` (spectral norm of the missed part over the prior precision).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg
from torch import Tensor

from .curvature import (
    Linearisation,
    backpropagate,
    direct_blocks,
    direct_cross,
    gram_roots,
    initial_state_cross,
    initial_state_tangents,
    latent_forcing,
    latent_forcing_adjoint,
    latent_gram,
    propagate,
    unit_indices,
)

__all__ = ["CouplingSubspace", "coupling_subspace", "BlockLowRank", "structured_covariance"]


@dataclass(frozen=True)
class CouplingSubspace:
    """The subspace V of θ that carries the latent forcing in the structured posterior.

    Attributes
    ----------
    basis : ndarray of shape (n_params, r)
        Orthonormal; its first R² columns span the gauge directions.
    residual : float
        Estimated fraction of the trace of the latent-mediated Fisher ``L̃ᵀWL̃`` outside the
        span (0 when the span is all of θ).
    """

    basis: np.ndarray
    residual: float


def _orth_against(basis: np.ndarray, block: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis of the part of ``block`` outside ``basis``.

    Projection and QR are repeated on the normalised columns ("twice is enough"), so nearly
    dependent columns do not spoil the orthogonality.
    """
    for _ in range(2):
        block = block - basis @ (basis.T @ block)
    q, r = linalg.qr(block, mode="economic")
    diag = np.abs(np.diag(r))
    q = q[:, diag > rtol * max(diag.max(initial=0.0), np.finfo(float).tiny)]
    q -= basis @ (basis.T @ q)
    return linalg.qr(q, mode="economic")[0]


def _sketch(lin: Linearisation, roots: Tensor, size: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``L̃ᵀ z`` for ``size`` standard normal z on the weighted latents, shape (P, size).

    Its columns have covariance ``L̃ᵀWL̃``; single precision, since the sketch only chooses V.
    """
    n_trials, n_time, R = lin.latents.shape
    z = torch.from_numpy(rng.standard_normal((n_trials, n_time, R, size), dtype=np.float32))
    mu = backpropagate(lin, roots @ z)
    forcing_cot = torch.zeros_like(mu)
    forcing_cot[:, :-1] = mu[:, 1:]  # μ(t+1) is the cotangent of f(t)
    return latent_forcing_adjoint(lin, forcing_cot).double().numpy()


def coupling_subspace(
    lin: Linearisation,
    gauge: np.ndarray,
    *,
    tol: float,
    max_rank: int,
    rng: np.random.Generator,
    block: int = 64,
) -> CouplingSubspace:
    """Find V by the adaptive randomized range finder described in the module docstring.

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    gauge : ndarray of shape (n_params, R²)
        Orthonormal gauge directions (always kept).
    tol : float
        Stop once a fresh block leaves at most this fraction of its squared norm outside V.
    max_rank : int
        At most this many directions besides the gauge.
    rng : numpy Generator
        Randomness of the sketch.
    block : int, default: 64
        Sketch vectors per pass over the data.

    Returns
    -------
    CouplingSubspace
        Basis and residual: that of the last block against the span before it (an
        overestimate) when the tolerance was met, else that of a fresh probe block against the
        final V (when ``max_rank`` stopped the search).
    """
    roots = gram_roots(lin).to(torch.float32)
    basis = gauge
    limit = min(lin.n_params, gauge.shape[1] + max_rank)
    residual = 1.0
    while basis.shape[1] < limit:
        Y = _sketch(lin, roots, min(block, limit - basis.shape[1]), rng)
        Y -= gauge @ (gauge.T @ Y)
        outside = Y - basis @ (basis.T @ Y)
        residual = float(np.sum(outside**2)) / max(float(np.sum(Y**2)), np.finfo(float).tiny)
        new = _orth_against(basis, outside)
        basis = np.hstack([basis, new])
        if residual <= tol or new.shape[1] == 0:
            break
    else:
        if basis.shape[1] < lin.n_params:
            # Stopped at the cap: the last block's residual was measured against the span
            # before it, so it says nothing of the final V. One fresh probe measures V itself.
            Y = _sketch(lin, roots, min(block, 16), rng)
            Y -= gauge @ (gauge.T @ Y)
            outside = Y - basis @ (basis.T @ Y)
            residual = float(np.sum(outside**2)) / max(float(np.sum(Y**2)), np.finfo(float).tiny)
    if basis.shape[1] >= lin.n_params:
        residual = 0.0
    return CouplingSubspace(basis=basis, residual=residual)


class BlockLowRank:
    """A symmetric positive definite matrix ``Σ = blockdiag(Aᵢ) + U diag(s) Uᵀ``.

    Blocks are grouped by ``index`` (row i lists block i's entries); the columns of U need not
    be orthonormal and s may have either sign (no zeros). Provides what a Gaussian with
    covariance Σ needs: marginal blocks, variances, a square root, solves with Σ,
    log-determinant and inertia; the square root and the inverse (O(n·m²) factorisations) are
    formed on first use.

    Parameters
    ----------
    blocks : ndarray of shape (n_blocks, p, p)
        Aᵢ, symmetric positive definite.
    index : ndarray of shape (n_blocks, p), int
        Entries of block i.
    vectors : ndarray of shape (n, m)
        U.
    values : ndarray of shape (m,)
        s.
    """

    def __init__(self, blocks, index, vectors, values) -> None:
        self.blocks = np.asarray(blocks, dtype=np.float64)
        self.index = np.asarray(index, dtype=np.int64)
        self.vectors = np.asarray(vectors, dtype=np.float64)
        self.values = np.asarray(values, dtype=np.float64)
        self.size = self.index.size
        self._chol = np.linalg.cholesky(self.blocks)
        self._factor: tuple[np.ndarray, np.ndarray] | None = None
        self._inverse: tuple[np.ndarray, np.ndarray] | None = None

    def _woodbury(self) -> tuple[np.ndarray, np.ndarray]:
        """Σ⁻¹ = A⁻¹ − F diag(1/c) Fᵀ with F = A⁻¹U W and ``diag(1/s) + UᵀA⁻¹U = W diag(c) Wᵀ``."""
        if self._inverse is None:
            a_inv_u = self._from_blocks(
                np.linalg.solve(self.blocks, self._per_block(self.vectors))
            )
            cap = self.vectors.T @ a_inv_u
            cap[np.diag_indices_from(cap)] += 1.0 / self.values
            c, w = np.linalg.eigh(0.5 * (cap + cap.T))
            self._inverse = (a_inv_u @ w, c)
        return self._inverse

    def _q_mu(self) -> tuple[np.ndarray, np.ndarray]:
        """Σ = L (I + Q diag(μ) Qᵀ) Lᵀ with L = blockdiag(chol Aᵢ) and Q orthonormal."""
        if self._factor is None:
            q, r = linalg.qr(self._solve_l(self.vectors), mode="economic")
            mu, v = np.linalg.eigh((r * self.values) @ r.T)
            self._factor = (q @ v, np.clip(mu, -1.0 + 1e-15, None))
        return self._factor

    def _per_block(self, x: np.ndarray) -> np.ndarray:
        return x[self.index]  # (n_blocks, p, k)

    def _from_blocks(self, xb: np.ndarray) -> np.ndarray:
        out = np.empty((self.size,) + xb.shape[2:])
        out[self.index] = xb
        return out

    def _solve_l(self, x: np.ndarray, trans: bool = False) -> np.ndarray:
        """L⁻¹ x (or L⁻ᵀ x) for x of shape (n, k), block by block."""
        chol = np.swapaxes(self._chol, 1, 2) if trans else self._chol
        return self._from_blocks(np.linalg.solve(chol, self._per_block(x)))

    def marginal_blocks(self) -> np.ndarray:
        """Σ restricted to each block, shape (n_blocks, p, p)."""
        u = self._per_block(self.vectors)  # (n_blocks, p, m)
        return self.blocks + (u * self.values) @ np.swapaxes(u, 1, 2)

    def diagonal(self) -> np.ndarray:
        """diag Σ, shape (n,)."""
        out = self._from_blocks(np.diagonal(self.blocks, axis1=1, axis2=2))
        return out + (self.vectors**2) @ self.values

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """Σ x for x of shape (n, k)."""
        out = self._from_blocks(self.blocks @ self._per_block(x))
        return out + self.vectors @ (self.values[:, None] * (self.vectors.T @ x))

    def solve(self, x: np.ndarray) -> np.ndarray:
        """Σ⁻¹ x for x of shape (n, k)."""
        f, c = self._woodbury()
        out = self._from_blocks(np.linalg.solve(self.blocks, self._per_block(x)))
        return out - f @ ((f.T @ x) / c[:, None])

    def sqrt_apply(self, xi: np.ndarray) -> np.ndarray:
        """S ξ for a square root S (S Sᵀ = Σ), ξ of shape (n, k)."""
        q, mu = self._q_mu()
        y = xi + q @ ((np.sqrt(1.0 + mu) - 1.0)[:, None] * (q.T @ xi))
        return self._from_blocks(self._chol @ self._per_block(y))

    def whiten(self, x: np.ndarray) -> np.ndarray:
        """S⁻¹ x, so that ``‖S⁻¹ x‖² = xᵀ Σ⁻¹ x``."""
        q, mu = self._q_mu()
        y = self._solve_l(x)
        return y + q @ ((1.0 / np.sqrt(1.0 + mu) - 1.0)[:, None] * (q.T @ y))

    def logdet(self) -> float:
        """log det Σ = log det A + log |det diag(s)| + log |det(diag(1/s) + UᵀA⁻¹U)|."""
        _, c = self._woodbury()
        chol_diag = np.diagonal(self._chol, axis1=1, axis2=2)
        logdet_a = 2.0 * np.sum(np.log(chol_diag))
        return float(logdet_a + np.sum(np.log(np.abs(self.values))) + np.sum(np.log(np.abs(c))))

    def count_below(self, level: float) -> int:
        """Number of eigenvalues of Σ below ``level``, by Sylvester's law of inertia.

        With Δ = blockdiag(Aᵢ) − level·I, the two Schur complements of ``[[Δ, U], [Uᵀ, −S⁻¹]]``
        give ``n₋(Δ + U S Uᵀ) = n₋(Δ) + n₋(−S⁻¹ − UᵀΔ⁻¹U) − n₋(−S⁻¹)``.
        """
        w, v = np.linalg.eigh(self.blocks - level * np.eye(self.blocks.shape[1]))
        n_neg = int(np.sum(w < 0))
        keep = self.values != 0
        s = self.values[keep]
        if s.size == 0:
            return n_neg
        vu = np.swapaxes(v, 1, 2) @ self._per_block(self.vectors[:, keep])  # (n_blocks, p, m)
        vu_scaled = vu / w[:, :, None]
        m = s.size
        cap = -np.diag(1.0 / s) - vu.reshape(-1, m).T @ vu_scaled.reshape(-1, m)
        n_cap = int(np.sum(np.linalg.eigvalsh(0.5 * (cap + cap.T)) < 0))
        return n_neg + n_cap - int(np.sum(s > 0))


def structured_covariance(
    lin: Linearisation,
    subspace: CouplingSubspace,
    gauge: np.ndarray,
    *,
    prior_precision: float,
    readout: bool,
) -> BlockLowRank:
    """Return the posterior covariance over θ of the structured form, as a :class:`BlockLowRank`.

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    subspace : CouplingSubspace
        V.
    gauge : ndarray of shape (n_params, R²)
        Orthonormal gauge directions; the covariance is made to have them as exact
        eigenvectors with eigenvalue 1/λ.
    prior_precision : float
        λ (on θ, and on the readout when it is marginalised).
    readout : bool
        Marginalise the readout (True) or hold it (False).

    Returns
    -------
    BlockLowRank
        Σ over θ, blocks grouped per unit as in :func:`~.curvature.unit_indices`.
    """
    lam = prior_precision
    N, R, D = lin.n_units, lin.rank, lin.n_inputs
    p0 = 2 * R + D + 1
    p = p0 + (2 if readout else 0)
    theta_index = unit_indices(N, R, D)
    V = subspace.basis
    b = V.shape[1]
    n_trials = lin.phi.shape[0]
    nr = n_trials * R

    # Z = [Y, V, X_dᵀ] over the per-unit parameters (unit by unit, readout rows last).
    Z = np.zeros((N * p, 2 * b + nr))
    tau = propagate(lin, latent_forcing(lin, torch.from_numpy(V)))
    Z[:, :b] = direct_cross(lin, tau, readout=readout).numpy().reshape(N * p, b)
    H = latent_gram(lin, tau, tau).sum(0).numpy()
    Q = initial_state_tangents(lin)
    X_l = latent_gram(lin, Q, tau).numpy().reshape(nr, b)
    del tau
    Z[:, 2 * b :] = initial_state_cross(lin, Q, readout=readout).numpy().reshape(nr, N * p).T
    f_kk = latent_gram(lin, Q, Q).numpy()
    del Q
    Z.reshape(N, p, -1)[:, :p0, b : 2 * b] = V[theta_index]
    pinv = np.linalg.pinv(0.5 * (f_kk + f_kk.transpose(0, 2, 1)), hermitian=True)
    pinv = linalg.block_diag(*pinv)
    pinv_xl = pinv @ X_l
    S = np.zeros((2 * b + nr, 2 * b + nr))
    S[:b, b : 2 * b] = S[b : 2 * b, :b] = np.eye(b)
    S[b : 2 * b, b : 2 * b] = H - X_l.T @ pinv_xl
    S[b : 2 * b, 2 * b :] = -pinv_xl.T
    S[2 * b :, b : 2 * b] = -pinv_xl
    S[2 * b :, 2 * b :] = -pinv
    # Woodbury over the per-unit parameters, Π = B + Z S Zᵀ (S may be singular):
    # Σ = B⁻¹ − B⁻¹Z M ZᵀB⁻¹ with M = (I + S K)⁻¹ S symmetric, K = ZᵀB⁻¹Z; the columns of Z are
    # scaled to unit norm first.
    scale = np.linalg.norm(Z, axis=0)
    scale[scale == 0] = 1.0
    Z /= scale
    S *= scale[:, None] * scale[None, :]
    B_inv = np.linalg.inv(direct_blocks(lin, readout=readout).numpy() + lam * np.eye(p))
    m = Z.shape[1]
    E = (B_inv @ Z.reshape(N, p, m)).reshape(N * p, m)
    K = Z.T @ E
    del Z
    M = np.linalg.solve(np.eye(m) + S @ K, S)
    M = 0.5 * (M + M.T)
    del K, S
    E_theta = np.empty((lin.n_params, m))
    E_theta[theta_index] = E.reshape(N, p, m)[:, :p0]
    del E
    A = np.ascontiguousarray(B_inv[:, :p0, :p0])

    # Make the gauge directions exact eigenvectors: Σ ← P⊥ Σ P⊥ + G Gᵀ/λ (G orthonormal),
    # i.e. Σ = A + [E, G, ΣG] C [E, G, ΣG]ᵀ for the symmetric C below.
    g = gauge.shape[1]
    SG = BlockLowRank(A, theta_index, np.zeros((lin.n_params, 0)), np.zeros(0)).matvec(gauge)
    SG -= E_theta @ (M @ (E_theta.T @ gauge))
    core = np.zeros((m + 2 * g, m + 2 * g))
    core[:m, :m] = -M
    core[m : m + g, m : m + g] = gauge.T @ SG + np.eye(g) / lam
    core[m : m + g, m + g :] = core[m + g :, m : m + g] = -np.eye(g)
    values, W = np.linalg.eigh(0.5 * (core + core.T))
    keep = np.abs(values) > 1e-14 * np.abs(values).max()
    vectors = np.hstack([E_theta, gauge, SG]) @ W[:, keep]
    return BlockLowRank(A, theta_index, vectors, values[keep])
