"""Training loops for :class:`~nwb_lrconn.model.estimator.LowRankRNNEstimator` (private).

The model parameters and the per-trial initial latents of the training trials are fitted in three
phases (:func:`train`): Adam on minibatches of trials, full-batch L-BFGS rounds, and the per-unit
refit. The held-out trials only ever move their own initial latents (the model parameters see
training trials alone); their loss decides the state that is kept and when each phase stops,
measured against the held-out loss's own standard error (:class:`_Monitor`). Each phase logs one
line with its elapsed time. What is minimised lives in :mod:`.objective`.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..lowrank import LowRankRNN
from ..rollout import activation
from .initial_latents import infer_initial, initial_prior
from .objective import (
    Batch,
    TrainConfig,
    backward_batch_loss,
    batch_loss,
    mean_nll,
    rollout_nll,
)
from .unit_refit import refit_output_loadings, refit_units

__all__ = ["loss_spread", "train", "weight_penalty"]

logger = logging.getLogger(__name__)

# κ(0) of a trial gets one update per epoch (network parameters get one per minibatch), so its
# learning rate is larger.
_KAPPA_LR = 5.0
# Decreases below this many nats per observed value never count as progress (noiseless data
# would otherwise train until the held-out loss stops moving in float32).
_FLOOR = 1e-5
# Without L-BFGS rounds, Adam halves its learning rate on each plateau up to this many times.
_MAX_HALVINGS = 3
# Fewest epochs without progress before Adam hands over to L-BFGS (see _adam_patience).
_MIN_PATIENCE = 5
_SPREAD_ELEMENTS = 1 << 22  # activity values per trial chunk of loss_spread: 16 MiB in float32


def _noise(model: LowRankRNN, batch: Batch, config: TrainConfig, generator) -> Tensor | None:
    if config.process_noise <= 0:
        return None
    shape = (batch.n_trials, batch.data.shape[1] - 1, model.rank)
    noise = torch.randn(shape, generator=generator, dtype=batch.data.dtype)  # CPU generator
    return config.process_noise * noise.to(batch.data.device)


def loss_spread(model: LowRankRNN, initial: Tensor, batch: Batch, config: TrainConfig) -> float:
    """Standard error of :func:`batch_loss` over the trials of ``batch``.

    The loss is a ratio Σ_j S_j / Σ_j C_j of per-trial sums S_j over C_j observed values; its
    standard error treats the trials as independent draws (the ratio estimator's delta method:
    √(n / (n − 1) Σ_j (S_j − L C_j)²) / Σ_j C_j). It is the resolution at which the held-out
    loss can tell two fits apart, and sets what counts as an improvement when training stops.
    Zero for a single trial.
    """
    n_trials, n_time, n_units = batch.data.shape
    if n_trials < 2:
        return 0.0
    step = max(1, _SPREAD_ELEMENTS // (n_time * n_units))
    sums, counts = [], []
    with torch.no_grad():
        for start in range(0, n_trials, step):
            part = batch.take(slice(start, start + step))
            nll = rollout_nll(model, initial[start : start + step], part, config)
            observed = part.observed()
            seen = part.mask[..., None] if observed is None else observed
            sums.append(torch.where(seen, nll, 0.0).sum((1, 2)).double())
            counts.append(part.value_counts())
    S, C = torch.cat(sums), torch.cat(counts)
    mean = S.sum() / C.sum()
    spread = (n_trials / (n_trials - 1) * ((S - mean * C) ** 2).sum()).sqrt() / C.sum()
    return float(spread)


class _Monitor:
    """The best held-out state so far, and whether the held-out loss still improves.

    A new best state is kept on any decrease; a decrease counts as *progress* only when it
    exceeds ``tol`` times the held-out loss's standard error (:func:`loss_spread`), so what
    counts is measured in the data's own resolution. The standard error is re-measured at the
    current state before any verdict that progress has stalled (it shrinks as the fit improves).
    Progress is measured from ``reference`` (default ``loss``), so that a phase starting from
    another phase's best state can be judged on its own course (``reference=inf``).

    With ``each_step``, a step counts as progress only if it alone gains more than the threshold
    over the lowest loss before it. For the deterministic, costly L-BFGS rounds: their gains
    shrink geometrically, and counted together a tail of rounds that each gain less than the
    threshold would still pass for progress every few rounds.
    """

    def __init__(
        self,
        loss: float,
        step: int,
        state,
        spread: Callable[[], float],
        tol: float,
        *,
        reference: float | None = None,
        since: int | None = None,
        each_step: bool = False,
    ):
        self.best, self.best_step, self.state = loss, step, state
        # the loss at the last progress, the step from which patience counts, and the lowest
        # loss seen since
        self.reference = loss if reference is None else reference
        self.reference_step = step if since is None else since
        self.recent = self.reference
        self._spread, self.tol, self.each_step = spread, tol, each_step
        self.threshold = self._threshold()

    def _threshold(self) -> float:
        return max(self.tol * self._spread(), _FLOOR) if self.tol > 0 else 0.0

    def update(self, step: int, loss: float, snapshot: Callable[[], tuple]) -> None:
        """Record the held-out ``loss`` of ``step``; ``snapshot()`` is called on a new best."""
        if loss < self.best:
            self.best, self.best_step, self.state = loss, step, snapshot()
        self.recent = min(self.recent, loss)
        if loss < self.reference - self.threshold:
            self.reference, self.reference_step = loss, step
        elif self.each_step and loss < self.reference:
            self.reference = loss  # a gain, but too small to reset the patience

    def stalled(self, step: int, patience: int) -> bool:
        """True when ``patience`` steps have passed without progress (threshold re-measured)."""
        if step - self.reference_step < patience:
            return False
        self.threshold = self._threshold()
        if self.recent < self.reference - self.threshold:
            self.reference, self.reference_step = self.recent, step
            return False
        return True


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

    Three phases, each logged with its elapsed time (logger ``nwb_lrconn.model._engine.loop``):
    Adam on minibatches (:func:`_adam_phase`), full-batch L-BFGS rounds (:func:`_lbfgs_phase`)
    and the per-unit refit (:func:`_refit_phase`).

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
    start = time.perf_counter()
    history, (k_train, k_test), best_row, moments = _adam_phase(
        model, initial_train, initial_test, train_batch, test_batch, config, generator
    )
    # Adam moved the held-out κ(0) one step per epoch; converge them at the kept state, so that
    # the later phases are judged against the state's actual held-out loss.
    k_test, best_test = _reinfer(model, k_test, test_batch, config, initial_prior(k_train))
    logger.info(
        "Adam: %d epoch(s) in %.1f s, held-out loss %.6g (best epoch %d)",
        len(history) - 1,
        time.perf_counter() - start,
        best_test,
        best_row,
    )
    if config.lbfgs_rounds > 0:
        start, first = time.perf_counter(), len(history)
        k_train, k_test, best_row, best_test = _lbfgs_phase(
            model,
            k_train,
            k_test,
            train_batch,
            test_batch,
            config,
            history,
            best_row,
            best_test,
            moments,
        )
        logger.info(
            "L-BFGS: %d round(s) in %.1f s, held-out loss %.6g (best row %d)",
            len(history) - first,
            time.perf_counter() - start,
            best_test,
            best_row,
        )
    kernel = config.indicator_kernel
    if config.refit_units and not kernel:
        start = time.perf_counter()
        out = _refit_phase(model, k_train, k_test, train_batch, test_batch, config, best_test)
        if out is not None:
            (losses, k_train, k_test), best_test = out, out[0][1]
            history.append(losses)
            best_row = len(history) - 1
        logger.info(
            "unit refit: %s in %.1f s, held-out loss %.6g",
            "kept" if out is not None else "discarded (no lower held-out loss)",
            time.perf_counter() - start,
            best_test,
        )
    return np.asarray(history, dtype=np.float64), k_train, k_test, best_row


def _progress_bar(config: TrainConfig, total: int):
    """tqdm over ``total`` epochs, shown only when asked for and stderr is a terminal."""
    from tqdm.auto import tqdm

    shown = config.progress and sys.stderr is not None and sys.stderr.isatty()
    return tqdm(range(total), disable=not shown, desc="fit", leave=False)


def _adam_phase(model, initial_train, initial_test, train_batch, test_batch, config, generator):
    """Adam on minibatches of training trials.

    Each epoch the held-out κ(0) take two damped Gauss–Newton steps on their own likelihood
    (:func:`infer_initial`, damping carried over from epoch to epoch), so that the recorded
    held-out loss follows the model rather than the lag of the κ(0). The phase stops after
    :func:`_adam_patience` epochs without progress (:class:`_Monitor`): from there L-BFGS
    converges in fewer passes over the data than Adam's halved learning rates would. Without
    L-BFGS rounds the learning rate halves instead, up to ``_MAX_HALVINGS`` times. The model is
    left in its best held-out state.

    Returns
    -------
    history : list of (float, float)
        Training and held-out loss per epoch; row 0 is the initial state.
    kappa : (Tensor, Tensor)
        κ(0) of the training and held-out trials at the best state.
    best_row : int
        Row of ``history`` of the best state.
    second_moments : list of Tensor or None
        Adam's running mean of the squared gradient of every trainable parameter and of the
        training κ(0) (that order), or None when no epoch ran.
    """
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
        fused=True,  # one kernel per step instead of a dozen per parameter (half the step's cost)
    )

    def snapshot():
        return _snapshot(model, kappa_train, kappa_test)

    with torch.no_grad():
        first = (
            float(batch_loss(model, kappa_train, train_batch, config)),
            float(batch_loss(model, kappa_test, test_batch, config)),
        )
    history = [first]
    monitor = _Monitor(
        first[1],
        0,
        snapshot(),
        lambda: loss_spread(model, kappa_test.detach(), test_batch, config),
        config.tol,
    )
    cuts = 0
    # the held-out κ(0) solver's damping, carried from epoch to epoch
    damping = torch.full_like(kappa_test[:, 0].detach(), 1e-3, dtype=torch.float64)
    n_train = train_batch.n_trials
    size = n_train if config.batch_size is None else min(config.batch_size, n_train)
    bar = _progress_bar(config, config.max_epochs)
    for epoch in range(1, config.max_epochs + 1):
        order = torch.randperm(n_train, generator=generator, device="cpu").to(kappa_train.device)
        total, count = 0.0, 0
        for begin in range(0, n_train, size):
            index = order[begin : begin + size]
            batch = train_batch.take(index)
            optimizer.zero_grad(set_to_none=True)
            loss = backward_batch_loss(
                model,
                kappa_train[index],
                batch,
                config,
                noise=_noise(model, batch, config, generator),
            )
            optimizer.step()
            total += float(loss) * index.numel()
            count += index.numel()
        with torch.no_grad():  # two damped Gauss–Newton steps per epoch follow the model
            prior = initial_prior(kappa_train)
            tracked, test_loss = _reinfer(
                model, kappa_test, test_batch, config, prior, n_iter=2, damping=damping
            )
            kappa_test.copy_(tracked)
        history.append((total / count, test_loss))
        bar.update()
        bar.set_postfix(train=f"{total / count:.4g}", test=f"{test_loss:.4g}")
        if not np.isfinite(test_loss):
            break
        monitor.update(epoch, test_loss, snapshot)
        if monitor.stalled(epoch, _adam_patience(monitor, config)):
            if config.lbfgs_rounds > 0 or cuts == _MAX_HALVINGS:
                break
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
            cuts += 1
            monitor.reference_step = epoch  # a new plateau is counted from here
    bar.close()
    state, k_train, k_test = monitor.state
    model.load_state_dict(state)
    trainable = [p for p in model.parameters() if p.requires_grad]
    moments = None
    if len(history) > 1:
        moments = [
            optimizer.state[p]["exp_avg_sq"] if p in optimizer.state else torch.zeros_like(p)
            for p in (*trainable, kappa_train)
        ]
    return history, (k_train, k_test), monitor.best_step, moments


def _adam_patience(monitor: _Monitor, config: TrainConfig) -> int:
    """Epochs without progress after which Adam hands over to L-BFGS.

    ``config.patience``, but, on a noiseless training objective, no more than the epochs the
    progress so far took (at least ``_MIN_PATIENCE``): a plateau as long as the whole course
    before it is one, and where the initialisation is already close (noiseless rates, whose
    Adam makes its last progress in its first epoch) L-BFGS takes over without a full
    ``patience`` of epochs that do nothing. With process noise the full ``patience`` applies:
    Adam then minimises a noise-averaged loss whose slow gains (the flow away from the
    attractors) the noiseless held-out loss does not show. Without L-BFGS rounds the full
    ``patience`` applies to each learning-rate cut.
    """
    if config.lbfgs_rounds == 0 or config.process_noise > 0:
        return config.patience
    return min(config.patience, max(_MIN_PATIENCE, monitor.reference_step))


def _lbfgs_phase(
    model, k_train, k_test, train_batch, test_batch, config, history, best_row, best_test, moments
):
    """Full-batch L-BFGS from the best Adam state, in rounds of 10 steps.

    Adam's noise floor stops it short of the optimum along shallow directions (e.g. the trade-off
    between the scale of M and the readout gain); the quasi-Newton steps handle them. After each
    round the held-out κ(0) are re-inferred (:func:`infer_initial`) and the held-out loss is
    recorded (appended to ``history``); the rounds stop after ``config.lbfgs_rounds`` or when
    ``max(2, patience // 6)`` rounds in a row make no progress (:class:`_Monitor`). The model
    is left in its best state; returns (κ0 train, κ0 test, best row, best held-out loss).

    The variables are rescaled by ``moments`` (Adam's second moments v, see
    :func:`_preconditioner`): L-BFGS starts every round from a scaled identity, and its few
    stored pairs cannot undo scales that differ by orders of magnitude between parameters (a
    readout gain in spikes per second against a loading near one).
    """
    kappa_train = torch.nn.Parameter(k_train.clone())
    kappa_test = torch.nn.Parameter(k_test.clone())
    params = [*(p for p in model.parameters() if p.requires_grad), kappa_train]
    scales = _preconditioner(moments)
    if scales is None:
        variables = params
    else:
        variables = [torch.nn.Parameter(p.detach() / s) for p, s in zip(params, scales)]
    optimizer = torch.optim.LBFGS(
        variables, lr=1.0, max_iter=10, history_size=20, line_search_fn="strong_wolfe"
    )
    last = [math.nan]  # training loss of the latest evaluation
    # The latest evaluation (variables, objective, gradients, training loss). Each round starts
    # by evaluating where the previous one ended, which is (most often) where its line search
    # last evaluated: that evaluation is reused.
    cache: list = []

    def sync():  # parameters ← scale · variables
        if scales is not None:
            with torch.no_grad():
                for p, u, scale in zip(params, variables, scales):
                    p.copy_(u * scale)

    def closure():
        sync()
        if cache and all(torch.equal(u, seen) for u, seen in zip(variables, cache[0])):
            for u, grad in zip(variables, cache[2]):
                u.grad = grad.clone()
            last[0] = cache[3]
            return cache[1]
        for p in params:
            p.grad = None
        loss = backward_batch_loss(model, kappa_train, train_batch, config)
        last[0] = float(loss)
        if config.weight_decay > 0:
            penalty = weight_penalty(model, config.weight_decay)
            penalty.backward()
            loss = loss + penalty.detach()
        if scales is not None:
            for p, u, scale in zip(params, variables, scales):
                u.grad = (torch.zeros_like(p) if p.grad is None else p.grad) * scale
        grads = [torch.zeros_like(u) if u.grad is None else u.grad.clone() for u in variables]
        cache[:] = [[u.detach().clone() for u in variables], loss, grads, last[0]]
        return loss

    def snapshot():
        return _snapshot(model, kappa_train, kappa_test)

    monitor = _Monitor(
        best_test,
        best_row,
        snapshot(),  # the best Adam state, where the model is
        lambda: loss_spread(model, kappa_test.detach(), test_batch, config),
        config.tol,
        reference=math.inf,
        since=len(history) - 1,
        each_step=True,
    )
    patience = max(2, config.patience // 6)
    for _ in range(config.lbfgs_rounds):
        optimizer.step(closure)
        sync()
        with torch.no_grad():
            prior = initial_prior(kappa_train)
            tracked, test_loss = _reinfer(model, kappa_test, test_batch, config, prior)
            kappa_test.copy_(tracked)
        history.append((last[0], test_loss))
        if not np.isfinite(test_loss) or not np.isfinite(last[0]):
            break
        monitor.update(len(history) - 1, test_loss, snapshot)
        if monitor.stalled(len(history) - 1, patience):
            break
    state, k_train, k_test = monitor.state
    model.load_state_dict(state)
    return k_train, k_test, monitor.best_step, monitor.best


def _preconditioner(moments: list[Tensor] | None) -> list[Tensor] | None:
    """Per-entry variable scales v^(−1/4) (normalised to median 1, clipped to [10⁻³, 10³]).

    With θ = s ⊙ u, L-BFGS on u sees the curvature s H s. Adam's v estimates the diagonal of the
    (empirical) Fisher information, H_jj ∝ v_j, so s = v^(−1/2) would equalise the diagonal; the
    fourth root goes halfway, which stays robust where v is a noisy estimate (on the 500-unit
    spike fits of the benchmarks it reaches in fewer rounds a held-out loss that unscaled
    rounds do not reach, where the square root stalls).
    """
    if moments is None:
        return None
    raw = [(v.double() + 1e-30) ** -0.25 for v in moments]
    flat = torch.cat([r.flatten() for r in raw])
    if flat.numel() == 0:
        return None
    median = flat.median()
    return [(r / median).clamp(1e-3, 1e3).to(m.dtype) for r, m in zip(raw, moments)]


def _refit_phase(model, k_train, k_test, train_batch, test_batch, config, best_test):
    """Refit every unit's (m, b, d, g, c) on the training latents, then K (:mod:`.unit_refit`).

    The refit is kept, and ((train loss, held-out loss), training κ(0), held-out κ(0)) returned,
    only if the held-out loss (κ(0) re-inferred) drops below ``best_test``; otherwise the model
    is restored and None returned.
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
        units = train_batch.units
        theta = refit_units(
            latents[mask],
            train_batch.data[mask],
            None if inputs is None else inputs[mask],
            theta,
            observed=None if units is None else units[:, None].expand(-1, mask.shape[1], -1)[mask],
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
        K = refit_output_loadings(
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
    prior = initial_prior(k_train)
    k_test_new, test_loss = _reinfer(model, k_test, test_batch, config, prior)
    if np.isfinite(test_loss) and test_loss < best_test:
        # the new dynamics move the training trajectories too: re-infer their κ(0)
        k_train_new, train_loss = _reinfer(model, k_train, train_batch, config, prior)
        return (train_loss, test_loss), k_train_new, k_test_new
    model.load_state_dict(saved)
    return None


def _reinfer(model, kappa, batch, config, prior, **solver) -> tuple[Tensor, float]:
    """κ(0) of ``batch`` re-inferred (:func:`infer_initial`) and the loss there.

    The loss comes from the solver's own last pass (:func:`mean_nll`) rather than one more
    rollout, except under the calcium kernel, whose solver does not compute it.
    """
    kappa, nll = infer_initial(model, kappa, batch, config, prior=prior, with_nll=True, **solver)
    with torch.no_grad():
        if nll is None:
            return kappa, float(batch_loss(model, kappa, batch, config))
        return kappa, mean_nll(nll, model, batch, config)


def _network_parameters(model: LowRankRNN) -> list[Tensor]:
    """The trainable loadings M, K, B, d: the parameters ``weight_decay`` applies to."""
    return [p for p in (model.M, model.K, model.B, model.d) if p.requires_grad]


def weight_penalty(model: LowRankRNN, weight_decay: float) -> Tensor:
    """0.5 · weight_decay · Σ p² over the loadings M, K, B, d (not the readout).

    The L-BFGS phase adds it to the loss; its gradient is the L2 term Adam's ``weight_decay``
    adds in the first phase, so both phases optimise the same objective.
    """
    squares = [(p**2).sum() for p in _network_parameters(model)]
    return 0.5 * weight_decay * (torch.stack(squares).sum() if squares else model.d.new_zeros(()))


def _snapshot(model: LowRankRNN, kappa_train: Tensor, kappa_test: Tensor):
    return (
        copy.deepcopy(model.state_dict()),
        kappa_train.detach().clone(),
        kappa_test.detach().clone(),
    )
