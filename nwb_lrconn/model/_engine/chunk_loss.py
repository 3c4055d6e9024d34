"""The training objective of the low-rank RNN, fused with the rollout and evaluated in time chunks.

Training needs a scalar, Σ_t ℓ(φ(x(t)), t), not the (n_trials, n_time, n_units) activity
itself. :func:`rollout_loss` rolls the latent dynamics forward and evaluates ℓ one chunk of time
steps at a time, so the activity never exists in full: each chunk (about two megabytes) stays in
the CPU cache while its loss, its slope φ' and its gradients are computed. The backward pass
recomputes the activity of one chunk at a time from the stored latents (n_time × n_trials × R
numbers), takes the loss's gradient on that chunk (closed form when given, else autograd), and
carries the rank-R adjoint backwards through time (the equations are in
:class:`~nwb_lrconn.model.rollout._ActivityRollout`).

The result equals ``loss_fn`` applied to :func:`~nwb_lrconn.model.rollout.rollout_activity`'s
activity, with the same gradients (first order only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..rollout import activation, activation_scaled_, activation_slope, input_scale, unit_offset

__all__ = ["network_rollout_loss", "rollout_loss"]

_CHUNK_ELEMENTS = 1 << 19  # values per (n_trials, chunk, n_units) block: 2 MiB in float32

LossFn = Callable[..., Tensor]


def rollout_loss(
    M: Tensor,
    K: Tensor,
    B: Tensor | None,
    d: Tensor | None,
    initial: Tensor,
    n_time: int,
    loss_fn: LossFn,
    loss_params: Sequence[Tensor] = (),
    *,
    alpha: float,
    nonlinearity: str = "tanh",
    inputs: Tensor | None = None,
    noise: Tensor | None = None,
    chunk_size: int | None = None,
    loss_grad: Callable[..., tuple] | None = None,
    value_out: Tensor | None = None,
) -> Tensor:
    """Roll the dynamics forward and return Σ over time chunks of ``loss_fn``.

    Parameters
    ----------
    M, K, B, d, initial, n_time, alpha, nonlinearity, inputs, noise
        As in :func:`~nwb_lrconn.model.rollout.rollout_activity`.
    loss_fn : callable
        ``loss_fn(activity, start, stop, *loss_params) -> Tensor`` (scalar), where ``activity``
        is φ(x) for the time steps ``start:stop``, shape (n_trials, stop − start, n_units).
        The total loss must be the sum of the chunk values (masked means: divide each chunk's
        sum by the total count). It is called under autograd in the backward pass, so it must
        be a differentiable torch function of ``activity`` and ``loss_params``.
    loss_params : sequence of Tensor
        Tensors ``loss_fn`` depends on (readout gain, noise scale, …); they receive gradients.
    chunk_size : int, optional
        Time steps per chunk; by default about 2¹⁹ activity values per chunk.
    loss_grad : callable, optional
        ``loss_grad(activity, start, stop, *loss_params) -> (grad_activity, grad_params)``, the
        closed-form gradient of ``loss_fn`` (``grad_params`` one tensor or None per parameter;
        ``grad_activity`` a fresh tensor the backward may overwrite). Without it the backward
        differentiates ``loss_fn`` with autograd. See
        :class:`~nwb_lrconn.model._engine.objective.ChunkObjective`.
    value_out : Tensor, optional
        A scalar that receives the loss in the backward pass (needs ``loss_grad``). The forward
        then only rolls the dynamics out and returns zero (with the graph to differentiate), and
        the backward takes each chunk's value from ``loss_grad(..., with_value=True)``, which
        returns ``(grad_activity, grad_params, value)``: for a caller that differentiates the
        loss anyway, the likelihood is evaluated once per chunk instead of twice. The value is
        the forward's up to rounding: the chunks are summed in the same order, but from the
        activity as the backward recomputes it.

    Returns
    -------
    Tensor, scalar
        The loss (float64: the chunks are summed in double precision; zero with
        ``value_out``).
    """
    if value_out is not None and loss_grad is None:
        raise ValueError("value_out needs loss_grad: the backward computes the value with it.")
    activation(initial[:0, :0], nonlinearity)  # validates the name
    n_trials, n_units = initial.shape[0], M.shape[0]
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ELEMENTS // max(1, n_trials * n_units))
    offset = unit_offset(B, d, inputs)
    return _ChunkedRolloutLoss.apply(
        M,
        K,
        offset,
        initial,
        noise,
        (loss_fn, loss_grad, value_out),
        int(n_time),
        float(alpha),
        nonlinearity,
        int(chunk_size),
        *loss_params,
    )


def _chunks(n_time: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n_time)) for start in range(0, n_time, size)]


class _ChunkedRolloutLoss(torch.autograd.Function):
    """Σ over chunks of the loss; saves only the latents (n_time, n_trials, R) for backward."""

    @staticmethod
    def forward(
        ctx, M, K, offset, initial, noise, loss, n_time, alpha, nonlinearity, chunk, *params
    ):
        loss_fn, loss_grad, value_out = loss
        n_trials, rank = initial.shape
        n_units = M.shape[0]
        scale = alpha / n_units
        noise_tm = None if noise is None else noise.transpose(0, 1)
        latents = []
        width = min(chunk, n_time)
        storage = M.new_empty(n_trials * width * n_units)  # one trial-major chunk, reused
        # Chunk values are summed in float64: over many chunks a float32 running total rounds to
        # ~1e-8 of the loss, while the decrease of a full-batch L-BFGS step on a large recording
        # (1000 units: a mean over 10⁷ values) is that small, and the line search then stalls.
        total = M.new_zeros((), dtype=torch.float64)
        kappa = initial
        # x is computed as s x (see activation_scaled_)
        s = input_scale(nonlinearity)
        Mt = M.T if s == 1.0 else (s * M).T
        offset_s = offset if offset is None or s == 1.0 else s * offset
        Kt = K.T.contiguous()  # MKL computes y @ Kt.T several times faster than y @ K
        for start, stop in _chunks(n_time, chunk):
            buffer = storage[: n_trials * (stop - start) * n_units].view(
                n_trials, stop - start, n_units
            )
            for t in range(start, stop):
                latents.append(kappa)
                y = buffer[:, t - start]
                if offset_s is None:
                    torch.mm(kappa, Mt, out=y)
                else:
                    o = offset_s if offset_s.dim() == 1 else offset_s[:, t]
                    torch.addmm(o, kappa, Mt, out=y)
                activation_scaled_(y, nonlinearity)
                if t + 1 < n_time:
                    kappa = torch.addmm(kappa, y, Kt.T, beta=1.0 - alpha, alpha=scale)
                    if noise_tm is not None:
                        kappa = kappa + noise_tm[t]
            if value_out is None:  # else the backward evaluates the loss
                total = total + loss_fn(buffer, start, stop, *params).double()
        ctx.save_for_backward(M, K, torch.stack(latents), offset, *params)
        ctx.loss_fn, ctx.loss_grad, ctx.value_out = loss_fn, loss_grad, value_out
        ctx.alpha, ctx.nonlinearity, ctx.chunk = alpha, nonlinearity, chunk
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total):
        # Work arrays are trial-major (n_trials, steps, ·), the layout the loss sees, so its
        # gradient arrives contiguous; the (n_trials, steps, n_units) buffers are reused.
        M, K, latents, offset, *params = ctx.saved_tensors
        n_time, n_trials, rank = latents.shape
        n_units = M.shape[0]
        alpha, scale = ctx.alpha, ctx.alpha / n_units
        needs = ctx.needs_input_grad
        factor = float(grad_total)
        # Skinny right-hand sides are stored transposed (see forward).
        pairs_t = (K.unsqueeze(2) * M.unsqueeze(1)).reshape(n_units, rank * rank).T.contiguous()
        Mt = M.T.contiguous()
        s = input_scale(ctx.nonlinearity)  # the activity is recomputed from s x
        Ms_t = M.T if s == 1.0 else (s * M).T
        offset_s = offset if offset is None or s == 1.0 else s * offset
        width = min(ctx.chunk, n_time)
        y_buffer = M.new_empty(n_trials * width * n_units)
        slope_buffer = torch.empty_like(y_buffer)
        grad_M, grad_K = torch.zeros_like(M), torch.zeros_like(K)
        grad_offset = torch.zeros_like(offset) if needs[2] else None
        grad_noise = latents.new_zeros(n_trials, max(n_time - 1, 0), rank) if needs[4] else None
        grad_params = [torch.zeros_like(p) for p in params]
        used = [False] * len(params)  # a parameter the loss never touches gets no gradient
        carried = None  # a(stop): the adjoint at the first step of the following chunk
        values = []  # with value_out: each chunk's loss, last chunk first
        for start, stop in reversed(_chunks(n_time, ctx.chunk)):
            steps = stop - start
            flat = n_trials * steps
            kappa = latents[start:stop].transpose(0, 1).reshape(flat, rank)
            y = y_buffer[: flat * n_units].view(n_trials, steps, n_units)
            torch.mm(kappa, Ms_t, out=y.view(flat, n_units))
            if offset_s is not None:
                y.add_(offset_s if offset_s.dim() == 1 else offset_s[:, start:stop])
            activation_scaled_(y, ctx.nonlinearity)
            if ctx.value_out is not None:
                grad_y, grad_p, value = ctx.loss_grad(y, start, stop, *params, with_value=True)
                grads = (grad_y, *grad_p)
                values.append(value)
            elif ctx.loss_grad is not None:
                grad_y, grad_p = ctx.loss_grad(y, start, stop, *params)
                grads = (grad_y, *grad_p)
            else:
                with torch.enable_grad():
                    y_leaf = y.detach().requires_grad_()
                    leaves = [p.detach().requires_grad_() for p in params]
                    loss = ctx.loss_fn(y_leaf, start, stop, *leaves)
                    grads = torch.autograd.grad(loss, [y_leaf, *leaves], allow_unused=True)
            for index, g in enumerate(grads[1:]):
                if g is not None:
                    grad_params[index].add_(g, alpha=factor)
                    used[index] = True
            slope = slope_buffer[: flat * n_units].view(flat, n_units)
            activation_slope(y.view(flat, n_units), ctx.nonlinearity, out=slope)
            if grads[0] is None:
                direct = torch.zeros_like(slope)
            else:  # ∂L/∂y ⊙ φ', in place in the loss's own gradient array
                direct = grads[0].reshape(flat, n_units).mul_(slope)
                if factor != 1.0:  # (a loss used as it is needs no scaling)
                    direct.mul_(factor)
            drive = (direct @ Mt.T).view(n_trials, steps, rank)
            jac = (slope @ pairs_t.T).mul_(scale).view(flat, rank, rank)
            jac.diagonal(dim1=1, dim2=2).add_(1.0 - alpha)
            jac = jac.view(n_trials, steps, rank, rank)
            # The recursion runs on time-major (R)- and (R×R)-blocks: one small batched product
            # per step, a(t)_s = drive_s + Σ_r a(t+1)_r Jac(t)[r, s].
            drive_tm = drive.transpose(0, 1).unsqueeze(2).contiguous()  # (steps, n, 1, R)
            jac_tm = jac.transpose(0, 1).contiguous()  # (steps, n, R, R)
            a = None if carried is None else carried.unsqueeze(1)
            backwards = []
            for j in range(steps - 1, -1, -1):
                a = drive_tm[j] if a is None else torch.baddbmm(drive_tm[j], a, jac_tm[j])
                backwards.append(a)
            adjoint = torch.cat(backwards[::-1], dim=1)  # (n, steps, R)
            # a(t+1) for each step of the chunk; zero after the very last step of the trial.
            last = adjoint.new_zeros(n_trials, 1, rank) if carried is None else carried[:, None]
            following = torch.cat([adjoint[:, 1:], last], dim=1)
            following_flat = following.view(flat, rank)
            # dL/dx = direct + s (a(t+1) Kᵀ) ⊙ φ' is never formed: its products with [κ, 1] are
            # direct·[κ, 1] plus K contracted with φ'ᵀ·[a(t+1) ⊗ κ, a(t+1)].
            # (Products are written cᵀ·A rather than Aᵀ·c: several times faster for skinny c.)
            first = (torch.cat([kappa, kappa.new_ones(flat, 1)], dim=1).T @ direct).T  # (N, R + 1)
            outer = (following_flat.unsqueeze(2) * kappa.unsqueeze(1)).view(flat, rank * rank)
            second = (torch.cat([outer, following_flat], dim=1).T @ slope).T  # (N, R² + R)
            via_K = torch.einsum("ir,irs->is", K, second[:, : rank * rank].view(-1, rank, rank))
            grad_M.add_(first[:, :rank]).add_(via_K, alpha=scale)
            grad_K.add_((following_flat.T @ y.view(flat, n_units)).T, alpha=scale)
            if grad_offset is not None:
                if offset.dim() == 1:
                    grad_offset.add_(first[:, rank]).add_(
                        (K * second[:, rank * rank :]).sum(1), alpha=scale
                    )
                else:
                    grad_x = torch.addcmul(direct, following_flat @ K.T, slope, value=scale)
                    grad_offset[:, start:stop] = grad_x.view(n_trials, steps, n_units)
            if grad_noise is not None:
                last = min(stop, n_time - 1)
                grad_noise[:, start:last] = following[:, : last - start]
            carried = adjoint[:, 0].contiguous()
        if ctx.value_out is not None:
            total = M.new_zeros((), dtype=torch.float64)
            for value in reversed(values):  # in the forward's order
                total = total + value.double()
            ctx.value_out.copy_(total)
        return (
            grad_M if needs[0] else None,
            grad_K if needs[1] else None,
            grad_offset,
            carried if needs[3] else None,
            grad_noise,
            None,
            None,
            None,
            None,
            None,
            *[g if need and u else None for g, need, u in zip(grad_params, needs[10:], used)],
        )


def network_rollout_loss(
    model,
    initial: Tensor,
    n_time: int,
    loss_fn: LossFn,
    loss_params: tuple[Tensor, ...] = (),
    *,
    inputs: Tensor | None = None,
    noise: Tensor | None = None,
    loss_grad=None,
    value_out: Tensor | None = None,
) -> Tensor:
    """:func:`rollout_loss` of a :class:`~nwb_lrconn.model.lowrank.LowRankRNN`'s dynamics.

    Parameters
    ----------
    model : LowRankRNN
        The network (its M, K, B, d, α and φ).
    initial, n_time, loss_fn, loss_params, inputs, noise, loss_grad, value_out
        As for :func:`rollout_loss` and :meth:`LowRankRNN.forward`.

    Returns
    -------
    Tensor, scalar
        The loss.
    """
    B, inputs = model.input_weights(inputs, n_time)
    return rollout_loss(
        model.M,
        model.K,
        B,
        model.d,
        initial,
        n_time,
        loss_fn,
        loss_params,
        alpha=model.alpha,
        nonlinearity=model.nonlinearity,
        inputs=inputs,
        noise=noise,
        loss_grad=loss_grad,
        value_out=value_out,
    )
