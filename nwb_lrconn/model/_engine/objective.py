"""What training minimises: the trials (:class:`Batch`), the settings (:class:`TrainConfig`) and
the mean negative log-likelihood per observed value (:func:`batch_loss`).

:func:`~nwb_lrconn.model._engine.chunk_loss.rollout_loss` evaluates the loss one chunk of time
steps at a time. For the two likelihoods the estimator trains with, :class:`ChunkObjective` gives
both the chunk's value and its exact gradient in closed form, which takes a third of the passes
over the chunk that autograd would (the per-unit parameter gradients are plain reductions).

With the readout r = g φ(x) + c, weights w (1 where a value is observed: its bin lies inside
the trial and, when :attr:`Batch.units` is given, its trial observes the unit) and C observed
values, the chunk value is Σ w ℓ / C with

- Gaussian (rates, calcium without kernel): ℓ = ½ ((r − y) e^(−s))², s = log σ. The parameter-
  only terms, the mean of s over observed values plus ½ log 2π, are added once per batch by
  :func:`batch_loss`.
- Poisson: ℓ = λ − y log λ with λ = Δt softplus(r) + ε. The data-only term log y! is added once
  per batch by :func:`batch_loss`.

Unobserved values take no part in the likelihood, whatever they hold (NaN included): the data are
replaced by 0 there before use. Unobserved units still take part in the dynamics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..lowrank import LowRankRNN
from ..observation import _RATE_FLOOR, expected_observation, masked_mean, observation_nll
from .chunk_loss import network_rollout_loss

__all__ = [
    "Batch",
    "TrainConfig",
    "backward_batch_loss",
    "batch_loss",
    "mean_nll",
    "rollout_expected",
    "rollout_nll",
    "ChunkObjective",
]


@dataclass(frozen=True)
class Batch:
    """Trials on the training device.

    Attributes
    ----------
    data : Tensor of shape (n_trials, n_time, n_units)
    mask : Tensor of shape (n_trials, n_time), bool
    inputs : Tensor of shape (n_trials, n_time, n_inputs) or None
    log_factorial : Tensor of shape (n_trials,) or None
        Σ log y! over each trial's observed values (float64), the Poisson likelihood's constant;
        computed on the fly when None (see :meth:`with_log_factorial`).
    units : Tensor of shape (n_trials, n_units), bool, or None
        Which units each trial observes (e.g. the units of its recording session, when several
        sessions are fitted as one network); None when every trial observes every unit. The
        values of unobserved units may hold anything and are never read.
    """

    data: Tensor
    mask: Tensor
    inputs: Tensor | None
    log_factorial: Tensor | None = None
    units: Tensor | None = None

    def take(self, index: Tensor | slice) -> Batch:
        """Return the trials ``index`` (a slice, or a tensor of trial numbers)."""
        if isinstance(index, slice):

            def pick(t):
                return t[index]
        else:  # index_select copies whole trials: several times faster than t[index]

            def pick(t):
                return t.index_select(0, index)

        return Batch(
            pick(self.data),
            pick(self.mask),
            None if self.inputs is None else pick(self.inputs),
            None if self.log_factorial is None else pick(self.log_factorial),
            None if self.units is None else pick(self.units),
        )

    def observed(self) -> Tensor | None:
        """Which values are observed, (n_trials, n_time, n_units) bool; None without ``units``."""
        if self.units is None:
            return None
        return self.mask[:, :, None] & self.units[:, None, :]

    def value_counts(self) -> Tensor:
        """Number of observed values of each trial (float64, shape (n_trials,))."""
        bins = self.mask.sum(1, dtype=torch.float64)
        if self.units is None:
            return bins * self.data.shape[2]
        return bins * self.units.sum(1, dtype=torch.float64)

    def unit_counts(self) -> Tensor:
        """Number of observed values of each unit (float64, shape (n_units,))."""
        bins = self.mask.sum(1, dtype=torch.float64)
        if self.units is None:
            return bins.sum().expand(self.data.shape[2])
        return bins @ self.units.to(torch.float64)

    def log_factorial_sums(self) -> Tensor:
        """Σ log y! over each trial's observed values (float64, shape (n_trials,)).

        The stored ``log_factorial`` when there is one, else computed here.
        """
        if self.log_factorial is not None:
            return self.log_factorial
        observed = self.observed()
        if observed is not None:
            log_factorial = torch.lgamma(torch.where(observed, self.data, 0.0) + 1.0)
            return log_factorial.sum((1, 2), dtype=torch.float64)  # lgamma(1) = 0 elsewhere
        weights = self.mask.to(self.data.dtype)[..., None]
        return (torch.lgamma(self.data + 1.0) * weights).sum((1, 2), dtype=torch.float64)

    def with_log_factorial(self) -> Batch:
        """The same trials with ``log_factorial`` computed once (lgamma is slow on CPU)."""
        return Batch(self.data, self.mask, self.inputs, self.log_factorial_sums(), self.units)

    @property
    def n_trials(self) -> int:
        """Number of trials."""
        return self.data.shape[0]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (copied from the estimator's hyperparameters)."""

    observation: str
    bin_width: float
    calcium_decay: float
    max_epochs: int
    lr: float
    batch_size: int | None
    patience: int
    weight_decay: float
    process_noise: float
    progress: bool
    lbfgs_rounds: int = 0
    refit_units: bool = False
    tol: float = 0.0

    @property
    def indicator_kernel(self) -> bool:
        """Whether the readout is filtered along the trial (calcium with a decay), which the
        chunked likelihood and the closed-form κ(0) solver cannot evaluate."""
        return self.observation == "calcium" and self.calcium_decay > 0


def rollout_expected(
    model: LowRankRNN,
    initial: Tensor,
    batch: Batch,
    config: TrainConfig,
    *,
    noise: Tensor | None = None,
) -> Tensor:
    """E[y] of every value of ``batch`` under one whole-trial rollout from ``initial``.

    Returns
    -------
    Tensor of shape (n_trials, n_time, n_units)
    """
    _, activity = model(initial, batch.data.shape[1], inputs=batch.inputs, noise=noise)
    return expected_observation(
        model.readout(activity),
        config.observation,
        bin_width=config.bin_width,
        calcium_decay=config.calcium_decay,
    )


def rollout_nll(
    model: LowRankRNN,
    initial: Tensor,
    batch: Batch,
    config: TrainConfig,
    *,
    noise: Tensor | None = None,
) -> Tensor:
    """Negative log-likelihood of every value of ``batch`` under one whole-trial rollout.

    Returns
    -------
    Tensor of shape (n_trials, n_time, n_units)
        Unmasked: padded bins are included, and the values of units a trial does not observe
        are those of data 0 there.
    """
    expected = rollout_expected(model, initial, batch, config, noise=noise)
    observed = batch.observed()
    data = batch.data if observed is None else torch.where(observed, batch.data, 0.0)
    return observation_nll(data, expected, config.observation, noise_std=model.log_noise_std.exp())


def batch_loss(
    model: LowRankRNN,
    initial: Tensor,
    batch: Batch,
    config: TrainConfig,
    *,
    noise: Tensor | None = None,
) -> Tensor:
    """Mean negative log-likelihood per observed value of ``batch`` (a float64 scalar tensor).

    The likelihood is evaluated chunk by chunk inside the rollout
    (:meth:`LowRankRNN.rollout_loss`), except under the calcium indicator kernel, whose filter
    runs along the whole trial.
    """
    if config.indicator_kernel:
        nll = rollout_nll(model, initial, batch, config, noise=noise)
        observed = batch.observed()
        if observed is None:
            return masked_mean(nll, batch.mask).double()
        return (torch.where(observed, nll, 0.0).sum() / _count(batch)).double()
    objective, count = _chunk_objective(batch, config)
    loss = _chunked_loss(model, initial, batch, objective, noise=noise)
    # The constants are added in float64: next to them the parameter-dependent part of a
    # nearly noiseless fit is a few ulps of float32, too coarse for L-BFGS's line search.
    return loss + _constant(model, batch, config, count)


def backward_batch_loss(
    model: LowRankRNN,
    initial: Tensor,
    batch: Batch,
    config: TrainConfig,
    *,
    noise: Tensor | None = None,
) -> Tensor:
    """:func:`batch_loss`, differentiated: its gradient is accumulated into the ``.grad`` of the
    model's parameters and of ``initial`` (as ``batch_loss(...).backward()`` would).

    The forward pass only rolls the dynamics out; the backward evaluates each chunk's likelihood
    next to its gradient, which ``batch_loss(...).backward()`` evaluates once in each pass (see
    :func:`~nwb_lrconn.model._engine.chunk_loss.rollout_loss`). The gradients are those of
    ``batch_loss(...).backward()``; the value is :func:`batch_loss`'s up to rounding (it comes
    from the activity the backward recomputes).

    Returns
    -------
    Tensor
        The loss, a float64 scalar without graph.
    """
    if config.indicator_kernel:
        loss = batch_loss(model, initial, batch, config, noise=noise)
        loss.backward()
        return loss.detach()
    objective, count = _chunk_objective(batch, config)
    value = model.M.new_zeros((), dtype=torch.float64)  # the chunks' float64 sum, not rounded
    _chunked_loss(model, initial, batch, objective, noise=noise, value_out=value).backward()
    constant = _constant(model, batch, config, count)
    if constant.requires_grad:  # the Gaussian noise scale's log σ term
        constant.backward()
    return value + constant.detach()


def _chunk_objective(batch: Batch, config: TrainConfig) -> tuple[ChunkObjective, float]:
    """The batch's :class:`ChunkObjective` and its number of observed values."""
    weights = batch.mask.to(batch.data.dtype)
    n_bins = float(weights.sum())
    if n_bins == 0:
        raise ValueError("mask selects no bin: there is nothing to average.")
    units = None if batch.units is None else batch.units.to(batch.data.dtype)
    count = _count(batch)
    objective = ChunkObjective(
        config.observation,
        batch.data,
        weights if n_bins < weights.numel() else None,
        count,
        config.bin_width,
        units,
    )
    return objective, count


def _chunked_loss(model, initial, batch, objective, *, noise, value_out=None) -> Tensor:
    return network_rollout_loss(
        model,
        initial,
        batch.data.shape[1],
        objective,
        (model.readout_gain, model.readout_offset, model.log_noise_std),
        inputs=batch.inputs,
        noise=noise,
        loss_grad=objective.gradient,
        value_out=value_out,
    )


def _constant(model: LowRankRNN, batch: Batch, config: TrainConfig, count: float) -> Tensor:
    """The mean per observed value of the likelihood's terms that the chunks leave out.

    Poisson: Σ log y! / C (data only). Gaussian: each unit's log σ once per observed value, and
    ½ log 2π.
    """
    if config.observation == "poisson":
        return torch.tensor(float(batch.log_factorial_sums().sum()) / count, dtype=torch.float64)
    if batch.units is None:
        log_std = model.log_noise_std.double().mean()
    else:
        log_std = (batch.unit_counts() * model.log_noise_std.double()).sum() / count
    return log_std + 0.5 * math.log(2 * math.pi)


def _count(batch: Batch) -> float:
    """Number of observed values of ``batch``; refuses none."""
    count = float(batch.value_counts().sum())
    if count == 0:
        raise ValueError("mask and units select no value: there is nothing to average.")
    return count


def mean_nll(nll: Tensor, model: LowRankRNN, batch: Batch, config: TrainConfig) -> float:
    """:func:`batch_loss` from per-trial sums of the likelihood's parameter-dependent part.

    Parameters
    ----------
    nll : Tensor of shape (n_trials,)
        Each trial's Σ over observed values of ½((r − y)/σ)² (Gaussian) or λ − y log λ
        (Poisson), as :func:`~nwb_lrconn.model._engine.initial_latents.infer_initial` returns
        them with ``with_nll=True``.
    model, batch, config
        As for :func:`batch_loss` (not under the calcium kernel).

    Returns
    -------
    float
        The mean negative log-likelihood per observed value, constants included.
    """
    count = _count(batch)
    constant = float(_constant(model, batch, config, count))
    return float(nll.sum(dtype=torch.float64)) / count + constant


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
        Number of observed values C.
    bin_width : float
        Δt in seconds (Poisson only).
    units : Tensor of shape (n_trials, n_units) or None
        1.0 where a trial observes a unit, 0.0 elsewhere (:attr:`Batch.units`); None when every
        trial observes every unit.
    """

    observation: str
    data: Tensor
    weights: Tensor | None
    count: float
    bin_width: float
    units: Tensor | None = None

    def _chunk(self, start: int, stop: int) -> tuple[Tensor, Tensor | None]:
        """The chunk's data and its weights (broadcastable to it; None when all are observed)."""
        data = self.data[:, start:stop]
        if self.units is None:
            return data, None if self.weights is None else self.weights[:, start:stop, None]
        weights = self.units[:, None, :]
        if self.weights is not None:
            weights = self.weights[:, start:stop, None] * weights
        return torch.where(weights > 0, data, 0.0), weights

    def __call__(self, activity, start, stop, gain, offset, log_noise_std) -> Tensor:
        """Chunk value (scalar tensor) for ``activity`` (n_trials, stop − start, n_units)."""
        data, weights = self._chunk(start, stop)
        if self.observation == "poisson":
            rate, _ = self._poisson_rate(activity, gain, offset)
            return self._poisson_value(rate, data, weights)
        residual = self._gaussian_residual(activity, data, weights, gain, offset)
        return self._gaussian_value((residual * residual).sum((0, 1)), log_noise_std)

    def gradient(self, activity, start, stop, gain, offset, log_noise_std, *, with_value=False):
        """Gradients of the chunk value (and with ``with_value`` the value, from the same terms).

        Returns
        -------
        grad_activity : Tensor, same shape as ``activity``
        grad_params : tuple of (Tensor or None)
            For gain, offset and log σ (None for log σ under Poisson, which has no noise scale).
        value : Tensor
            Only with ``with_value``: the chunk value, bitwise that of calling the objective.
        """
        data, weights = self._chunk(start, stop)
        if self.observation == "poisson":
            rate, readout = self._poisson_rate(activity, gain, offset)
            value = self._poisson_value(rate, data, weights) if with_value else None
            sigmoid = readout.sigmoid_()
            # dℓ/dr = (1 − y/λ) Δt σ(r)
            h = torch.addcdiv(rate.new_ones(()), data, rate, value=-1.0)
            h.mul_(sigmoid).mul_(self.bin_width / self.count)
            if weights is not None:
                h.mul_(weights)
            grad_gain = (h * activity).sum((0, 1))
            grad_offset = h.sum((0, 1))
            out = h.mul_(gain), (grad_gain, grad_offset, None)
            return (*out, value) if with_value else out
        # The residual is left unscaled and 1/σ² applied to the per-unit sums: a pass saved.
        residual = self._gaussian_residual(activity, data, weights, gain, offset)
        squares = (residual * residual).sum((0, 1))
        value = self._gaussian_value(squares, log_noise_std) if with_value else None
        scaled = torch.exp(-2.0 * log_noise_std) / self.count
        grad_gain = (residual * activity).sum((0, 1)) * scaled
        grad_offset = residual.sum((0, 1)) * scaled
        grad_log_std = -squares * scaled
        out = residual.mul_(gain * scaled), (grad_gain, grad_offset, grad_log_std)
        return (*out, value) if with_value else out

    def _poisson_value(self, rate: Tensor, data: Tensor, weights: Tensor | None) -> Tensor:
        """Σ w (λ − y log λ) / C."""
        values = rate - torch.log(rate).mul_(data)
        if weights is not None:
            values = values * weights
        # float32 sums over units, float64 over the rest: a float32 total of a chunk's
        # half-million values rounds to 1e-7 of it (see rollout_loss)
        return values.sum(-1).sum(dtype=torch.float64) / self.count

    def _gaussian_value(self, squares: Tensor, log_noise_std: Tensor) -> Tensor:
        """Σ ½ (w (r − y) e^(−s))² / C from each unit's Σ (w (r − y))² (``squares``)."""
        # the per-unit float32 sums over the chunk's bins are totalled over units in float64
        # (a float32 total of the whole chunk rounds to 1e-7 of it, see _poisson_value)
        weighted = squares.double() * torch.exp(-2.0 * log_noise_std.double())
        return 0.5 * weighted.sum() / self.count

    @staticmethod
    def _gaussian_residual(activity, data, weights, gain, offset) -> Tensor:
        """w (r − y), a fresh tensor."""
        residual = torch.addcmul(offset, gain, activity).sub_(data)
        if weights is not None:
            residual.mul_(weights)
        return residual

    def _poisson_rate(self, activity, gain, offset) -> tuple[Tensor, Tensor]:
        """λ = Δt softplus(r) + ε, and the readout r."""
        readout = torch.addcmul(offset, gain, activity)
        rate = torch.nn.functional.softplus(readout).mul_(self.bin_width).add_(_RATE_FLOOR)
        return rate, readout
