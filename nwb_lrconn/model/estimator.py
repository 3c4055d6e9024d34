"""Fit a low-rank RNN to a :class:`~nwb_lrconn.data.Recording` (stage 1)."""

from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from scipy.special import gammaln as _gammaln
from sklearn.base import BaseEstimator

from .._validation import (
    check_choice,
    check_is_fitted,
    check_positive,
    check_positive_int,
    check_positive_or_auto,
    make_rng,
)
from ..config import FitConfig
from ..data import NONLINEARITIES, LowRankFit, Recording, Results
from ._engine import initialise as _init
from ._engine.initial_latents import infer_initial, initial_prior
from ._engine.loop import train
from ._engine.objective import Batch, TrainConfig, batch_loss, rollout_expected
from .gauge import canonical_gauge
from .lowrank import LowRankRNN

__all__ = ["LowRankRNNEstimator", "metrics_from_expected"]

logger = logging.getLogger(__name__)

_AUTO_OBSERVATION = {"spikes": "poisson", "rates": "gaussian", "calcium": "calcium"}
# "auto" latent noise of Poisson fits, per step, in whitened-latent units
_AUTO_PROCESS_NOISE = 0.05
# "auto" Adam learning rates: Poisson fits, and every other observation model
_AUTO_LR_POISSON, _AUTO_LR = 2e-2, 5e-3
_ALLOWED = {"spikes": ("poisson",), "rates": ("gaussian",), "calcium": ("calcium", "gaussian")}


class LowRankRNNEstimator(BaseEstimator):
    """Maximum-likelihood low-rank RNN with per-trial initial latents inferred from data.

    The model (described in ``tutorials/model.md``): ``x_i(t) = m_i·κ(t) + b_i·u(t) + d_i``,
    ``κ(t+1) = (1−α) κ(t) + (α/N) Σ_i k_i φ(x_i(t))``, observed through an affine readout
    ``g_i φ(x_i) + c_i`` (see :mod:`nwb_lrconn.model.observation`).

    Fitting:

    1. trials are split at random into training and held-out sets (``test_fraction``);
    2. initialisation from the training data: observations are mapped back to potentials
       (spikes are smoothed over ``smoothing`` seconds first), PCA gives M and the latents, a
       ridge regression of the latent updates gives K (``nwb_lrconn.model._engine.initialise``);
    3. Adam on minibatches of training trials over (M, K, B, d, readout, κ(0) per training
       trial); each epoch the held-out trials' κ(0) take a Gauss–Newton step on their own
       likelihood (the model never sees held-out data) and the best held-out state is kept;
       once the held-out loss stops improving, full-batch L-BFGS rounds from that state
       (variables scaled by Adam's gradient statistics), stopped the same way; then the unit
       refit (``refit_units``). Progress is measured in the data's own resolution: a phase
       stops after ``patience`` epochs (fewer without process noise, see ``patience``;
       ``max(2, patience // 6)`` rounds) in which the held-out loss fell by less than ``tol``
       times its standard error over held-out trials, so a small or noisy recording stops
       early and a large, clean one trains as long as the data can tell the difference.
       Held-out κ(0) are maximum a posteriori under a weak Gaussian prior, the training
       trials’ κ(0) distribution widened threefold, which stops a trial whose first bins
       saturate every unit from running off;
    4. held-out κ(0) are refined with the model fixed, then everything is reported in the
       **canonical gauge** (:func:`~nwb_lrconn.model.gauge.canonical_gauge`: latents white over
       the visited states, MᵀM diagonal descending, largest entry of each column of M positive).
       For odd φ (tanh) the per-unit sign symmetry (m, k, b, d, g) → −(m, k, b, d, g) is fixed
       first by making every readout gain positive.

    For Gaussian and calcium observations the training loss uses a fixed per-unit noise scale (the
    unit's standard deviation in the training data); after training ``noise_std_`` is set to each
    unit's residual root-mean-square error on the training trials, and reported likelihoods use it.

    A stored fit (``read_results(path)``) becomes a fitted estimator again with
    :meth:`from_results`, for :meth:`transform`, :meth:`predict` and :meth:`score` on new
    recordings of the same units.

    Parameters
    ----------
    rank : int, default: 2
        R.
    observation : {"auto", "gaussian", "poisson", "calcium"}, default: "auto"
        Observation model; "auto" picks Poisson for spikes, Gaussian for rates and calcium for
        calcium recordings.
    nonlinearity : {"tanh", "relu", "softplus"}, default: "tanh"
        φ.
    alpha : float, optional
        Euler step Δt/τ. Give ``alpha`` or ``tau``, not both; default α = 0.1.
    tau : float, optional
        Time constant τ in seconds (α = bin_width / τ).
    max_epochs : int, default: 500
        Upper bound on the Adam passes over the training trials.
    lbfgs_rounds : int, default: 30
        Upper bound on rounds of 10 full-batch L-BFGS steps after Adam (0 = none); they converge
        along the shallow directions Adam's noise floor leaves (stopped on the held-out loss
        too, see ``tol``).
    refit_units : bool, default: True
        After the gradient phases, refit every unit's (m, b, d, g, c) on the fitted latents by
        Fisher scoring (the likelihood separates over units once κ(t) is fixed), then re-solve K
        by ridge regression of the latent updates so the dynamics are kept; the refit is kept only
        if the held-out loss drops. It settles the trade-off between |m_i| and the readout gain
        that gradient steps leave unresolved for weakly tuned units. Not applied under the
        calcium indicator kernel, whose filter couples the bins.
    lr : float or "auto", default: "auto"
        Adam learning rate; "auto" is 2e-2 for Poisson spike counts and 5e-3 otherwise. A
        spike-count likelihood hardly tells apart flows that differ away from the attractors,
        where trials pass only in their first bins: there the fit ends where Adam has carried it
        when its held-out loss stops improving, and at the larger rate the spike fits of the
        published networks end nearer the true flow, at the same held-out likelihood and mostly
        in fewer epochs (``tests/benchmarks/bench_model.py``). On rates and fluorescence the
        initialisation's regression already lies close to the optimum: Adam's steps, about the
        learning rate per entry, carry the fit away from it before L-BFGS brings it back, and
        the smaller rate leaves L-BFGS fewer rounds to run (``bench_model.py --case rates``).
    batch_size : int or None, default: 64
        Trials per step; None for full batch.
    test_fraction : float, default: 0.2
        Fraction of trials held out (at least one trial each side).
    patience : int, default: 20
        Epochs without progress (see ``tol``) after which Adam hands over to L-BFGS, whose
        rounds stop after ``max(2, patience // 6)`` rounds without progress. Without process
        noise Adam hands over sooner where its progress so far took fewer epochs (at least
        ``min(patience, 5)``): a plateau as long as the course before it. Without L-BFGS
        (``lbfgs_rounds=0``) the learning rate halves instead, at each of the first three such
        plateaus, and Adam stops at the fourth.
    tol : float, default: 0.01
        Smallest decrease of the held-out loss that counts as progress, as a fraction of the
        held-out loss's standard error across held-out trials (re-measured as the fit improves;
        never below 10⁻⁵ nats per value). 0 counts every decrease.
    weight_decay : float, default: 0.0
        L2 penalty on the network parameters (Adam weight decay; κ(0) excluded).
    process_noise : float or "auto", default: "auto"
        Standard deviation, per step, of latent noise ξ injected into training rollouts, in
        units of the latents (whitened at initialisation, so 0.05 is 5 % of their spread).
        "auto" is 0.05 for Poisson spike counts and 0 otherwise. Spike counts pin a trial's
        first bins only loosely where the units saturate, and the likelihood barely tells a
        start further out followed by a strong inflow from a start further in followed by a
        weak one; without noise the fit drifts toward the weak inflow. The noise makes the
        fitted flow pull perturbed trajectories back onto the data, which settles that
        trade-off: from 500-unit Poisson spikes of two networks (two seeds each) the flow-field
        RMSE against the truth drops from 0.12-0.35 to 0.05-0.10 at the same held-out likelihood.
    calcium_decay : float, default: 0.0
        Per-bin decay of the indicator kernel (calcium observation; 0 = no kernel).
    smoothing : float, optional
        Width (seconds, Gaussian σ) of the spike-count smoothing used only for initialisation and
        the initial-latent encoder; default τ/2.
    random_state : int or None, default: None
        Seed of the split, initialisation and minibatch order. The same seed gives identical
        numbers on the same device.
    device : str, default: "cpu"
        Torch device ("cpu", "cuda", "cuda:1", ...).
    progress : bool, default: False
        Show a tqdm progress bar over epochs when stderr is a terminal. Each phase (init, Adam,
        L-BFGS, unit refit, end) is also logged at INFO level with its elapsed time, on the
        logger ``nwb_lrconn.model`` (children ``estimator`` and ``_engine.loop``).

    Attributes
    ----------
    model_ : LowRankRNN
        The fitted network (canonical gauge, on ``device``).
    M_, K_ : ndarray of shape (n_units, rank)
    B_ : ndarray of shape (n_units, n_inputs)
    d_, readout_gain_, readout_offset_, noise_std_ : ndarray of shape (n_units,)
    alpha_ : float
        α used.
    observation_ : str
        Observation model used.
    latents_ : ndarray of shape (n_trials, n_time, rank)
        κ(t) of every trial of the fitted recording (zero outside its mask).
    loss_history_ : ndarray of shape (n_epochs + 1, 2)
        Training and held-out loss (negative log-likelihood per observed value; Gaussian models
        at the fixed training noise scale); row 0 is the initialisation.
    best_epoch_ : int
        Row of ``loss_history_`` that was kept.
    metrics_ : dict of str to float
        Held-out metrics: ``log_likelihood`` (per observed value, nats), ``bits_per_spike``
        (Poisson; vs a per-unit constant rate) or ``r2`` (Gaussian/calcium; pooled over units).
    unit_quality_ : ndarray of shape (n_units,)
        Held-out per-unit bits/spike (Poisson) or R².
    train_trials_, test_trials_ : ndarray of int
    fit_ : LowRankFit
        Everything above as a frozen record.
    n_units_, n_inputs_ : int
    """

    def __init__(
        self,
        rank: int = cast(int, FitConfig.rank),  # the config also allows "auto"
        *,
        observation: str = FitConfig.observation,
        nonlinearity: str = FitConfig.nonlinearity,
        alpha: float | None = FitConfig.alpha,
        tau: float | None = FitConfig.tau,
        max_epochs: int = FitConfig.max_epochs,
        lbfgs_rounds: int = FitConfig.lbfgs_rounds,
        refit_units: bool = FitConfig.refit_units,
        lr: float | str = FitConfig.lr,
        batch_size: int | None = FitConfig.batch_size,
        test_fraction: float = FitConfig.test_fraction,
        patience: int = FitConfig.patience,
        tol: float = FitConfig.tol,
        weight_decay: float = FitConfig.weight_decay,
        process_noise: float | str = FitConfig.process_noise,
        calcium_decay: float = FitConfig.calcium_decay,
        smoothing: float | None = FitConfig.smoothing,
        random_state: int | None = None,
        device: str = "cpu",
        progress: bool = False,
    ) -> None:
        self.rank = rank
        self.observation = observation
        self.nonlinearity = nonlinearity
        self.alpha = alpha
        self.tau = tau
        self.max_epochs = max_epochs
        self.lbfgs_rounds = lbfgs_rounds
        self.refit_units = refit_units
        self.lr = lr
        self.batch_size = batch_size
        self.test_fraction = test_fraction
        self.patience = patience
        self.tol = tol
        self.weight_decay = weight_decay
        self.process_noise = process_noise
        self.calcium_decay = calcium_decay
        self.smoothing = smoothing
        self.random_state = random_state
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ validation helpers
    def _check_recording(self, recording: Recording) -> None:
        if not isinstance(recording, Recording):
            raise TypeError(
                f"recording must be a nwb_lrconn.data.Recording; got {type(recording).__name__}."
            )
        if not np.all(np.isfinite(recording.data)):
            raise ValueError("recording.data must be finite; found NaN or infinite values.")
        if not recording.mask.any():
            raise ValueError("recording.mask selects no bin: there is no data to fit.")

    def _resolve_observation(self, kind: str) -> str:
        check_choice(self.observation, "observation", ("auto", "gaussian", "poisson", "calcium"))
        observation = _AUTO_OBSERVATION[kind] if self.observation == "auto" else self.observation
        if observation not in _ALLOWED[kind]:
            raise ValueError(
                f"observation={observation!r} does not fit a recording of kind {kind!r}; "
                f"use one of {list(_ALLOWED[kind])} (or 'auto')."
            )
        return observation

    def _resolve_lr(self, observation: str) -> float:
        lr = check_positive_or_auto(self.lr, "lr")
        if lr == "auto":
            return _AUTO_LR_POISSON if observation == "poisson" else _AUTO_LR
        return float(lr)

    def _resolve_process_noise(self, observation: str) -> float:
        noise = check_positive_or_auto(self.process_noise, "process_noise", allow_zero=True)
        if noise == "auto":
            return _AUTO_PROCESS_NOISE if observation == "poisson" else 0.0
        return float(noise)

    def _resolve_alpha(self, bin_width: float) -> float:
        if self.alpha is not None and self.tau is not None:
            raise ValueError(
                f"Give alpha or tau, not both; got alpha={self.alpha!r} and tau={self.tau!r}."
            )
        if self.tau is not None:
            alpha = bin_width / check_positive(self.tau, "tau")
        else:
            alpha = 0.1 if self.alpha is None else check_positive(self.alpha, "alpha")
        if alpha > 1:
            raise ValueError(
                f"alpha = bin_width / tau must be <= 1 for a stable Euler step; got {alpha:.4g}."
            )
        return alpha

    def _resolve_device(self) -> torch.device:
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device={self.device!r} was requested but CUDA is not available in this torch "
                f"build ({torch.__version__}); use device='cpu'."
            )
        return device

    # ------------------------------------------------------------------ fit
    def fit(self, recording: Recording) -> LowRankRNNEstimator:
        """Fit the network to ``recording`` (never modified).

        Parameters
        ----------
        recording : Recording
            Binned activity with at least two trials (or windows).

        Returns
        -------
        LowRankRNNEstimator
            ``self``.

        Raises
        ------
        TypeError
            When ``recording`` is not a Recording or a hyperparameter has the wrong type.
        ValueError
            For a rank above the number of units, an observation model that does not fit the
            recording's kind, a bad hyperparameter, or too few trials to hold some out.
        RuntimeError
            When ``device`` asks for CUDA and none is available.
        """
        started = time.perf_counter()
        plan = self._plan(recording)
        rng = make_rng(self.random_state)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(rng.integers(2**62)))
        perm = rng.permutation(recording.n_trials)
        test_trials, train_trials = np.sort(perm[: plan.n_test]), np.sort(perm[plan.n_test :])
        train_rec = recording.select_trials(train_trials)
        test_rec = recording.select_trials(test_trials)
        model, k0_train, k0_test, scale = self._initialise(train_rec, test_rec, plan, rng)
        config = self._train_config(
            plan.observation, recording.bin_width, plan.calcium_decay, plan.process_noise
        )
        train_batch = _to_batch(train_rec, plan.device)
        test_batch = _to_batch(test_rec, plan.device)
        if plan.observation == "poisson":
            train_batch, test_batch = (b.with_log_factorial() for b in (train_batch, test_batch))
        logger.info(
            "init: %d units, rank %d, %s observation, %d training / %d held-out trials of %d "
            "bins, in %.1f s",
            recording.n_units,
            plan.rank,
            plan.observation,
            len(train_trials),
            len(test_trials),
            recording.n_time,
            time.perf_counter() - started,
        )
        history, k0_train_t, k0_test_t, best_epoch = train(
            model,
            _tensor(k0_train, plan.device),
            _tensor(k0_test, plan.device),
            train_batch,
            test_batch,
            config,
            generator,
        )
        prior = initial_prior(k0_train_t)
        k0_test_t = infer_initial(model, k0_test_t, test_batch, config, prior=prior)
        if plan.observation != "poisson":
            self._set_noise_scale(model, k0_train_t, train_batch, config, scale)
        if self.nonlinearity == "tanh":
            _positive_gains(model)
        initial = torch.zeros(recording.n_trials, plan.rank, device=plan.device)
        initial[torch.as_tensor(train_trials, device=plan.device)] = k0_train_t
        initial[torch.as_tensor(test_trials, device=plan.device)] = k0_test_t
        A_t = self._canonical_gauge(model, initial, recording)
        initial = initial @ A_t.T
        self._set_fitted(model, config, plan.observation, plan.alpha, plan.smooth_bins)
        self.initial_latents_ = initial.detach().cpu().double().numpy()
        self.latents_ = self._rollout_latents(model, initial, recording, plan.device)
        self._initial_prior = _new_trial_prior(
            self.latents_, recording.mask, train_trials, plan.device
        )
        self.loss_history_ = history
        self.best_epoch_ = int(best_epoch)
        self.train_trials_, self.test_trials_ = train_trials, test_trials
        metrics, quality = self._evaluate(test_rec, k0_test_t @ A_t.T)
        metrics["best_epoch"] = float(best_epoch)
        metrics["n_epochs"] = float(len(history) - 1)
        self.metrics_, self.unit_quality_ = metrics, quality
        key = "bits_per_spike" if plan.observation == "poisson" else "r2"
        logger.info(
            "fit done in %.1f s: held-out %s %.4f (%d rows of loss history, best %d)",
            time.perf_counter() - started,
            "bits/spike" if key == "bits_per_spike" else "R²",
            metrics[key],
            len(history),
            best_epoch,
        )
        self.fit_ = self._fit_record(recording, plan)
        return self

    def _plan(self, recording: Recording) -> _Plan:
        """Validate the recording and the hyperparameters; resolve the "auto" ones."""
        self._check_recording(recording)
        rank = check_positive_int(self.rank, "rank")
        if rank > recording.n_units:
            raise ValueError(
                f"rank must be <= n_units; got rank={rank} for {recording.n_units} unit(s)."
            )
        observation = self._resolve_observation(recording.kind)
        check_choice(self.nonlinearity, "nonlinearity", NONLINEARITIES)
        alpha = self._resolve_alpha(recording.bin_width)
        check_positive_int(self.max_epochs, "max_epochs", minimum=0)
        check_positive_int(self.lbfgs_rounds, "lbfgs_rounds", minimum=0)
        check_positive_int(self.patience, "patience")
        check_positive(self.tol, "tol", allow_zero=True)
        self._resolve_lr(observation)
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        check_positive(self.weight_decay, "weight_decay", allow_zero=True)
        process_noise = self._resolve_process_noise(observation)
        decay = check_positive(self.calcium_decay, "calcium_decay", allow_zero=True)
        if decay >= 1 or (decay > 0 and observation != "calcium"):
            raise ValueError(
                "calcium_decay must lie in [0, 1) and is only used with observation='calcium'; "
                f"got {decay!r} with observation={observation!r}."
            )
        fraction = check_positive(self.test_fraction, "test_fraction")
        if not fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1); got {fraction!r}.")
        n_trials = recording.n_trials
        if n_trials < 2:
            raise ValueError(
                f"fit needs at least 2 trials (one held out); got {n_trials}. Split a continuous "
                "recording into windows first."
            )
        n_test = min(max(1, int(round(fraction * n_trials))), n_trials - 1)
        device = self._resolve_device()
        smooth_s = self.smoothing
        if smooth_s is None:
            smooth_s = 0.5 * recording.bin_width / alpha
        smooth_bins = check_positive(smooth_s, "smoothing", allow_zero=True) / recording.bin_width
        return _Plan(rank, observation, alpha, decay, process_noise, n_test, smooth_bins, device)

    def _initialise(self, train_rec: Recording, test_rec: Recording, plan: _Plan, rng):
        """The network from the training data (``_engine.initialise``), on ``plan.device``.

        Returns the network, the training and held-out κ(0) (numpy) and the per-unit spread of
        the training data (the fixed noise scale of the Gaussian training loss).
        """
        smooth_bins = plan.smooth_bins if plan.observation == "poisson" else 0.0
        target = _init.Linearizer(
            plan.observation,
            self.nonlinearity,
            train_rec.bin_width,
            smooth_bins,
            np.ones(1),
            np.zeros(1),
        ).readout_target(train_rec.data, train_rec.mask)  # computed once, used twice
        linearizer = _init.fit_linearizer(
            train_rec.data,
            train_rec.mask,
            observation=plan.observation,
            nonlinearity=self.nonlinearity,
            bin_width=train_rec.bin_width,
            smooth_bins=smooth_bins,
            target=target,
        )
        M, K, B, d, k0_train = _init.initial_loadings(
            linearizer.potentials(train_rec.data, train_rec.mask, target=target),
            train_rec.mask,
            train_rec.inputs,
            rank=plan.rank,
            alpha=plan.alpha,
            nonlinearity=self.nonlinearity,
            rng=rng,
        )
        k0_test = _init.encode_initial(
            linearizer.first_potentials(test_rec.data, test_rec.mask),
            M,
            B,
            d,
            None if test_rec.inputs is None else test_rec.inputs[:, 0],
        )
        model = LowRankRNN(
            train_rec.n_units,
            plan.rank,
            n_inputs=train_rec.n_inputs,
            alpha=plan.alpha,
            nonlinearity=self.nonlinearity,
        )
        observed = train_rec.data[train_rec.mask]
        scale = np.maximum(observed.std(axis=0), 1e-6 * max(observed.std(), 1e-12))
        log_noise = np.log(scale) if plan.observation != "poisson" else 0 * scale
        _load_parameters(
            model, M, K, B, d, linearizer.gain, linearizer.offset, log_noise, plan.device
        )
        return model, k0_train, k0_test, scale

    def _set_noise_scale(self, model, k0_train, train_batch, config, scale) -> None:
        """σ_i := residual RMS of unit i on the training trials (Gaussian and calcium)."""
        with torch.no_grad():
            expected = rollout_expected(model, k0_train, train_batch, config)
            resid = (train_batch.data - expected) ** 2 * train_batch.mask[..., None]
            rms = (resid.sum((0, 1)) / train_batch.mask.sum()).sqrt()
            floor = 1e-6 * torch.as_tensor(scale, dtype=rms.dtype, device=rms.device)
            model.log_noise_std.copy_(torch.maximum(rms, floor).log())

    def _canonical_gauge(self, model, initial, recording: Recording) -> torch.Tensor:
        """Move ``model`` to the canonical gauge over every trial's visited states; return A."""
        device = initial.device
        latents = self._rollout_latents(model, initial, recording, device)
        A = canonical_gauge(latents, model.M.detach().cpu().double().numpy(), recording.mask)
        A_t = torch.as_tensor(A, dtype=torch.float32, device=device)
        with torch.no_grad():
            model.M.copy_(model.M @ torch.linalg.inv(A_t))
            model.K.copy_(model.K @ A_t.T)
        return A_t

    def _fit_record(self, recording: Recording, plan: _Plan) -> LowRankFit:
        return LowRankFit(
            M=self.M_,
            K=self.K_,
            B=self.B_,
            d=self.d_,
            readout_gain=self.readout_gain_,
            readout_offset=self.readout_offset_,
            noise_std=self.noise_std_,
            rank=plan.rank,
            nonlinearity=self.nonlinearity,
            alpha=plan.alpha,
            bin_width=recording.bin_width,
            observation=plan.observation,
            latents=self.latents_,
            latent_mask=recording.mask.copy(),
            trial_start_times=recording.trial_start_times.copy(),
            loss_history=self.loss_history_,
            metrics=self.metrics_,
            unit_quality=self.unit_quality_,
            train_trials=self.train_trials_,
            test_trials=self.test_trials_,
            unit_ids=recording.unit_ids.copy(),
            unit_rows=recording.unit_rows.copy(),
            calcium_decay=plan.calcium_decay,
        )

    def _set_fitted(self, model, config, observation, alpha, smooth_bins) -> None:
        self.model_ = model
        self._config = config
        self.observation_ = observation
        self.alpha_ = alpha
        self.n_units_ = model.n_units
        self.n_inputs_ = model.n_inputs
        as_np = {
            name: getattr(model, name).detach().cpu().double().numpy()
            for name in ("M", "K", "B", "d", "readout_gain", "readout_offset")
        }
        self.M_, self.K_, self.B_, self.d_ = as_np["M"], as_np["K"], as_np["B"], as_np["d"]
        self.readout_gain_ = as_np["readout_gain"]
        self.readout_offset_ = as_np["readout_offset"]
        noise = model.log_noise_std.detach().exp().cpu().double().numpy()
        self.noise_std_ = np.ones_like(noise) if observation == "poisson" else noise
        # New trials are mapped back to potentials through the fitted readout (the training
        # data's linearisation is not part of the stored fit, and this one is the model's own).
        self.linearizer_ = _init.Linearizer(
            observation,
            self.nonlinearity,
            config.bin_width,
            smooth_bins if observation == "poisson" else 0.0,
            self.readout_gain_,
            self.readout_offset_,
        )

    def _train_config(
        self, observation: str, bin_width: float, calcium_decay: float, process_noise: float
    ) -> TrainConfig:
        """Optimisation settings from the (validated) hyperparameters."""
        return TrainConfig(
            observation=observation,
            bin_width=bin_width,
            calcium_decay=calcium_decay,
            max_epochs=int(self.max_epochs),
            lr=self._resolve_lr(observation),
            batch_size=None if self.batch_size is None else int(self.batch_size),
            patience=int(self.patience),
            weight_decay=float(self.weight_decay),
            process_noise=process_noise,
            progress=self.progress,
            lbfgs_rounds=int(self.lbfgs_rounds),
            refit_units=bool(self.refit_units),
            tol=float(self.tol),
        )

    # ------------------------------------------------------------------ a stored fit
    @classmethod
    def from_results(
        cls, fit_or_results: LowRankFit | Results, *, device: str = "cpu"
    ) -> LowRankRNNEstimator:
        """Rebuild a fitted estimator from a stored fit, to use on new recordings.

        :meth:`transform`, :meth:`predict` and :meth:`score` of the rebuilt estimator give the
        numbers of the estimator that made the fit (up to float32 rounding of the noise scale).

        Parameters
        ----------
        fit_or_results : LowRankFit or Results
            A stage-1 fit, e.g. ``read_results(path).fit``, or the whole :class:`Results`, whose
            stored run configuration (``provenance.config_json``, section ``fit``) supplies the
            hyperparameters that the fit record does not hold (``smoothing`` and the training
            settings) and whose seed becomes ``random_state``.
        device : str, default: "cpu"
            Torch device of the rebuilt network.

        Returns
        -------
        LowRankRNNEstimator
            Fitted: ``model_``, the loadings, ``latents_``, ``metrics_`` and ``fit_`` are those of
            the stored fit.

        Raises
        ------
        TypeError
            When given something other than a LowRankFit or Results.
        """
        if isinstance(fit_or_results, Results):
            fit = fit_or_results.fit
            params = _stored_fit_params(fit_or_results.provenance.config_json)
            params.setdefault("random_state", fit_or_results.provenance.random_seed)
        elif isinstance(fit_or_results, LowRankFit):
            fit, params = fit_or_results, {}
        else:
            raise TypeError(
                "from_results needs a nwb_lrconn.data.LowRankFit or Results; got "
                f"{type(fit_or_results).__name__}."
            )
        params.update(
            rank=fit.rank,
            observation=fit.observation,
            nonlinearity=fit.nonlinearity,
            alpha=fit.alpha,
            tau=None,
            calcium_decay=fit.calcium_decay,
            device=device,
        )
        est = cls(**params)
        est._restore(fit)
        return est

    def _restore(self, fit: LowRankFit) -> None:
        device = self._resolve_device()
        model = LowRankRNN(
            fit.n_units,
            fit.rank,
            n_inputs=fit.B.shape[1],
            alpha=fit.alpha,
            nonlinearity=fit.nonlinearity,
        )
        noise = np.zeros(fit.n_units) if fit.observation == "poisson" else np.log(fit.noise_std)
        _load_parameters(
            model, fit.M, fit.K, fit.B, fit.d, fit.readout_gain, fit.readout_offset, noise, device
        )
        config = self._train_config(fit.observation, fit.bin_width, fit.calcium_decay, 0.0)
        smooth_s = self.smoothing
        if smooth_s is None:
            smooth_s = 0.5 * fit.bin_width / fit.alpha
        self._set_fitted(model, config, fit.observation, fit.alpha, smooth_s / fit.bin_width)
        self.latents_ = fit.latents.copy()
        self.initial_latents_ = fit.latents[:, 0].copy()
        self._initial_prior = _new_trial_prior(
            fit.latents, fit.latent_mask, fit.train_trials, device
        )
        self.loss_history_ = fit.loss_history.copy()
        self.best_epoch_ = int(fit.metrics.get("best_epoch", len(fit.loss_history) - 1))
        self.train_trials_, self.test_trials_ = fit.train_trials.copy(), fit.test_trials.copy()
        self.metrics_ = dict(fit.metrics)
        self.unit_quality_ = fit.unit_quality.copy()
        self.fit_ = fit

    @staticmethod
    def _rollout_latents(model, initial, recording: Recording, device) -> np.ndarray:
        inputs = None if recording.inputs is None else _tensor(recording.inputs, device)
        with torch.no_grad():
            latents, _ = model(initial, recording.n_time, inputs=inputs)
        out = latents.cpu().double().numpy()
        out[~recording.mask] = 0.0
        return out

    # ------------------------------------------------------------------ inference on new data
    def _check_compatible(self, recording: Recording) -> None:
        check_is_fitted(self, "model_")
        self._check_recording(recording)
        if recording.n_units != self.n_units_ or recording.n_inputs != self.n_inputs_:
            raise ValueError(
                f"recording has {recording.n_units} unit(s) and {recording.n_inputs} input(s); "
                f"this estimator was fitted on {self.n_units_} and {self.n_inputs_}."
            )
        if self.observation_ not in _ALLOWED[recording.kind]:
            raise ValueError(
                f"recording has kind {recording.kind!r}; this estimator was fitted with "
                f"observation={self.observation_!r}."
            )

    def _infer(self, recording: Recording) -> tuple[torch.Tensor, Batch]:
        device = self.model_.M.device
        potentials = self.linearizer_.first_potentials(recording.data, recording.mask)
        start = _init.encode_initial(
            potentials,
            self.M_,
            self.B_,
            self.d_,
            None if recording.inputs is None else recording.inputs[:, 0],
        )
        batch = _to_batch(recording, device)
        initial = infer_initial(
            self.model_, _tensor(start, device), batch, self._config, prior=self._initial_prior
        )
        return initial, batch

    def transform(self, recording: Recording) -> np.ndarray:
        """Infer the latents of each trial of ``recording`` (canonical gauge).

        κ(0) comes from the encoder (the first bin mapped back to potentials through the fitted
        readout and projected on M), refined by maximising each trial's likelihood with the
        network fixed; the rest of the trajectory follows from the dynamics.

        Parameters
        ----------
        recording : Recording
            Same units (and inputs) as the fitted one.

        Returns
        -------
        ndarray of shape (n_trials, n_time, rank)
            κ(t), zero outside ``recording.mask``.
        """
        self._check_compatible(recording)
        initial, _ = self._infer(recording)
        return self._rollout_latents(self.model_, initial, recording, initial.device)

    def predict(self, recording: Recording) -> np.ndarray:
        """Expected observations for each trial of ``recording``.

        Parameters
        ----------
        recording : Recording
            Same units (and inputs) as the fitted one.

        Returns
        -------
        ndarray of shape (n_trials, n_time, n_units)
            Expected counts per bin (Poisson), rates/potentials (Gaussian) or traces (calcium);
            zero outside ``recording.mask``.
        """
        self._check_compatible(recording)
        initial, batch = self._infer(recording)
        with torch.no_grad():
            expected = rollout_expected(self.model_, initial, batch, self._config)
        out = expected.cpu().double().numpy()
        out[~recording.mask] = 0.0
        return out

    def score(self, recording: Recording) -> float:
        """Mean log-likelihood per observed value of ``recording`` (nats; higher is better).

        Latents are inferred as in :meth:`transform`.
        """
        self._check_compatible(recording)
        initial, batch = self._infer(recording)
        with torch.no_grad():
            loss = batch_loss(self.model_, initial, batch, self._config)
        return -float(loss)

    def _evaluate(self, recording: Recording, initial: torch.Tensor):
        batch = _to_batch(recording, initial.device)
        with torch.no_grad():
            expected = rollout_expected(self.model_, initial, batch, self._config)
        return metrics_from_expected(
            recording.data,
            expected.cpu().double().numpy(),
            recording.mask,
            self.observation_,
            noise_std=self.noise_std_,
        )


def metrics_from_expected(
    data: np.ndarray,
    expected: np.ndarray,
    mask: np.ndarray,
    observation: str,
    *,
    noise_std: np.ndarray | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Goodness of fit of expected observations.

    Parameters
    ----------
    data, expected : ndarray of shape (n_trials, n_time, n_units)
        Observations and their expectation under the model.
    mask : ndarray of shape (n_trials, n_time), bool
        Observed bins.
    observation : {"gaussian", "poisson", "calcium"}
        Observation model.
    noise_std : ndarray of shape (n_units,), optional
        σ_i of the Gaussian models (default 1).

    Returns
    -------
    metrics : dict
        ``log_likelihood`` (mean per observed value, nats) and ``bits_per_spike`` (Poisson: gain
        over a per-unit constant rate equal to the unit's mean count in ``data``, per spike) or
        ``r2`` (1 − Σ SSE / Σ SST pooled over units, SST about each unit's mean).
    unit_quality : ndarray of shape (n_units,)
        Per-unit bits/spike (NaN for a unit without spikes) or per-unit R² (NaN for a constant
        unit).
    """
    y, mu = data[mask], expected[mask]  # (n_obs, n_units)
    if observation == "poisson":
        lam = mu + 1e-8
        gammaln = _gammaln(y + 1.0)
        ll_units = (y * np.log(lam) - lam - gammaln).sum(axis=0)
        base = np.maximum(y.mean(axis=0), 1e-8)
        ll_base = (y * np.log(base) - base - gammaln).sum(axis=0)
        spikes = y.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            quality = np.where(spikes > 0, (ll_units - ll_base) / (spikes * np.log(2)), np.nan)
        total = spikes.sum()
        bps = float((ll_units - ll_base).sum() / (total * np.log(2))) if total > 0 else np.nan
        return {"log_likelihood": float(ll_units.sum() / y.size), "bits_per_spike": bps}, quality
    sigma = np.ones(y.shape[1]) if noise_std is None else np.asarray(noise_std, np.float64)
    z = (y - mu) / sigma
    ll = -(0.5 * z**2 + np.log(sigma) + 0.5 * np.log(2 * np.pi)).sum()
    sse = ((y - mu) ** 2).sum(axis=0)
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        quality = np.where(sst > 0, 1.0 - sse / sst, np.nan)
    r2 = float(1.0 - sse.sum() / sst.sum()) if sst.sum() > 0 else np.nan
    return {"log_likelihood": float(ll / y.size), "r2": r2}, quality


@dataclass(frozen=True)
class _Plan:
    """Validated and resolved settings of one fit."""

    rank: int
    observation: str
    alpha: float
    calcium_decay: float
    process_noise: float
    n_test: int
    smooth_bins: float
    device: torch.device


def _load_parameters(model, M, K, B, d, gain, offset, log_noise_std, device) -> None:
    """Set the network's parameters (float32) and move it to ``device``."""
    with torch.no_grad():
        for name, value in (
            ("M", M),
            ("K", K),
            ("B", B),
            ("d", d),
            ("readout_gain", gain),
            ("readout_offset", offset),
            ("log_noise_std", log_noise_std),
        ):
            getattr(model, name).copy_(torch.as_tensor(value, dtype=torch.float32))
    model.log_noise_std.requires_grad_(False)
    model.to(device)


def _positive_gains(model: LowRankRNN) -> None:
    """Flip units with a negative readout gain (φ odd: (m, k, b, d, g) → −(m, k, b, d, g))."""
    with torch.no_grad():
        sign = torch.where(model.readout_gain < 0, -1.0, 1.0).to(model.M.dtype)
        for p in (model.M, model.K, model.B):
            p.mul_(sign[:, None])
        model.d.mul_(sign)
        model.readout_gain.mul_(sign)


def _tensor(array: np.ndarray, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float32, device=device)


def _to_batch(recording: Recording, device) -> Batch:
    return Batch(
        data=_tensor(recording.data, device),
        mask=torch.as_tensor(recording.mask, device=device),
        inputs=None if recording.inputs is None else _tensor(recording.inputs, device),
    )


def _new_trial_prior(latents: np.ndarray, mask: np.ndarray, train_trials: np.ndarray, device):
    """The κ(0) prior of new trials: the training trials' κ(0) (canonical gauge), widened."""
    trials = np.asarray(train_trials)[np.asarray(mask)[train_trials, 0]]
    return initial_prior(_tensor(latents[trials, 0], device))


def _stored_fit_params(config_json: str) -> dict:
    """Estimator keywords of the ``fit`` section of a stored run configuration ({} if none)."""
    try:
        section = json.loads(config_json).get("fit")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(section, dict):
        return {}
    names = set(inspect.signature(LowRankRNNEstimator).parameters) - {"rank"}
    return {name: value for name, value in section.items() if name in names}
