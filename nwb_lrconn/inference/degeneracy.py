"""What the data determine about θ = (M, K, B, d), and what they do not.

:func:`compute_degeneracy` combines three views:

1. **Gauge.** The R² directions (δM = −M E, δK = K Eᵀ, δκ = E κ), one per generator E, are
   built analytically; with κ(0) profiled out they are exact null vectors of the data precision
   F. They are counted apart and projected out of the spectrum.
2. **Spectrum.** The eigenvalues of F on the complement of the gauge. Rule: a direction is
   **constrained** when its data precision exceeds the prior precision λ (its posterior
   variance is then below half the prior variance), **degenerate** otherwise. The counts are
   those of the posterior's own F: from its eigenvalues when dense, and by Sylvester's law of
   inertia on the structured covariance otherwise (the number of its eigenvalues below
   1/(2λ)); the reported spectrum is then its leading part.
3. **Visited states.** The state matrix Φ (``Φ[s, i] = φ(x_i)`` over every visited state s),
   its singular values and effective rank, and a richness check of the identifiability
   condition (below).

Effective rank of Φ: the number of singular values above ``rank_rtol`` times the largest.

Richness criterion (identifiability of the conditional mean g(m, b, d) = E[k | m, b, d]): g is
determined by the dynamics only through ``Σ_i k_i φ(m_i·κ + b_i·u + d_i)`` at the visited
states, so the visited states must (a) fill every direction of the (κ, u) space — the smallest
singular value of the centred cloud of visited (κ, u) must exceed ``spread_rtol`` times the
largest — and (b) make Φ richer than an affine function of the state: if every unit worked in a
linear regime Φ would have rank ≤ R + D + 1 and only the linear part of g (the covariance of
m with k) would be determined, so the effective rank of Φ must exceed R + D + 1. Trajectories
that sit at one fixed point fail (a); a grid of initial conditions passes both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from .._validation import check_array, check_positive, check_positive_int
from ..data import DegeneracyReport, LowRankFit, PosteriorCovariance, Recording
from .curvature import gauge_directions
from .laplace import PosteriorSampler, laplace_posterior
from .output_loadings import state_matrix

__all__ = [
    "THRESHOLD_RULE",
    "classify_directions",
    "effective_rank",
    "state_richness",
    "Richness",
    "assess_richness",
    "compute_degeneracy",
]

THRESHOLD_RULE = (
    "A direction of θ (outside the R² gauge directions) is constrained when its data precision "
    "(eigenvalue of the Fisher / Gauss-Newton matrix F, κ(0) profiled out, the readout "
    "marginalised or held as the posterior says) exceeds the prior precision λ, i.e. when its "
    "posterior variance is below half the prior variance; otherwise it is degenerate."
)


def classify_directions(eigenvalues: np.ndarray, prior_precision: float) -> tuple[int, int]:
    """Count constrained (data precision > λ) and degenerate (≤ λ) directions.

    Parameters
    ----------
    eigenvalues : ndarray of shape (n_directions,)
        Data precisions along orthogonal directions (eigenvalues of F).
    prior_precision : float
        λ.

    Returns
    -------
    n_constrained, n_degenerate : int
        Counts; they add up to ``len(eigenvalues)``.
    """
    eigenvalues = check_array(eigenvalues, "eigenvalues", ndim=1, dtype=np.float64)
    lam = check_positive(prior_precision, "prior_precision")
    n_constrained = int(np.count_nonzero(eigenvalues > lam))
    return n_constrained, eigenvalues.size - n_constrained


def effective_rank(singular_values: np.ndarray, *, rtol: float = 1e-3) -> int:
    """Return the number of singular values above ``rtol`` times the largest.

    Parameters
    ----------
    singular_values : ndarray of shape (n,)
        Non-negative singular values (any order).
    rtol : float, default: 1e-3
        Relative cut-off.

    Returns
    -------
    int
        The effective rank (0 for an all-zero input).
    """
    sv = check_array(singular_values, "singular_values", ndim=1, dtype=np.float64)
    rtol = check_positive(rtol, "rtol")
    if sv.size == 0 or sv.max() <= 0:
        return 0
    return int(np.count_nonzero(sv > rtol * sv.max()))


def state_richness(
    latents: np.ndarray,
    mask: np.ndarray,
    *,
    inputs: np.ndarray | None = None,
) -> float:
    """Return the spread of the visited states: σ_min / σ_max of the centred (κ, u) cloud.

    Parameters
    ----------
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t).
    mask : ndarray of shape (n_trials, n_time), bool
        Visited bins.
    inputs : ndarray of shape (n_trials, n_time, n_inputs), optional
        u(t).

    Returns
    -------
    float
        In [0, 1]; 0 when the states do not fill every direction (e.g. one fixed point).
    """
    latents = check_array(latents, "latents", ndim=3, dtype=np.float64)
    mask = check_array(mask, "mask", shape=latents.shape[:2], dtype=bool)
    cloud = latents[mask]
    if inputs is not None and inputs.shape[2] > 0:
        cloud = np.hstack([cloud, np.asarray(inputs, dtype=np.float64)[mask]])
    cloud = cloud - cloud.mean(axis=0)
    sv = np.linalg.svd(cloud, compute_uv=False)
    if sv.size < cloud.shape[1] or sv[0] <= 0:
        return 0.0
    return float(sv[-1] / sv[0])


@dataclass(frozen=True)
class Richness:
    """Result of the richness check of the visited states (see the module docstring).

    Attributes
    ----------
    identifiable : bool
        Whether the conditional mean of K given (m, b, d) is determined by the data.
    verdict : str
        The result in plain language, with the numbers behind it.
    phi_singular_values : ndarray
        Singular values of Φ (descending), rescaled to the full count of visited states.
    phi_effective_rank : int
        Effective rank of Φ.
    spread : float
        σ_min / σ_max of the centred cloud of visited (κ, u).
    n_states : int
        Number of visited states.
    """

    identifiable: bool
    verdict: str
    phi_singular_values: np.ndarray
    phi_effective_rank: int
    spread: float
    n_states: int


def assess_richness(
    latents: np.ndarray,
    mask: np.ndarray,
    M: np.ndarray,
    *,
    B: np.ndarray | None = None,
    d: np.ndarray | None = None,
    inputs: np.ndarray | None = None,
    nonlinearity: str = "tanh",
    rank_rtol: float = 1e-3,
    spread_rtol: float = 0.05,
    max_states: int = 10000,
) -> Richness:
    """Check whether the visited states are rich enough to identify E[k | m, b, d].

    Parameters
    ----------
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t).
    mask : ndarray of shape (n_trials, n_time), bool
        Visited bins.
    M : ndarray of shape (n_units, rank)
        Input-side loadings.
    B, d, inputs, nonlinearity
        As in :func:`~nwb_lrconn.inference.output_loadings.state_matrix`.
    rank_rtol : float, default: 1e-3
        Relative cut-off of the effective rank of Φ.
    spread_rtol : float, default: 0.05
        Minimum spread σ_min/σ_max of the visited (κ, u) states.
    max_states : int, default: 10000
        At most this many visited states (evenly subsampled) enter the singular values of Φ,
        which are then rescaled to the full count.

    Returns
    -------
    Richness
        Verdict, Φ singular values and effective rank, spread.
    """
    max_states = check_positive_int(max_states, "max_states")
    Phi = state_matrix(latents, mask, M, B=B, d=d, inputs=inputs, nonlinearity=nonlinearity)
    n_states = Phi.shape[0]
    if n_states > max_states:
        rows = np.linspace(0, n_states - 1, max_states).round().astype(np.int64)
        Phi = Phi[rows] * np.sqrt(n_states / max_states)
    gram = Phi.T @ Phi if Phi.shape[0] >= Phi.shape[1] else Phi @ Phi.T
    sv = np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None))
    phi_rank = effective_rank(sv, rtol=rank_rtol)
    spread = state_richness(latents, mask, inputs=inputs)
    n_inputs = 0 if inputs is None else np.shape(inputs)[2]
    affine = np.shape(M)[1] + n_inputs + 1
    identifiable = bool(spread > spread_rtol and phi_rank > affine)
    facts = (
        f"{n_states} visited states; state spread {spread:.3g} (needs > {spread_rtol:g}); "
        f"effective rank of Φ {phi_rank} (needs > {affine})."
    )
    if identifiable:
        verdict = (
            "The visited states are rich enough: the conditional mean of the output loadings "
            "given the input-side loadings is determined by the data; the spread of k around "
            f"it is not. {facts}"
        )
    elif np.shape(M)[0] <= affine:
        # Φ has one column per unit, so with this few units its rank cannot exceed the affine
        # bound however rich the trials are: the limit is the number of units, not the states.
        n_units = np.shape(M)[0]
        verdict = (
            f"Not identifiable: too few units ({n_units}); Φ has one column per unit, so its "
            f"effective rank cannot exceed {n_units}, and separating the nonlinear response "
            f"from a linear one needs more than {affine}. More trials will not help; record "
            f"more units or fit a lower rank. {facts}"
        )
    else:
        if spread <= spread_rtol:
            why = "the trajectories do not explore every direction of the latent/input space"
        else:
            why = "the units respond almost linearly over the visited states"
        verdict = (
            f"Not identifiable: {why}, so the conditional mean of the output loadings is not "
            f"unique; more varied trials (initial conditions, inputs) are needed. {facts}"
        )
    return Richness(identifiable, verdict, sv, phi_rank, spread, n_states)


def _spectrum_and_counts(
    post: PosteriorCovariance, laplace: PosteriorSampler, gauge: np.ndarray
) -> tuple[np.ndarray, int]:
    n_params, n_gauge = gauge.shape
    if post.structure == "dense" and post.eigenvalues.size == n_params:
        F = (post.eigenvectors * post.eigenvalues) @ post.eigenvectors.T
        complement = linalg.null_space(gauge.T)
        spectrum = np.linalg.eigvalsh(complement.T @ F @ complement)[::-1]
        return spectrum, classify_directions(spectrum, post.prior_precision)[0]
    # The gauge directions have zero data precision, so counting over all of θ is counting
    # over their complement.
    spectrum = np.asarray(post.eigenvalues, dtype=np.float64)
    return spectrum, min(laplace.n_constrained(), n_params - n_gauge)


def compute_degeneracy(
    fit: LowRankFit,
    recording: Recording,
    posterior: PosteriorCovariance | None = None,
    *,
    prior_precision: float = 1.0,
    rank_rtol: float = 1e-3,
    spread_rtol: float = 0.05,
    max_states: int = 10000,
    **posterior_options,
) -> DegeneracyReport:
    """Analyse which directions of θ = (M, K, B, d) the data constrain.

    Parameters
    ----------
    fit : LowRankFit
        The fit.
    recording : Recording
        The recording it was fitted to.
    posterior : PosteriorCovariance, optional
        A Laplace posterior of this fit; computed with :func:`laplace_posterior` (with
        ``prior_precision`` and ``posterior_options``) when omitted.
    prior_precision : float, default: 1.0
        λ, used when ``posterior`` is omitted (otherwise the posterior's λ is used).
    rank_rtol : float, default: 1e-3
        Relative cut-off of the effective rank of Φ.
    spread_rtol : float, default: 0.05
        Minimum spread σ_min/σ_max of the visited (κ, u) states for the richness check.
    max_states : int, default: 10000
        At most this many visited states (evenly subsampled) enter the singular values of Φ,
        which are rescaled to the full count.
    **posterior_options
        Passed to :func:`laplace_posterior` when ``posterior`` is omitted.

    Returns
    -------
    DegeneracyReport
        Spectrum, gauge basis, counts, threshold and rule, Φ singular values and effective rank,
        the richness verdict and per-unit scores (1 − mean posterior/prior variance of k_i).

    Raises
    ------
    ValueError
        When ``posterior`` does not match the fit.
    """
    if posterior is None:
        posterior = laplace_posterior(
            fit, recording, prior_precision=prior_precision, **posterior_options
        )
    n_units, rank, n_inputs = fit.n_units, fit.rank, fit.B.shape[1]
    n_params = n_units * (2 * rank + n_inputs + 1)
    if posterior.n_params != n_params:
        raise ValueError(
            f"posterior has {posterior.n_params} parameters but the fit has {n_params} "
            f"(n_units={n_units}, rank={rank}, n_inputs={n_inputs})."
        )
    lam = posterior.prior_precision
    gauge = linalg.orth(gauge_directions(fit.M, fit.K, n_inputs))
    n_gauge = gauge.shape[1]
    laplace = PosteriorSampler(posterior)
    spectrum, n_constrained = _spectrum_and_counts(posterior, laplace, gauge)
    richness = assess_richness(
        fit.latents,
        recording.mask,
        fit.M,
        B=fit.B,
        d=fit.d,
        inputs=recording.inputs,
        nonlinearity=fit.nonlinearity,
        rank_rtol=rank_rtol,
        spread_rtol=spread_rtol,
        max_states=max_states,
    )
    verdict = richness.verdict + (
        f" {n_constrained} of {n_params} directions of θ are constrained by the data, "
        f"{n_params - n_gauge - n_constrained} are degenerate and {n_gauge} are gauge."
    )
    unit_cov = laplace.unit_covariance()
    k_pos = np.arange(rank, 2 * rank)
    k_var = np.einsum("ipp->ip", unit_cov)[:, k_pos]
    scores = np.clip(1.0 - k_var.mean(axis=1) * lam, 0.0, 1.0)
    return DegeneracyReport(
        spectrum=spectrum,
        gauge_basis=gauge,
        n_constrained=n_constrained,
        n_degenerate=n_params - n_gauge - n_constrained,
        n_gauge=n_gauge,
        n_total=n_params,
        threshold=lam,
        threshold_rule=THRESHOLD_RULE,
        phi_singular_values=richness.phi_singular_values,
        phi_effective_rank=richness.phi_effective_rank,
        identifiable=richness.identifiable,
        verdict=verdict,
        unit_scores=scores,
    )
