"""The training objective per chunk of time steps, with its gradient written out.

:func:`~nwb_lrconn.model.chunked.rollout_loss` evaluates the loss one chunk of time steps at a
time. For the two likelihoods the estimator trains with, :class:`ChunkObjective` gives both the
chunk's value and its exact gradient in closed form, which takes a third of the passes over the
chunk that autograd would (the per-unit parameter gradients are plain reductions).

With the readout r = g φ(x) + c, weights w (1 where a bin is observed) and C observed values,
the chunk value is Σ w ℓ / C with

- Gaussian (rates, calcium without kernel): ℓ = ½ ((r − y) e^(−s))², s = log σ. The parameter-
  only terms, mean(s) + ½ log 2π, are added once per batch by the caller.
- Poisson: ℓ = λ − y log λ with λ = Δt softplus(r) + ε. The data-only term log y! is added once
  per batch by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .observation import _RATE_FLOOR

__all__ = ["ChunkObjective"]


@dataclass(frozen=True)
class ChunkObjective:
    """Per-chunk negative log-likelihood of a batch, for ``rollout_loss``.

    Attributes
    ----------
    observation : {"gaussian", "calcium", "poisson"}
        Observation model ("calcium" without indicator kernel is the Gaussian).
    data : Tensor of shape (n_trials, n_time, n_units)
        Observations (rates, ΔF/F or spike counts per bin).
    weights : Tensor of shape (n_trials, n_time) or None
        1.0 on observed bins, 0.0 on padding; None when every bin is observed.
    count : float
        Number of observed values C (observed bins × units).
    bin_width : float
        Δt in seconds (Poisson only).
    """

    observation: str
    data: Tensor
    weights: Tensor | None
    count: float
    bin_width: float

    def __call__(self, activity, start, stop, gain, offset, log_noise_std) -> Tensor:
        """Chunk value (scalar tensor) for ``activity`` (n_trials, stop − start, n_units)."""
        if self.observation == "poisson":
            rate, _ = self._poisson_rate(activity, gain, offset)
            values = rate - self.data[:, start:stop] * torch.log(rate)
            if self.weights is not None:
                values = values * self.weights[:, start:stop, None]
            return values.sum() / self.count
        residual = self._gaussian_residual(activity, start, stop, gain, offset, log_noise_std)
        flat = residual.reshape(-1)
        return 0.5 * torch.dot(flat, flat) / self.count

    def gradient(self, activity, start, stop, gain, offset, log_noise_std):
        """Gradients of the chunk value.

        Returns
        -------
        grad_activity : Tensor, same shape as ``activity``
        grad_params : tuple of (Tensor or None)
            For gain, offset and log σ (None for log σ under Poisson, which has no noise scale).
        """
        if self.observation == "poisson":
            rate, readout = self._poisson_rate(activity, gain, offset)
            sigmoid = readout.sigmoid_()
            # dℓ/dr = (1 − y/λ) Δt σ(r)
            h = torch.div(self.data[:, start:stop], rate).neg_().add_(1.0)
            h.mul_(sigmoid).mul_(self.bin_width / self.count)
            if self.weights is not None:
                h.mul_(self.weights[:, start:stop, None])
            grad_gain = (h * activity).sum((0, 1))
            grad_offset = h.sum((0, 1))
            return h.mul_(gain), (grad_gain, grad_offset, None)
        inv_std = torch.exp(-log_noise_std)
        residual = self._gaussian_residual(activity, start, stop, gain, offset, log_noise_std)
        scaled = inv_std / self.count
        grad_gain = (residual * activity).sum((0, 1)) * scaled
        grad_offset = residual.sum((0, 1)) * scaled
        grad_log_std = -(residual * residual).sum((0, 1)) / self.count
        return residual.mul_(gain * scaled), (grad_gain, grad_offset, grad_log_std)

    def _gaussian_residual(self, activity, start, stop, gain, offset, log_noise_std) -> Tensor:
        """w (r − y) e^(−s), a fresh tensor."""
        residual = torch.addcmul(offset, gain, activity).sub_(self.data[:, start:stop])
        residual.mul_(torch.exp(-log_noise_std))
        if self.weights is not None:
            residual.mul_(self.weights[:, start:stop, None])
        return residual

    def _poisson_rate(self, activity, gain, offset) -> tuple[Tensor, Tensor]:
        """λ = Δt softplus(r) + ε, and the readout r."""
        readout = torch.addcmul(offset, gain, activity)
        rate = torch.nn.functional.softplus(readout).mul_(self.bin_width).add_(_RATE_FLOOR)
        return rate, readout
