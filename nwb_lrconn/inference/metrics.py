"""Metrics and analyses of connectivity distributions (DESIGN.md §7).

- :func:`sinkhorn_divergence`: debiased entropic OT between two point clouds, in the convention of
  geomloss ``SamplesLoss("sinkhorn", p=2, blur=ε)``: cost ``|x − y|^p / p``, entropic
  regularisation ``ε^p``, and ``S(a, b) = OT(a, b) − ½ OT(a, a) − ½ OT(b, b)`` where OT is the
  full regularised objective (so S ≈ ½ W₂² for p = 2 and small blur);
- :func:`conditional_mean_error`, :func:`connectivity_dissimilarity` (Sinkhorn on z + mean
  ‖g_A(z) − k_B‖²) and the older :func:`valente_dissimilarity` baseline;
- :func:`gmm_cv_log_likelihood`: cross-validated Gaussian-mixture log-likelihood per unit versus
  the number of components;
- :func:`population_labels` and :func:`silence_population`: k-means populations and in-silico
  silencing (m ← 0);
- :func:`least_squares_output_loadings`: the unregularised (LINT-style) fit of K with known
  latents, the baseline that lands anywhere in the null space.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .._validation import check_array, check_positive, check_positive_int, make_rng
from ..model.networks import phi as _phi

__all__ = [
    "sinkhorn_divergence",
    "conditional_mean_error",
    "connectivity_dissimilarity",
    "valente_dissimilarity",
    "gmm_cv_log_likelihood",
    "population_labels",
    "silence_population",
    "least_squares_output_loadings",
]


def _softmin(eps: float, cost: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    # −ε log Σ_j exp(h_j − C_ij / ε), h already holds log-weights + potential/ε.
    return -eps * torch.logsumexp(h[None, :] - cost / eps, dim=1)


def _sinkhorn_ot(
    x: torch.Tensor, y: torch.Tensor, *, p: int, blur: float, scaling: float, diameter: float
) -> torch.Tensor:
    """Regularised OT_ε(x, y) with uniform weights, by symmetric log-domain Sinkhorn + ε-scaling."""
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
    kw = {"p": p, "blur": blur, "scaling": scaling, "diameter": diameter}
    with torch.no_grad():
        value = (
            _sinkhorn_ot(xt, yt, **kw)
            - 0.5 * _sinkhorn_ot(xt, xt, **kw)
            - 0.5 * _sinkhorn_ot(yt, yt, **kw)
        )
    return float(value)
