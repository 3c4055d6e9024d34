"""Laplace posterior over θ = (M, K, B, d) at a fit (DESIGN.md §5).

The posterior is ``N(θ̂, (F + λI)⁻¹)`` with θ̂ the fitted parameters, λ the prior precision and F
the Fisher / generalised Gauss–Newton matrix of the fit's observation model with the per-trial
initial states κ(0) profiled out and the readout held at its fitted value (see
:mod:`nwb_lrconn.inference.curvature`). It is local and Gaussian: it cannot represent
multi-modal or heavy-tailed loading distributions (that is stage 3's job).

Two storage structures (:class:`~nwb_lrconn.data.PosteriorCovariance`):

``"dense"``
    F is formed exactly (``torch.func.jacfwd``); all of its eigenpairs are kept and the
    covariance is ``V diag(1/(e + λ)) Vᵀ``.
``"blocks"``
    matrix-free, memory O(n_trials · n_units · R · p) with p = 2R + D + 1 parameters per unit:
    the exact per-unit diagonal blocks ``Fᵢ`` of F (forward sensitivities) and the leading
    eigenpairs ``(Λ, U)`` of F (Lanczos, ``scipy.sparse.linalg.eigsh`` on F-vector products;
    an output block of at most 2048 entries is formed from such products and diagonalised).
    By default the eigenpairs are those of the output-side block F_KK, whose few large
    eigenvalues are the directions of K the data determine (the input-side blocks are nearly
    per-unit and are captured by ``Fᵢ``). The approximate precision is

        Π = blockdiag(Dᵢ + λI) + U Λ Uᵀ,   Dᵢ = Fᵢ − (U Λ Uᵀ)ᵢᵢ,

    exact on every unit's diagonal block and on the span of U. ``unit_blocks`` stores
    ``(Dᵢ + λI)⁻¹``, so Π (and hence sampling and densities) is rebuilt from the stored fields;
    :meth:`LaplacePosterior.unit_covariance` gives the marginal per-unit covariance blocks.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from scipy.sparse.linalg import LinearOperator, eigsh

from .._validation import check_array, check_choice, check_positive, check_positive_int, make_rng
from ..data import LowRankFit, PosteriorCovariance, Recording
from .curvature import (
    dense_profiled_ggn,
    flatten_parameters,
    gauge_directions,
    initial_state_terms,
    linearise,
    output_block_matvec,
    parameter_layout,
    profiled_ggn_matvec,
    unit_diagonal_blocks,
    unit_indices,
)

__all__ = ["laplace_posterior", "LaplacePosterior", "sample", "log_prob", "unflatten"]

_STRUCTURES = ("auto", "dense", "blocks")
_SUBSPACES = ("output", "all")
_DENSE_EIGEN_LIMIT = 2048  # output blocks up to this size are eigendecomposed densely


def laplace_posterior(
    fit: LowRankFit,
    recording: Recording,
    *,
    prior_precision: float = 1.0,
    structure: str = "auto",
    n_eigenpairs: int | None = None,
    max_dense_params: int = 200,
    eigen_subspace: str = "output",
    tol: float = 1e-6,
) -> PosteriorCovariance:
    """Compute the Laplace posterior covariance ``(F + λI)⁻¹`` at a fit.

    Parameters
    ----------
    fit : LowRankFit
        The fit (its parameters are the posterior mean; its κ(0) seeds the linearisation).
    recording : Recording
        The recording it was fitted to (mask and inputs).
    prior_precision : float, default: 1.0
        λ, precision of the isotropic Gaussian prior on θ.
    structure : {"auto", "dense", "blocks"}, default: "auto"
        ``"auto"`` picks ``"dense"`` when θ has at most ``max_dense_params`` entries.
    n_eigenpairs : int, optional
        Eigenpairs of F to keep. Default: all for ``"dense"`` and for an output block of at
        most 2048 entries (formed and diagonalised exactly); otherwise ``min(2R + 8, n − 1)``
        (n the size of the eigen-subspace, Lanczos).
    max_dense_params : int, default: 200
        Size limit of the dense path under ``"auto"`` (building F densely costs
        O(n_trials · n_time · N · P²); about 20 s at P = 360 on 2 CPU cores).
    eigen_subspace : {"output", "all"}, default: "output"
        ``"blocks"`` only: take the leading eigenpairs of the output-side block F_KK, or of the
        whole F (with the gauge directions projected out).
    tol : float, default: 1e-6
        Relative accuracy of the Lanczos eigenpairs.

    Returns
    -------
    PosteriorCovariance
        Mean θ̂, layout, λ, and the covariance in the chosen structure; ``eigenvalues`` /
        ``eigenvectors`` are the leading eigenpairs of the data precision F (descending).

    Raises
    ------
    ValueError
        On bad options, or when the fit and recording disagree.
    """
    prior_precision = check_positive(prior_precision, "prior_precision")
    check_choice(structure, "structure", _STRUCTURES)
    check_choice(eigen_subspace, "eigen_subspace", _SUBSPACES)
    max_dense_params = check_positive_int(max_dense_params, "max_dense_params")
    if n_eigenpairs is not None:
        n_eigenpairs = check_positive_int(n_eigenpairs, "n_eigenpairs")
    n_units, rank, n_inputs = fit.n_units, fit.rank, fit.B.shape[1]
    layout = parameter_layout(n_units, rank, n_inputs)
    mean = flatten_parameters(fit.M, fit.K, fit.B, fit.d)
    n_params = mean.size
    if structure == "auto":
        structure = "dense" if n_params <= max_dense_params else "blocks"
    lin = linearise(fit, recording)
    common = dict(
        mean=mean, layout=layout, prior_precision=prior_precision, observation=fit.observation
    )
    if structure == "dense":
        F = dense_profiled_ggn(lin).numpy()
        evals, evecs = np.linalg.eigh(F)
        order = np.argsort(evals)[::-1]
        evals, evecs = evals[order], evecs[:, order]
        cov = (evecs / (np.clip(evals, 0.0, None) + prior_precision)) @ evecs.T
        keep = n_params if n_eigenpairs is None else min(n_eigenpairs, n_params)
        return PosteriorCovariance(
            **common,
            structure="dense",
            eigenvalues=evals[:keep],
            eigenvectors=evecs[:, :keep],
            covariance=0.5 * (cov + cov.T),
        )

    terms = initial_state_terms(lin)
    blocks = unit_diagonal_blocks(lin, terms).numpy()
    index = unit_indices(n_units, rank, n_inputs)
    if eigen_subspace == "output":
        sub = np.arange(n_units * rank, 2 * n_units * rank)
        gauge = None  # F_KK alone; the gauge is handled by LaplacePosterior
    else:
        sub = np.arange(n_params)
        gauge = linalg.orth(gauge_directions(fit.M, fit.K, n_inputs))
    n_sub = sub.size
    dense_eigen = gauge is None and n_sub <= _DENSE_EIGEN_LIMIT
    if n_eigenpairs is None:
        k = n_sub if dense_eigen else min(2 * rank + 8, n_sub - 1)
    else:
        k = n_eigenpairs
    k_max = n_sub if dense_eigen else n_sub - 1
    if not 1 <= k <= k_max:
        raise ValueError(
            f"n_eigenpairs must be between 1 and {k_max} for structure='blocks' with "
            f"eigen_subspace={eigen_subspace!r}; got {k}."
        )

    def matvec(v: np.ndarray) -> np.ndarray:
        if gauge is None:
            return output_block_matvec(lin, terms, torch.from_numpy(np.array(v))).numpy()
        full = np.ravel(v) - gauge @ (gauge.T @ np.ravel(v))
        out = profiled_ggn_matvec(lin, terms, torch.from_numpy(full)).numpy()
        return out - gauge @ (gauge.T @ out)

    if dense_eigen:
        # Small output block: form F_KK column block by column block, then eigh.
        eye = torch.eye(n_sub, dtype=torch.float64)
        F_sub = torch.cat(
            [output_block_matvec(lin, terms, eye[:, i : i + 256]) for i in range(0, n_sub, 256)],
            dim=1,
        ).numpy()
        evals, vecs = np.linalg.eigh(0.5 * (F_sub + F_sub.T))
        evals, vecs = evals[::-1][:k], vecs[:, ::-1][:, :k]
    else:
        operator = LinearOperator((n_sub, n_sub), matvec=matvec, dtype=np.float64)
        v0 = np.random.default_rng(0).standard_normal(n_sub)  # deterministic Lanczos start
        evals, vecs = eigsh(operator, k=k, which="LA", v0=v0, tol=tol)
        order = np.argsort(evals)[::-1]
        evals, vecs = evals[order], vecs[:, order]
    evecs = np.zeros((n_params, k))
    evecs[sub] = vecs
    lowrank = np.einsum("ipa,a,iqa->ipq", evecs[index], np.clip(evals, 0.0, None), evecs[index])
    residual = blocks - lowrank
    w, v = np.linalg.eigh(0.5 * (residual + residual.transpose(0, 2, 1)))
    unit_cov = np.einsum("ipa,ia,iqa->ipq", v, 1.0 / (np.clip(w, 0.0, None) + prior_precision), v)
    return PosteriorCovariance(
        **common,
        structure="blocks",
        eigenvalues=evals,
        eigenvectors=evecs,
        unit_indices=index,
        unit_blocks=unit_cov,
    )


class LaplacePosterior:
    """A Gaussian posterior over θ with the torch.distributions vocabulary (numpy arrays).

    For ``structure="blocks"`` the precision is rebuilt from the stored fields as
    ``Π = P⊥ (A + λI) P⊥ + λ P_G`` with ``A + λI = blockdiag(unit_blocks⁻¹) + U Λ Uᵀ``,
    P_G the projector onto the R² gauge directions (recomputed from the mean's M and K) and
    ``P⊥ = I − P_G``: the gauge directions, exact null vectors of F, keep the prior precision λ
    and everything else follows the block-plus-low-rank approximation.

    Parameters
    ----------
    posterior : PosteriorCovariance
        Dense, or blocks plus eigenpairs.

    Examples
    --------
    >>> post = LaplacePosterior(laplace_posterior(fit, recording))  # doctest: +SKIP
    >>> theta = post.sample((100,), random_state=0)  # doctest: +SKIP
    >>> post.log_prob(theta).shape  # doctest: +SKIP
    (100,)
    """

    def __init__(self, posterior: PosteriorCovariance) -> None:
        if not isinstance(posterior, PosteriorCovariance):
            raise TypeError(
                f"posterior must be a PosteriorCovariance; got {type(posterior).__name__}."
            )
        self.posterior = posterior
        if posterior.structure == "dense":
            self._chol = linalg.cholesky(posterior.covariance, lower=True)
            return
        lam = posterior.prior_precision
        self._lam = lam
        self._index = posterior.unit_indices
        self._unit_cov = posterior.unit_blocks
        self._unit_prec = np.linalg.inv(self._unit_cov)
        self._unit_prec_chol = np.linalg.cholesky(self._unit_prec)
        # S = (A + λI)⁻¹ by Woodbury, with A + λI = Db + W Wᵀ and W = U Λ^{1/2}.
        self._W = posterior.eigenvectors * np.sqrt(np.clip(posterior.eigenvalues, 0.0, None))
        self._dinv_w = self._apply_unit(self._unit_cov, self._W)
        cap = np.eye(self._W.shape[1]) + self._W.T @ self._dinv_w
        self._cap_chol = linalg.cholesky(cap, lower=True)
        parts = unflatten(posterior, posterior.mean)
        self._G = linalg.orth(gauge_directions(parts["M"], parts["K"], parts["B"].shape[1]))
        self._SG = self._solve_s(self._G)
        self._gsg_chol = linalg.cholesky(self._G.T @ self._SG, lower=True)

    def _apply_unit(self, blocks: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Apply blockdiag(blocks) to x of shape (n_params, n) (entries grouped by unit)."""
        out = np.empty_like(x)
        out[self._index] = np.einsum("ipq,iq...->ip...", blocks, x[self._index])
        return out

    def _solve_s(self, rhs: np.ndarray) -> np.ndarray:
        """Return S rhs = (A + λI)⁻¹ rhs for rhs of shape (n_params, n)."""
        y = self._apply_unit(self._unit_cov, rhs)
        return y - self._dinv_w @ linalg.cho_solve((self._cap_chol, True), self._W.T @ y)

    def _gauge_correction(self) -> np.ndarray:
        """Return Z with S − S G (GᵀSG)⁻¹ GᵀS = S − Z Zᵀ; shape (n_params, n_gauge)."""
        return linalg.solve_triangular(self._gsg_chol, self._SG.T, lower=True).T

    @property
    def mean(self) -> np.ndarray:
        """θ̂, shape (n_params,)."""
        return self.posterior.mean

    @property
    def variance(self) -> np.ndarray:
        """Marginal posterior variances, shape (n_params,)."""
        if self.posterior.structure == "dense":
            return np.diag(self.posterior.covariance).copy()
        diag = np.empty(self.posterior.n_params)
        diag[self._index] = np.einsum("ipp->ip", self._unit_cov)
        z = linalg.solve_triangular(self._cap_chol, self._dinv_w.T, lower=True)
        diag -= np.sum(z**2, axis=0)
        diag -= np.sum(self._gauge_correction() ** 2, axis=1)
        return diag + np.sum(self._G**2, axis=1) / self._lam

    def unit_covariance(self) -> np.ndarray:
        """Marginal posterior covariance of each unit's (m_i, k_i, b_i, d_i).

        Returns
        -------
        ndarray of shape (n_units, p, p)
            Blocks in the order of :func:`~nwb_lrconn.inference.curvature.unit_indices`.
        """
        post = self.posterior
        if post.structure == "dense":
            index = unit_indices(*post.layout[0].shape, post.layout[2].shape[1])
            return post.covariance[index[:, :, None], index[:, None, :]]
        z = linalg.solve_triangular(self._cap_chol, self._dinv_w.T, lower=True).T[self._index]
        zg = self._gauge_correction()[self._index]
        g = self._G[self._index]
        return (
            self._unit_cov
            - np.einsum("ipa,iqa->ipq", z, z)
            - np.einsum("ipa,iqa->ipq", zg, zg)
            + np.einsum("ipa,iqa->ipq", g, g) / self._lam
        )

    def sample(self, sample_shape=(), random_state=None) -> np.ndarray:
        """Draw θ from the posterior.

        Parameters
        ----------
        sample_shape : tuple of int, default: ()
            Leading shape of the draws.
        random_state : int, numpy Generator or None
            Randomness.

        Returns
        -------
        ndarray of shape (*sample_shape, n_params)
            Draws.
        """
        rng = make_rng(random_state)
        shape = tuple(int(s) for s in np.atleast_1d(np.asarray(sample_shape, dtype=np.int64)))
        n = int(np.prod(shape)) if shape else 1
        P = self.posterior.n_params
        if self.posterior.structure == "dense":
            draws = self._chol @ rng.standard_normal((P, n))
        else:
            # y = S ξ with ξ ~ N(0, A + λI) gives y ~ N(0, S); conditioning on Gᵀy = 0 gives the
            # gauge-complement part, and the gauge part has covariance I/λ.
            xi = self._apply_unit(self._unit_prec_chol, rng.standard_normal((P, n)))
            xi += self._W @ rng.standard_normal((self._W.shape[1], n))
            y = self._solve_s(xi)
            y -= self._SG @ linalg.cho_solve((self._gsg_chol, True), self._G.T @ y)
            gauge = self._G @ rng.standard_normal((self._G.shape[1], n)) / np.sqrt(self._lam)
            draws = y + gauge
        return (self.mean + draws.T).reshape(*shape, P)

    def log_prob(self, theta) -> np.ndarray:
        """Return the log-density of the posterior at θ.

        Parameters
        ----------
        theta : array_like of shape (..., n_params)
            Points.

        Returns
        -------
        ndarray of shape (...)
            Log-densities.

        Raises
        ------
        ValueError
            When the last axis is not n_params long.
        """
        theta = np.asarray(theta, dtype=np.float64)
        P = self.posterior.n_params
        if theta.ndim < 1 or theta.shape[-1] != P:
            raise ValueError(f"theta must have shape (..., {P}); got {theta.shape}.")
        lead = theta.shape[:-1]
        delta = (theta.reshape(-1, P) - self.mean).T  # (P, n)
        if self.posterior.structure == "dense":
            z = linalg.solve_triangular(self._chol, delta, lower=True)
            quad = np.sum(z**2, axis=0)
            logdet = -2.0 * np.sum(np.log(np.diag(self._chol)))
        else:
            g = self._G.T @ delta
            perp = delta - self._G @ g
            quad = np.sum(perp * self._apply_unit(self._unit_prec, perp), axis=0)
            quad += np.sum((self._W.T @ perp) ** 2, axis=0) + self._lam * np.sum(g**2, axis=0)
            # log det Π = g log λ + log det(A + λI) + log det(GᵀSG).
            logdet = 2.0 * np.sum(np.log(np.diagonal(self._unit_prec_chol, axis1=1, axis2=2)))
            logdet += 2.0 * np.sum(np.log(np.diag(self._cap_chol)))
            logdet += 2.0 * np.sum(np.log(np.diag(self._gsg_chol)))
            logdet += self._G.shape[1] * np.log(self._lam)
        out = -0.5 * quad + 0.5 * logdet - 0.5 * P * np.log(2 * np.pi)
        return out.reshape(lead)

    def unflatten(self, theta) -> dict[str, np.ndarray]:
        """Split θ of shape (..., n_params) into ``{"M", "K", "B", "d"}`` (leading axes kept)."""
        return unflatten(self.posterior, theta)


def _as_posterior(posterior) -> LaplacePosterior:
    return posterior if isinstance(posterior, LaplacePosterior) else LaplacePosterior(posterior)


def sample(posterior, sample_shape=(), random_state=None) -> np.ndarray:
    """Draw θ from a posterior (a PosteriorCovariance or LaplacePosterior); see
    :meth:`LaplacePosterior.sample`."""
    return _as_posterior(posterior).sample(sample_shape, random_state)


def log_prob(posterior, theta) -> np.ndarray:
    """Log-density of a posterior at θ; see :meth:`LaplacePosterior.log_prob`."""
    return _as_posterior(posterior).log_prob(theta)


def unflatten(posterior, theta) -> dict[str, np.ndarray]:
    """Split θ into its named blocks following the posterior's layout.

    Parameters
    ----------
    posterior : PosteriorCovariance or LaplacePosterior
        Gives the layout.
    theta : array_like of shape (..., n_params)
        Flat parameters.

    Returns
    -------
    dict of str to ndarray
        ``{"M": (..., N, R), "K": (..., N, R), "B": (..., N, D), "d": (..., N)}``.

    Raises
    ------
    ValueError
        When the last axis is not n_params long.
    """
    post = posterior.posterior if isinstance(posterior, LaplacePosterior) else posterior
    theta = check_array(theta, "theta", dtype=np.float64)
    if theta.ndim < 1 or theta.shape[-1] != post.n_params:
        raise ValueError(f"theta must have shape (..., {post.n_params}); got {theta.shape}.")
    out, offset = {}, 0
    for block in post.layout:
        out[block.name] = theta[..., offset : offset + block.size].reshape(
            *theta.shape[:-1], *block.shape
        )
        offset += block.size
    return out
