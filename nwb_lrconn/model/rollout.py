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

__all__ = ["activation", "latent_rollout"]


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
    n_units = M.shape[0]
    offset = None
    if inputs is not None and B is not None and B.shape[1] > 0:
        offset = inputs @ B.T  # (n_trials, n_time, n_units)
    if d is not None:
        offset = d if offset is None else offset + d
    kappa = initial
    latents, potentials = [], []
    for t in range(n_time):
        x = kappa @ M.T
        if offset is not None:
            x = x + (offset[:, t] if offset.dim() == 3 else offset)
        latents.append(kappa)
        potentials.append(x)
        if t + 1 < n_time:
            kappa = (1 - alpha) * kappa + (alpha / n_units) * activation(x, nonlinearity) @ K
            if noise is not None:
                kappa = kappa + noise[:, t]
    return torch.stack(latents, dim=1), torch.stack(potentials, dim=1)
