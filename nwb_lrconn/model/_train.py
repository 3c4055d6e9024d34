"""Training loops for :class:`~nwb_lrconn.model.estimator.LowRankRNNEstimator` (private).

The model parameters and the per-trial initial latents of the training trials are fitted by Adam
on minibatches of trials. Each epoch also takes one Adam step on the held-out trials' initial
latents alone (the model parameters only see training trials), evaluates the held-out loss, and
keeps the state with the best held-out loss (early stopping, learning rate halved on plateaus).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._refit import refit_units, ridge_output_loadings
from .lowrank import LowRankRNN
from .objective import ChunkObjective
from .observation import expected_observation, masked_mean, observation_nll
from .rollout import activation

__all__ = ["Batch", "TrainConfig", "batch_loss", "train", "infer_initial", "weight_penalty"]

# κ(0) of a trial gets one update per epoch (network parameters get one per minibatch), so its
# learning rate is larger.
_KAPPA_LR = 5.0


@dataclass(frozen=True)
class Batch:
    """Trials on the training device.

    Attributes
    ----------
    data : Tensor of shape (n_trials, n_time, n_units)
    mask : Tensor of shape (n_trials, n_time), bool
    inputs : Tensor of shape (n_trials, n_time, n_inputs) or None
    """

    data: Tensor
    mask: Tensor
    inputs: Tensor | None

    def take(self, index: Tensor) -> Batch:
        """Return the trials ``index``."""
        return Batch(
            self.data[index], self.mask[index], None if self.inputs is None else self.inputs[index]
        )

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


def batch_loss(
    model: LowRankRNN,
    initial: Tensor,
    batch: Batch,
    config: TrainConfig,
    *,
    noise: Tensor | None = None,
) -> Tensor:
    """Mean negative log-likelihood per observed value of ``batch`` (a scalar tensor).

    The likelihood is evaluated chunk by chunk inside the rollout
    (:meth:`LowRankRNN.rollout_loss`), except under the calcium indicator kernel, whose filter
    runs along the whole trial.
    """
    n_time = batch.data.shape[1]
    if config.observation == "calcium" and config.calcium_decay > 0:
        _, activity = model(initial, n_time, inputs=batch.inputs, noise=noise)
        expected = expected_observation(
            model.readout(activity),
            config.observation,
            bin_width=config.bin_width,
            calcium_decay=config.calcium_decay,
        )
        nll = observation_nll(
            batch.data, expected, config.observation, noise_std=model.log_noise_std.exp()
        )
        return masked_mean(nll, batch.mask)
    weights = batch.mask.to(batch.data.dtype)
    n_bins = float(weights.sum())
    if n_bins == 0:
        raise ValueError("mask selects no bin: there is nothing to average.")
    count = n_bins * batch.data.shape[-1]
    objective = ChunkObjective(
        config.observation,
        batch.data,
        weights if n_bins < weights.numel() else None,
        count,
        config.bin_width,
    )
    loss = model.rollout_loss(
        initial,
        n_time,
        objective,
        (model.readout_gain, model.readout_offset, model.log_noise_std),
        inputs=batch.inputs,
        noise=noise,
        loss_grad=objective.gradient,
    )
    if config.observation == "poisson":  # + log y!, a constant
        return loss + float((torch.lgamma(batch.data + 1.0) * weights[..., None]).sum()) / count
    return loss + model.log_noise_std.mean() + 0.5 * math.log(2 * math.pi)


def _noise(model: LowRankRNN, batch: Batch, config: TrainConfig, generator) -> Tensor | None:
    if config.process_noise <= 0:
        return None
    shape = (batch.n_trials, batch.data.shape[1] - 1, model.rank)
    noise = torch.randn(shape, generator=generator, dtype=batch.data.dtype)  # CPU generator
    return config.process_noise * noise.to(batch.data.device)


def train(
    model: LowRankRNN,
    initial_train: Tensor,
    initial_test: Tensor,
    train_batch: Batch,
    test_batch: Batch,
    config: TrainConfig,
    generator: torch.Generator,
) -> tuple[np.ndarray, Tensor, Tensor, int]:
    """Fit ``model`` in place and leave it in its best held-out state.

    Parameters
    ----------
    model : LowRankRNN
        Initialised network; modified in place.
    initial_train, initial_test : Tensor of shape (n_trials, rank)
        Initial values of κ(0) for the training and held-out trials.
    train_batch, test_batch : Batch
        The trials.
    config : TrainConfig
        Settings.
    generator : torch.Generator
        Randomness of the minibatch order and the process noise.

    Returns
    -------
    history : ndarray of shape (n_epochs + 1, 2)
        Training and held-out loss; row 0 is the initial state.
    initial_train, initial_test : Tensor of shape (n_trials, rank)
        κ(0) at the best state.
    best_epoch : int
        Row of ``history`` of the best state.
    """
    from tqdm.auto import tqdm

    kappa_train = torch.nn.Parameter(initial_train.clone())
    kappa_test = torch.nn.Parameter(initial_test.clone())
    readout = [model.readout_gain, model.readout_offset]
    network = _network_parameters(model)
    other = [  # e.g. a trainable noise scale: neither readout nor decayed
        p
        for p in model.parameters()
        if p.requires_grad and all(p is not q for q in [*readout, *network])
    ]
    # Adam moves every entry by about lr per step whatever its size; the readout of spike counts
    # lives on the scale of rates in 1/s, so its steps are scaled up to match (otherwise the
    # loadings adapt to a frozen readout and the fit settles in the linear regime of φ).
    readout_scale = max(1.0, float(model.readout_gain.detach().abs().median()))
    optimizer = torch.optim.Adam(
        [
            {"params": network, "weight_decay": config.weight_decay},
            {"params": other, "weight_decay": 0.0},
            {"params": readout, "weight_decay": 0.0, "lr": readout_scale * config.lr},
            {"params": [kappa_train], "weight_decay": 0.0, "lr": _KAPPA_LR * config.lr},
        ],
        lr=config.lr,
    )
    test_optimizer = torch.optim.Adam([kappa_test], lr=_KAPPA_LR * config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=max(2, config.patience // 4)
    )

    def evaluate_test(step: bool) -> float:
        loss = batch_loss(model, kappa_test, test_batch, config)
        if step:
            (grad,) = torch.autograd.grad(loss, [kappa_test])
            kappa_test.grad = grad
            test_optimizer.step()
        return float(loss.detach())

    with torch.no_grad():
        first = (
            float(batch_loss(model, kappa_train, train_batch, config)),
            float(batch_loss(model, kappa_test, test_batch, config)),
        )
    history = [first]
    best = (first[1], 0, _snapshot(model, kappa_train, kappa_test))
    n_train = train_batch.n_trials
    size = n_train if config.batch_size is None else min(config.batch_size, n_train)
    bar = tqdm(range(config.max_epochs), disable=not config.progress, desc="fit", leave=False)
    for epoch in bar:
        order = torch.randperm(n_train, generator=generator, device="cpu").to(kappa_train.device)
        total, count = 0.0, 0
        for start in range(0, n_train, size):
            index = order[start : start + size]
            batch = train_batch.take(index)
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(
                model,
                kappa_train[index],
                batch,
                config,
                noise=_noise(model, batch, config, generator),
            )
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * index.numel()
            count += index.numel()
        test_loss = evaluate_test(step=True)
        history.append((total / count, test_loss))
        scheduler.step(test_loss)
        if test_loss < best[0] - 1e-6 * abs(best[0]):
            best = (test_loss, epoch + 1, _snapshot(model, kappa_train, kappa_test))
        bar.set_postfix(train=f"{total / count:.4g}", test=f"{test_loss:.4g}")
        if not np.isfinite(test_loss) or epoch + 1 - best[1] >= config.patience:
            break
    bar.close()
    state, k_train, k_test = best[2]
    model.load_state_dict(state)
    if config.lbfgs_rounds > 0:
        history, best = _refine_lbfgs(
            model, k_train, k_test, train_batch, test_batch, config, history, best
        )
        state, k_train, k_test = best[2]
        model.load_state_dict(state)
    if config.refit_units and not (config.observation == "calcium" and config.calcium_decay > 0):
        refit = _refit_phase(model, k_train, k_test, train_batch, test_batch, config, best[0])
        if refit is not None:
            k_test = refit[1]
            history.append(refit[0])
            best = (refit[0][1], len(history) - 1, None)
    return np.asarray(history, dtype=np.float64), k_train, k_test, best[1]


def _refit_phase(model, k_train, k_test, train_batch, test_batch, config, best_test):
    """Refit every unit's (m, b, d, g, c) on the training latents, then K (``_refit``).

    The refit is kept, and ((train loss, held-out loss), held-out κ(0)) returned, only if the
    held-out loss (κ(0) re-inferred) drops below ``best_test``; otherwise the model is restored
    and None returned.
    """
    saved = copy.deepcopy(model.state_dict())
    rank, n_inputs = model.rank, model.n_inputs
    with torch.no_grad():
        latents, _ = model(k_train, train_batch.data.shape[1], inputs=train_batch.inputs)
        mask, inputs = train_batch.mask, train_batch.inputs
        theta = torch.cat(
            [
                model.M,
                model.B,
                model.d[:, None],
                model.readout_gain[:, None],
                model.readout_offset[:, None],
            ],
            dim=1,
        )
        gaussian = config.observation != "poisson"
        theta = refit_units(
            latents[mask],
            train_batch.data[mask],
            None if inputs is None else inputs[mask],
            theta,
            observation="gaussian" if gaussian else "poisson",
            nonlinearity=model.nonlinearity,
            bin_width=config.bin_width,
            noise_std=model.log_noise_std.exp() if gaussian else None,
        )
        M, B = theta[:, :rank], theta[:, rank : rank + n_inputs]
        pairs = mask[:, 1:] & mask[:, :-1]
        now = latents[:, :-1][pairs].double()
        x = now @ M.T + theta[:, -3]
        if n_inputs:
            x = x + inputs[:, :-1][pairs].double() @ B.T
        K = ridge_output_loadings(
            now,
            latents[:, 1:][pairs].double(),
            activation(x, model.nonlinearity),
            alpha=model.alpha,
            ridge=1e-3,
        )
        for name, value in (
            ("M", M),
            ("K", K),
            ("B", B),
            ("d", theta[:, -3]),
            ("readout_gain", theta[:, -2]),
            ("readout_offset", theta[:, -1]),
        ):
            getattr(model, name).copy_(value.to(getattr(model, name).dtype))
    k_test_new = infer_initial(model, k_test, test_batch, config, n_steps=30)
    with torch.no_grad():
        test_loss = float(batch_loss(model, k_test_new, test_batch, config))
        train_loss = float(batch_loss(model, k_train, train_batch, config))
    if np.isfinite(test_loss) and test_loss < best_test:
        return (train_loss, test_loss), k_test_new
    model.load_state_dict(saved)
    return None


def _refine_lbfgs(model, k_train, k_test, train_batch, test_batch, config, history, best):
    """Full-batch L-BFGS from the best Adam state, ``config.lbfgs_rounds`` rounds of 10 steps.

    Adam's noise floor stops it short of the optimum along shallow directions (e.g. the trade-off
    between the scale of M and the readout gain); the quasi-Newton steps handle them. After each
    round the held-out κ(0) take a few Adam steps and the held-out loss decides the best state.
    """
    kappa_train = torch.nn.Parameter(k_train.clone())
    kappa_test = torch.nn.Parameter(k_test.clone())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(
        [*trainable, kappa_train],
        lr=1.0,
        max_iter=10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    test_optimizer = torch.optim.Adam([kappa_test], lr=0.1 * _KAPPA_LR * config.lr)

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, kappa_train, train_batch, config)
        if config.weight_decay > 0:
            loss = loss + weight_penalty(model, config.weight_decay)
        loss.backward()
        return loss

    patience = max(3, config.patience // 4)
    start = len(history)
    for _ in range(config.lbfgs_rounds):
        train_loss = float(optimizer.step(closure).detach())
        for _ in range(5):
            test_optimizer.zero_grad(set_to_none=True)
            (grad,) = torch.autograd.grad(
                batch_loss(model, kappa_test, test_batch, config), [kappa_test]
            )
            kappa_test.grad = grad
            test_optimizer.step()
        with torch.no_grad():
            test_loss = float(batch_loss(model, kappa_test, test_batch, config))
        history.append((train_loss, test_loss))
        if not np.isfinite(test_loss) or not np.isfinite(train_loss):
            break
        if test_loss < best[0] - 1e-7 * abs(best[0]):
            best = (test_loss, len(history) - 1, _snapshot(model, kappa_train, kappa_test))
        elif len(history) - 1 - max(best[1], start - 1) >= patience:
            break
    return history, best


def _network_parameters(model: LowRankRNN) -> list[Tensor]:
    """The trainable loadings M, K, B, d: the parameters ``weight_decay`` applies to."""
    return [p for p in (model.M, model.K, model.B, model.d) if p.requires_grad]


def weight_penalty(model: LowRankRNN, weight_decay: float) -> Tensor:
    """0.5 · weight_decay · Σ p² over the loadings M, K, B, d (not the readout).

    The L-BFGS phase adds it to the loss; its gradient is the L2 term Adam's ``weight_decay``
    adds in the first phase, so both phases optimise the same objective.
    """
    return 0.5 * weight_decay * sum((p**2).sum() for p in _network_parameters(model))


def _snapshot(model: LowRankRNN, kappa_train: Tensor, kappa_test: Tensor):
    return (
        copy.deepcopy(model.state_dict()),
        kappa_train.detach().clone(),
        kappa_test.detach().clone(),
    )


def infer_initial(
    model: LowRankRNN,
    initial: Tensor,
    batch: Batch,
    config: TrainConfig,
    *,
    n_steps: int = 100,
    lr: float = 0.05,
) -> Tensor:
    """Refine κ(0) of ``batch`` by maximising its likelihood with the model held fixed.

    Parameters
    ----------
    model : LowRankRNN
        Fitted network (not modified).
    initial : Tensor of shape (n_trials, rank)
        Starting κ(0), e.g. from the encoder.
    batch : Batch
        The trials.
    config : TrainConfig
        Observation settings.
    n_steps : int, default: 100
        Adam steps.
    lr : float, default: 0.05
        Adam learning rate (decayed tenfold over the steps).

    Returns
    -------
    Tensor of shape (n_trials, rank)
        κ(0) with the lowest loss seen.
    """
    kappa = torch.nn.Parameter(initial.clone())
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
