"""Continuous normalizing flows trained by conditional flow matching (the Connector core).

Convention: the linear ("CondOT") probability path

    x_t = (1 − t) x_0 + t x_1,   x_0 ~ N(0, I),   t ~ U[0, 1],

with t = 0 the base (noise) and t = 1 the data. A velocity network v(x, t[, c]) is regressed onto
the path velocity x_1 − x_0; sampling integrates dx/dt = v from t = 0 to t = 1 with the explicit
midpoint rule, and log-densities integrate the exact divergence (no trace estimator) backwards:

    log p_1(x_1) = log N(x_0; 0, I) − ∫_0^1 ∇·v(x_t, t) dt.

Everything here is pure torch math; the training loops live in :mod:`.connector`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

__all__ = [
    "VelocityMLP",
    "condot_path",
    "flow_matching_loss",
    "integrate_flow",
    "flow_log_prob",
]


class VelocityMLP(nn.Module):
    """Velocity field v(x, t[, c]) of a (conditional) flow: an MLP with Swish activations.

    The input ``[x, c, t]`` goes through ``n_layers`` hidden linear layers of width
    ``hidden_features``, each followed by Swish (``u·sigmoid(u)``), then a linear output layer of
    width ``n_features``.

    Parameters
    ----------
    n_features : int
        Dimension D of x (and of the velocity).
    n_context : int, default: 0
        Dimension of the conditioning vector c (0 = unconditional).
    hidden_features : int, default: 128
        Width of the hidden layers.
    n_layers : int, default: 4
        Number of hidden layers.
    """

    def __init__(
        self,
        n_features: int,
        n_context: int = 0,
        *,
        hidden_features: int = 128,
        n_layers: int = 4,
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.n_context = n_context
        layers: list[nn.Module] = []
        width = n_features + n_context + 1
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden_features), nn.SiLU()]
            width = hidden_features
        layers.append(nn.Linear(width, n_features))
        self.net = nn.Sequential(*layers)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> VelocityMLP:
        """Redraw every weight and bias from U(−1/√fan_in, 1/√fan_in) using ``generator``.

        This is torch's default ``nn.Linear`` scale, drawn from an explicit generator so that
        estimators are reproducible without touching the global random state.

        Parameters
        ----------
        generator : torch.Generator
            Source of randomness (on the module's device).

        Returns
        -------
        VelocityMLP
            self.
        """
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                for p in (layer.weight, layer.bias):
                    u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                    p.copy_((2 * u - 1) * bound)
        return self

    def forward(self, x: Tensor, t: Tensor, context: Tensor | None = None) -> Tensor:
        """Evaluate the velocity.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Points.
        t : Tensor of shape (batch,) or scalar
            Times in [0, 1].
        context : Tensor of shape (batch, n_context), optional
            Conditioning vectors (required when ``n_context > 0``).

        Returns
        -------
        Tensor of shape (batch, n_features)
        """
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])[:, None]
        parts = [x] if context is None else [x, context]
        return self.net(torch.cat([*parts, t], dim=1))


def condot_path(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Sample the linear (conditional-OT) path.

    Parameters
    ----------
    x0, x1 : Tensor of shape (batch, n_features)
        Base samples and data samples.
    t : Tensor of shape (batch,)
        Times in [0, 1].

    Returns
    -------
    x_t : Tensor of shape (batch, n_features)
        ``(1 − t) x0 + t x1``.
    velocity : Tensor of shape (batch, n_features)
        ``x1 − x0``.
    """
    tt = t[:, None]
    return (1 - tt) * x0 + tt * x1, x1 - x0


def flow_matching_loss(
    net: nn.Module,
    x1: Tensor,
    *,
    context: Tensor | None = None,
    generator: torch.Generator | None = None,
    coupling: str = "independent",
) -> Tensor:
    """Conditional flow-matching loss ``mean ‖v(x_t, t[, c]) − (x1 − x0)‖²`` on the linear path.

    With ``coupling="ot"`` the base draws of the batch are first re-paired with the data points by
    an exact minibatch optimal-transport assignment (squared Euclidean cost), which straightens
    the learned paths (minibatch OT-CFM) without changing the path or the target marginals.

    Parameters
    ----------
    net : nn.Module
        Velocity field ``net(x, t, context)``.
    x1 : Tensor of shape (batch, n_features)
        Data samples (standardised).
    context : Tensor of shape (batch, n_context), optional
        Conditioning vectors.
    generator : torch.Generator, optional
        Source of the base noise x0 and of the times t.
    coupling : {"independent", "ot"}, default: "independent"
        How base draws are paired with data points (use "ot" only without context).

    Returns
    -------
    Tensor
        Scalar loss (mean over the batch of the squared error summed over features).
    """
    x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
    if coupling == "ot":
        cost = torch.cdist(x0.detach(), x1.detach()).pow(2).cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        x0 = x0[torch.as_tensor(rows[np.argsort(cols)], device=x1.device)]
    elif coupling != "independent":
        raise ValueError(f"coupling must be 'independent' or 'ot'; got {coupling!r}.")
    t = torch.rand(x1.shape[0], generator=generator, dtype=x1.dtype, device=x1.device)
    x_t, target = condot_path(x0, x1, t)
    return ((net(x_t, t, context) - target) ** 2).sum(dim=1).mean()


def _n_steps(step: float) -> int:
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1]; got {step!r}.")
    return max(1, round(1.0 / step))


@torch.no_grad()
def integrate_flow(
    net: nn.Module, x0: Tensor, *, context: Tensor | None = None, step: float = 0.05
) -> Tensor:
    """Push base samples through the flow: integrate dx/dt = v from t = 0 to t = 1 (midpoint).

    Parameters
    ----------
    net : nn.Module
        Velocity field ``net(x, t, context)``.
    x0 : Tensor of shape (batch, n_features)
        Base samples.
    context : Tensor of shape (batch, n_context), optional
        Conditioning vectors.
    step : float, default: 0.05
        Time step (``round(1 / step)`` midpoint steps).

    Returns
    -------
    Tensor of shape (batch, n_features)
        Samples at t = 1.
    """
    n = _n_steps(step)
    h = 1.0 / n
    x = x0
    for i in range(n):
        t = x.new_tensor(i * h)
        x_mid = x + 0.5 * h * net(x, t, context)
        x = x + h * net(x_mid, t + 0.5 * h, context)
    return x


def _velocity_and_divergence(
    net: nn.Module, x: Tensor, t: Tensor, context: Tensor | None
) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = net(x, t, context)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for i in range(x.shape[1]):
            (grad,) = torch.autograd.grad(v[:, i].sum(), x, retain_graph=i < x.shape[1] - 1)
            div = div + grad[:, i]
    return v.detach(), div.detach()


def flow_log_prob(
    net: nn.Module, x1: Tensor, *, context: Tensor | None = None, step: float = 0.05
) -> Tensor:
    """Exact log-density of the flow at data points, by integrating the divergence backwards.

    The state (x, ℓ) is integrated from t = 1 to t = 0 with the midpoint rule, where
    dℓ/dt = −∇·v(x, t) and the divergence is computed exactly (one backward pass per feature).

    Parameters
    ----------
    net : nn.Module
        Velocity field ``net(x, t, context)``.
    x1 : Tensor of shape (batch, n_features)
        Points at t = 1 (standardised space).
    context : Tensor of shape (batch, n_context), optional
        Conditioning vectors.
    step : float, default: 0.05
        Time step.

    Returns
    -------
    Tensor of shape (batch,)
        ``log p_1(x1)`` in nats.
    """
    n = _n_steps(step)
    h = 1.0 / n
    x = x1.detach()
    integral = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(n, 0, -1):
        t = x.new_tensor(i * h)
        with torch.no_grad():
            v = net(x, t, context)
        x_mid = x - 0.5 * h * v
        v_mid, div_mid = _velocity_and_divergence(net, x_mid, t - 0.5 * h, context)
        x = x - h * v_mid
        integral = integral + h * div_mid
    d = x.shape[1]
    log_base = -0.5 * (x**2).sum(dim=1) - 0.5 * d * math.log(2 * math.pi)
    return log_base - integral
