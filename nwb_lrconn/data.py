"""Frozen dataclasses that cross subpackages (numpy only; no torch, pynwb or matplotlib).

Conventions used everywhere in nwb_lrconn:

- time is in seconds; ``bin_width`` is the width of one time bin (Δt) in seconds;
- arrays of activity are shaped ``(n_trials, n_time, n_units)``; per-unit loadings are
  ``(n_units, rank)``;
- the model: ``x_i(t) = m_i·κ(t) + b_i·u(t) + d_i`` and
  ``κ(t+1) = (1-α) κ(t) + (α/N) Σ_i k_i φ(x_i(t))``, with ``J = M Kᵀ / N``;
- the parameter vector θ used by the posterior is ``(M, K, B, d)`` flattened block by block, each
  block in C (row-major) order; :class:`ParameterBlock` records the layout.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._validation import check_array, check_choice, check_positive, check_positive_int

__all__ = [
    "RECORDING_KINDS",
    "OBSERVATION_MODELS",
    "NONLINEARITIES",
    "DISTRIBUTION_MODELS",
    "DISTRIBUTION_CHOICES",
    "SourceInfo",
    "Recording",
    "LowRankFit",
    "ParameterBlock",
    "PosteriorCovariance",
    "DegeneracyReport",
    "ConnectivityDistribution",
    "Provenance",
    "JointSummary",
    "Results",
]

RECORDING_KINDS = ("spikes", "rates", "calcium")
OBSERVATION_MODELS = ("gaussian", "poisson", "calcium")
NONLINEARITIES = ("tanh", "relu", "softplus")
DISTRIBUTION_MODELS = ("flows", "gaussian", "gmm", "skipped")
# What a run may ask for: "auto" picks by the number of units (inference.distribution).
DISTRIBUTION_CHOICES = ("auto", "flows", "gmm", "gaussian")


def _short(value: Any) -> str:
    """A value for a one-line repr: floats to 4 significant digits, long strings cut."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_short(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _summary(name: str, **fields: Any) -> str:
    """``Name(a=1, b='x')`` with each value through :func:`_short`."""
    return f"{name}(" + ", ".join(f"{k}={_short(v)}" for k, v in fields.items()) + ")"


class LoadingDims:
    """Mixin: ``n_units`` and ``rank`` read off loadings ``M`` of shape (n_units, rank).

    For the classes that hold loadings (arrays or tensors) without storing their sizes.
    """

    M: Any

    @property
    def n_units(self) -> int:
        """Number of units N."""
        return self.M.shape[0]

    @property
    def rank(self) -> int:
        """Rank R."""
        return self.M.shape[1]


class LoadingDimsWithInputs(LoadingDims):
    """:class:`LoadingDims` plus ``n_inputs`` read off input weights ``B`` (n_units, n_inputs)."""

    B: Any

    @property
    def n_inputs(self) -> int:
        """Number of input channels D_u."""
        return self.B.shape[1]


@dataclass(frozen=True, repr=False)
class SourceInfo:
    """Where a recording came from, for provenance and for linking results back to it.

    Attributes
    ----------
    identifier : str
        ``NWBFile.identifier`` of the source file ("" when not from NWB).
    path : str
        Local path or URL of the source file ("" when in memory).
    object_path : str
        Path inside the file of the fitted object, e.g. ``"units"`` or
        ``"processing/ophys/Fluorescence/RoiResponseSeries"``.
    table_path : str
        Path of the table whose rows are the rows of M and K: the Units table or the
        PlaneSegmentation.
    selection : dict
        JSON-serialisable description of what was selected (unit ids, columns, time range,
        trials table, window, epochs, normalisation).
    session : dict
        Identity of the recorded session, copied from the source file so that derived files
        can carry it: ``session_id``, ``session_start_time`` (ISO 8601), ``session_description``,
        ``nwb_version``, ``experimenter``, ``lab``, ``institution`` and ``subject`` (a dict of
        the Subject's fields: ``subject_id``, ``species``, ``sex``, ``age``, ...). Empty when
        not read from NWB.
    origin : dict
        Where the bytes came from: ``kind`` ("local", "url", "dandi" or "nwbfile"), and for
        remote sources ``url``; for DANDI assets also ``instance``, ``dandiset_id``,
        ``version``, ``asset_path``, ``asset_id``; ``sha256`` and ``size`` (bytes) when known.
    """

    identifier: str = ""
    path: str = ""
    object_path: str = ""
    table_path: str = ""
    selection: dict[str, Any] = field(default_factory=dict)
    session: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the source description as a JSON-serialisable dict."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        """Return the source description as a JSON string."""
        return json.dumps(
            {
                "identifier": self.identifier,
                "path": self.path,
                "object_path": self.object_path,
                "table_path": self.table_path,
                "selection": self.selection,
                "session": self.session,
                "origin": self.origin,
            },
            sort_keys=True,
            default=_json_default,
        )

    def __repr__(self) -> str:
        fields = {
            k: getattr(self, k)
            for k in ("identifier", "path", "object_path", "table_path")
            if getattr(self, k)
        }
        return _summary("SourceInfo", **fields)


@dataclass(frozen=True, repr=False)
class Recording:
    """Binned activity of a population, the input of every fit.

    Attributes
    ----------
    data : ndarray of shape (n_trials, n_time, n_units), float
        Spike counts per bin (``kind="spikes"``), rates or potentials (``"rates"``), or calcium
        traces (``"calcium"``). Bins outside ``mask`` hold 0 and are never used.
    mask : ndarray of shape (n_trials, n_time), bool
        True where a bin holds data (ragged trials are padded at the end and masked).
    bin_width : float
        Width of one bin in seconds.
    kind : {"spikes", "rates", "calcium"}
        What ``data`` holds.
    unit_ids : ndarray of shape (n_units,)
        Ids of the units / ROIs (the source table's ``id`` column).
    unit_rows : ndarray of shape (n_units,), int
        Row index of each unit in the source table (``source.table_path``).
    trial_start_times : ndarray of shape (n_trials,), float
        Time in seconds (session clock) of the start of each trial's first bin.
    inputs : ndarray of shape (n_trials, n_time, n_inputs), float, optional
        External inputs u(t) per bin; None when there are none.
    input_names : tuple of str
        One name per input channel.
    source : SourceInfo
        Provenance and the link back to the source objects.
    """

    data: np.ndarray
    mask: np.ndarray
    bin_width: float
    kind: str
    unit_ids: np.ndarray
    unit_rows: np.ndarray
    trial_start_times: np.ndarray
    inputs: np.ndarray | None = None
    input_names: tuple[str, ...] = ()
    source: SourceInfo = field(default_factory=SourceInfo)

    def __post_init__(self) -> None:
        data = check_array(self.data, "Recording.data", ndim=3, dtype=np.float64, finite=True)
        n_trials, n_time, n_units = data.shape
        if n_trials < 1 or n_time < 1 or n_units < 1:
            raise ValueError(
                "Recording.data must have at least one trial, one bin and one unit; "
                f"got shape {data.shape} (n_trials, n_time, n_units)."
            )
        mask = check_array(self.mask, "Recording.mask", shape=(n_trials, n_time), dtype=bool)
        check_positive(self.bin_width, "Recording.bin_width")
        check_choice(self.kind, "Recording.kind", RECORDING_KINDS)
        if self.kind == "spikes" and np.any(data < 0):
            raise ValueError("Recording.data holds spike counts, which must be >= 0.")
        unit_ids = check_array(self.unit_ids, "Recording.unit_ids", shape=(n_units,))
        unit_rows = check_array(self.unit_rows, "Recording.unit_rows", shape=(n_units,))
        starts = check_array(
            self.trial_start_times,
            "Recording.trial_start_times",
            shape=(n_trials,),
            dtype=np.float64,
        )
        inputs = self.inputs
        if inputs is not None:
            inputs = check_array(inputs, "Recording.inputs", ndim=3, dtype=np.float64, finite=True)
            if inputs.shape[:2] != (n_trials, n_time):
                raise ValueError(
                    f"Recording.inputs must have shape ({n_trials}, {n_time}, n_inputs) to match "
                    f"data; got {inputs.shape}."
                )
            if len(self.input_names) not in (0, inputs.shape[2]):
                raise ValueError(
                    f"Recording.input_names has {len(self.input_names)} names for "
                    f"{inputs.shape[2]} input channels."
                )
        if not mask.any(axis=1).all():
            empty = np.flatnonzero(~mask.any(axis=1)).tolist()
            raise ValueError(f"Recording.mask leaves trial(s) {empty} without any bin.")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "bin_width", float(self.bin_width))
        object.__setattr__(self, "unit_ids", unit_ids)
        object.__setattr__(self, "unit_rows", unit_rows.astype(np.int64))
        object.__setattr__(self, "trial_start_times", starts)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "input_names", tuple(self.input_names))

    @property
    def n_trials(self) -> int:
        """Number of trials (or windows)."""
        return self.data.shape[0]

    @property
    def n_time(self) -> int:
        """Number of bins of the longest trial."""
        return self.data.shape[1]

    @property
    def n_units(self) -> int:
        """Number of units / ROIs."""
        return self.data.shape[2]

    @property
    def n_inputs(self) -> int:
        """Number of external input channels (0 when none)."""
        return 0 if self.inputs is None else self.inputs.shape[2]

    def select_units(self, units: np.ndarray) -> Recording:
        """Return a new Recording holding only ``units`` (indices), in that order."""
        idx = np.asarray(units, dtype=np.int64)
        return Recording(
            data=self.data[:, :, idx],
            mask=self.mask,
            bin_width=self.bin_width,
            kind=self.kind,
            unit_ids=self.unit_ids[idx],
            unit_rows=self.unit_rows[idx],
            trial_start_times=self.trial_start_times,
            inputs=self.inputs,
            input_names=self.input_names,
            source=self.source,
        )

    def select_trials(self, trials: np.ndarray) -> Recording:
        """Return a new Recording holding only ``trials`` (indices), in that order."""
        idx = np.asarray(trials, dtype=np.int64)
        return Recording(
            data=self.data[idx],
            mask=self.mask[idx],
            bin_width=self.bin_width,
            kind=self.kind,
            unit_ids=self.unit_ids,
            unit_rows=self.unit_rows,
            trial_start_times=self.trial_start_times[idx],
            inputs=None if self.inputs is None else self.inputs[idx],
            input_names=self.input_names,
            source=self.source,
        )

    def __repr__(self) -> str:
        return _summary(
            "Recording", kind=self.kind, n_trials=self.n_trials, n_time=self.n_time,
            n_units=self.n_units, n_inputs=self.n_inputs, bin_width=self.bin_width,
            path=self.source.path,
        )  # fmt: skip


@dataclass(frozen=True, repr=False)
class LowRankFit:
    """A fitted low-rank RNN (stage 1), in the canonical gauge.

    Attributes
    ----------
    M, K : ndarray of shape (n_units, rank)
        Input-side and output-side loadings; ``J = M Kᵀ / n_units``.
    B : ndarray of shape (n_units, n_inputs)
        External-input weights (n_inputs may be 0).
    d : ndarray of shape (n_units,)
        Biases inside the nonlinearity.
    readout_gain, readout_offset : ndarray of shape (n_units,)
        Observation readout: rate = softplus(gain·φ(x) + offset) for Poisson (per second),
        gain·φ(x) + offset for Gaussian and calcium.
    noise_std : ndarray of shape (n_units,)
        Observation noise standard deviation (Gaussian / calcium); ones for Poisson.
    rank : int
        R.
    nonlinearity : {"tanh", "relu", "softplus"}
        φ.
    alpha : float
        Euler step Δt/τ.
    bin_width : float
        Δt in seconds.
    observation : {"gaussian", "poisson", "calcium"}
        Observation model.
    calcium_decay : float
        Per-bin decay of the exponential indicator kernel (0 = no kernel).
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t) per trial (canonical gauge), zero-padded outside ``latent_mask``.
    latent_mask : ndarray of shape (n_trials, n_time), bool
        The recording's mask.
    trial_start_times : ndarray of shape (n_trials,)
        Seconds; the time of each trial's first bin.
    loss_history : ndarray of shape (n_epochs, 2)
        Columns: training and held-out negative log-likelihood per observed value.
    metrics : dict of str to float
        Held-out metrics, e.g. ``log_likelihood``, ``bits_per_spike``, ``r2``.
    unit_quality : ndarray of shape (n_units,)
        Held-out per-unit quality (bits/spike for spikes, R² otherwise).
    train_trials, test_trials : ndarray of int
        Trial indices used for training and held out.
    unit_ids : ndarray of shape (n_units,)
        Ids of the fitted units.
    unit_rows : ndarray of shape (n_units,), int, optional
        Row of each fitted unit in the source table (``Recording.unit_rows``); None when
        unknown.
    """

    M: np.ndarray
    K: np.ndarray
    B: np.ndarray
    d: np.ndarray
    readout_gain: np.ndarray
    readout_offset: np.ndarray
    noise_std: np.ndarray
    rank: int
    nonlinearity: str
    alpha: float
    bin_width: float
    observation: str
    latents: np.ndarray
    latent_mask: np.ndarray
    trial_start_times: np.ndarray
    loss_history: np.ndarray
    metrics: dict[str, float]
    unit_quality: np.ndarray
    train_trials: np.ndarray
    test_trials: np.ndarray
    unit_ids: np.ndarray
    calcium_decay: float = 0.0
    unit_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        rank = check_positive_int(self.rank, "LowRankFit.rank")
        M = check_array(self.M, "LowRankFit.M", ndim=2, dtype=np.float64, finite=True)
        n_units = M.shape[0]
        if M.shape[1] != rank:
            raise ValueError(f"LowRankFit.M must have shape (n_units, {rank}); got {M.shape}.")
        K = check_array(self.K, "LowRankFit.K", shape=(n_units, rank), dtype=np.float64)
        B = check_array(self.B, "LowRankFit.B", ndim=2, dtype=np.float64)
        if B.shape[0] != n_units:
            raise ValueError(f"LowRankFit.B must have {n_units} rows; got shape {B.shape}.")
        check_choice(self.nonlinearity, "LowRankFit.nonlinearity", NONLINEARITIES)
        check_choice(self.observation, "LowRankFit.observation", OBSERVATION_MODELS)
        check_positive(self.alpha, "LowRankFit.alpha")
        check_positive(self.bin_width, "LowRankFit.bin_width")
        latents = check_array(self.latents, "LowRankFit.latents", ndim=3, dtype=np.float64)
        if latents.shape[2] != rank:
            raise ValueError(
                f"LowRankFit.latents must have shape (n_trials, n_time, {rank}); "
                f"got {latents.shape}."
            )
        for name in ("d", "readout_gain", "readout_offset", "noise_std", "unit_quality"):
            value = check_array(
                getattr(self, name), f"LowRankFit.{name}", shape=(n_units,), dtype=np.float64
            )
            object.__setattr__(self, name, value)
        object.__setattr__(self, "M", M)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "B", B)
        object.__setattr__(self, "latents", latents)
        object.__setattr__(
            self,
            "latent_mask",
            check_array(
                self.latent_mask, "LowRankFit.latent_mask", shape=latents.shape[:2], dtype=bool
            ),
        )
        object.__setattr__(self, "loss_history", np.asarray(self.loss_history, np.float64))
        object.__setattr__(self, "train_trials", np.asarray(self.train_trials, np.int64))
        object.__setattr__(self, "test_trials", np.asarray(self.test_trials, np.int64))
        object.__setattr__(
            self, "trial_start_times", np.asarray(self.trial_start_times, np.float64)
        )
        object.__setattr__(self, "metrics", {k: float(v) for k, v in self.metrics.items()})
        if self.unit_rows is not None:
            rows = check_array(self.unit_rows, "LowRankFit.unit_rows", shape=(n_units,))
            object.__setattr__(self, "unit_rows", rows.astype(np.int64))

    @property
    def n_units(self) -> int:
        """Number of units N."""
        return self.M.shape[0]

    def connectivity(self) -> np.ndarray:
        """Return the dense connectivity ``J = M Kᵀ / N`` of shape (n_units, n_units)."""
        return self.M @ self.K.T / self.n_units

    def __repr__(self) -> str:
        return _summary(
            "LowRankFit", n_units=self.n_units, rank=self.rank, n_inputs=self.B.shape[1],
            n_trials=self.latents.shape[0], observation=self.observation,
            nonlinearity=self.nonlinearity, bin_width=self.bin_width, metrics=self.metrics,
        )  # fmt: skip


@dataclass(frozen=True)
class ParameterBlock:
    """One named block of the flattened parameter vector θ.

    Attributes
    ----------
    name : str
        ``"M"``, ``"K"``, ``"B"`` or ``"d"``.
    shape : tuple of int
        Shape of the block before flattening (C order).
    """

    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Number of entries of the block."""
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(frozen=True, repr=False)
class PosteriorCovariance:
    """The Laplace posterior N(mean, (F + λI)⁻¹) over θ = (M, K, B, d) at a fit.

    F is the data precision of θ with the per-trial initial states profiled out and the readout
    marginalised or held (``readout``). Stored either dense (small problems) or, for large
    problems, as the exact per-unit marginal covariance blocks plus a low-rank cross-unit
    coupling (never a dense P×P matrix)::

        Σ = blockdiag(unit_blocksᵢ − (U diag(s) Uᵀ)ᵢᵢ) + U diag(s) Uᵀ,

    U = ``coupling_vectors`` (orthonormal columns), s = ``coupling_values`` (either sign).

    Attributes
    ----------
    mean : ndarray of shape (n_params,)
        θ at the fit, laid out as ``layout``.
    layout : tuple of ParameterBlock
        Order and shapes of the blocks of θ.
    prior_precision : float
        λ, the precision of the isotropic Gaussian prior.
    observation : str
        Observation model whose Fisher / Gauss-Newton matrix F was used.
    structure : {"dense", "blocks"}
        Which of the fields below hold the covariance.
    eigenvalues : ndarray of shape (n_eig,)
        Leading eigenvalues of the data precision F (descending); all of them when dense.
    eigenvectors : ndarray of shape (n_params, n_eig)
        Matching orthonormal eigenvectors.
    covariance : ndarray of shape (n_params, n_params), optional
        Dense covariance (``structure="dense"``).
    unit_indices : ndarray of shape (n_units, params_per_unit), int, optional
        For ``structure="blocks"``: the entries of θ that belong to each unit, in the order
        (m_i, k_i, b_i, d_i).
    unit_blocks : ndarray of shape (n_units, params_per_unit, params_per_unit), optional
        For ``structure="blocks"``: each unit's marginal posterior covariance.
    coupling_vectors : ndarray of shape (n_params, n_coupling), optional
        For ``structure="blocks"``: U above (absent: no cross-unit coupling).
    coupling_values : ndarray of shape (n_coupling,), optional
        For ``structure="blocks"``: s above.
    coupling_residual : float, default: 0.0
        For ``structure="blocks"``: the estimated fraction of the latent-mediated Fisher that
        the coupling leaves out (0 when exact; see :mod:`nwb_lrconn.inference.coupling`).
    readout : {"marginal", "held"}, default: "held"
        Whether the readout (gain, offset) was integrated out or held at its fitted value.
    """

    mean: np.ndarray
    layout: tuple[ParameterBlock, ...]
    prior_precision: float
    observation: str
    structure: str
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    covariance: np.ndarray | None = None
    unit_indices: np.ndarray | None = None
    unit_blocks: np.ndarray | None = None
    coupling_vectors: np.ndarray | None = None
    coupling_values: np.ndarray | None = None
    coupling_residual: float = 0.0
    readout: str = "held"

    def __post_init__(self) -> None:
        mean = check_array(self.mean, "PosteriorCovariance.mean", ndim=1, dtype=np.float64)
        n_params = sum(block.size for block in self.layout)
        if n_params != mean.size:
            raise ValueError(
                f"PosteriorCovariance.layout describes {n_params} parameters but mean has "
                f"{mean.size}."
            )
        check_positive(self.prior_precision, "PosteriorCovariance.prior_precision")
        check_choice(self.structure, "PosteriorCovariance.structure", ("dense", "blocks"))
        if self.structure == "dense" and self.covariance is None:
            raise ValueError("PosteriorCovariance with structure='dense' needs covariance.")
        if self.structure == "blocks" and (self.unit_blocks is None or self.unit_indices is None):
            raise ValueError(
                "PosteriorCovariance with structure='blocks' needs unit_blocks and unit_indices."
            )
        if (self.coupling_vectors is None) != (self.coupling_values is None):
            raise ValueError(
                "PosteriorCovariance needs both coupling_vectors and coupling_values, or neither."
            )
        if self.coupling_vectors is not None:
            vectors = check_array(
                self.coupling_vectors, "PosteriorCovariance.coupling_vectors", ndim=2,
                dtype=np.float64,
            )  # fmt: skip
            values = check_array(
                self.coupling_values, "PosteriorCovariance.coupling_values",
                shape=(vectors.shape[1],), dtype=np.float64,
            )  # fmt: skip
            if vectors.shape[0] != mean.size:
                raise ValueError(
                    f"PosteriorCovariance.coupling_vectors must have {mean.size} rows; got "
                    f"shape {vectors.shape}."
                )
            object.__setattr__(self, "coupling_vectors", vectors)
            object.__setattr__(self, "coupling_values", values)
        check_choice(self.readout, "PosteriorCovariance.readout", ("marginal", "held"))
        object.__setattr__(self, "coupling_residual", float(self.coupling_residual))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "layout", tuple(self.layout))

    @property
    def n_params(self) -> int:
        """Length of θ."""
        return self.mean.size

    def layout_json(self) -> str:
        """Return the parameter layout as JSON: a list of ``{"name", "shape", "offset"}``."""
        out, offset = [], 0
        for block in self.layout:
            out.append({"name": block.name, "shape": list(block.shape), "offset": offset})
            offset += block.size
        return json.dumps(out)

    @staticmethod
    def layout_from_json(text: str) -> tuple[ParameterBlock, ...]:
        """Inverse of :meth:`layout_json`."""
        return tuple(ParameterBlock(b["name"], tuple(b["shape"])) for b in json.loads(text))

    def __repr__(self) -> str:
        coupling = 0 if self.coupling_values is None else self.coupling_values.size
        return _summary(
            "PosteriorCovariance", n_params=self.n_params, structure=self.structure,
            observation=self.observation, prior_precision=self.prior_precision,
            readout=self.readout, coupling_rank=coupling,
        )  # fmt: skip


@dataclass(frozen=True, repr=False)
class DegeneracyReport:
    """Which directions of θ = (M, K, B, d) the data constrain.

    Attributes
    ----------
    spectrum : ndarray of shape (n_directions,)
        Eigenvalues of the data precision F restricted to the complement of the gauge directions,
        descending (the leading ones when F was not formed densely).
    gauge_basis : ndarray of shape (n_params, n_gauge)
        Orthonormal basis of the R² gauge directions (δM = -M E, δK = K Eᵀ).
    n_constrained, n_degenerate, n_gauge, n_total : int
        Counts; ``n_constrained + n_degenerate + n_gauge == n_total``.
    threshold : float
        Data precision above which a direction counts as constrained (the prior precision λ:
        posterior variance below half the prior variance).
    threshold_rule : str
        The rule in words.
    phi_singular_values : ndarray
        Singular values of the state matrix Φ (visited states × units).
    phi_effective_rank : int
        Effective rank of Φ.
    identifiable : bool
        Whether the visited states are rich enough for the conditional mean of K to be unique.
    verdict : str
        The result in plain language.
    unit_scores : ndarray of shape (n_units,)
        Fraction in [0, 1] of each unit's output loading that the data determine.
    """

    spectrum: np.ndarray
    gauge_basis: np.ndarray
    n_constrained: int
    n_degenerate: int
    n_gauge: int
    n_total: int
    threshold: float
    threshold_rule: str
    phi_singular_values: np.ndarray
    phi_effective_rank: int
    identifiable: bool
    verdict: str
    unit_scores: np.ndarray

    def __post_init__(self) -> None:
        total = self.n_constrained + self.n_degenerate + self.n_gauge
        if total != self.n_total:
            raise ValueError(
                f"DegeneracyReport counts do not add up: {self.n_constrained} constrained + "
                f"{self.n_degenerate} degenerate + {self.n_gauge} gauge != {self.n_total} total."
            )

    def __repr__(self) -> str:
        return _summary(
            "DegeneracyReport", n_constrained=self.n_constrained,
            n_degenerate=self.n_degenerate, n_gauge=self.n_gauge, n_total=self.n_total,
            phi_effective_rank=self.phi_effective_rank, identifiable=self.identifiable,
        )  # fmt: skip


@dataclass(frozen=True, repr=False)
class ConnectivityDistribution:
    """The maximum-entropy connectivity distribution (stage 3), as plain arrays.

    With ``model="flows"``, flow A is a CNF over z = (m, b, d) and flow B a conditional CNF over
    k given z; their weights are stored as named arrays (the velocity networks' ``state_dict``
    converted to numpy), never pickles. With ``model="gaussian"`` or ``"gmm"`` (few units), the
    same two slots hold a Gaussian mixture over z and a linear-Gaussian law of k given z. With
    ``model="skipped"`` (too few units for any distribution) the arrays are empty and
    ``reason`` says why.

    Attributes
    ----------
    flow_a_parameters, flow_b_parameters : dict of str to ndarray
        Parameters of the model of z and of the model of k given z (velocity-network weights
        for flows; ``weights``/``means``/``covariances`` and
        ``coefficients``/``residual_covariances`` for a mixture).
    architecture : dict
        JSON-serialisable description needed to rebuild the models (``kind``, dimensions,
        hidden widths, activation, ODE solver and step, standardisation constants).
    sigma : float
        Isotropic spread added to k at sampling time (0 = the identifiable core).
    ridge_lambda : float
        λ of the ridge (maximum-entropy prior) targets.
    n_virtual_units : int
        S, virtual units drawn per flow-B training step.
    training_curves : dict of str to ndarray
        E.g. ``flow_a_loss`` (n_steps,), ``flow_b_loss`` (n_steps,), ``flow_b_val`` (n_val, 2)
        with columns (step, loss).
    samples_z : ndarray of shape (n_samples, rank + n_inputs + 1)
        Drawn z = (m, b, d).
    samples_k : ndarray of shape (n_samples, rank)
        Drawn k at ``sigma``.
    validation_metrics : dict of str to float
        Held-out checks of the distribution.
    model : {"flows", "gaussian", "gmm", "skipped"}, default: "flows"
        Which model the distribution is.
    reason : str, default: ""
        One line saying why that model was used (e.g. the number of units against the
        threshold below which flows are not used).
    """

    flow_a_parameters: dict[str, np.ndarray]
    flow_b_parameters: dict[str, np.ndarray]
    architecture: dict[str, Any]
    sigma: float
    ridge_lambda: float
    n_virtual_units: int
    training_curves: dict[str, np.ndarray]
    samples_z: np.ndarray
    samples_k: np.ndarray
    validation_metrics: dict[str, float]
    model: str = "flows"
    reason: str = ""

    def __post_init__(self) -> None:
        check_choice(self.model, "ConnectivityDistribution.model", DISTRIBUTION_MODELS)
        if not isinstance(self.reason, str):
            raise TypeError(
                "ConnectivityDistribution.reason must be a string; "
                f"got {type(self.reason).__name__}."
            )

    def __repr__(self) -> str:
        return _summary(
            "ConnectivityDistribution", model=self.model, n_samples=self.samples_z.shape[0],
            z_dim=self.samples_z.shape[1] if self.samples_z.ndim == 2 else 0,
            sigma=self.sigma, n_virtual_units=self.n_virtual_units,
        )  # fmt: skip


@dataclass(frozen=True, repr=False)
class Provenance:
    """How results were produced.

    Attributes
    ----------
    software_version : str
        nwb_lrconn version.
    config_json : str
        The full run configuration as JSON.
    random_seed : int or None
        Seed of the run.
    source : SourceInfo
        Source file identifier, path and object paths.
    created : str
        ISO-8601 timestamp (UTC).
    """

    software_version: str
    config_json: str
    random_seed: int | None
    source: SourceInfo
    created: str

    def __repr__(self) -> str:
        return _summary(
            "Provenance", software_version=self.software_version, random_seed=self.random_seed,
            created=self.created, **({"path": self.source.path} if self.source.path else {}),
        )  # fmt: skip


@dataclass(frozen=True, repr=False)
class JointSummary:
    """Where one session's results sit in a joint fit of several sessions (one network).

    A joint fit (:class:`~nwb_lrconn.model.joint.JointLowRankRNN`) fits one low-rank network
    whose units are the union of every session's units; each session's results hold that
    session's units and latents in the network's shared gauge. The rows of the per-session
    arrays below follow the order of the sessions in the fit.

    Attributes
    ----------
    session : int
        Which session these results belong to.
    reference : int
        The session whose own fit started the network (its gauge).
    sources : tuple of str
        Path or URL of each session's source.
    identifiers : tuple of str
        ``NWBFile.identifier`` of each session's source ('' when not from NWB).
    n_units, n_trials : ndarray of shape (n_sessions,), int
        Units and trials of each session; session s's units are rows
        ``n_units[:s].sum()`` to ``n_units[:s + 1].sum()`` of the network.
    joint_log_likelihood, separate_log_likelihood : ndarray of shape (n_sessions,)
        Held-out log-likelihood per observed value (nats) of each session under the joint fit
        and under its own separate fit, on the same held-out trials.
    difference, stderr : ndarray of shape (n_sessions,)
        Joint minus separate, and its standard error over held-out trials.
    worse : ndarray of shape (n_sessions,), bool
        Sessions whose joint likelihood falls below their own fit's by more than two standard
        errors: their dynamics disagree with the others'.
    network_M, network_K : ndarray of shape (n_network_units, rank)
        The whole network's loadings (every session's units, in session order): its exact
        dynamics use all of them.
    network_B : ndarray of shape (n_network_units, n_inputs)
    network_d : ndarray of shape (n_network_units,)
    gauge_note : str
        What the shared gauge does and does not pin.
    note : str, default: ""
        Stages not run for the joint fit, and why.
    pooled : ConnectivityDistribution, optional
        The connectivity distribution on every session's units (shared gauge); the session's
        own distribution is ``Results.distribution``.
    dissimilarity : ndarray of shape (n_sessions, n_sessions), optional
        Dissimilarity D between the sessions' distributions.
    floor : ndarray of shape (n_sessions,), optional
        Each session's within-session floor of D.
    symmetry : ndarray of shape (n_sessions, rank, rank), optional
        The map of each session's latents applied before pooling.
    flagged : tuple of int, default: ()
        Sessions whose distribution is far from the others' (beyond their floors).
    pooled_reason : str, default: ""
        One line on the pooled distribution's model and flags.
    """

    session: int
    reference: int
    sources: tuple[str, ...]
    identifiers: tuple[str, ...]
    n_units: np.ndarray
    n_trials: np.ndarray
    joint_log_likelihood: np.ndarray
    separate_log_likelihood: np.ndarray
    difference: np.ndarray
    stderr: np.ndarray
    worse: np.ndarray
    network_M: np.ndarray
    network_K: np.ndarray
    network_B: np.ndarray
    network_d: np.ndarray
    gauge_note: str
    note: str = ""
    pooled: ConnectivityDistribution | None = None
    dissimilarity: np.ndarray | None = None
    floor: np.ndarray | None = None
    symmetry: np.ndarray | None = None
    flagged: tuple[int, ...] = ()
    pooled_reason: str = ""

    def __post_init__(self) -> None:
        n = len(self.sources)
        if not 0 <= self.session < n or not 0 <= self.reference < n:
            raise ValueError(
                f"JointSummary: session ({self.session}) and reference ({self.reference}) must "
                f"index one of the {n} sessions."
            )
        for name in ("identifiers", "n_units", "n_trials", "joint_log_likelihood", "worse"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"JointSummary.{name} must have one entry per session ({n}); got "
                    f"{len(getattr(self, name))}."
                )
        if self.network_M.shape[0] != int(np.sum(self.n_units)):
            raise ValueError(
                f"JointSummary.network_M must have one row per unit of every session "
                f"({int(np.sum(self.n_units))}); got {self.network_M.shape[0]}."
            )

    @property
    def n_sessions(self) -> int:
        """Number of sessions in the joint fit."""
        return len(self.sources)

    @property
    def units(self) -> np.ndarray:
        """Rows of this session's units in the network."""
        offsets = np.concatenate([[0], np.cumsum(self.n_units)]).astype(np.int64)
        return np.arange(offsets[self.session], offsets[self.session + 1])

    def verdict(self, session: int) -> str:
        """Whether pooling ``session`` with the others is warranted, in words.

        A session is flagged when the joint fit explains its held-out trials worse than its own
        fit does (``worse``: its dynamics disagree), or when its units' loading distribution is
        far from every other session's (``flagged``: a likelihood check cannot see a session
        whose dynamics are a part of the others', e.g. two of four attractors, recorded from a
        different circuit).
        """
        reasons = []
        if self.worse[session]:
            reasons.append("worse than its own fit")
        if session in self.flagged:
            reasons.append("its units' distribution is far from the others'")
        return "FLAGGED: " + "; ".join(reasons) if reasons else "pooling warranted"

    def network_fit(self, fit: LowRankFit) -> LowRankFit:
        """``fit`` (this session's) with the whole network's loadings: its M, K, B and d give
        the joint model's exact latent dynamics, and its latents are the session's.

        Only the dynamics are meaningful: the per-unit readout fields are placeholders (gain 1,
        offset 0, noise 1, quality NaN) and the unit ids are the network's rows.
        """
        n = self.network_M.shape[0]
        return replace(
            fit,
            M=self.network_M,
            K=self.network_K,
            B=self.network_B,
            d=self.network_d,
            readout_gain=np.ones(n),
            readout_offset=np.zeros(n),
            noise_std=np.ones(n),
            unit_quality=np.full(n, np.nan),
            unit_ids=np.arange(n),
            unit_rows=None,
        )

    def __repr__(self) -> str:
        return _summary(
            "JointSummary", session=self.session, n_sessions=self.n_sessions,
            reference=self.reference, worse=[int(s) for s in np.flatnonzero(self.worse)],
            pooled=self.pooled is not None,
        )  # fmt: skip


@dataclass(frozen=True, repr=False)
class Results:
    """Everything one run produces, ready to write into NWB or plot.

    Attributes
    ----------
    name : str
        Name of the fit group in the NWB file (unique within the results module).
    fit : LowRankFit
        Stage 1.
    provenance : Provenance
        How it was made.
    posterior : PosteriorCovariance, optional
        Laplace posterior.
    degeneracy : DegeneracyReport, optional
        Degeneracy analysis.
    distribution : ConnectivityDistribution, optional
        Stage 3.
    joint : JointSummary, optional
        Set when the fit is one session of a joint fit of several sessions.
    """

    name: str
    fit: LowRankFit
    provenance: Provenance
    posterior: PosteriorCovariance | None = None
    degeneracy: DegeneracyReport | None = None
    distribution: ConnectivityDistribution | None = None
    joint: JointSummary | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(
                f"Results.name must be a non-empty string without '/'; got {self.name!r}."
            )

    def _parts(self) -> dict[str, str]:
        """One short line per part: the summary both reprs show."""
        fit = self.fit
        parts = {
            "fit": f"{fit.n_units} units, rank {fit.rank}, {fit.observation}, {fit.nonlinearity}",
            "held-out": ", ".join(f"{k} {_short(v)}" for k, v in fit.metrics.items()) or "-",
            "posterior": "none",
            "degeneracy": "none",
            "distribution": "none",
        }
        if self.posterior is not None:
            parts["posterior"] = f"{self.posterior.structure}, {self.posterior.n_params} params"
        if (deg := self.degeneracy) is not None:
            parts["degeneracy"] = (
                f"{deg.n_constrained} constrained, {deg.n_degenerate} degenerate, "
                f"{deg.n_gauge} gauge of {deg.n_total}"
            )
        if (dist := self.distribution) is not None:
            parts["distribution"] = f"{dist.model}, sigma {_short(dist.sigma)}"
        if (joint := self.joint) is not None:
            parts["joint"] = f"session {joint.session + 1} of {joint.n_sessions}"
        return parts

    def __repr__(self) -> str:
        parts = self._parts()
        body = ", ".join(f"{k.replace('-', '_')}={v!r}" for k, v in parts.items())
        return f"Results(name={self.name!r}, {body})"

    def _repr_html_(self) -> str:
        """A small table for notebooks."""
        rows = {"name": self.name, **self._parts()}
        rows["software"] = f"nwb_lrconn {self.provenance.software_version}"
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
            f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
            for k, v in rows.items()
        )
        return f"<table><caption>Results</caption>{cells}</table>"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if hasattr(obj, "isoformat"):  # datetime, date
        return obj.isoformat()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")
