"""Observation simulators for ground-truth networks: rates, Poisson spikes, calcium.

Every simulator rolls the latent dynamics of a ground-truth network
(:class:`~nwb_lrconn.model.networks.GroundTruthNetwork`) from given initial latents (default:
the paper's 20×20 grid over [−2.4, 2.4]²) and returns a :class:`SimulatedSession` holding the
latents, the activations φ(x), the observations and the trial table. Trials are laid out on one
session clock (seconds), so spikes can be written with
``nwb_lrconn.io.write_units_nwb(path, session.spike_times, trials=session.trials)`` and calcium
with ``nwb_lrconn.io.write_ophys_nwb(path, session.continuous_traces(), rate=1 / bin_width,
trials=session.trials)``; :meth:`SimulatedSession.to_recording` skips the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_array, check_positive, check_positive_int, make_rng
from ..data import Recording
from .networks import GroundTruthNetwork, grid_initial_conditions, simulate_latents
from .nonlinearity import phi, softplus_inverse

__all__ = ["SimulatedSession", "simulate_rates", "simulate_spikes", "simulate_calcium"]


@dataclass(frozen=True)
class SimulatedSession:
    """A simulated recording with its ground truth.

    Attributes
    ----------
    network : GroundTruthNetwork
        The network that generated it.
    kind : {"rates", "spikes", "calcium"}
        What ``data`` holds.
    bin_width : float
        Δt in seconds.
    latents : ndarray of shape (n_trials, n_time, rank)
        True κ(t).
    activity : ndarray of shape (n_trials, n_time, n_units)
        True φ(x(t)).
    data : ndarray of shape (n_trials, n_time, n_units)
        Observations: rates (+ noise), spike counts per bin, or calcium traces.
    trial_start_times, trial_stop_times : ndarray of shape (n_trials,)
        Session-clock seconds; trial j covers ``[start, start + n_time · bin_width)``.
    readout_gain, readout_offset : ndarray of shape (n_units,)
        True readout (rate = softplus(g φ + c) in 1/s for spikes; trace = g φ + c through the
        kernel for calcium; 1 and 0 for rates).
    spike_times : list of ndarray or None
        Spike times in seconds, one sorted array per unit (spikes only).
    calcium_decay : float
        Per-bin decay of the indicator kernel (calcium only; 0 otherwise).
    """

    network: GroundTruthNetwork
    kind: str
    bin_width: float
    latents: np.ndarray
    activity: np.ndarray
    data: np.ndarray
    trial_start_times: np.ndarray
    trial_stop_times: np.ndarray
    readout_gain: np.ndarray
    readout_offset: np.ndarray
    spike_times: list[np.ndarray] | None = None
    calcium_decay: float = 0.0

    @property
    def trials(self) -> np.ndarray:
        """Trial table of shape (n_trials, 2): start and stop times in seconds."""
        return np.stack([self.trial_start_times, self.trial_stop_times], axis=1)

    def to_recording(self) -> Recording:
        """Return the observations as a :class:`~nwb_lrconn.data.Recording` (no file)."""
        n = self.network.n_units
        return Recording(
            data=self.data,
            mask=np.ones(self.data.shape[:2], dtype=bool),
            bin_width=self.bin_width,
            kind=self.kind,
            unit_ids=np.arange(n),
            unit_rows=np.arange(n),
            trial_start_times=self.trial_start_times,
        )

    def continuous_traces(self) -> np.ndarray:
        """Trials concatenated in time, shape (n_trials · n_time, n_units).

        Meaningful when trials are contiguous (``inter_trial_interval=0``), as
        :func:`simulate_calcium` lays them out.
        """
        return self.data.reshape(-1, self.data.shape[2])


def _latents(network, initial, n_time, process_noise, rng):
    if not isinstance(network, GroundTruthNetwork):
        raise TypeError(f"network must be a GroundTruthNetwork; got {type(network).__name__}.")
    initial = grid_initial_conditions() if initial is None else initial
    initial = check_array(initial, "initial", shape=(None, network.rank), dtype=np.float64)
    n_time = check_positive_int(n_time, "n_time", minimum=2)
    check_positive(process_noise, "process_noise", allow_zero=True)
    latents = simulate_latents(
        network.M,
        network.K,
        initial,
        n_time,
        alpha=network.alpha,
        nonlinearity=network.nonlinearity,
        noise_std=process_noise,
        random_state=rng,
    )
    return latents, phi(latents @ network.M.T, network.nonlinearity)


def _clock(n_trials, n_time, bin_width, gap):
    check_positive(gap, "inter_trial_interval", allow_zero=True)
    duration = n_time * bin_width
    starts = np.arange(n_trials) * (duration + gap)
    return starts, starts + duration


def simulate_rates(
    network: GroundTruthNetwork,
    *,
    initial: np.ndarray | None = None,
    n_time: int = 100,
    bin_width: float = 0.01,
    noise_std: float = 0.0,
    process_noise: float = 0.0,
    random_state=None,
) -> SimulatedSession:
    """Rates φ(x) (+ Gaussian noise), the paper's noiseless setting by default.

    Parameters
    ----------
    network : GroundTruthNetwork
        Ground truth.
    initial : ndarray of shape (n_trials, rank), optional
        κ(0) per trial; default the 20×20 grid over [−2.4, 2.4]².
    n_time : int, default: 100
        Bins per trial.
    bin_width : float, default: 0.01
        Δt in seconds (τ = Δt/α).
    noise_std : float, default: 0
        Standard deviation of additive observation noise.
    process_noise : float, default: 0
        Standard deviation of latent noise per step.
    random_state : int, numpy Generator or None
        Randomness.

    Returns
    -------
    SimulatedSession
        ``kind="rates"``; trials back to back on the session clock.
    """
    rng = make_rng(random_state)
    bin_width = check_positive(bin_width, "bin_width")
    noise_std = check_positive(noise_std, "noise_std", allow_zero=True)
    latents, activity = _latents(network, initial, n_time, process_noise, rng)
    data = activity + noise_std * rng.standard_normal(activity.shape) if noise_std else activity
    starts, stops = _clock(latents.shape[0], latents.shape[1], bin_width, 0.0)
    n = network.n_units
    return SimulatedSession(
        network,
        "rates",
        bin_width,
        latents,
        activity,
        data,
        starts,
        stops,
        np.ones(n),
        np.zeros(n),
    )


def simulate_spikes(
    network: GroundTruthNetwork,
    *,
    initial: np.ndarray | None = None,
    n_time: int = 100,
    bin_width: float = 0.02,
    rate_range: tuple[float, float] = (1.0, 30.0),
    inter_trial_interval: float = 0.5,
    process_noise: float = 0.0,
    random_state=None,
) -> SimulatedSession:
    """Poisson spikes with realistic rates: rate_i(t) = softplus(g_i φ(x_i(t)) + c_i) in 1/s.

    Each unit gets a floor rate drawn uniformly from [lo, 3 lo] and a ceiling from
    [hi / 3, hi] (``rate_range = (lo, hi)``); g_i and c_i map φ = −1 and +1 onto them (the sign of
    g_i is random, so some units fire more at negative potentials). Spike counts per bin are
    Poisson; spike times are placed uniformly inside their bin.

    Parameters
    ----------
    network : GroundTruthNetwork
        Ground truth.
    initial : ndarray of shape (n_trials, rank), optional
        κ(0) per trial; default the 20×20 grid.
    n_time : int, default: 100
        Bins per trial.
    bin_width : float, default: 0.02
        Δt in seconds.
    rate_range : (float, float), default: (1, 30)
        Lowest floor and highest ceiling rate in Hz.
    inter_trial_interval : float, default: 0.5
        Silent gap between trials in seconds.
    process_noise : float, default: 0
        Latent noise per step.
    random_state : int, numpy Generator or None
        Randomness.

    Returns
    -------
    SimulatedSession
        ``kind="spikes"``, with ``spike_times`` and the trial table.
    """
    rng = make_rng(random_state)
    bin_width = check_positive(bin_width, "bin_width")
    lo, hi = (check_positive(r, "rate_range") for r in rate_range)
    if not 3 * lo < hi / 3:
        raise ValueError(
            f"rate_range must satisfy 3·low < high/3 so floors and ceilings do not overlap; "
            f"got {rate_range}."
        )
    latents, activity = _latents(network, initial, n_time, process_noise, rng)
    n_trials, n_time, n_units = activity.shape
    floor = rng.uniform(lo, 3 * lo, n_units)
    ceiling = rng.uniform(hi / 3, hi, n_units)
    a, b = softplus_inverse(floor), softplus_inverse(ceiling)
    sign = np.where(rng.random(n_units) < 0.5, -1.0, 1.0)
    gain, offset = sign * (b - a) / 2, (a + b) / 2
    rate = np.logaddexp(0.0, gain * activity + offset)
    counts = rng.poisson(rate * bin_width).astype(np.float64)
    starts, stops = _clock(n_trials, n_time, bin_width, inter_trial_interval)
    bin_starts = starts[:, None] + bin_width * np.arange(n_time)[None]  # (n_trials, n_time)
    spike_times = []
    for i in range(n_units):
        reps = counts[:, :, i].astype(np.int64).ravel()
        t = np.repeat(bin_starts.ravel(), reps) + bin_width * rng.random(reps.sum())
        spike_times.append(np.sort(t))
    return SimulatedSession(
        network,
        "spikes",
        bin_width,
        latents,
        activity,
        counts,
        starts,
        stops,
        gain,
        offset,
        spike_times=spike_times,
    )


def simulate_calcium(
    network: GroundTruthNetwork,
    *,
    initial: np.ndarray | None = None,
    n_time: int = 100,
    bin_width: float = 0.01,
    decay: float = 0.5,
    noise_std: float = 0.05,
    process_noise: float = 0.0,
    random_state=None,
) -> SimulatedSession:
    """Calcium traces: g_i φ(x_i) + c_i through an exponential indicator kernel, plus noise.

    The kernel is the one of the ``"calcium"`` observation model: s(t) = a s(t−1) + (1 − a) r(t)
    with s(0) = r(0), a = ``decay`` per bin. Gains are drawn from [0.5, 1.5] and offsets from
    [0, 1] (ΔF/F-like units); noise is Gaussian with standard deviation ``noise_std``. Trials are
    contiguous on the session clock, so :meth:`SimulatedSession.continuous_traces` is one
    regularly sampled series.

    Parameters
    ----------
    network : GroundTruthNetwork
        Ground truth.
    initial : ndarray of shape (n_trials, rank), optional
        κ(0) per trial; default the 20×20 grid.
    n_time : int, default: 100
        Frames per trial.
    bin_width : float, default: 0.01
        Frame interval in seconds.
    decay : float, default: 0.5
        Per-frame decay a in [0, 1).
    noise_std : float, default: 0.05
        Observation noise.
    process_noise : float, default: 0
        Latent noise per step.
    random_state : int, numpy Generator or None
        Randomness.

    Returns
    -------
    SimulatedSession
        ``kind="calcium"``.
    """
    rng = make_rng(random_state)
    bin_width = check_positive(bin_width, "bin_width")
    decay = check_positive(decay, "decay", allow_zero=True)
    if decay >= 1:
        raise ValueError(f"decay must lie in [0, 1); got {decay!r}.")
    noise_std = check_positive(noise_std, "noise_std", allow_zero=True)
    latents, activity = _latents(network, initial, n_time, process_noise, rng)
    n_trials, n_time, n_units = activity.shape
    gain, offset = rng.uniform(0.5, 1.5, n_units), rng.uniform(0.0, 1.0, n_units)
    drive = gain * activity + offset
    trace = np.empty_like(drive)
    trace[:, 0] = drive[:, 0]
    for t in range(1, n_time):
        trace[:, t] = decay * trace[:, t - 1] + (1 - decay) * drive[:, t]
    data = trace + noise_std * rng.standard_normal(trace.shape)
    starts, stops = _clock(n_trials, n_time, bin_width, 0.0)
    return SimulatedSession(
        network,
        "calcium",
        bin_width,
        latents,
        activity,
        data,
        starts,
        stops,
        gain,
        offset,
        calcium_decay=decay,
    )
