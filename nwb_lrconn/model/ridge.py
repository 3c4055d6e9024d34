"""The one ridge solve for the output loadings K given the latent updates (torch, any dtype).

The latent dynamics are linear in K: with Φ the activity φ(x(t)) over pairs of consecutive bins
and Y the updates κ(t+1) − (1−α)κ(t),

    Y ≈ (α/N) Φ K.

Under Gaussian update noise of standard deviation σ and a Gaussian prior of precision λ on each
entry of K, the posterior mean of K is

    K̂ = argmin_K ‖Y − (α/N) Φ K‖² / σ² + λ ‖K‖²,

which :func:`solve_output_loadings` returns. That is the only convention for λ in the package:
the training engine, which wants a penalty that does not depend on the scale of Φ, states it as
λ through :func:`scale_free_precision`, and :mod:`nwb_lrconn.inference.output_loadings` uses the
prior precision of the Laplace posterior directly.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["scale_free_precision", "solve_output_loadings"]


def solve_output_loadings(
    activity: Tensor,
    updates: Tensor,
    *,
    alpha: float,
    prior_precision: float | Tensor,
    noise_std: float = 1.0,
) -> Tensor:
    """Posterior mean of K given the activity and the latent updates.

    Parameters
    ----------
    activity : Tensor of shape (n_pairs, n_units)
        Φ, the activity φ(x(t)) at the first bin of each pair of consecutive bins.
    updates : Tensor of shape (n_pairs, rank)
        Y, the updates κ(t+1) − (1−α)κ(t).
    alpha : float
        Euler step Δt/τ.
    prior_precision : float or 0-d Tensor
        λ, the prior precision of each entry of K (0 for least squares, when ΦᵀΦ is regular).
    noise_std : float, default: 1.0
        σ of the update noise.

    Returns
    -------
    Tensor of shape (n_units, rank)
        K̂, in the dtype of ``activity``.
    """
    n_units = activity.shape[1]
    X = activity * (alpha / n_units)
    gram = X.T @ X
    eye = torch.eye(n_units, dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + (noise_std**2 * prior_precision) * eye, X.T @ updates)


def scale_free_precision(activity: Tensor, *, alpha: float, ridge: float) -> Tensor:
    """λ that penalises K by ``ridge`` times the mean diagonal of ΦᵀΦ (σ = 1).

    In the scale of the regression on Φ itself, ``(ΦᵀΦ + μI) K' = ΦᵀY`` with
    μ = ridge · tr(ΦᵀΦ)/N, which is λ = μ (α/N)² in the convention of
    :func:`solve_output_loadings`: a penalty that keeps its strength whatever the activity's scale.
    """
    n_units = activity.shape[1]
    mean_diagonal = (activity * activity).sum() / n_units
    return ridge * mean_diagonal * (alpha / n_units) ** 2
