"""Per-trial initial latents κ(0) that maximise each trial's likelihood (private).

With the network fixed, trial j's likelihood depends on its own κ_j(0) only, an R-dimensional
problem per trial. :func:`infer_initial` solves all of them at once by Levenberg–Marquardt
(damped Gauss–Newton): one forward pass carries, next to κ(t), its sensitivity
S(t) = ∂κ(t)/∂κ(0) (an R×R matrix per trial),

    S(0) = I,    S(t+1) = [(1 − α) I + (α/N) Kᵀ diag(φ'(x(t))) M] S(t),

so that the gradient and the Gauss–Newton matrix of trial j's loss are

    g_j = Σ_t S(t)ᵀ Mᵀ (ℓ'(r(t)) ⊙ g ⊙ φ'(t)),
    H_j = Σ_t S(t)ᵀ [Σ_i w_i(t) (g_i φ'_i(t))² m_i m_iᵀ] S(t),

with w the Fisher information of the readout r (1/σ² for Gaussian observations,
(Δt σ(r))² / λ for Poisson counts). Every O(N) product is a (trials × N) by (N × R²) matrix
product per step. A pass costs about one training forward-and-backward over the trials, and a
handful of passes converge where first-order steps on κ(0) need a hundred.

Under the calcium indicator kernel the readout is filtered along the trial; there κ(0) is
refined by Adam on :func:`~nwb_lrconn.model._engine.objective.batch_loss` instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..observation import _RATE_FLOOR
from ..rollout import activation_scaled_, activation_slope, input_scale, unit_offset

__all__ = ["infer_initial", "initial_prior"]

# Width of the prior on a held-out trial's κ(0), relative to the spread of the training κ(0).
_PRIOR_WIDTH = 3.0
# A trial's κ(0) counts as converged once a step would lower (or did lower) its loss by at most
# this many nats per observed value: a thousandth of the smallest change in the mean loss that
# training ever counts as progress, so the held-out loss the stopping rules read is exact
# to that resolution. A relative tolerance on the loss itself was met by no trial in float32
# (the accepted steps kept gaining rounding-level amounts) and every call ran all its iterations.
_CONVERGED_PER_VALUE = 1e-8
# Values per (trials, steps, units) array of a chunk of :func:`_trial_terms`: half a MiB in
# float32, so that the handful of them a chunk works on stay in a core's L2 cache.
_TERMS_CHUNK = 1 << 17


def initial_prior(kappa: Tensor) -> tuple[Tensor, Tensor] | None:
    """Gaussian prior on κ(0) from the training trials' κ(0): (mean, precision).

    The covariance is the training trials' κ(0) covariance widened ``_PRIOR_WIDTH``-fold in
    standard deviation. None when there are too few trials (fewer than rank + 2) to estimate it.
    Without a prior, a trial whose first bins saturate every unit (or silence it) has a
    likelihood that keeps improving, by ever smaller amounts, as κ(0) runs out along the
    saturated direction; on the head-direction recordings some held-out κ(0) ran off past 100
    (training κ(0) within 3) and took the canonical gauge with them.
    """
    n, rank = kappa.shape
    if n < rank + 2:
        return None
    k = kappa.detach().double()
    mean = k.mean(0)
    centred = k - mean
    cov = centred.T @ centred / (n - 1)
    cov = _PRIOR_WIDTH**2 * cov + 1e-9 * (torch.trace(cov) + 1e-12) * torch.eye(
        rank, dtype=k.dtype
    )
    return mean.to(kappa.dtype), torch.linalg.inv(cov).to(kappa.dtype)


def infer_initial(
    model,
    initial: Tensor,
    batch,
    config,
    *,
    prior=None,
    n_iter: int = 20,
    damping=None,
    with_nll: bool = False,
):
    """Refine κ(0) of each trial of ``batch`` by maximising its posterior, the model fixed.

    Parameters
    ----------
    model : LowRankRNN
        Fitted network (not modified).
    initial : Tensor of shape (n_trials, rank)
        Starting κ(0), e.g. from the encoder.
    batch : Batch
        The trials (``data``, ``mask``, ``inputs``).
    config : TrainConfig
        Observation settings (``observation``, ``bin_width``, ``calcium_decay``).
    prior : (Tensor, Tensor), optional
        Mean (rank,) and precision (rank, rank) of a Gaussian prior on κ(0)
        (:func:`initial_prior`); without it, maximum likelihood.
    n_iter : int, default: 20
        Upper bound on damped Gauss–Newton iterations (Adam steps × 5 under the calcium kernel).
        A trial stops when its next step is predicted to lower its loss, or an accepted step
        did lower it, by at most 10⁻⁸ nats per observed value, or when its damping has grown
        past 10⁹ without finding a lower loss.
    damping : Tensor of shape (n_trials,), optional
        Levenberg–Marquardt damping to start from, updated in place (it carries the solver's
        state across calls that follow a changing model; default 10⁻³ per trial).
    with_nll : bool, default: False
        Also return each trial's negative log-likelihood at the returned κ(0), which the solver
        has computed anyway (it saves the caller a pass over the trials).

    Returns
    -------
    kappa : Tensor of shape (n_trials, rank)
        κ(0), each trial's at a loss (plus prior) no higher than at ``initial``.
    nll : Tensor of shape (n_trials,) or None
        Only with ``with_nll``: each trial's summed negative log-likelihood without its data-only
        constants (float64; see :func:`~nwb_lrconn.model._engine.objective.mean_nll`); None
        under the calcium kernel, whose solver does not compute it.
    """
    if config.indicator_kernel:
        with torch.enable_grad():
            kappa = _infer_initial_adam(model, initial, batch, config, n_steps=5 * n_iter)
        return (kappa, None) if with_nll else kappa

    def terms(kappa, trials, derivatives=True):
        nll, grad, gn = _trial_terms(model, kappa, trials, config, derivatives=derivatives)
        loss = nll
        if prior is not None:
            mean, precision = (p.double() for p in prior)
            offset = kappa.double() - mean
            pull = offset @ precision
            loss = nll + 0.5 * (pull * offset).sum(1)
            if derivatives:
                grad, gn = grad + pull, gn + precision
        return loss, grad, gn, nll

    with torch.no_grad():
        kappa = initial.detach().clone()
        loss, grad, gn, nll = terms(kappa, batch)
        if damping is None:
            damping = torch.full_like(loss, 1e-3)
        tolerance = _CONVERGED_PER_VALUE * batch.value_counts().clamp(min=1.0)
        active = torch.arange(kappa.shape[0], device=kappa.device)
        eye = torch.eye(kappa.shape[1], dtype=gn.dtype, device=gn.device)
        for iteration in range(n_iter):
            h, lam = gn[active], damping[active, None, None]
            system = h + lam * (torch.diag_embed(h.diagonal(dim1=1, dim2=2)) + 1e-9 * eye)
            step = torch.linalg.solve(system, grad[active].unsqueeze(-1)).squeeze(-1)
            # the quadratic model's decrease for the damped step: g·s − ½ sᵀHs
            predicted = (grad[active] * step).sum(1) - 0.5 * (
                step.unsqueeze(1) @ h @ step.unsqueeze(-1)
            ).reshape(-1)
            moving = predicted > tolerance[active]
            active, step, lam = active[moving], step[moving], lam[moving]
            if active.numel() == 0:
                break
            trial = kappa[active] - step.to(kappa.dtype)
            # after the last step, only the loss is read
            last = iteration == n_iter - 1
            trials = batch if active.numel() == batch.n_trials else batch.take(active)
            t_loss, t_grad, t_gn, t_nll = terms(trial, trials, not last)
            better = torch.isfinite(t_loss) & (t_loss < loss[active])
            done = better & (loss[active] - t_loss <= tolerance[active])
            take = active[better]
            kappa[take], loss[take], nll[take] = trial[better], t_loss[better], t_nll[better]
            if not last:
                grad[take], gn[take] = t_grad[better], t_gn[better]
            damping[active] = (
                torch.where(better, lam[:, 0, 0] / 3, lam[:, 0, 0] * 10)
                .clamp(min=1e-9)
                .to(damping.dtype)
            )
            active = active[~done & (damping[active] < 1e9)]
    return (kappa, nll) if with_nll else kappa


def _trial_terms(
    model,
    kappa: Tensor,
    batch,
    config,
    *,
    derivatives: bool = True,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per-trial loss (n,), its gradient (n, R) and Gauss–Newton matrix (n, R, R) in κ(0).

    The loss is the trial's summed negative log-likelihood without its data-only constants
    (Gaussian: ½ Σ w ((r − y)/σ)²; Poisson: Σ w (λ − y log λ)), w = 1 on the observed values
    (bins of the trial, units it observes, :attr:`Batch.units`); float64 accumulators. Without
    ``derivatives`` only the loss is computed (gradient and matrix are None).

    The time steps are taken in chunks of about ``_TERMS_CHUNK`` values of each (trials, steps,
    units) array (or ``chunk_size`` steps), so that the chunk stays in cache: the rollout runs
    step by step, every per-value term of the chunk is computed in one pass over it, and the
    R×R sensitivities S(t) are then chained step by step.
    """
    M, K = model.M.detach(), model.K.detach()
    n_trials, n_time, n_units = batch.data.shape
    rank = M.shape[1]
    if chunk_size is None:
        chunk_size = max(1, _TERMS_CHUNK // max(1, n_trials * n_units))
    alpha, scale = model.alpha, model.alpha / n_units
    offset = unit_offset(
        model.B.detach() if model.n_inputs else None, model.d.detach(), batch.inputs
    )
    gain, bias = model.readout_gain.detach(), model.readout_offset.detach()
    poisson = config.observation == "poisson"
    inv_var = torch.exp(-2.0 * model.log_noise_std.detach())  # unused by the Poisson terms
    # w, the weights of the observed values; None when all are observed
    weights = None if batch.units is None and bool(batch.mask.all()) else batch.mask.to(M.dtype)
    units = None if batch.units is None else batch.units.to(M.dtype)
    # Skinny right-hand sides stored transposed: several times faster in MKL.
    pairs_mm = (M.unsqueeze(2) * M.unsqueeze(1)).reshape(n_units, rank * rank).T.contiguous().T
    pairs_km = (K.unsqueeze(2) * M.unsqueeze(1)).reshape(n_units, rank * rank).T.contiguous().T
    Mr, Kr = M.T.contiguous().T, K.T.contiguous().T
    eye = torch.eye(rank, dtype=M.dtype, device=M.device)
    sens = eye.expand(n_trials, rank, rank).clone()  # S(t) = ∂κ(t)/∂κ(0)
    f64 = torch.float64
    loss = torch.zeros(n_trials, dtype=f64, device=M.device)
    grad = torch.zeros(n_trials, rank, dtype=f64, device=M.device) if derivatives else None
    gn = torch.zeros(n_trials, rank, rank, dtype=f64, device=M.device) if derivatives else None
    one = torch.ones((), dtype=M.dtype, device=M.device)
    s = input_scale(model.nonlinearity)  # x is computed as s x (see activation_scaled_)
    Mt = M.T if s == 1.0 else (s * M).T
    offset_s = offset if offset is None or s == 1.0 else s * offset
    storage = M.new_empty(n_trials * min(chunk_size, n_time) * n_units)
    for start in range(0, n_time, chunk_size):
        stop = min(start + chunk_size, n_time)
        steps = stop - start
        phi = storage[: n_trials * steps * n_units].view(n_trials, steps, n_units)
        for t in range(start, stop):
            phi_t = phi[:, t - start]
            if offset_s is None:
                torch.mm(kappa, Mt, out=phi_t)
            else:
                o = offset_s if offset_s.dim() == 1 else offset_s[:, t]
                torch.addmm(o, kappa, Mt, out=phi_t)
            activation_scaled_(phi_t, model.nonlinearity)
            if t + 1 < n_time:
                kappa = torch.addmm(kappa, phi_t, Kr, beta=1.0 - alpha, alpha=scale)
        r = torch.addcmul(bias, gain, phi)
        y = batch.data[:, start:stop]
        w = None if weights is None else weights[:, start:stop, None]
        if units is not None:  # unobserved values may hold anything
            w = w * units[:, None]
            y = torch.where(w > 0, y, 0.0)
        if poisson:
            lam = torch.nn.functional.softplus(r).mul_(config.bin_width).add_(_RATE_FLOOR)
            values = torch.log(lam).mul_(y)
            values = torch.sub(lam, values, out=values)  # λ − y log λ
        else:
            resid = r.sub_(y) if w is None else r.sub_(y).mul_(w)  # w (r − y)
            values = resid * resid * inv_var
        if w is not None and poisson:
            values.mul_(w)
        partial = values.sum((1, 2), dtype=f64)
        loss += partial if poisson else 0.5 * partial
        if not derivatives:
            continue
        if poisson:
            slope_r = r.sigmoid_().mul_(config.bin_width)  # dλ/dr
            dloss = torch.addcdiv(one, y, lam, value=-1.0).mul_(slope_r)  # dℓ/dr
            fisher = slope_r.square_().div_(lam)  # (dλ/dr)² / λ
            if w is not None:
                dloss.mul_(w)
                fisher.mul_(w)
        else:
            dloss = resid.mul_(inv_var)
            fisher = inv_var.expand_as(resid) if w is None else w * inv_var
        slope = activation_slope(phi, model.nonlinearity)
        gs = slope * gain  # dr/dx
        drive = dloss.mul_(gs) @ Mr  # ∂ℓ/∂κ(t), (n, steps, R)
        curv = ((fisher * gs).mul_(gs) @ pairs_mm).view(n_trials, steps, rank, rank)
        jac = (slope @ pairs_km).view(n_trials, steps, rank, rank).mul_(scale)
        jac.add_(eye, alpha=1.0 - alpha)
        chain = []  # S(t) of each step of the chunk
        for j in range(steps):
            chain.append(sens)
            if start + j + 1 < n_time:
                sens = torch.bmm(jac[:, j], sens)
        chained = torch.stack(chain, dim=1)  # (n, steps, R, R)
        grad += (drive.unsqueeze(2) @ chained).sum((1, 2), dtype=f64)
        gn += (chained.transpose(2, 3) @ curv @ chained).sum(1, dtype=f64)
    return loss, grad, gn


def _infer_initial_adam(model, initial, batch, config, *, n_steps: int, lr: float = 0.05):
    """κ(0) by Adam on the batch loss (learning rate decayed tenfold); the lowest loss seen."""
    from .objective import batch_loss

    kappa = torch.nn.Parameter(initial.detach().clone())
    optimizer = torch.optim.Adam([kappa], lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.1 ** (1 / n_steps))
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    best_loss, best = float("inf"), kappa.detach().clone()
    try:
        for _ in range(n_steps):
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(model, kappa, batch, config)
            value = float(loss.detach())
            if value < best_loss:
                best_loss, best = value, kappa.detach().clone()
            loss.backward()
            optimizer.step()
            schedule.step()
    finally:
        for p, flag in zip(model.parameters(), requires):
            p.requires_grad_(flag)
    return best
