"""Per-unit refit of the loadings and readout on fixed latents (pure torch, float64).

With the latents κ(t) of a trained network held fixed, the likelihood separates over units:
unit i's observations depend only on θ_i = (m_i, b_i, d_i, g_i, c_i) through the readout

    r_i(t) = g_i φ(m_i·κ(t) + b_i·u(t) + d_i) + c_i.

:func:`refit_units` maximises each unit's likelihood, with a weak Gaussian prior on m_i, over θ_i
by damped Fisher scoring (one P×P system per unit, all units at once);
:func:`refit_output_loadings` then re-solves K from the latent updates on the new activations,
so that the network keeps producing the same κ(t).

Why a separate step: gradient training moves every θ_i together with the dynamics and stops
short along per-unit directions, notably the trade-off between |m_i| and g_i of weakly tuned
units under Poisson noise (they stay saturated with a small gain where the truth is linear with
a large one). One refit after Adam and L-BFGS lowers the training and held-out losses and
brings M and the covariance of m closer to the truth on the Poisson spike fits of
``tests/benchmarks/bench_model.py --fits --full``; the estimator keeps it only when the held-out
loss is lower.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..observation import _RATE_FLOOR, expected_observation
from ..ridge import scale_free_precision, solve_output_loadings
from ..rollout import activation, activation_slope

__all__ = ["refit_units", "refit_output_loadings"]

# Values (bins × units) per chunk of a pass: 4 MiB in float64, so that the dozen elementwise
# intermediates of a chunk stay in cache instead of streaming from memory.
_CHUNK_VALUES = 1 << 19


def _unit_terms(
    theta, kappa, inputs, y, *, observation, nonlinearity, bin_width, inv_var, full, w=None
):
    """Per-unit loss (N,) of a chunk of bins and, when ``full``, its gradient and Fisher matrix.

    ``w`` (bins × N, or None for all) weighs each value: 1 where observed, 0 elsewhere.

    ∂r_i/∂θ_i = [g_i φ'_i z, φ_i, 1] with z = (κ, u, 1) shared by all units, so every sum over
    bins is a (N × bins) by (bins × ·) matrix product against z or z ⊗ z.
    """
    rank, n_in = kappa.shape[1], inputs.shape[1]
    m, b = theta[:, :rank], theta[:, rank : rank + n_in]
    d, g, c = theta[:, -3], theta[:, -2], theta[:, -1]
    x = kappa @ m.T + d
    if n_in:
        x = x + inputs @ b.T
    phi = activation(x, nonlinearity)
    r = g * phi + c
    if observation == "poisson":
        lam = expected_observation(r, observation, bin_width=bin_width) + _RATE_FLOOR
        values = lam - y * torch.log(lam)
        loss = (values if w is None else values * w).sum(0)
        if not full:
            return loss, None, None
        dlam = bin_width * torch.sigmoid(r)
        dloss = (1.0 - y / lam) * dlam  # dℓ/dr
        weight = dlam**2 / lam  # Fisher information of r
    else:
        resid = r - y
        values = resid**2 * inv_var
        loss = 0.5 * (values if w is None else values * w).sum(0)
        if not full:
            return loss, None, None
        dloss, weight = resid * inv_var, inv_var.expand_as(r)
    if w is not None:
        dloss, weight = dloss * w, weight * w
    gs = g * activation_slope(phi, nonlinearity)  # dr/dx
    z = torch.cat([kappa, inputs, torch.ones_like(kappa[:, :1])], dim=1)  # (n_bins, Q)
    q = z.shape[1]
    zz = (z.unsqueeze(2) * z.unsqueeze(1)).reshape(-1, q * q)
    wgs = weight * gs
    n_units, n_par = theta.shape
    # zᵀ·A rather than Aᵀ·z: several times faster in MKL for skinny z
    grad = torch.cat(
        [(z.T @ (dloss * gs)).T, (dloss * phi).sum(0)[:, None], dloss.sum(0)[:, None]], dim=1
    )
    fisher = theta.new_empty(n_units, n_par, n_par)
    fisher[:, :q, :q] = (zz.T @ (wgs * gs)).T.reshape(n_units, q, q)
    fisher[:, :q, q] = (z.T @ (wgs * phi)).T
    fisher[:, :q, q + 1] = (z.T @ wgs).T
    fisher[:, q, q] = (weight * phi * phi).sum(0)
    fisher[:, q, q + 1] = (weight * phi).sum(0)
    fisher[:, q + 1, q + 1] = weight.sum(0)
    fisher[:, q:, :q] = fisher[:, :q, q:].transpose(1, 2)
    fisher[:, q + 1, q] = fisher[:, q, q + 1]
    return loss, grad, fisher


def refit_units(
    kappa: Tensor,
    data: Tensor,
    inputs: Tensor | None,
    theta: Tensor,
    *,
    observation: str,
    nonlinearity: str,
    bin_width: float,
    noise_std: Tensor | None = None,
    loading_var: float | None = None,
    observed: Tensor | None = None,
    n_iter: int = 50,
    chunk: int | None = None,
    tol: float = 1e-8,
) -> Tensor:
    """Maximise each unit's likelihood over θ_i with the latents held fixed.

    Parameters
    ----------
    kappa : Tensor of shape (n_bins, rank)
        Latents of the observed bins.
    data : Tensor of shape (n_bins, n_units)
        Observations in those bins.
    inputs : Tensor of shape (n_bins, n_inputs) or None
        u(t) in those bins.
    theta : Tensor of shape (n_units, rank + n_inputs + 3)
        Starting (m, b, d, g, c) per unit.
    observation : {"poisson", "gaussian"}
        Observation model (calcium without indicator kernel is the Gaussian one).
    nonlinearity : str
        φ.
    bin_width : float
        Δt in seconds (Poisson).
    noise_std : Tensor of shape (n_units,), optional
        σ_i of the Gaussian model (default 1); it scales unit i's loss only.
    loading_var : float, optional
        Variance s² of a Gaussian prior m_i ~ N(0, s² I) on the loadings (a penalty |m_i|²/2s² per
        unit); default: the mean squared entry of the starting m. For a tuned unit it is a few
        nats against thousands of observations; it stops a unit the data barely tune from
        running off along the flat direction of a saturating step (|m_i| → ∞, g_i → 0).
    observed : Tensor of shape (n_bins, n_units), bool, optional
        Which values are observed (default: all); the others take no part, whatever ``data``
        holds there (each unit's likelihood sums over its own observed bins).
    n_iter : int, default: 50
        Upper bound on Fisher-scoring iterations.
    chunk : int, optional
        Bins per chunk of a pass (memory is about chunk × n_units × P values); by default
        about 2¹⁹ / n_units.
    tol : float, default: 1e-8
        A unit has converged when an accepted step lowers its loss by at most ``tol`` times
        that loss (a rejected step raises its damping instead); converged units, and units whose
        damping has grown past 1e9 without finding a lower loss, leave the computation, and the
        loop stops when none is left.

    Returns
    -------
    Tensor of shape (n_units, rank + n_inputs + 3)
        Refitted θ (maximum a posteriori under the prior on m); every unit's penalised loss is
        at most its starting one.
    """
    dtype = torch.float64
    kappa, theta = kappa.to(dtype), theta.to(dtype).clone()  # data: per chunk, see below
    inputs = kappa.new_zeros(kappa.shape[0], 0) if inputs is None else inputs.to(dtype)
    n_units, n_par = theta.shape
    if chunk is None:
        chunk = max(1, _CHUNK_VALUES // max(1, n_units))
    inv_var = (
        torch.ones(n_units, dtype=dtype, device=theta.device)
        if noise_std is None
        else noise_std.to(dtype) ** -2
    )
    common = {"observation": observation, "nonlinearity": nonlinearity, "bin_width": bin_width}

    rank = kappa.shape[1]
    if loading_var is None:
        loading_var = float((theta[:, :rank] ** 2).mean())
    precision = torch.zeros(n_par, dtype=dtype, device=theta.device)
    precision[:rank] = 1.0 / loading_var

    def evaluate(th, units, full):
        """Penalised loss (and gradient, Fisher matrix) of the units ``units``."""
        iv = inv_var[units]
        every = len(units) == n_units  # (units are distinct) no gather of the columns
        loss = 0.5 * (th**2 * precision).sum(1)  # the prior on m
        grad = th * precision if full else None
        fisher = torch.diag(precision).expand(len(th), n_par, n_par).clone() if full else None
        for start in range(0, kappa.shape[0], chunk):
            sl = slice(start, start + chunk)
            y = (data[sl] if every else data[sl][:, units]).to(dtype)
            w = None
            if observed is not None:
                seen = observed[sl] if every else observed[sl][:, units]
                y, w = torch.where(seen, y, 0.0), seen.to(dtype)
            out = _unit_terms(th, kappa[sl], inputs[sl], y, w=w, full=full, inv_var=iv, **common)
            loss += out[0]
            if full:
                grad += out[1]
                fisher += out[2]
        return loss, grad, fisher

    eye = torch.eye(n_par, dtype=dtype, device=theta.device)
    damping = torch.full((n_units,), 1e-3, dtype=dtype, device=theta.device)
    active = torch.arange(n_units, device=theta.device)  # units still moving
    loss, grad, fisher = evaluate(theta, active, True)
    for _ in range(n_iter):
        scale = torch.diagonal(fisher, dim1=1, dim2=2).clamp_min(1e-12)
        lm = damping[active, None, None] * (torch.diag_embed(scale) + 1e-9 * eye)
        step = torch.linalg.solve(fisher + lm, grad[..., None])[..., 0]
        trial = theta[active] - step
        # The derivatives at the trial point come with its loss: most steps are accepted, and
        # their derivatives are the next iteration's (a rejected step's are dropped).
        trial_loss, trial_grad, trial_fisher = evaluate(trial, active, True)
        better = torch.isfinite(trial_loss) & (trial_loss < loss)
        converged = better & (loss - trial_loss <= tol * loss.abs())
        theta[active] = torch.where(better[:, None], trial, theta[active])
        damping[active] = torch.where(better, damping[active] / 3, damping[active] * 10).clamp(
            min=1e-9
        )
        keep = ~converged & (damping[active] < 1e9)
        if not keep.any():
            break
        loss = torch.where(better, trial_loss, loss)[keep]
        grad = torch.where(better[:, None], trial_grad, grad)[keep]
        fisher = torch.where(better[:, None, None], trial_fisher, fisher)[keep]
        active = active[keep]
    return theta


def refit_output_loadings(
    now: Tensor, following: Tensor, activity: Tensor, *, alpha: float, ridge: float
) -> Tensor:
    """K from the latent updates κ(t+1) − (1−α) κ(t) ≈ (α/N) Kᵀ φ(x(t)), with a scale-free ridge.

    Parameters
    ----------
    now, following : Tensor of shape (n_pairs, rank)
        κ(t) and κ(t+1) over pairs of consecutive observed bins.
    activity : Tensor of shape (n_pairs, n_units)
        φ(x(t)).
    alpha : float
        Δt/τ.
    ridge : float
        Ridge strength relative to the mean diagonal of ΦᵀΦ
        (:func:`~nwb_lrconn.model.ridge.scale_free_precision`).

    Returns
    -------
    Tensor of shape (n_units, rank)
    """
    lam = scale_free_precision(activity, alpha=alpha, ridge=ridge)
    return solve_output_loadings(
        activity, following - (1 - alpha) * now, alpha=alpha, prior_precision=lam
    )
