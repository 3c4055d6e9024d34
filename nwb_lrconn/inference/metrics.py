"""Metrics and analyses of connectivity distributions (the stage-3 output, ``tutorials/model.md``).

- :func:`sinkhorn_divergence`: debiased entropic OT between two point clouds, in the convention of
  geomloss ``SamplesLoss("sinkhorn", p=2, blur=ε)``: cost ``|x − y|^p / p``, entropic
  regularisation ``ε^p``, and ``S(a, b) = OT(a, b) − ½ OT(a, a) − ½ OT(b, b)`` where OT is the
  full regularised objective (so S ≈ ½ W₂² for p = 2 and small blur);
- :func:`conditional_mean_error`, :func:`connectivity_dissimilarity` (Sinkhorn on z + mean
  ‖g_A(z) − k_B‖²) and the older :func:`valente_dissimilarity` baseline;
- :func:`gmm_cv_log_likelihood`: cross-validated Gaussian-mixture log-likelihood per unit versus
  the number of components (defined in :mod:`.clusters`, which needs no torch; re-exported);
- :func:`population_labels` (also from :mod:`.clusters`) and :func:`silence_population`: k-means
  populations and in-silico silencing (m ← 0);
- :func:`gradient_descent_output_loadings`: the unregularised (LINT-style) fit of K with known
  latents, the baseline that lands anywhere in the null space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._validation import check_array, check_positive, make_rng
from ..model.nonlinearity import phi as _phi
from .clusters import gmm_cv_log_likelihood, population_labels

__all__ = [
    "sinkhorn_divergence",
    "conditional_mean_error",
    "connectivity_dissimilarity",
    "valente_dissimilarity",
    "gmm_cv_log_likelihood",
    "population_labels",
    "silence_population",
    "gradient_descent_output_loadings",
]


def _softmin(eps: float, cost: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    # −ε log Σ_j exp(h_j − C_ij / ε), h already holds log-weights + potential/ε.
    return -eps * torch.logsumexp(h[None, :] - cost / eps, dim=1)


def _sinkhorn_ot(
    x: torch.Tensor, y: torch.Tensor, *, p: int, blur: float, scaling: float, diameter: float
) -> torch.Tensor:
    """Regularised OT_ε(x, y), uniform weights: symmetric log-domain Sinkhorn with ε-scaling."""
    c_xy = torch.cdist(x, y) ** p / p
    c_yx = c_xy.T
    log_a = torch.full((x.shape[0],), -math.log(x.shape[0]), dtype=x.dtype)
    log_b = torch.full((y.shape[0],), -math.log(y.shape[0]), dtype=y.dtype)
    eps_list = [diameter**p]
    eps_list += [
        math.exp(e)
        for e in np.arange(p * math.log(diameter), p * math.log(blur), p * math.log(scaling))
    ]
    eps_list += [blur**p]
    eps = eps_list[0]
    f = _softmin(eps, c_xy, log_b)
    g = _softmin(eps, c_yx, log_a)
    for eps in eps_list:
        ft = _softmin(eps, c_xy, log_b + g / eps)
        gt = _softmin(eps, c_yx, log_a + f / eps)
        f, g = 0.5 * (f + ft), 0.5 * (g + gt)
    # Final extrapolation at the target ε (as geomloss does).
    f, g = _softmin(eps, c_xy, log_b + g / eps), _softmin(eps, c_yx, log_a + f / eps)
    return f.mean() + g.mean()


def sinkhorn_divergence(
    x: np.ndarray, y: np.ndarray, *, blur: float = 0.05, p: int = 2, scaling: float = 0.5
) -> float:
    """Debiased Sinkhorn divergence between two point clouds with uniform weights.

    Matches geomloss ``SamplesLoss("sinkhorn", p=p, blur=blur, debias=True)``: ground cost
    ``|x − y|^p / p``, entropic strength ``ε = blur^p``, ε-scaling from the cloud diameter down
    to ``blur`` by factors ``scaling``, and
    ``S(x, y) = OT_ε(x, y) − ½ OT_ε(x, x) − ½ OT_ε(y, y)``. For p = 2 and small blur,
    ``S ≈ ½ W₂²``; for a pure translation by μ, ``S = ½ |μ|²`` exactly.

    Parameters
    ----------
    x : ndarray of shape (n, dim)
        First cloud.
    y : ndarray of shape (m, dim)
        Second cloud.
    blur : float, default: 0.05
        Entropic blur ε^{1/p} (length scale).
    p : int, default: 2
        Cost exponent.
    scaling : float, default: 0.5
        ε-scaling ratio in (0, 1). 0.5 is geomloss's default, so values compare with the
        published ones; closer to 1 iterates longer and converges further (e.g. two
        independent 1000-unit draws of the quadstable law give 0.006 at 0.5, 0.010 at 0.9).

    Returns
    -------
    float
        The divergence (≥ 0 up to round-off).
    """
    x = check_array(x, "x", ndim=2, dtype=np.float64, finite=True)
    y = check_array(y, "y", shape=(None, x.shape[1]), dtype=np.float64, finite=True)
    check_positive(blur, "blur")
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must be in (0, 1); got {scaling!r}.")
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    both = torch.cat([xt, yt])
    diameter = max(float((both.max(0).values - both.min(0).values).norm()), blur)
    kw: dict[str, Any] = {"p": p, "blur": blur, "scaling": scaling, "diameter": diameter}
    with torch.no_grad():
        value = (
            _sinkhorn_ot(xt, yt, **kw)
            - 0.5 * _sinkhorn_ot(xt, xt, **kw)
            - 0.5 * _sinkhorn_ot(yt, yt, **kw)
        )
    return float(value)


def conditional_mean_error(
    m: np.ndarray, k: np.ndarray, g: Callable[[np.ndarray], np.ndarray]
) -> float:
    """Mean squared distance ``mean_i ‖k_i − g(m_i)‖²`` of output loadings from a conditional mean.

    Parameters
    ----------
    m : ndarray of shape (n, rank)
        Input-side loadings (or z; passed to ``g`` as is).
    k : ndarray of shape (n, rank)
        Output-side loadings.
    g : callable
        Maps ``m`` (n, ·) to the conditional mean (n, rank), e.g.
        ``functools.partial(nwb_lrconn.model.networks.conditional_mean, "ring")``.

    Returns
    -------
    float
    """
    m = np.asarray(m, dtype=np.float64)
    k = check_array(k, "k", ndim=2, dtype=np.float64)
    target = check_array(g(m), "g(m)", shape=k.shape, dtype=np.float64)
    return float(np.mean(np.sum((k - target) ** 2, axis=1)))


def connectivity_dissimilarity(
    z_a: np.ndarray,
    z_b: np.ndarray,
    k_b: np.ndarray,
    g_a: Callable[[np.ndarray], np.ndarray],
    *,
    blur: float = 0.05,
) -> float:
    """Dissimilarity D(A, B) = Sinkhorn(z_A, z_B) + mean_s ‖g_A(z_s^B) − k_s^B‖².

    The first term compares the input-side distributions; the second compares the conditional
    mean of A with the σ = 0 output loadings of B on B's own units (shared z).

    Parameters
    ----------
    z_a : ndarray of shape (n_a, dim)
        Input-side vectors of A (e.g. the true m).
    z_b : ndarray of shape (n_b, dim)
        Input-side vectors of B (e.g. sampled m).
    k_b : ndarray of shape (n_b, rank)
        Output loadings of B at σ = 0.
    g_a : callable
        Conditional mean of A, mapping (n, dim) to (n, rank).
    blur : float, default: 0.05
        Sinkhorn blur.

    Returns
    -------
    float
    """
    return sinkhorn_divergence(z_a, z_b, blur=blur) + conditional_mean_error(z_b, k_b, g_a)


def _sorted_effective_connectivity(M: np.ndarray, K: np.ndarray) -> np.ndarray:
    # K projected onto the column space of M, then the sorted entries of M K_∥ᵀ.
    q, _ = np.linalg.qr(M)
    k_par = q @ (q.T @ K)
    return np.sort((M @ k_par.T).ravel())


def valente_dissimilarity(
    M_a: np.ndarray, K_a: np.ndarray, M_b: np.ndarray, K_b: np.ndarray
) -> float:
    """The older baseline: 1 − Pearson correlation of the sorted effective connectivities.

    ``sort(vec(M K_∥ᵀ))`` with K_∥ the projection of K onto the column space of M (Valente et
    al. 2022), compared between A and B.

    Parameters
    ----------
    M_a, K_a : ndarray of shape (n_units, rank)
        Loadings of A.
    M_b, K_b : ndarray of shape (n_units, rank)
        Loadings of B (same number of units).

    Returns
    -------
    float
        In [0, 2]; 0 when the sorted entries are perfectly correlated.
    """
    M_a = check_array(M_a, "M_a", ndim=2, dtype=np.float64)
    M_b = check_array(M_b, "M_b", ndim=2, dtype=np.float64)
    if M_a.shape[0] != M_b.shape[0]:
        raise ValueError(
            f"valente_dissimilarity needs the same number of units in A and B; got "
            f"{M_a.shape[0]} and {M_b.shape[0]}."
        )
    a = _sorted_effective_connectivity(M_a, check_array(K_a, "K_a", shape=M_a.shape))
    b = _sorted_effective_connectivity(M_b, check_array(K_b, "K_b", shape=M_b.shape))
    return float(1.0 - np.corrcoef(a, b)[0, 1])


def silence_population(M: np.ndarray, labels: np.ndarray, population: int) -> np.ndarray:
    """Silence one population in silico: its units' input-side loadings are set to 0 (m ← 0).

    With φ = tanh a unit with m = 0 (and no input or bias) has φ(x) = 0, so it no longer drives
    the latents.

    Parameters
    ----------
    M : ndarray of shape (n_units, rank)
        Input-side loadings.
    labels : ndarray of shape (n_units,)
        Population of each unit.
    population : int
        Which population to silence.

    Returns
    -------
    ndarray of shape (n_units, rank)
        A copy of M with the population's rows zeroed.
    """
    M = check_array(M, "M", ndim=2, dtype=np.float64)
    labels = check_array(labels, "labels", shape=(M.shape[0],))
    if population not in set(labels.tolist()):
        raise ValueError(
            f"population {population!r} not among the labels {sorted(set(labels.tolist()))}."
        )
    out = M.copy()
    out[labels == population] = 0.0
    return out


def gradient_descent_output_loadings(
    M: np.ndarray,
    latents: np.ndarray,
    *,
    alpha: float,
    nonlinearity: str = "tanh",
    init_scale: float = 2.0,
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Unregularised least-squares output loadings with known M and latents (LINT-style baseline).

    Returns the point that unregularised gradient descent on
    ``Σ_t ‖κ_{t+1} − (1−α)κ_t − (α/N) Kᵀ φ(M κ_t)‖²`` converges to from the start
    ``K₀ ~ N(0, init_scale²)`` (LINT's initialisation): ``K₀ + Φ⁺(Y − Φ K₀)``, i.e. the start's
    component in the null space of Φ is never corrected. It reproduces the latent updates yet
    carries spurious structure; ``init_scale=0`` gives the minimum-norm solution.

    Parameters
    ----------
    M : ndarray of shape (n_units, rank)
        Input-side loadings.
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t).
    alpha : float
        Δt/τ.
    nonlinearity : str, default: "tanh"
        φ.
    init_scale : float, default: 2.0
        Standard deviation of the gradient-descent start.
    random_state : int, numpy Generator or None
        Seed of the start.

    Returns
    -------
    ndarray of shape (n_units, rank)
        K.
    """
    M = check_array(M, "M", ndim=2, dtype=np.float64)
    latents = check_array(latents, "latents", shape=(None, None, M.shape[1]), dtype=np.float64)
    check_positive(alpha, "alpha")
    init_scale = check_positive(init_scale, "init_scale", allow_zero=True)
    kappa = latents[:, :-1].reshape(-1, M.shape[1])
    updates = latents[:, 1:].reshape(-1, M.shape[1]) - (1 - alpha) * kappa
    design = (alpha / M.shape[0]) * _phi(kappa @ M.T, nonlinearity)
    start = init_scale * make_rng(random_state).standard_normal(M.shape)
    return start + np.linalg.lstsq(design, updates - design @ start, rcond=None)[0]
