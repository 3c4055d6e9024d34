"""The latent-form forward pass of the low-rank RNN, as a pure torch function.

    x_i(t)   = m_i·κ(t) + b_i·u(t) + d_i
    κ(t+1)   = (1 − α) κ(t) + (α/N) Σ_i k_i φ(x_i(t)) + ξ(t)

Cost per step is O(N·R) (plus O(N·D_u) for inputs); the N×N matrix J = M Kᵀ/N is never formed.
Both functions are batched over trials and run on the device and dtype of ``M``.

:func:`latent_rollout` is a plain autograd graph, differentiable to any order and under
``torch.func`` (the posterior's Jacobians use it). :func:`rollout_activity` (predictions, and
training under the calcium indicator kernel) is a custom autograd function with a hand-written
adjoint: the forward loop records nothing, and the backward loop runs on the rank-R adjoint alone,
with every O(N) product batched over all time steps at once. It supports first-order gradients
only. Training otherwise goes through
:func:`~nwb_lrconn.model._engine.chunk_loss.rollout_loss`, the same adjoint evaluated in
cache-sized time chunks.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "activation",
    "activation_",
    "activation_scaled_",
    "input_scale",
    "activation_slope",
    "latent_rollout",
    "rollout_activity",
    "unit_offset",
]


_SMALL = 4096  # elements below which torch's tanh beats 2 σ(2x) − 1 (per-operation overhead)


def activation(x: Tensor, nonlinearity: str) -> Tensor:
    """Apply φ: ``"tanh"``, ``"relu"`` or ``"softplus"``.

    tanh is evaluated as 2 σ(2x) − 1 (absolute error a few ulps of 1) on large tensors: torch's
    CPU tanh kernel is several times slower than its sigmoid, and φ dominates the cost of a
    rollout; on small ones the three extra operations would cost more than they save.
    """
    if nonlinearity == "tanh":
        if x.numel() < _SMALL:
            return torch.tanh(x)
        return 2.0 * torch.sigmoid(2.0 * x) - 1.0
    if nonlinearity == "relu":
        return torch.relu(x)
    if nonlinearity == "softplus":
        return torch.nn.functional.softplus(x)
    raise ValueError(f"nonlinearity must be 'tanh', 'relu' or 'softplus'; got {nonlinearity!r}.")


def latent_rollout(
    M: Tensor,
    K: Tensor,
    B: Tensor | None,
    d: Tensor | None,
    initial: Tensor,
    n_time: int,
    *,
    alpha: float,
    nonlinearity: str = "tanh",
    inputs: Tensor | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Roll the latent dynamics forward and return latents and unit potentials.

    Parameters
    ----------
    M, K : Tensor of shape (n_units, rank)
        Input-side and output-side loadings.
    B : Tensor of shape (n_units, n_inputs) or None
        External-input weights.
    d : Tensor of shape (n_units,) or None
        Biases.
    initial : Tensor of shape (n_trials, rank)
        κ(0) per trial.
    n_time : int
        Number of time bins T (κ(0) is the first).
    alpha : float
        Euler step Δt/τ.
    nonlinearity : str, default: "tanh"
        φ.
    inputs : Tensor of shape (n_trials, n_time, n_inputs), optional
        u(t).
    noise : Tensor of shape (n_trials, n_time - 1, rank), optional
        Process noise ξ(t) added to each update.

    Returns
    -------
    latents : Tensor of shape (n_trials, n_time, rank)
        κ(t).
    potentials : Tensor of shape (n_trials, n_time, n_units)
        x(t) = M κ(t) + B u(t) + d.
    """
    return _rollout(M, K, B, d, initial, n_time, alpha, nonlinearity, inputs, noise)


def rollout_activity(
    M: Tensor,
    K: Tensor,
    B: Tensor | None,
    d: Tensor | None,
    initial: Tensor,
    n_time: int,
    *,
    alpha: float,
    nonlinearity: str = "tanh",
    inputs: Tensor | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Like :func:`latent_rollout`, but return the activations φ(x) instead of x.

    φ is applied once per step and reused for the update and the output. Gradients come from
    the adjoint recursion (first order only; use :func:`latent_rollout` for ``torch.func``).

    Returns
    -------
    latents : Tensor of shape (n_trials, n_time, rank)
        κ(t).
    activity : Tensor of shape (n_trials, n_time, n_units)
        φ(x(t)).
    """
    activation(initial[:0, :0], nonlinearity)  # validates the name
    offset = unit_offset(B, d, inputs)
    return _ActivityRollout.apply(
        M, K, offset, initial, noise, int(n_time), float(alpha), nonlinearity
    )


def unit_offset(B: Tensor | None, d: Tensor | None, inputs: Tensor | None) -> Tensor | None:
    """The part of x that does not depend on κ: B u(t) + d.

    Returns None (no offset), d of shape (n_units,), or a (n_trials, n_time, n_units) tensor when
    there are inputs; autograd carries it to B, d and u.
    """
    offset = None
    if inputs is not None and B is not None and B.shape[1] > 0:
        offset = inputs @ B.T
    if d is not None:
        offset = d if offset is None else offset + d
    return offset


def activation_(y: Tensor, nonlinearity: str) -> Tensor:
    """Apply φ to ``y`` in place and return it."""
    if nonlinearity == "tanh":  # see activation
        if y.numel() < _SMALL:
            return y.tanh_()
        return y.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)
    if nonlinearity == "relu":
        return y.relu_()
    return y.copy_(torch.nn.functional.softplus(y))


def input_scale(nonlinearity: str) -> float:
    """The factor s by which :func:`activation_scaled_` expects x scaled: 2 for tanh, else 1."""
    return 2.0 if nonlinearity == "tanh" else 1.0


def activation_scaled_(y: Tensor, nonlinearity: str) -> Tensor:
    """φ(x) in place from ``y`` = s x (s = :func:`input_scale`), and return it.

    tanh(x) = 2 σ(2x) − 1 (see :func:`activation`): a rollout that computes 2x directly, from
    loadings and offsets doubled once (exact in floating point, so φ is bitwise that of
    :func:`activation_`), saves a pass over the activity per step.
    """
    if nonlinearity == "tanh":
        if y.numel() < _SMALL:
            return y.mul_(0.5).tanh_()
        return y.sigmoid_().mul_(2.0).sub_(1.0)
    return activation_(y, nonlinearity)


def activation_slope(activity: Tensor, nonlinearity: str, *, out: Tensor | None = None) -> Tensor:
    """φ'(x) written in terms of y = φ(x) (into ``out`` when given, without allocating)."""
    out = torch.empty_like(activity) if out is None else out
    if nonlinearity == "tanh":
        return torch.mul(activity, activity, out=out).neg_().add_(1.0)
    if nonlinearity == "relu":
        return torch.sign(activity, out=out)  # y ≥ 0
    return torch.neg(activity, out=out).expm1_().neg_()  # softplus: σ(x) = 1 − e^(−y)


class _ActivityRollout(torch.autograd.Function):
    """κ and φ(x) over time with the adjoint backward (shapes as in :func:`rollout_activity`).

    Backward, with a(t) = dL/dκ(t), y = φ(x), s = α/N and C(t) = Kᵀ diag(φ'(x(t))) M (R×R):

        a(t)  = ∂L/∂κ(t) + (∂L/∂y(t) ⊙ φ'(t)) M + [(1 − α) I + s C(t)]ᵀ a(t+1)
        e(t)  = dL/dx(t) = (∂L/∂y(t) + s a(t+1) Kᵀ) ⊙ φ'(t)
        dM = Σ e(t)ᵀ κ(t),  dK = s Σ y(t)ᵀ a(t+1),  d offset = e,  dκ(0) = a(0),  dξ(t) = a(t+1)

    C(t) for all t is one (T·n_trials, N) × (N, R²) product, so the loop itself is one batched
    R×R product per step.
    """

    @staticmethod
    def forward(ctx, M, K, offset, initial, noise, n_time, alpha, nonlinearity):
        n_trials, rank = initial.shape
        n_units = M.shape[0]
        scale = alpha / n_units
        # Time-major buffers, so each step writes one contiguous (n_trials, n_units) slab.
        activity = M.new_empty(n_time, n_trials, n_units)
        latents = M.new_empty(n_time, n_trials, rank)
        if offset is not None and offset.dim() == 3:
            offset = offset.transpose(0, 1).contiguous()
        noise_tm = None if noise is None else noise.transpose(0, 1)
        kappa = initial
        Mt = M.T
        Kt = K.T.contiguous()  # MKL computes y @ Kt.T several times faster than y @ K
        for t in range(n_time):
            latents[t] = kappa
            y = activity[t]
            if offset is None:
                torch.mm(kappa, Mt, out=y)
            else:
                torch.addmm(offset if offset.dim() == 1 else offset[t], kappa, Mt, out=y)
            activation_(y, nonlinearity)
            if t + 1 < n_time:
                kappa = torch.addmm(kappa, y, Kt.T, beta=1.0 - alpha, alpha=scale)
                if noise_tm is not None:
                    kappa = kappa + noise_tm[t]
        ctx.save_for_backward(M, K, latents, activity)
        ctx.alpha = alpha
        ctx.nonlinearity = nonlinearity
        ctx.offset_dim = None if offset is None else offset.dim()
        return latents.transpose(0, 1), activity.transpose(0, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_latents, grad_activity):
        M, K, latents, activity = ctx.saved_tensors
        n_time, n_trials, n_units = activity.shape
        rank = M.shape[1]
        alpha, scale = ctx.alpha, ctx.alpha / n_units
        flat = n_time * n_trials
        slope = activation_slope(activity, ctx.nonlinearity)  # (T, n, N)
        grad_y = grad_activity.transpose(0, 1).reshape(flat, n_units)
        grad_k = grad_latents.transpose(0, 1).reshape(flat, rank)
        # Everything the adjoint receives from ∂L/∂κ and ∂L/∂y, for all t at once.
        # (Skinny right-hand sides stored transposed, and cᵀ·A rather than Aᵀ·c for skinny c:
        # several times faster in MKL.)
        drive = torch.addmm(grad_k, grad_y * slope.reshape(flat, n_units), M.T.contiguous().T)
        # Transposed one-step Jacobians [(1 − α) I + s C(t)]ᵀ, batched over (t, trial).
        pairs_t = (K.unsqueeze(2) * M.unsqueeze(1)).reshape(n_units, rank * rank).T.contiguous()
        jac = (slope.reshape(flat, n_units) @ pairs_t.T).reshape(flat, rank, rank) * scale
        jac.diagonal(dim1=1, dim2=2).add_(1.0 - alpha)
        jac = jac.reshape(n_time, n_trials, rank, rank)
        drive = drive.reshape(n_time, n_trials, rank)
        adjoint = torch.empty_like(drive)
        a = drive[n_time - 1]
        adjoint[n_time - 1] = a
        for t in range(n_time - 2, -1, -1):
            # a(t)_s = drive_s + Σ_r a(t+1)_r Jac(t)[r, s]
            a = torch.baddbmm(drive[t].unsqueeze(1), a.unsqueeze(1), jac[t]).squeeze(1)
            adjoint[t] = a
        following = torch.zeros_like(adjoint)  # a(t+1), zero after the last step
        following[:-1] = adjoint[1:]
        following = following.reshape(flat, rank)
        grad_x = torch.addmm(grad_y, following, K.T, alpha=scale).mul_(
            slope.reshape(flat, n_units)
        )
        grad_M = (latents.reshape(flat, rank).T @ grad_x).T if ctx.needs_input_grad[0] else None
        grad_K = None
        if ctx.needs_input_grad[1]:
            grad_K = (following.T @ activity.reshape(flat, n_units)).T.mul(scale)
        grad_offset = None
        if ctx.needs_input_grad[2]:
            if ctx.offset_dim == 1:
                grad_offset = grad_x.sum(0)
            else:
                grad_offset = grad_x.reshape(n_time, n_trials, n_units).transpose(0, 1)
        grad_initial = adjoint[0] if ctx.needs_input_grad[3] else None
        grad_noise = adjoint[1:].transpose(0, 1) if ctx.needs_input_grad[4] else None
        return grad_M, grad_K, grad_offset, grad_initial, grad_noise, None, None, None


def _rollout(M, K, B, d, initial, n_time, alpha, nonlinearity, inputs, noise):
    n_units = M.shape[0]
    offset = unit_offset(B, d, inputs)
    scale = alpha / n_units
    kappa = initial
    latents, potentials = [], []
    Mt = M.T
    Kt = K.T.contiguous()  # y @ Kt.T: see _ActivityRollout.forward
    for t in range(n_time):
        if offset is None:
            x = kappa @ Mt
        elif offset.dim() == 3:
            x = offset[:, t] + kappa @ Mt
        else:
            x = torch.addmm(offset, kappa, Mt)
        latents.append(kappa)
        potentials.append(x)
        if t + 1 < n_time:
            kappa = (1 - alpha) * kappa + (activation(x, nonlinearity) @ Kt.T) * scale
            if noise is not None:
                kappa = kappa + noise[:, t]
    return torch.stack(latents, dim=1), torch.stack(potentials, dim=1)
