"""The latent-form forward pass of the low-rank RNN, as a pure torch function.

    x_i(t)   = m_i·κ(t) + b_i·u(t) + d_i
    κ(t+1)   = (1 − α) κ(t) + (α/N) Σ_i k_i φ(x_i(t)) + ξ(t)

Cost per step is O(N·R) (plus O(N·D_u) for inputs); the N×N matrix J = M Kᵀ/N is never formed.
Everything is differentiable (autograd and ``torch.func``), batched over trials, and runs on the
device and dtype of ``M``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["activation", "latent_rollout", "rollout_activity"]


def activation(x: Tensor, nonlinearity: str) -> Tensor:
    """Apply φ: ``"tanh"``, ``"relu"`` or ``"softplus"``."""
    if nonlinearity == "tanh":
        return torch.tanh(x)
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
    latents, potentials, _ = _rollout(
        M, K, B, d, initial, n_time, alpha, nonlinearity, inputs, noise, keep="potentials"
    )
    return latents, potentials


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

    φ is applied once per step and reused for the update and the output, so training (which
    needs φ(x), not x) saves a second pass over the (n_trials, n_time, n_units) array.

    Returns
    -------
    latents : Tensor of shape (n_trials, n_time, rank)
        κ(t).
    activity : Tensor of shape (n_trials, n_time, n_units)
        φ(x(t)).
    """
    latents, _, activity = _rollout(
        M, K, B, d, initial, n_time, alpha, nonlinearity, inputs, noise, keep="activity"
    )
    return latents, activity


def _rollout(M, K, B, d, initial, n_time, alpha, nonlinearity, inputs, noise, *, keep):
    n_units = M.shape[0]
    offset = None
    if inputs is not None and B is not None and B.shape[1] > 0:
        offset = inputs @ B.T  # (n_trials, n_time, n_units)
    if d is not None:
        offset = d if offset is None else offset + d
    scale = alpha / n_units
    kappa = initial
    latents, kept = [], []
    Mt = M.T
    for t in range(n_time):
        if offset is None:
            x = kappa @ Mt
        elif offset.dim() == 3:
            x = offset[:, t] + kappa @ Mt
        else:
            x = torch.addmm(offset, kappa, Mt)  # fused: one pass over (n_trials, n_units)
        latents.append(kappa)
        y = activation(x, nonlinearity) if keep == "activity" or t + 1 < n_time else None
        kept.append(x if keep == "potentials" else y)
        if t + 1 < n_time:
            # (φ(x) @ K) * scale: the scalar multiplies (n_trials, rank), not (n_trials, n_units).
            kappa = (1 - alpha) * kappa + (y @ K) * scale
            if noise is not None:
                kappa = kappa + noise[:, t]
    stacked = torch.stack(kept, dim=1)
    if keep == "potentials":
        return torch.stack(latents, dim=1), stacked, None
    return torch.stack(latents, dim=1), None, stacked
