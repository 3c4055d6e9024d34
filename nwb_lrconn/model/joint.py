"""One low-rank RNN fitted to several recording sessions of the same circuit (stage 1, joint).

Sessions recorded on different days see different units of one network. The network is the
union of their units: one latent dynamics κ(t+1) = (1 − α) κ(t) + (α/N) Σ_i k_i φ(x_i(t)), the sum
over every unit of every session, and each trial observes only its own session's units
(:attr:`~nwb_lrconn.model._engine.objective.Batch.units`); the units a trial does not see still
drive its dynamics but add nothing to its likelihood.

Initialisation (no unit is shared, so each session's own fit lives in its own gauge):

1. every session is fitted alone on its training trials (:class:`LowRankRNNEstimator`, the
   same hyperparameters); the reference session's (by default the one with the most units)
   units and dynamics start the network;
2. every other session's fit is mapped into the reference's gauge, κ = A κ_s + c, by the map under
   which each fit's flow carries the other's latents along their own course for one time
   constant (least squares from several starting rotations,
   :func:`~nwb_lrconn.model.session_gauge.match_gauge`); of the best few maps, the one kept
   gives the lowest training loss of the two sessions. The session's units (m, b, d, g, c) and
   latents follow through the map;
3. K is re-solved over every unit from the latent updates of every session's mapped latents:
   the pooled regression is where the sessions' evidence on the dynamics meets;

then the estimator's own training loop (Adam, L-BFGS, unit refit) runs on the joint masked
likelihood, with held-out trials drawn from every session, and the result is reported in one
canonical gauge (:func:`~nwb_lrconn.model.gauge.canonical_gauge` over every trial). The separate
fits are kept (``separate_``) for :meth:`JointLowRankRNN.compare_to_separate`.

Identifiability: without shared units the map between two sessions is pinned only by the
dynamics. Where the flow has a symmetry (κ → S κ carrying trajectories onto trajectories, e.g.
the four attractors of a square), every session may be turned by it independently with the same
likelihood: the joint flow is then still determined, but the sessions' latents share a gauge
only up to that symmetry, and so do the loadings that link units of different sessions.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import gammaln
from sklearn.base import BaseEstimator, clone

from .._validation import check_is_fitted, make_rng
from ..data import LowRankFit, Recording
from ._engine import initialise as _init
from ._engine.initial_latents import infer_initial, initial_prior
from ._engine.loop import train
from ._engine.objective import Batch, TrainConfig, batch_loss, rollout_expected
from ._engine.unit_refit import refit_output_loadings
from .estimator import LowRankRNNEstimator, _positive_gains, metrics_from_expected
from .gauge import apply_gauge, canonical_gauge
from .lowrank import LowRankRNN
from .observation import expected_observation
from .rollout import activation
from .session_gauge import match_gauge

__all__ = ["JointLowRankRNN", "SessionFit"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionFit:
    """One session's part of a joint fit, in the joint model's gauge.

    The dynamics are the joint network's (every session's K takes part); ``K`` here holds only
    this session's units' share of it.

    Attributes
    ----------
    units : ndarray of shape (n_units,), int
        Rows of this session's units in the joint network.
    unit_ids : ndarray of shape (n_units,)
        The session's own unit ids (``Recording.unit_ids``).
    M, K : ndarray of shape (n_units, rank)
    B : ndarray of shape (n_units, n_inputs)
    d, readout_gain, readout_offset, noise_std : ndarray of shape (n_units,)
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t) of the session's trials (zero outside ``latent_mask``).
    latent_mask : ndarray of shape (n_trials, n_time), bool
    train_trials, test_trials : ndarray of int
        The session's trials used for training and held out.
    metrics : dict of str to float
        Held-out ``log_likelihood`` per observed value (nats) and ``bits_per_spike`` or ``r2``.
    unit_quality : ndarray of shape (n_units,)
        Held-out per-unit bits/spike or R².
    """

    units: np.ndarray
    unit_ids: np.ndarray
    M: np.ndarray
    K: np.ndarray
    B: np.ndarray
    d: np.ndarray
    readout_gain: np.ndarray
    readout_offset: np.ndarray
    noise_std: np.ndarray
    latents: np.ndarray
    latent_mask: np.ndarray
    train_trials: np.ndarray
    test_trials: np.ndarray
    metrics: dict
    unit_quality: np.ndarray


class JointLowRankRNN(BaseEstimator):
    """A low-rank RNN fitted to several sessions that record different units of one circuit.

    See the module docstring for the model and the initialisation.

    Parameters
    ----------
    estimator : LowRankRNNEstimator, optional
        Its hyperparameters (rank, observation, α, training settings, ``random_state``, …) are
        those of the joint fit and of the separate fits that start it; default
        ``LowRankRNNEstimator()``.
    reference : int, optional
        Index of the session whose fit starts the network (its dynamics, its gauge); default the
        session with the most units (the first of equals). A reference whose own fit misses the
        dynamics carries its error into every session joined to it
        (:meth:`compare_to_separate` flags sessions that lose likelihood).

    Attributes
    ----------
    model_ : LowRankRNN
        The joint network (canonical gauge), units in session order.
    sessions_ : list of SessionFit
        Per-session views, one per recording, in one shared gauge.
    unit_session_ : ndarray of shape (n_units,), int
        Session of each unit of the network.
    seed_session_ : int
        The reference session whose fit started the network.
    separate_ : list of LowRankRNNEstimator
        Each session's own fit on its training trials (the initialisation's starting points).
    loss_history_ : ndarray of shape (n_rows, 2)
        Training and held-out loss of the joint training.
    observation_ : str
    alpha_ : float
    """

    def __init__(
        self, estimator: LowRankRNNEstimator | None = None, *, reference: int | None = None
    ) -> None:
        self.estimator = estimator
        self.reference = reference

    # ------------------------------------------------------------------ fit
    def fit(self, recordings) -> JointLowRankRNN:
        """Fit one network to ``recordings`` (a list of Recordings; never modified).

        Raises
        ------
        TypeError
            When ``recordings`` is not a list of Recordings.
        ValueError
            When the recordings differ in kind, bin width or input channels, or one of them
            cannot be fitted alone (too few trials or units for the rank).
        """
        started = time.perf_counter()
        template = LowRankRNNEstimator() if self.estimator is None else self.estimator
        recordings = _check_recordings(recordings)
        plans = [template._plan(rec) for rec in recordings]
        plan = plans[0]
        rng = make_rng(template.random_state)
        generator = torch.Generator(device="cpu")
        generator.manual_seed(int(rng.integers(2**62)))
        splits = []
        for rec, p in zip(recordings, plans):
            perm = rng.permutation(rec.n_trials)
            splits.append((np.sort(perm[p.n_test :]), np.sort(perm[: p.n_test])))
        trains = [rec.select_trials(tr) for rec, (tr, _) in zip(recordings, splits)]
        tests = [rec.select_trials(te) for rec, (_, te) in zip(recordings, splits)]
        config = template._train_config(
            plan.observation, recordings[0].bin_width, plan.calcium_decay, plan.process_noise
        )
        sizes = [rec.n_units for rec in recordings]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        seed = int(np.argmax(sizes)) if self.reference is None else self.reference
        if not (isinstance(seed, int | np.integer) and 0 <= seed < len(recordings)):
            raise ValueError(
                f"reference must be the index of one of the {len(recordings)} recordings "
                f"(0 to {len(recordings) - 1}); got {self.reference!r}."
            )
        separate = []
        for rec in trains:
            single = clone(template).set_params(random_state=int(rng.integers(2**31)))
            separate.append(single.fit(rec))
        parts = [slice(offsets[s], offsets[s + 1]) for s in range(len(recordings))]
        scales = [
            np.maximum(obs.std(axis=0), 1e-6 * max(obs.std(), 1e-12))
            for obs in (rec.data[rec.mask] for rec in trains)
        ]
        train_batch = _joint_batch(sum(sizes), trains, parts, config, plan.device)
        test_batch = _joint_batch(sum(sizes), tests, parts, config, plan.device)
        model, prior, k0_train = _start(
            separate, trains, parts, int(seed), np.log(np.concatenate(scales)), train_batch,
            config, rng,
        )  # fmt: skip
        smooth = plan.smooth_bins if plan.observation == "poisson" else 0.0
        k0_test = _encode_tests(model, tests, parts, test_batch, config, prior, smooth)
        logger.info(
            "joint init: %d sessions, %d units, seed session %d, in %.1f s",
            len(recordings),
            model.n_units,
            seed,
            time.perf_counter() - started,
        )
        history, k0_train, k0_test, best = train(
            model, k0_train, k0_test, train_batch, test_batch, config, generator
        )
        k0_test = infer_initial(model, k0_test, test_batch, config, prior=initial_prior(k0_train))
        if plan.observation != "poisson":
            _set_noise_scale(model, k0_train, train_batch, config, np.concatenate(scales))
        if template.nonlinearity == "tanh":
            _positive_gains(model)
        A = _to_canonical_gauge(model, torch.cat([k0_train, k0_test]), train_batch, test_batch)
        k0_train, k0_test = k0_train @ A.T, k0_test @ A.T
        self.model_, self._config = model, config
        self.observation_, self.alpha_ = plan.observation, plan.alpha
        self.seed_session_ = seed
        self.separate_ = separate
        self.unit_session_ = np.repeat(np.arange(len(recordings)), sizes)
        self.loss_history_, self.best_epoch_ = history, int(best)
        self.sessions_ = self._views(recordings, splits, offsets, k0_train, k0_test)
        logger.info("joint fit done in %.1f s", time.perf_counter() - started)
        return self

    def _views(self, recordings, splits, offsets, k0_train, k0_test) -> list[SessionFit]:
        model, config = self.model_, self._config
        params = {
            name: getattr(model, name).detach().cpu().double().numpy()
            for name in ("M", "K", "B", "d", "readout_gain", "readout_offset")
        }
        noise = model.log_noise_std.detach().exp().cpu().double().numpy()
        noise = np.ones_like(noise) if self.observation_ == "poisson" else noise
        views = []
        n_train = np.cumsum([0] + [len(tr) for tr, _ in splits])
        n_test = np.cumsum([0] + [len(te) for _, te in splits])
        for s, (rec, (tr, te)) in enumerate(zip(recordings, splits)):
            units = np.arange(offsets[s], offsets[s + 1])
            initial = torch.zeros(rec.n_trials, model.rank, device=k0_train.device)
            initial[torch.as_tensor(tr)] = k0_train[n_train[s] : n_train[s + 1]]
            initial[torch.as_tensor(te)] = k0_test[n_test[s] : n_test[s + 1]]
            inputs = None if rec.inputs is None else _tensor(rec.inputs, initial.device)
            with torch.no_grad():
                latents, activity = model(initial, rec.n_time, inputs=inputs)
                readout = _readout(model, activity, units)
            lat = latents.cpu().double().numpy()
            lat[~rec.mask] = 0.0
            expected = _expected(readout, config).cpu().double().numpy()
            metrics, quality = metrics_from_expected(
                rec.data[te], expected[te], rec.mask[te], self.observation_, noise_std=noise[units]
            )
            views.append(
                SessionFit(
                    units=units,
                    unit_ids=rec.unit_ids.copy(),
                    **{name: value[units] for name, value in params.items()},
                    noise_std=noise[units],
                    latents=lat,
                    latent_mask=rec.mask.copy(),
                    train_trials=tr,
                    test_trials=te,
                    metrics=metrics,
                    unit_quality=quality,
                )
            )
        return views

    def held_out_nll(self, session: int, recording: Recording) -> tuple[np.ndarray, np.ndarray]:
        """Per-trial negative log-likelihood of ``recording``'s held-out trials of ``session``.

        ``recording`` is the session's recording as passed to :meth:`fit`; its held-out trials'
        κ(0) are those of the fit.

        Returns
        -------
        sums : ndarray of shape (n_test,)
            Σ −log p over each held-out trial's observed values (nats).
        counts : ndarray of shape (n_test,)
            Number of observed values of each.
        """
        check_is_fitted(self, "model_")
        view = self.sessions_[session]
        initial = _tensor(view.latents[view.test_trials, 0], self.model_.M.device)
        test = recording.select_trials(view.test_trials)
        inputs = None if test.inputs is None else _tensor(test.inputs, initial.device)
        with torch.no_grad():
            _, activity = self.model_(initial, test.n_time, inputs=inputs)
            expected = _expected(_readout(self.model_, activity, view.units), self._config)
        return _trial_nll(test, expected.cpu().double().numpy(), self.observation_, view.noise_std)

    def session_fit(self, session: int, recording: Recording) -> LowRankFit:
        """One session's part of the joint fit as a :class:`~nwb_lrconn.data.LowRankFit`.

        Its units' loadings and readout, its latents (shared gauge) and held-out metrics, with
        the joint training's loss history. ``K`` is only this session's share of the mean-field
        sum: the dynamics are the whole network's (``model_``).

        Parameters
        ----------
        session : int
            Index of the session in the fit.
        recording : Recording
            That session's recording, as passed to :meth:`fit`.
        """
        check_is_fitted(self, "model_")
        view = self.sessions_[session]
        return LowRankFit(
            M=view.M,
            K=view.K,
            B=view.B,
            d=view.d,
            readout_gain=view.readout_gain,
            readout_offset=view.readout_offset,
            noise_std=view.noise_std,
            rank=int(self.model_.rank),
            nonlinearity=str(self.model_.nonlinearity),
            alpha=float(self.alpha_),
            bin_width=float(recording.bin_width),
            observation=str(self.observation_),
            latents=view.latents,
            latent_mask=view.latent_mask,
            trial_start_times=np.asarray(recording.trial_start_times, np.float64),
            loss_history=np.asarray(self.loss_history_, np.float64),
            metrics=dict(view.metrics),
            unit_quality=view.unit_quality,
            train_trials=np.asarray(view.train_trials, np.int64),
            test_trials=np.asarray(view.test_trials, np.int64),
            unit_ids=view.unit_ids,
            calcium_decay=float(self.separate_[session].fit_.calcium_decay),
            unit_rows=recording.unit_rows,
        )

    def session_recording(self, recordings, session: int, part: str = "train") -> Recording:
        """The training (``part="train"``) or held-out trials of one session, as a Recording."""
        check_is_fitted(self, "model_")
        view = self.sessions_[session]
        trials = view.train_trials if part == "train" else view.test_trials
        return recordings[session].select_trials(trials)

    def compare_to_separate(self, recordings) -> list[dict]:
        """Held-out log-likelihood of each session under the joint fit against its own fit.

        Each session's separate fit (``separate_``, trained on the same training trials) infers
        its own κ(0) of the held-out trials; the joint fit uses those of :meth:`fit`.

        Parameters
        ----------
        recordings : list of Recording
            As given to :meth:`fit`.

        Returns
        -------
        list of dict
            Per session: ``joint`` and ``separate`` (held-out log-likelihood per observed value,
            nats), ``difference`` (joint − separate), ``stderr`` (standard error of that
            difference over held-out trials, paired by trial, as
            :func:`~nwb_lrconn.model._engine.loop.loss_spread` treats the trials) and ``worse``
            (True when the joint fit falls below the separate one by more than two standard
            errors).
        """
        check_is_fitted(self, "model_")
        rows = []
        for s, (rec, est) in enumerate(zip(recordings, self.separate_)):
            test = self.session_recording(recordings, s, "test")
            joint_sums, counts = self.held_out_nll(s, rec)
            own_sums, _ = _trial_nll(test, est.predict(test), est.observation_, est.noise_std_)
            mean, stderr = _paired_gain(joint_sums, own_sums, counts)
            total = counts.sum()
            rows.append(
                {
                    "joint": float(-joint_sums.sum() / total),
                    "separate": float(-own_sums.sum() / total),
                    "difference": mean,
                    "stderr": stderr,
                    "worse": bool(mean < -2 * stderr),
                }
            )
        return rows


def _paired_gain(joint_nll, own_nll, counts) -> tuple[float, float]:
    """Mean log-likelihood gain per value of the joint fit over trials, and its standard error.

    The trials are independent draws and both fits are scored on the same ones, so the gain is
    the ratio Σ_j D_j / Σ_j C_j of per-trial differences D_j over C_j values, with the delta
    method's standard error √(n / (n − 1) Σ_j (D_j − G C_j)²) / Σ_j C_j (zero for one trial).
    """
    gain = np.asarray(own_nll, np.float64) - np.asarray(joint_nll, np.float64)
    counts = np.asarray(counts, np.float64)
    total, n = counts.sum(), len(gain)
    mean = gain.sum() / total
    if n < 2:
        return float(mean), 0.0
    return float(mean), float(math.sqrt(n / (n - 1) * ((gain - mean * counts) ** 2).sum()) / total)


# ---------------------------------------------------------------------- validation
def _check_recordings(recordings) -> list[Recording]:
    if isinstance(recordings, Recording) or not isinstance(recordings, list | tuple):
        raise TypeError(
            "recordings must be a list of nwb_lrconn.data.Recording (one per session); got "
            f"{type(recordings).__name__}."
        )
    for index, rec in enumerate(recordings):
        if not isinstance(rec, Recording):
            raise TypeError(
                f"recordings[{index}] must be a nwb_lrconn.data.Recording; got "
                f"{type(rec).__name__}."
            )
    if len(recordings) < 2:
        raise ValueError(
            f"a joint fit needs at least 2 recordings; got {len(recordings)}. Fit a single "
            "session with LowRankRNNEstimator."
        )
    first = recordings[0]
    for index, rec in enumerate(recordings[1:], start=1):
        for what, a, b in (
            ("kind", first.kind, rec.kind),
            ("bin_width", first.bin_width, rec.bin_width),
            ("number of input channels", first.n_inputs, rec.n_inputs),
        ):
            if a != b:
                raise ValueError(
                    f"recordings must share their {what}: recording 0 has {a!r}, recording "
                    f"{index} has {b!r}. Rebin or select inputs so that they match."
                )
    return list(recordings)


# ---------------------------------------------------------------------- initialisation
def _start(separate, trains, parts, reference, log_noise, batch, config, rng):
    """The joint network started from ``reference``'s fit with every other session joined.

    Returns (network, κ(0) prior, training κ(0)).
    """
    sizes = [fit.n_units_ for fit in separate]
    model = _joint_network(separate[reference], sizes, reference, batch.data.device)
    if config.observation != "poisson":  # the estimator's fixed training noise scale
        with torch.no_grad():
            model.log_noise_std.copy_(torch.as_tensor(log_noise))
    prior = initial_prior(_tensor(separate[reference].initial_latents_, batch.data.device))
    latents: list[np.ndarray] = [np.empty(0)] * len(separate)
    latents[reference] = separate[reference].latents_
    for s in range(len(separate)):
        if s != reference:
            latents[s] = _join_session(
                model, separate, trains, latents[reference], (reference, s), parts, config,
                prior, rng,
            )  # fmt: skip
    with torch.no_grad():
        _refit_K(model, latents, trains)
    start = _tensor(np.concatenate([lat[:, 0] for lat in latents]), batch.data.device)
    return model, prior, infer_initial(model, start, batch, config, prior=prior)


def _joint_network(single: LowRankRNNEstimator, sizes, seed: int, device) -> LowRankRNN:
    """The joint network with the seed session's units and dynamics; other units still empty.

    The seed's K is scaled by N / N_seed so that the mean-field sum over N units (the others
    with k = 0 until :func:`_refit_K`) gives the seed's dynamics exactly.
    """
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    part = slice(offsets[seed], offsets[seed + 1])
    n_units = int(offsets[-1])
    seed_model = single.model_
    model = LowRankRNN(
        n_units,
        seed_model.rank,
        n_inputs=seed_model.n_inputs,
        alpha=seed_model.alpha,
        nonlinearity=seed_model.nonlinearity,
    ).to(device)
    with torch.no_grad():
        for name, p in seed_model.named_parameters():
            getattr(model, name)[part] = p.detach()
        model.K[part] *= n_units / seed_model.n_units
    model.log_noise_std.requires_grad_(False)
    return model


def _join_session(
    model, fits, recordings, reference_latents, pair, parts, config, prior, rng
) -> np.ndarray:
    """Bring session ``pair[1]``'s own fit into the gauge of ``pair[0]``'s; return its latents.

    Of the candidate maps (:func:`~nwb_lrconn.model.session_gauge.match_gauge`; an approximate
    symmetry of the dynamics can make several match the flows almost equally well), the one
    kept gives the lowest training loss of the two sessions under the network whose K is
    refitted from both sessions' latents. The session's units (m, b, d, g, c) are left in the
    network.
    """
    ref, s = pair
    single = fits[s]
    pair_recordings = [recordings[ref], recordings[s]]
    batch = _joint_batch(
        model.n_units, pair_recordings, [parts[ref], parts[s]], config, model.M.device
    )
    best: tuple[float, tuple | None] = (math.inf, None)
    for index, (A, c) in enumerate(
        match_gauge(fits[ref], single, recordings[ref], recordings[s], rng)
    ):
        M, _, B, d, latents = apply_gauge(
            single.M_, single.K_, single.B_, single.d_, single.latents_, A, c
        )
        latents[~recordings[s].mask] = 0.0
        with torch.no_grad():
            for name, value in (
                ("M", M),
                ("B", B),
                ("d", d),
                ("readout_gain", single.readout_gain_),
                ("readout_offset", single.readout_offset_),
            ):
                getattr(model, name)[parts[s]] = _tensor(value, model.M.device)
            _refit_K(model, [reference_latents, latents], pair_recordings)
        start = np.concatenate([reference_latents[:, 0], latents[:, 0]])
        initial = infer_initial(model, _tensor(start, model.M.device), batch, config, prior=prior)
        with torch.no_grad():
            loss = float(batch_loss(model, initial, batch, config))
        logger.debug("session %d, candidate map %d: training loss %.6g", s, index, loss)
        if loss < best[0]:
            best = (loss, (latents, [p.detach().clone() for p in model.parameters()]))
    if best[1] is None:
        raise RuntimeError(f"session {s} could not be mapped into the network (no finite loss).")
    latents, state = best[1]
    with torch.no_grad():
        for p, value in zip(model.parameters(), state):
            p.copy_(value)
    return latents


def _joint_batch(n_units: int, recordings, parts, config: TrainConfig, device) -> Batch:
    """The trials of ``recordings``, padded to a common length, each observing its own units
    (``parts``: the network's rows of each recording's units)."""
    n_trials = sum(rec.n_trials for rec in recordings)
    n_time = max(rec.n_time for rec in recordings)
    data = np.zeros((n_trials, n_time, n_units))
    mask = np.zeros((n_trials, n_time), bool)
    units = np.zeros((n_trials, n_units), bool)
    n_in = recordings[0].n_inputs
    inputs = np.zeros((n_trials, n_time, n_in)) if n_in else None
    row = 0
    for rec, part in zip(recordings, parts):
        rows = slice(row, row + rec.n_trials)
        data[rows, : rec.n_time, part] = rec.data
        mask[rows, : rec.n_time] = rec.mask
        units[rows, part] = True
        if inputs is not None:
            inputs[rows, : rec.n_time] = rec.inputs
        row += rec.n_trials
    batch = Batch(
        _tensor(data, device),
        torch.as_tensor(mask, device=device),
        None if inputs is None else _tensor(inputs, device),
        units=torch.as_tensor(units, device=device),
    )
    return batch.with_log_factorial() if config.observation == "poisson" else batch


def _refit_K(model: LowRankRNN, latents, recordings) -> None:
    """K over every unit from the latent updates of every session's trials.

    Each session's latents come from its own fit, mapped into the network's gauge: the pooled
    regression is where the sessions' evidence on the dynamics meets.
    """
    now, following, inputs = [], [], []
    for lat, rec in zip(latents, recordings):
        pairs = rec.mask[:, 1:] & rec.mask[:, :-1]
        now.append(lat[:, :-1][pairs])
        following.append(lat[:, 1:][pairs])
        if rec.inputs is not None:
            inputs.append(rec.inputs[:, :-1][pairs])
    now_t = torch.as_tensor(np.concatenate(now))
    M, d, B = (getattr(model, n).detach().double().cpu() for n in ("M", "d", "B"))
    x = now_t @ M.T + d
    if inputs:
        x = x + torch.as_tensor(np.concatenate(inputs)) @ B.T
    K = refit_output_loadings(
        now_t,
        torch.as_tensor(np.concatenate(following)),
        activation(x, model.nonlinearity),
        alpha=model.alpha,
        ridge=1e-3,
    )
    model.K.copy_(K.to(model.K.dtype))


def _encode_tests(model, tests, parts, batch, config, prior, smooth_bins) -> torch.Tensor:
    """κ(0) of the held-out trials: least squares on the first bin (spike counts smoothed over
    ``smooth_bins``, as the estimator's encoder does), then maximum a posteriori."""
    M, B, d = (getattr(model, n).detach().cpu().double().numpy() for n in ("M", "B", "d"))
    gain = model.readout_gain.detach().cpu().double().numpy()
    offset = model.readout_offset.detach().cpu().double().numpy()
    starts = []
    for rec, part in zip(tests, parts):
        linearizer = _init.Linearizer(
            config.observation,
            model.nonlinearity,
            rec.bin_width,
            smooth_bins,
            gain[part],
            offset[part],
        )
        starts.append(
            _init.encode_initial(
                linearizer.first_potentials(rec.data, rec.mask),
                M[part],
                B[part],
                d[part],
                None if rec.inputs is None else rec.inputs[:, 0],
            )
        )
    start = _tensor(np.concatenate(starts), model.M.device)
    return infer_initial(model, start, batch, config, prior=prior)


# ---------------------------------------------------------------------- after training
def _set_noise_scale(model, initial, batch: Batch, config, scale) -> None:
    """σ_i := residual RMS of unit i over its observed training values (Gaussian, calcium)."""
    with torch.no_grad():
        expected = rollout_expected(model, initial, batch, config)
        resid = (batch.data - expected) ** 2
        observed = batch.observed()
        if observed is not None:
            resid = torch.where(observed, resid, 0.0)
        else:
            resid = resid * batch.mask[..., None]
        rms = (resid.sum((0, 1)) / batch.unit_counts().clamp(min=1).to(resid.dtype)).sqrt()
        floor = 1e-6 * torch.as_tensor(scale, dtype=rms.dtype, device=rms.device)
        model.log_noise_std.copy_(torch.maximum(rms, floor).log())


def _to_canonical_gauge(model, initial, train_batch: Batch, test_batch: Batch) -> torch.Tensor:
    """Move ``model`` to the canonical gauge over every trial's visited states; return A."""
    parts, masks = [], []
    n_train = train_batch.n_trials
    for batch, k0 in ((train_batch, initial[:n_train]), (test_batch, initial[n_train:])):
        with torch.no_grad():
            latents, _ = model(k0, batch.data.shape[1], inputs=batch.inputs)
        parts.append(latents.cpu().double().numpy())
        masks.append(batch.mask.cpu().numpy())
    n_time = max(p.shape[1] for p in parts)
    padded = [np.pad(p, ((0, 0), (0, n_time - p.shape[1]), (0, 0))) for p in parts]
    mask = np.concatenate([np.pad(m, ((0, 0), (0, n_time - m.shape[1]))) for m in masks])
    A = canonical_gauge(np.concatenate(padded), model.M.detach().cpu().double().numpy(), mask)
    A_t = torch.as_tensor(A, dtype=model.M.dtype, device=model.M.device)
    with torch.no_grad():
        model.M.copy_(model.M @ torch.linalg.inv(A_t))
        model.K.copy_(model.K @ A_t.T)
    return A_t


def _readout(model: LowRankRNN, activity: torch.Tensor, units: np.ndarray) -> torch.Tensor:
    """The readout g φ(x) + c of ``units`` only."""
    index = torch.as_tensor(units, device=activity.device)
    return model.readout_gain[index] * activity[..., index] + model.readout_offset[index]


def _expected(readout: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    return expected_observation(
        readout, config.observation, bin_width=config.bin_width, calcium_decay=config.calcium_decay
    )


def _trial_nll(rec: Recording, expected: np.ndarray, observation: str, noise_std) -> tuple:
    """Per-trial Σ −log p over observed values, and their counts."""
    y, w = rec.data, rec.mask[..., None]
    if observation == "poisson":
        lam = expected + 1e-8
        nll = lam - y * np.log(lam) + gammaln(y + 1.0)
    else:
        sigma = np.asarray(noise_std, np.float64)
        nll = 0.5 * ((y - expected) / sigma) ** 2 + np.log(sigma) + 0.5 * np.log(2 * np.pi)
    return (nll * w).sum((1, 2)), rec.mask.sum(1) * float(rec.n_units)


def _tensor(array, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array), dtype=torch.float32, device=device)
