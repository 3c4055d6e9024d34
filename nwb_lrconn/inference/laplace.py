"""Laplace posterior over θ = (M, K, B, d) at a fit.

The posterior is ``N(θ̂, (F + λI)⁻¹)`` with θ̂ the fitted parameters, λ the prior precision and F
the Fisher / generalised Gauss–Newton matrix of the fit's observation model, with the per-trial
initial states κ(0) profiled out and the readout (gain, offset) either marginalised with the same
Gaussian prior as θ (default) or held at its fitted value (see
:mod:`nwb_lrconn.inference.curvature`). It is local and Gaussian: it cannot represent
multi-modal or heavy-tailed loading distributions (that is stage 3's job).

Two structures (:class:`~nwb_lrconn.data.PosteriorCovariance`), chosen by cost:

``"dense"``
    F is formed exactly from the forward sensitivities of every parameter (cost
    O(n_states · (R·P² + N·p·P)) plus O(P³) for its eigendecomposition, memory O(P²)); all of
    its eigenpairs are kept. Used whenever its estimated cost fits the time budget.
``"blocks"``
    the structured form of :mod:`nwb_lrconn.inference.coupling`: exact per-unit blocks plus the
    cross-unit coupling through the shared latents, restricted to an adaptively chosen subspace
    (the same answers as dense up to the reported ``coupling_residual``); it stores each unit's
    marginal covariance and a low-rank coupling, never a P×P matrix. The coupling rank grows
    until ``coupling_tol`` is met or the time budget is spent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import linalg
from scipy.sparse.linalg import LinearOperator, eigsh

from .._validation import (
    check_array,
    check_choice,
    check_positive,
    check_positive_int,
    make_rng,
)
from ..config import PosteriorConfig
from ..data import LowRankFit, PosteriorCovariance, Recording
from .coupling import BlockLowRank, coupling_subspace, structured_covariance
from .curvature import (
    dense_joint_fisher,
    flatten_parameters,
    gauge_directions,
    linearise,
    parameter_layout,
    unit_indices,
)

__all__ = [
    "laplace_posterior",
    "dense_cost",
    "structured_cost",
    "PosteriorSampler",
    "unflatten",
]

_STRUCTURES = ("auto", "dense", "blocks")
_READOUTS = ("marginal", "held")
# Nominal sustained float64 rate of 2 CPU cores on these (mostly matrix-product) workloads and
# the dense form's memory ceiling. They only steer the choice of structure and coupling rank,
# never the answer.
_NOMINAL_FLOPS = 6e10
_DENSE_MAX_BYTES = 2e9
_BLOCK = 64  # sketch vectors per pass over the data


def dense_cost(
    n_states: int, n_trials: int, n_units: int, rank: int, n_inputs: int, *, readout: bool
) -> tuple[float, float]:
    """Estimated cost of the dense posterior: (nominal seconds on 2 cores, peak bytes).

    Parameters
    ----------
    n_states : int
        Number of (trial, time) bins.
    n_trials, n_units, rank, n_inputs : int
        Problem size.
    readout : bool
        Whether the readout is marginalised.

    Returns
    -------
    seconds, n_bytes : float
        Nominal time and memory.
    """
    p0 = 2 * rank + n_inputs + 1
    p = p0 + (2 if readout else 0)
    P = n_units * p0
    nuisance = n_trials * rank + (2 * n_units if readout else 0)
    flops = 2.0 * n_states * rank * P**2 + 2.0 * n_states * n_units * P * (rank + p)
    flops += 12.0 * P**3 + 2.0 * nuisance**3 + 4.0 * nuisance * (n_units * p) ** 2
    n_bytes = 8.0 * (5 * (n_units * p) ** 2 + (nuisance + n_units * p) ** 2)
    return flops / _NOMINAL_FLOPS, n_bytes


def structured_cost(
    n_states: int, n_trials: int, n_units: int, rank: int, n_inputs: int, *, readout: bool,
    coupling_rank: int,
) -> float:  # fmt: skip
    """Estimated nominal seconds (2 cores) of the structured posterior with a coupling rank."""
    q = rank + n_inputs + 1
    per_vector = 2.0 * n_states * n_units * rank * (2.5 * (q + 1) + q + (2 if readout else 0))
    P = n_units * (2 * rank + n_inputs + 1)
    m = 2 * (coupling_rank + rank**2) + n_trials * rank
    flops = coupling_rank * per_vector + 12.0 * P * m**2 + 20.0 * m**3
    return flops / _NOMINAL_FLOPS


def laplace_posterior(
    fit: LowRankFit,
    recording: Recording,
    *,
    prior_precision: float = PosteriorConfig.prior_precision,
    structure: str = PosteriorConfig.structure,
    readout: str = PosteriorConfig.readout,
    n_eigenpairs: int | None = PosteriorConfig.n_eigenpairs,
    max_dense_params: int | None = PosteriorConfig.max_dense_params,
    budget_s: float = PosteriorConfig.budget_s,
    coupling_tol: float = PosteriorConfig.coupling_tol,
    max_coupling_rank: int | None = PosteriorConfig.max_coupling_rank,
    random_state=0,
) -> PosteriorCovariance:
    """Compute the Laplace posterior covariance ``(F + λI)⁻¹`` at a fit.

    Parameters
    ----------
    fit : LowRankFit
        The fit (its parameters are the posterior mean; its κ(0) seeds the linearisation).
    recording : Recording
        The recording it was fitted to (mask and inputs).
    prior_precision : float, default: 1.0
        λ, precision of the isotropic Gaussian prior on θ (and on the readout when it is
        marginalised).
    structure : {"auto", "dense", "blocks"}, default: "auto"
        ``"auto"`` picks ``"dense"`` when its estimated cost (:func:`dense_cost`) fits
        ``budget_s`` and 2 GB, ``"blocks"`` otherwise.
    readout : {"marginal", "held"}, default: "marginal"
        Integrate the readout gain and offset out (prior precision λ around their fitted
        values) or hold them at their fitted values.
    n_eigenpairs : int, optional
        Leading eigenpairs of F to keep. Default: all for ``"dense"``, ``2R + 8`` for
        ``"blocks"`` (computed by Lanczos on the structured precision).
    max_dense_params : int, optional
        When given, ``"auto"`` picks ``"dense"`` exactly when θ has at most this many entries,
        instead of the cost estimate.
    budget_s : float, default: 40.0
        Time budget in nominal seconds on 2 CPU cores (:func:`dense_cost`,
        :func:`structured_cost`): the dense form is used when it fits, and otherwise it caps the
        rank of the structured form's coupling.
    coupling_tol : float, default: 3e-4
        ``"blocks"``: stop enlarging the coupling subspace once a fresh sketch leaves at most
        this fraction of the latent-mediated Fisher outside it
        (``PosteriorCovariance.coupling_residual`` reports the value reached).
    max_coupling_rank : int, optional
        ``"blocks"``: largest dimension of the coupling subspace (besides the R² gauge
        directions); default: the largest that fits ``budget_s``.
    random_state : int, numpy Generator or None, default: 0
        Randomness of the ``"blocks"`` sketch.

    Returns
    -------
    PosteriorCovariance
        Mean θ̂, layout, λ, and the covariance in the chosen structure.

    Raises
    ------
    ValueError
        On bad options, or when the fit and recording disagree.
    """
    prior_precision = check_positive(prior_precision, "prior_precision")
    check_choice(structure, "structure", _STRUCTURES)
    check_choice(readout, "readout", _READOUTS)
    budget_s = check_positive(budget_s, "budget_s")
    coupling_tol = check_positive(coupling_tol, "coupling_tol")
    if max_coupling_rank is not None:
        max_coupling_rank = check_positive_int(max_coupling_rank, "max_coupling_rank")
    if max_dense_params is not None:
        max_dense_params = check_positive_int(max_dense_params, "max_dense_params")
    if n_eigenpairs is not None:
        n_eigenpairs = check_positive_int(n_eigenpairs, "n_eigenpairs")
    n_units, rank, n_inputs = fit.n_units, fit.rank, fit.B.shape[1]
    n_params = n_units * (2 * rank + n_inputs + 1)
    n_gauge = rank**2
    if structure == "blocks" and n_eigenpairs is not None and n_eigenpairs > n_params - n_gauge:
        raise ValueError(
            f"n_eigenpairs must be between 1 and {n_params - n_gauge} for structure='blocks' "
            f"(n_params minus the {n_gauge} gauge directions); got {n_eigenpairs}."
        )
    lin = linearise(fit, recording)
    marginal = readout == "marginal"
    n_trials, n_time = recording.mask.shape
    size = (n_trials * n_time, n_trials, n_units, rank, n_inputs)
    if structure == "auto":
        if max_dense_params is not None:
            dense = n_params <= max_dense_params
        else:
            seconds, n_bytes = dense_cost(*size, readout=marginal)
            dense = seconds <= budget_s and n_bytes <= _DENSE_MAX_BYTES
        structure = "dense" if dense else "blocks"
    common: dict[str, Any] = dict(
        mean=flatten_parameters(fit.M, fit.K, fit.B, fit.d),
        layout=parameter_layout(n_units, rank, n_inputs),
        prior_precision=prior_precision,
        observation=fit.observation,
        readout=readout,
    )
    if structure == "dense":
        F = _dense_fisher(lin, prior_precision, marginal)
        evals, evecs = np.linalg.eigh(F)
        evals, evecs = evals[::-1], evecs[:, ::-1]
        cov = (evecs / (np.clip(evals, 0.0, None) + prior_precision)) @ evecs.T
        keep = n_params if n_eigenpairs is None else min(n_eigenpairs, n_params)
        return PosteriorCovariance(
            **common,
            structure="dense",
            eigenvalues=np.ascontiguousarray(evals[:keep]),
            eigenvectors=np.ascontiguousarray(evecs[:, :keep]),
            covariance=0.5 * (cov + cov.T),
        )

    if max_coupling_rank is None:
        max_coupling_rank = _BLOCK
        while (
            structured_cost(*size, readout=marginal, coupling_rank=max_coupling_rank + _BLOCK)
            <= budget_s
            and max_coupling_rank < n_params
        ):
            max_coupling_rank += _BLOCK
    rng = make_rng(random_state)
    gauge = linalg.orth(gauge_directions(fit.M, fit.K, n_inputs))
    subspace = coupling_subspace(
        lin, gauge, tol=coupling_tol, max_rank=max_coupling_rank, rng=rng, block=_BLOCK
    )
    cov = structured_covariance(
        lin, subspace, gauge, prior_precision=prior_precision, readout=marginal
    )
    del lin
    k = min(2 * rank + 8, n_params - n_gauge) if n_eigenpairs is None else n_eigenpairs
    evals, evecs = _leading_precision(cov, k, rng)
    return PosteriorCovariance(
        **common,
        structure="blocks",
        eigenvalues=evals - prior_precision,
        eigenvectors=evecs,
        unit_indices=cov.index,
        unit_blocks=cov.marginal_blocks(),
        coupling_vectors=cov.vectors,
        coupling_values=cov.values,
        coupling_residual=subspace.residual,
    )


def _dense_fisher(lin, prior_precision: float, marginal: bool) -> np.ndarray:
    """Exact F over θ (layout of :func:`parameter_layout`), nuisance parameters integrated out."""
    N, R, D = lin.n_units, lin.rank, lin.n_inputs
    p0 = 2 * R + D + 1
    p = p0 + (2 if marginal else 0)
    F_units, cross, f_kk = (a.numpy() for a in dense_joint_fisher(lin, readout=marginal))
    theta = (np.arange(N)[:, None] * p + np.arange(p0)[None]).ravel()
    readout_rows = np.setdiff1d(np.arange(N * p), theta)
    n_trials = f_kk.shape[0]
    # Precision over (θ, readout, κ(0)); the readout has prior precision λ, κ(0) a flat prior.
    joint_cross = cross.reshape(n_trials * R, N * p)
    nuisance = np.block(
        [
            [
                F_units[np.ix_(readout_rows, readout_rows)]
                + prior_precision * np.eye(readout_rows.size),
                joint_cross[:, readout_rows].T,
            ],
            [joint_cross[:, readout_rows], linalg.block_diag(*f_kk)],
        ]
    )
    coupling = np.hstack([F_units[np.ix_(theta, readout_rows)], joint_cross[:, theta].T])
    nuisance = 0.5 * (nuisance + nuisance.T)
    F_theta = (
        F_units[np.ix_(theta, theta)]
        - coupling @ np.linalg.pinv(nuisance, hermitian=True) @ coupling.T
    )
    index = unit_indices(N, R, D).ravel()
    out = np.empty_like(F_theta)
    out[np.ix_(index, index)] = F_theta
    return 0.5 * (out + out.T)


def _leading_precision(cov: BlockLowRank, k: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Leading k eigenpairs of Σ⁻¹ (Lanczos on the structured solve), descending."""
    n = cov.size
    if k >= n - 1:
        dense = cov.solve(np.eye(n))
        evals, evecs = np.linalg.eigh(0.5 * (dense + dense.T))
        return evals[::-1][:k], np.ascontiguousarray(evecs[:, ::-1][:, :k])
    operator = LinearOperator(
        (n, n), matvec=lambda v: cov.solve(np.reshape(v, (n, 1)))[:, 0], dtype=np.float64
    )
    evals, evecs = eigsh(operator, k=k, which="LA", v0=rng.standard_normal(n), tol=1e-6)
    order = np.argsort(evals)[::-1]
    return evals[order], np.ascontiguousarray(evecs[:, order])


def _present(value: np.ndarray | None) -> np.ndarray:
    """A field that PosteriorCovariance guarantees for its structure (see its checks)."""
    if value is None:
        raise ValueError("PosteriorCovariance lacks a field that its structure needs.")
    return value


class PosteriorSampler:
    """Draws and densities of a Laplace posterior over θ (torch.distributions vocabulary, numpy).

    The one way to sample the posterior: wrap the stored :class:`PosteriorCovariance` (the
    NWB container of the same data is ``ndx-lrconn``'s ``LaplacePosterior``).

    Parameters
    ----------
    posterior : PosteriorCovariance
        Dense, or per-unit blocks plus low-rank coupling.

    Examples
    --------
    >>> sampler = PosteriorSampler(laplace_posterior(fit, recording))  # doctest: +SKIP
    >>> theta = sampler.sample((100,), random_state=0)  # doctest: +SKIP
    >>> sampler.log_prob(theta).shape  # doctest: +SKIP
    (100,)
    """

    def __init__(self, posterior: PosteriorCovariance) -> None:
        if not isinstance(posterior, PosteriorCovariance):
            raise TypeError(
                f"posterior must be a PosteriorCovariance; got {type(posterior).__name__}."
            )
        self.posterior = posterior
        if posterior.structure == "dense":
            self._chol = linalg.cholesky(_present(posterior.covariance), lower=True)
            return
        index = _present(posterior.unit_indices)
        if posterior.coupling_vectors is None:
            vectors, values = np.zeros((posterior.n_params, 0)), np.zeros(0)
        else:
            vectors = posterior.coupling_vectors
            values = _present(posterior.coupling_values)
        u = vectors[index]
        blocks = _present(posterior.unit_blocks) - np.einsum("ipa,a,iqa->ipq", u, values, u)
        self._cov = BlockLowRank(blocks, index, vectors, values)

    @property
    def mean(self) -> np.ndarray:
        """θ̂, shape (n_params,)."""
        return self.posterior.mean

    @property
    def variance(self) -> np.ndarray:
        """Marginal posterior variances, shape (n_params,)."""
        if self.posterior.structure == "dense":
            return np.diag(_present(self.posterior.covariance)).copy()
        return self._cov.diagonal()

    def unit_covariance(self) -> np.ndarray:
        """Marginal posterior covariance of each unit's (m_i, k_i, b_i, d_i).

        Returns
        -------
        ndarray of shape (n_units, p, p)
            Blocks in the order of :func:`~nwb_lrconn.inference.curvature.unit_indices`.
        """
        post = self.posterior
        if post.structure == "dense":
            n_units, rank = post.layout[0].shape
            index = unit_indices(n_units, rank, post.layout[2].shape[1])
            return _present(post.covariance)[index[:, :, None], index[:, None, :]]
        return _present(post.unit_blocks).copy()

    def n_constrained(self) -> int:
        """Number of eigenvalues of the data precision F above the prior precision λ.

        Exact for either structure: for ``"blocks"`` by Sylvester's law of inertia on the
        structured covariance (eigenvalues of Σ below 1/(2λ)).
        """
        post = self.posterior
        lam = post.prior_precision
        if post.structure == "dense":
            if post.eigenvalues.size == post.n_params:
                return int(np.count_nonzero(post.eigenvalues > lam))
            eigenvalues = np.linalg.eigvalsh(_present(post.covariance))
            return int(np.count_nonzero(eigenvalues < 0.5 / lam))
        return self._cov.count_below(0.5 / lam)

    def logdet_covariance(self) -> float:
        """log det Σ."""
        if self.posterior.structure == "dense":
            return float(2.0 * np.sum(np.log(np.diag(self._chol))))
        return self._cov.logdet()

    def precision_matvec(self, x) -> np.ndarray:
        """Σ⁻¹ x for x of shape (n_params,) or (n_params, k)."""
        x = np.asarray(x, dtype=np.float64)
        cols = x.reshape(x.shape[0], -1)
        if self.posterior.structure == "dense":
            out = linalg.cho_solve((self._chol, True), cols)
        else:
            out = self._cov.solve(cols)
        return out.reshape(x.shape)

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
        xi = rng.standard_normal((P, n))
        if self.posterior.structure == "dense":
            draws = self._chol @ xi
        else:
            draws = self._cov.sqrt_apply(xi)
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
        else:
            z = self._cov.whiten(delta)
        quad = np.sum(z**2, axis=0)
        out = -0.5 * quad - 0.5 * self.logdet_covariance() - 0.5 * P * np.log(2 * np.pi)
        return out.reshape(lead)

    def unflatten(self, theta) -> dict[str, np.ndarray]:
        """Split θ of shape (..., n_params) into ``{"M", "K", "B", "d"}`` (leading axes kept)."""
        return unflatten(self.posterior, theta)


def unflatten(posterior, theta) -> dict[str, np.ndarray]:
    """Split θ into its named blocks following the posterior's layout.

    Parameters
    ----------
    posterior : PosteriorCovariance or PosteriorSampler
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
    post = posterior.posterior if isinstance(posterior, PosteriorSampler) else posterior
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
