"""Observation models: expected observations and masked negative log-likelihoods (pure torch).

Per unit i and bin t, with the affine readout r = g_i φ(x_i(t)) + c_i:

- ``"gaussian"`` (rates or potentials): y ~ N(r, σ_i²);
- ``"poisson"`` (spike counts): y ~ Poisson(Δt · softplus(r)); softplus(r) is the rate in 1/s;
- ``"calcium"`` (ΔF/F or fluorescence): y ~ N(s, σ_i²) with s the readout passed through the
  exponential indicator kernel s(t) = a s(t−1) + (1 − a) r(t), s(0) = r(0), where a is the
  per-bin decay (a = 0: no kernel, s = r).

Masked bins (padding of ragged trials) contribute nothing.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "indicator_kernel",
    "expected_observation",
    "observation_nll",
    "masked_mean",
]

_RATE_FLOOR = 1e-8  # counts per bin; keeps log λ finite


def indicator_kernel(signal: Tensor, decay: float) -> Tensor:
    """Filter ``signal`` along time with the exponential indicator kernel.

    Parameters
    ----------
    signal : Tensor of shape (n_trials, n_time, n_units)
        The readout r(t).
    decay : float
        Per-bin decay a in [0, 1); 0 returns ``signal`` unchanged.

    Returns
    -------
    Tensor of shape (n_trials, n_time, n_units)
        s(t) = a s(t−1) + (1 − a) r(t), s(0) = r(0). The kernel has unit gain, so a constant
        passes through unchanged.
    """
    if decay == 0.0:
        return signal
    out = [signal[:, 0]]
    for t in range(1, signal.shape[1]):
        out.append(decay * out[-1] + (1.0 - decay) * signal[:, t])
    return torch.stack(out, dim=1)


def expected_observation(
    readout: Tensor, observation: str, *, bin_width: float, calcium_decay: float = 0.0
) -> Tensor:
    """Return E[y] given the readout r = g φ(x) + c.

    Parameters
    ----------
    readout : Tensor of shape (n_trials, n_time, n_units)
        Affine readout.
    observation : {"gaussian", "poisson", "calcium"}
        Observation model.
    bin_width : float
        Δt in seconds (Poisson: the expected count is Δt · softplus(r)).
    calcium_decay : float, default: 0
        Per-bin decay of the indicator kernel (calcium only).

    Returns
    -------
    Tensor of shape (n_trials, n_time, n_units)
        Expected observation: r, expected counts per bin, or the filtered trace.
    """
    if observation == "gaussian":
        return readout
    if observation == "poisson":
        return bin_width * torch.nn.functional.softplus(readout)
    if observation == "calcium":
        return indicator_kernel(readout, calcium_decay)
    raise ValueError(
        f"observation must be 'gaussian', 'poisson' or 'calcium'; got {observation!r}."
    )


def observation_nll(
    data: Tensor, expected: Tensor, observation: str, *, noise_std: Tensor | None = None
) -> Tensor:
    """Negative log-likelihood of every entry.

    Parameters
    ----------
    data : Tensor of shape (n_trials, n_time, n_units)
        Observations y.
    expected : Tensor of shape (n_trials, n_time, n_units)
        E[y] from :func:`expected_observation`.
    observation : {"gaussian", "poisson", "calcium"}
        Observation model.
    noise_std : Tensor of shape (n_units,), optional
        σ_i for the Gaussian models (default 1).

    Returns
    -------
    Tensor of shape (n_trials, n_time, n_units)
        −log p(y | E[y]) in nats, including every normalising constant.
    """
    if observation == "poisson":
        rate = expected + _RATE_FLOOR
        return rate - data * torch.log(rate) + torch.lgamma(data + 1.0)
    if observation in ("gaussian", "calcium"):
        if noise_std is None:
            noise_std = torch.ones_like(expected[0, 0])
        z = (data - expected) / noise_std
        return 0.5 * z**2 + torch.log(noise_std) + 0.5 * math.log(2 * math.pi)
    raise ValueError(
        f"observation must be 'gaussian', 'poisson' or 'calcium'; got {observation!r}."
    )


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` (n_trials, n_time, n_units) over the bins where ``mask`` is True.

    Parameters
    ----------
    values : Tensor of shape (n_trials, n_time, n_units)
        Per-entry values.
    mask : Tensor of shape (n_trials, n_time), bool
        Observed bins.

    Returns
    -------
    Tensor, scalar
        Sum over observed entries divided by their number.
    """
    weights = mask.to(values.dtype)
    count = weights.sum() * values.shape[-1]
    if count == 0:
        raise ValueError("mask selects no bin: there is nothing to average.")
    return (values * weights[..., None]).sum() / count
