"""Run configuration: frozen dataclasses that validate themselves and round-trip to JSON.

A :class:`RunConfig` holds one section per stage of :func:`nwb_lrconn.pipeline.run`:

- :class:`ReadConfig`: what to read from the source file and how to bin it;
- :class:`FitConfig`: the stage-1 low-rank RNN fit (rank, or ``"auto"`` over a range of ranks);
- :class:`PosteriorConfig`: the Laplace posterior and the degeneracy report;
- :class:`DistributionConfig`: the maximum-entropy connectivity distribution (Connector flows).

The full configuration is stored as JSON in every result (``Provenance.config_json``), so a fit can
be reproduced from the file that holds it. Configurations load from TOML or JSON files with one
table per section::

    seed = 0
    [read]
    bin_width = 0.02
    trials = "trials"
    [fit]
    rank = "auto"
    ranks = [1, 2, 3]

Each hyperparameter is defined once: its default lives in the section here, and the signature of
what it configures reads it (``LowRankRNNEstimator(max_epochs=FitConfig.max_epochs, ...)``,
``laplace_posterior``, ``ConnectorEstimator``, ``MixtureConnectorEstimator``), so an empty section
means the library's defaults. The one exception is ``distribution.sigma`` (see
:class:`DistributionConfig`).

Times are in seconds throughout.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from ._validation import (
    check_choice,
    check_positive,
    check_positive_int,
    check_positive_or_auto,
)
from .data import DISTRIBUTION_CHOICES

__all__ = [
    "SOURCE_KINDS",
    "MAX_SEED",
    "ReadConfig",
    "FitConfig",
    "PosteriorConfig",
    "DistributionConfig",
    "RunConfig",
]

SOURCE_KINDS = ("units", "ophys", "sorting")
MAX_SEED = 2**32 - 1
"""Largest random seed (numpy and torch both accept it on every platform)."""
_NORMALIZE = ("auto", None, "zscore", "dff")
_WHERE_OPS = ("==", "!=", "<", "<=", ">", ">=", "in")
_COVARIANCE_TYPES = ("auto", "full", "diag")


def _check_optional_positive(value: Any, name: str) -> float | None:
    return None if value is None else check_positive(value, name)


def _check_str(value: Any, name: str, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty string; got {value!r}.")


def _as_tuple(value: Any) -> tuple | None:
    return None if value is None else tuple(value)


def _is_clause(value: Any) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 3
        and isinstance(value[0], str)
        and value[1] in _WHERE_OPS
    )


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _normalise_where(where: Any) -> tuple[Any, ...]:
    """Return ``where`` as a hashable (column, op, value) triple or a tuple of triples."""
    if _is_clause(where):
        return (where[0], where[1], _freeze(where[2]))
    if isinstance(where, (tuple, list)) and where and all(_is_clause(c) for c in where):
        return tuple((c[0], c[1], _freeze(c[2])) for c in where)
    raise ValueError(
        "read.where must be a boolean column name, (column, operator, value) with operator one "
        f"of {list(_WHERE_OPS)}, or a list of such triples; got {where!r}."
    )


@dataclass(frozen=True)
class ReadConfig:
    """What to read from the source and how to bin it (the keywords of the io readers).

    Attributes
    ----------
    source : {"units", "ophys", "sorting"}, default: "units"
        Spike-sorted units in an NWB Units table, calcium traces in a RoiResponseSeries, or a
        spikeinterface sorting object (in-memory sources only).
    units_path : str, default: "units"
        Path of the Units table in the file (``source="units"``).
    series_path : str, optional
        Path of the RoiResponseSeries (``source="ophys"``); required when the file holds several.
    bin_width : float or None, default: 0.02
        Bin width in seconds. ``None`` keeps the native frame period (ophys only).
    trials : str, optional
        A TimeIntervals table ("trials" or "intervals/<name>") whose rows are the trials.
    event : str, optional
        Column of ``trials`` to align to; needs ``window``.
    window : tuple of float, optional
        ``(before, after)`` in seconds around ``event`` (or around each trial start).
    window_length : float, optional
        Without trials: split continuous data into windows of this many seconds.
    epochs : str or tuple, optional
        Without trials: a TimeIntervals table whose intervals restrict the data, optionally
        with a label filter: ``"epochs"``, ``("epochs", "wake")`` or
        ``("epochs", column, value)``.
    unit_ids : tuple of int, optional
        Ids of the units/ROIs to keep (default all).
    where : str or tuple, optional
        Filter on the Units table or the PlaneSegmentation: a boolean column name
        (``"iscell"``), ``(column, operator, value)`` such as ``("quality", "==", "good")`` or
        ``("location", "in", ("ADn", "PoS"))``, or a tuple of those (combined with AND).
    cells_only : bool or None, default: None
        Calcium: keep only the ROIs a PlaneSegmentation's ``iscell`` column (suite2p) classifies
        as cells. None does so when the column exists and no ``unit_ids``/``where`` is given;
        False keeps every ROI.
    inputs : tuple of str, optional
        Paths of TimeSeries and/or trial event columns binned into external inputs u(t).
    time_range : tuple of float, optional
        ``(start, stop)`` in seconds.
    normalize : {"auto", None, "zscore", "dff"}, default: "auto"
        Normalisation of calcium traces per ROI. "auto" z-scores calcium (which suits raw
        fluorescence and ΔF/F alike: the calcium readout has its own gain and offset per ROI)
        and leaves spikes alone; None keeps the stored values.
    min_spikes : int, default: 1
        Units with fewer spikes in range are dropped (with a warning).
    """

    source: str = "units"
    units_path: str = "units"
    series_path: str | None = None
    bin_width: float | None = 0.02
    trials: str | None = None
    event: str | None = None
    window: tuple[float, float] | None = None
    window_length: float | None = None
    epochs: str | tuple[str, ...] | None = None
    unit_ids: tuple[int, ...] | None = None
    where: str | tuple[Any, ...] | None = None
    cells_only: bool | None = None
    inputs: tuple[str, ...] | None = None
    time_range: tuple[float, float] | None = None
    normalize: str | None = "auto"
    min_spikes: int = 1

    def __post_init__(self) -> None:
        check_choice(self.source, "read.source", SOURCE_KINDS)
        _check_str(self.units_path, "read.units_path", optional=False)
        for name in ("series_path", "trials", "event"):
            _check_str(getattr(self, name), f"read.{name}")
        if self.epochs is not None and not isinstance(self.epochs, str):
            epochs = tuple(self.epochs)
            if len(epochs) not in (2, 3) or not all(isinstance(e, str) for e in epochs[:2]):
                raise ValueError(
                    "read.epochs must be a table name, (table, label) or (table, column, value); "
                    f"got {self.epochs!r}."
                )
            object.__setattr__(self, "epochs", epochs)
        _check_str(self.epochs if isinstance(self.epochs, str) else "x", "read.epochs")
        if self.bin_width is None:
            if self.source != "ophys":
                raise ValueError(
                    f"read.bin_width must be given for source={self.source!r}; got None "
                    "(only ophys sources may keep the native frame period)."
                )
        else:
            object.__setattr__(self, "bin_width", check_positive(self.bin_width, "read.bin_width"))
        object.__setattr__(
            self,
            "window_length",
            _check_optional_positive(self.window_length, "read.window_length"),
        )
        for name in ("window", "time_range"):
            value = _as_tuple(getattr(self, name))
            if value is not None:
                if len(value) != 2:
                    raise ValueError(
                        f"read.{name} must be a pair (start, stop) in seconds; got {value!r}."
                    )
                value = (float(value[0]), float(value[1]))
            object.__setattr__(self, name, value)
        if self.time_range is not None and not self.time_range[0] < self.time_range[1]:
            raise ValueError(
                f"read.time_range must satisfy start < stop; got {self.time_range!r}."
            )
        if self.window is not None and not -self.window[0] < self.window[1]:
            raise ValueError(
                "read.window is (before, after) around the event and must span a positive "
                f"duration (after > -before); got {self.window!r}."
            )
        if self.event is not None and self.window is None:
            raise ValueError(
                "read.event needs read.window: aligning to an event column needs a "
                f"(before, after) window; got event={self.event!r}, window=None."
            )
        if (self.event is not None or self.window is not None) and self.trials is None:
            raise ValueError(
                "read.event and read.window need read.trials (the table of trials to align to); "
                f"got event={self.event!r}, window={self.window!r}, trials=None."
            )
        if self.trials is not None and self.epochs is not None:
            raise ValueError(
                "read.trials cannot be combined with read.epochs: use trials, or continuous "
                "windows (read.window_length) within epochs."
            )
        if self.unit_ids is not None:
            ids = tuple(self.unit_ids)
            for uid in ids:
                check_positive_int(uid, "read.unit_ids entries", minimum=0)
            object.__setattr__(self, "unit_ids", tuple(int(u) for u in ids))
        if self.where is not None and not isinstance(self.where, str):
            object.__setattr__(self, "where", _normalise_where(self.where))
        if self.inputs is not None:
            inputs = tuple(self.inputs)
            for name in inputs:
                _check_str(name, "read.inputs entries", optional=False)
            object.__setattr__(self, "inputs", inputs)
        if self.source == "sorting":
            given = [n for n in ("trials", "epochs", "inputs", "where") if getattr(self, n)]
            if given:
                raise ValueError(
                    f"read.{given[0]} is not available for source='sorting' (a spikeinterface "
                    "sorting has no NWB tables); use read.window_length and read.time_range."
                )
        check_choice(self.normalize, "read.normalize", _NORMALIZE)
        if self.cells_only is not None and not isinstance(self.cells_only, bool):
            raise TypeError(
                f"read.cells_only must be true, false or absent; got {self.cells_only!r}."
            )
        if self.cells_only is not None and self.source != "ophys":
            raise ValueError(
                "read.cells_only selects calcium ROIs (source='ophys'); it cannot apply to "
                f"source={self.source!r}: use read.where or read.unit_ids."
            )
        if self.normalize not in (None, "auto") and self.source != "ophys":
            raise ValueError(
                f"read.normalize applies to calcium traces (source='ophys'); got "
                f"normalize={self.normalize!r} with source={self.source!r}."
            )
        check_positive_int(self.min_spikes, "read.min_spikes", minimum=0)

    def reader_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the io reader of this source kind (``None`` entries dropped).

        Returns
        -------
        dict
            For ``"units"``: the keywords of ``read_units``; for ``"ophys"``: ``read_ophys``;
            for ``"sorting"``: ``read_sorting``.
        """
        common: dict[str, Any] = {"bin_width": self.bin_width, "window_length": self.window_length}
        if self.source != "sorting":
            common.update(trials=self.trials, epochs=self.epochs, time_range=self.time_range)
        if self.source == "units":
            extra = {
                "units_path": self.units_path,
                "unit_ids": None if self.unit_ids is None else list(self.unit_ids),
                "where": self.where,
                "event": self.event,
                "window": self.window,
                "min_spikes": self.min_spikes,
                "inputs": None if self.inputs is None else list(self.inputs),
            }
        elif self.source == "ophys":
            extra = {
                "series_path": self.series_path,
                "normalize": "zscore" if self.normalize == "auto" else self.normalize,
                "unit_ids": None if self.unit_ids is None else list(self.unit_ids),
                "where": self.where,
                "cells_only": self.cells_only,
                "event": self.event,
                "window": self.window,
                "inputs": None if self.inputs is None else list(self.inputs),
            }
        else:
            extra = {
                "unit_ids": None if self.unit_ids is None else list(self.unit_ids),
                "time_range": self.time_range,
                "min_spikes": self.min_spikes,
            }
        return {k: v for k, v in {**common, **extra}.items() if v is not None}


@dataclass(frozen=True)
class FitConfig:
    """Stage 1: the low-rank RNN fit (keywords of ``LowRankRNNEstimator``).

    Attributes
    ----------
    rank : int or "auto", default: 2
        Rank R, or ``"auto"`` to fit every rank in ``ranks`` and keep the one with the best
        held-out log-likelihood (the curve is kept in ``LowRankFit.metrics``).
    ranks : tuple of int, default: (1, 2, 3)
        Ranks tried when ``rank="auto"``.
    observation : {"auto", "gaussian", "poisson", "calcium"}, default: "auto"
        Observation model; "auto" follows the recording kind.
    nonlinearity : {"tanh", "relu", "softplus"}, default: "tanh"
        φ.
    alpha : float, optional
        Euler step Δt/τ. Give ``alpha`` or ``tau``, not both; default the estimator's (0.1).
    tau : float, optional
        Time constant in seconds; ``alpha = bin_width / tau``.
    max_epochs : int, default: 500
        Maximum number of training epochs.
    lbfgs_rounds : int, default: 30
        Upper bound on rounds of 10 full-batch L-BFGS steps after Adam (0 = none).
    refit_units : bool, default: True
        Refit every unit's (m, b, d, g, c) on the fitted latents after the gradient phases,
        kept only if the held-out loss drops (see ``LowRankRNNEstimator``).
    lr : float or "auto", default: "auto"
        Adam learning rate; "auto" is 2e-2 for Poisson spike counts and 5e-3 otherwise (see
        ``LowRankRNNEstimator``).
    batch_size : int or None, default: 64
        Trials per optimisation step (None: all training trials).
    test_fraction : float, default: 0.2
        Fraction of trials held out for early stopping and metrics.
    patience : int, default: 20
        Epochs without progress (see ``tol``) before Adam hands over to L-BFGS (whose rounds
        stop after ``max(2, patience // 6)`` rounds without progress); without process noise,
        as many as the progress so far took when those are fewer (at least ``min(patience, 5)``).
    tol : float, default: 0.01
        Smallest decrease of the held-out loss that counts as progress, as a fraction of its
        standard error across held-out trials (0: every decrease counts).
    weight_decay : float, default: 0.0
        L2 penalty on the network parameters.
    process_noise : float or "auto", default: "auto"
        Standard deviation of latent noise injected into training rollouts; "auto" is 0.05 for
        Poisson spike counts and 0 otherwise (see ``LowRankRNNEstimator``).
    calcium_decay : float, default: 0.0
        Per-bin decay of the calcium indicator kernel (0 = no kernel).
    smoothing : float, optional
        Gaussian width (seconds) of the spike smoothing used for initialisation.
    """

    rank: int | str = 2
    ranks: tuple[int, ...] = (1, 2, 3)
    observation: str = "auto"
    nonlinearity: str = "tanh"
    alpha: float | None = None
    tau: float | None = None
    max_epochs: int = 500
    lbfgs_rounds: int = 30
    refit_units: bool = True
    lr: float | str = "auto"
    batch_size: int | None = 64
    test_fraction: float = 0.2
    patience: int = 20
    tol: float = 0.01
    weight_decay: float = 0.0
    process_noise: float | str = "auto"
    calcium_decay: float = 0.0
    smoothing: float | None = None

    def __post_init__(self) -> None:
        if self.rank != "auto":
            if isinstance(self.rank, str):
                raise ValueError(
                    f"fit.rank must be a positive integer or 'auto'; got {self.rank!r}."
                )
            check_positive_int(self.rank, "fit.rank")
        ranks = tuple(self.ranks)
        if not ranks:
            raise ValueError("fit.ranks must list at least one rank; got an empty list.")
        for r in ranks:
            check_positive_int(r, "fit.ranks entries")
        if len(set(ranks)) != len(ranks):
            raise ValueError(f"fit.ranks must not repeat a rank; got {list(ranks)}.")
        object.__setattr__(self, "ranks", tuple(sorted(int(r) for r in ranks)))
        check_choice(
            self.observation, "fit.observation", ("auto", "gaussian", "poisson", "calcium")
        )
        check_choice(self.nonlinearity, "fit.nonlinearity", ("tanh", "relu", "softplus"))
        if self.alpha is not None and self.tau is not None:
            raise ValueError(
                f"give fit.alpha or fit.tau, not both; got alpha={self.alpha!r}, tau={self.tau!r}."
            )
        if self.alpha is not None:
            alpha = check_positive(self.alpha, "fit.alpha")
            if alpha > 1:
                raise ValueError(f"fit.alpha must be in (0, 1]; got {alpha}.")
            object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "tau", _check_optional_positive(self.tau, "fit.tau"))
        check_positive_int(self.max_epochs, "fit.max_epochs")
        check_positive_int(self.lbfgs_rounds, "fit.lbfgs_rounds", minimum=0)
        _check_bool(self.refit_units, "fit.refit_units")
        object.__setattr__(self, "lr", check_positive_or_auto(self.lr, "fit.lr"))
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "fit.batch_size")
        fraction = check_positive(self.test_fraction, "fit.test_fraction")
        if not fraction < 1:
            raise ValueError(f"fit.test_fraction must be in (0, 1); got {fraction}.")
        object.__setattr__(self, "test_fraction", fraction)
        check_positive_int(self.patience, "fit.patience")
        object.__setattr__(self, "tol", check_positive(self.tol, "fit.tol", allow_zero=True))
        value = check_positive(self.weight_decay, "fit.weight_decay", allow_zero=True)
        object.__setattr__(self, "weight_decay", value)
        noise = check_positive_or_auto(self.process_noise, "fit.process_noise", allow_zero=True)
        object.__setattr__(self, "process_noise", noise)
        decay = check_positive(self.calcium_decay, "fit.calcium_decay", allow_zero=True)
        if not decay < 1:
            raise ValueError(f"fit.calcium_decay must be in [0, 1); got {decay}.")
        object.__setattr__(self, "calcium_decay", decay)
        object.__setattr__(
            self, "smoothing", _check_optional_positive(self.smoothing, "fit.smoothing")
        )

    def estimator_kwargs(self, rank: int) -> dict[str, Any]:
        """Keyword arguments of ``LowRankRNNEstimator`` for one ``rank`` (seed/device excluded)."""
        names = [f.name for f in dataclasses.fields(self) if f.name not in ("rank", "ranks")]
        return {"rank": int(rank), **{name: getattr(self, name) for name in names}}

    @property
    def candidate_ranks(self) -> tuple[int, ...]:
        """The ranks to fit: ``ranks`` when ``rank="auto"``, else ``(rank,)``."""
        return self.ranks if self.rank == "auto" else (int(self.rank),)


@dataclass(frozen=True)
class PosteriorConfig:
    """The Laplace posterior and the degeneracy report.

    Attributes
    ----------
    enabled : bool, default: True
        Compute the posterior and the degeneracy report.
    prior_precision : float, default: 1.0
        λ of the isotropic Gaussian prior; directions whose data precision exceeds it count as
        constrained.
    structure : {"auto", "dense", "blocks"}, default: "auto"
        Storage of the covariance: dense for small problems, per-unit blocks plus leading
        eigenpairs otherwise.
    readout : {"marginal", "held"}, default: "marginal"
        Integrate the readout gain and offset out, or hold them at their fitted values.
    n_eigenpairs : int, optional
        Leading eigenpairs of the data precision kept (default: the posterior's choice).
    max_dense_params : int, optional
        When given, ``structure="auto"`` stores the covariance densely exactly when there are at
        most this many parameters; by default the choice follows the estimated cost
        (``budget_s``).
    budget_s : float, default: 40.0
        Time budget in nominal seconds on 2 CPU cores: the dense form is used when it fits, and
        otherwise it caps the rank of the structured form's latent coupling.
    coupling_tol : float, default: 3e-4
        Structured form: stop enlarging the coupling subspace once at most this fraction of the
        latent-mediated Fisher information lies outside it.
    max_coupling_rank : int, optional
        Structured form: largest dimension of the coupling subspace (default: the largest that
        fits ``budget_s``).
    """

    enabled: bool = True
    prior_precision: float = 1.0
    structure: str = "auto"
    readout: str = "marginal"
    n_eigenpairs: int | None = None
    max_dense_params: int | None = None
    budget_s: float = 40.0
    coupling_tol: float = 3e-4
    max_coupling_rank: int | None = None

    def __post_init__(self) -> None:
        _check_bool(self.enabled, "posterior.enabled")
        object.__setattr__(
            self,
            "prior_precision",
            check_positive(self.prior_precision, "posterior.prior_precision"),
        )
        check_choice(self.structure, "posterior.structure", ("auto", "dense", "blocks"))
        check_choice(self.readout, "posterior.readout", ("marginal", "held"))
        for name in ("n_eigenpairs", "max_dense_params", "max_coupling_rank"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), f"posterior.{name}")
        for name in ("budget_s", "coupling_tol"):
            value = check_positive(getattr(self, name), f"posterior.{name}")
            object.__setattr__(self, name, value)

    def posterior_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``laplace_posterior`` (``enabled`` excluded)."""
        fields = (f.name for f in dataclasses.fields(self) if f.name != "enabled")
        return {name: getattr(self, name) for name in fields}


@dataclass(frozen=True)
class DistributionConfig:
    """Stage 3: the maximum-entropy connectivity distribution (keywords of its estimators).

    Attributes
    ----------
    enabled : bool, default: True
        Learn the distribution.
    model : {"auto", "flows", "gmm", "gaussian"}, default: "auto"
        "auto" uses the Connector flows when there are enough units and otherwise a
        maximum-entropy Gaussian mixture over z with a linear-Gaussian k | z (see
        ``nwb_lrconn.inference.distribution``); "gaussian" is that with one component. With
        too few units for any of them the stage is skipped; the result says which and why.
    sigma : float, default: 1.0
        Spread added to k when drawing the stored samples (0 = the identifiable core). The
        one default that differs from the library's (``fit_distribution`` draws at 0): a run
        stores samples with the unidentifiable spread.
    n_samples : int, default: 1000
        Number of units drawn and stored.
    max_components : int, default: 4
        Most mixture components tried (``model`` "auto" below the flow threshold, or "gmm").
    covariance_type : {"auto", "full", "diag"}, default: "auto"
        Covariances of the mixture components; "auto" lets the cross-validation choose.
    n_folds : int, default: 5
        Folds of the mixture's cross-validation over units.
    hidden_features : int or "auto", default: "auto"
        Width of the velocity MLPs ("auto" follows the number of units).
    n_layers : int, default: 4
        Hidden layers of the velocity MLPs.
    learning_rate : float, default: 3e-3
        AdamW learning rate.
    weight_decay : float, default: 1e-5
        AdamW weight decay.
    batch_size : int, default: 256
        Units per flow-A step.
    n_steps_a : int or "auto", default: "auto"
        Length of flow A's schedule ("auto" follows the number of units); held-out units stop
        it earlier.
    n_steps_b : int, default: 1000
        Flow-B steps.
    ridge_lambda : float, default: 1e-5
        λ of the ridge (maximum-entropy prior) targets.
    n_virtual_units : int, default: 1000
        S, virtual units per set of ridge targets.
    n_target_sets : int, default: 20
        Sets of S virtual units whose ridge targets are solved (flows and mixture alike).
    ode_step : float, default: 0.05
        Step of the midpoint ODE solver.
    state_resolution : float or None, default: 0.1
        Merge visited states closer than this many standard deviations into one weighted row of
        the ridge targets (flows and mixture alike); None uses every state.
    pool_size : int, default: 20000
        Flow-A samples drawn once and reused as flow-B virtual units.
    validation_every : int or "auto", default: "auto"
        Steps between validations ("auto": 20 per flow).
    patience : int, default: 5
        Validations worse than the best before flow A stops early (flow B with keep_best).
    keep_best : bool, default: False
        Keep flow B's best-validation state instead of the last state of its schedule.
    validation_fraction : float, default: 0.1
        Fraction of the units held out to stop flow A (at most 20 units), and of the trials
        held out for the one-step checks when the fit carries no test trials.
    """

    enabled: bool = True
    model: str = "auto"
    sigma: float = 1.0
    n_samples: int = 1000
    max_components: int = 4
    covariance_type: str = "auto"
    n_folds: int = 5
    hidden_features: int | str = "auto"
    n_layers: int = 4
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    n_steps_a: int | str = "auto"
    n_steps_b: int = 1000
    ridge_lambda: float = 1e-5
    n_virtual_units: int = 1000
    n_target_sets: int = 20
    ode_step: float = 0.05
    state_resolution: float | None = 0.1
    pool_size: int = 20000
    validation_every: int | str = "auto"
    patience: int = 5
    keep_best: bool = False
    validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        _check_bool(self.enabled, "distribution.enabled")
        _check_bool(self.keep_best, "distribution.keep_best")
        check_choice(self.model, "distribution.model", DISTRIBUTION_CHOICES)
        check_choice(self.covariance_type, "distribution.covariance_type", _COVARIANCE_TYPES)
        object.__setattr__(
            self, "sigma", check_positive(self.sigma, "distribution.sigma", allow_zero=True)
        )
        for name in (
            "n_samples",
            "max_components",
            "n_folds",
            "n_layers",
            "batch_size",
            "n_steps_b",
            "n_target_sets",
            "pool_size",
            "patience",
        ):
            check_positive_int(getattr(self, name), f"distribution.{name}")
        for name in ("hidden_features", "n_steps_a", "validation_every"):
            _check_int_or_auto(getattr(self, name), f"distribution.{name}")
        for name in ("learning_rate", "ridge_lambda", "ode_step"):
            object.__setattr__(
                self, name, check_positive(getattr(self, name), f"distribution.{name}")
            )
        if not self.ode_step <= 1:
            raise ValueError(f"distribution.ode_step must be in (0, 1]; got {self.ode_step}.")
        value = check_positive(self.weight_decay, "distribution.weight_decay", allow_zero=True)
        object.__setattr__(self, "weight_decay", value)
        object.__setattr__(
            self,
            "state_resolution",
            _check_optional_positive(self.state_resolution, "distribution.state_resolution"),
        )
        fraction = check_positive(self.validation_fraction, "distribution.validation_fraction")
        if not fraction < 1:
            raise ValueError(
                f"distribution.validation_fraction must be in (0, 1); got {fraction}."
            )
        object.__setattr__(self, "validation_fraction", fraction)
        check_positive_int(self.n_virtual_units, "distribution.n_virtual_units", minimum=2)
        if self.pool_size < self.n_virtual_units:
            raise ValueError(
                f"distribution.pool_size must be >= distribution.n_virtual_units "
                f"({self.n_virtual_units}); got {self.pool_size}."
            )

    def estimator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``ConnectorEstimator`` (seed, device and progress excluded)."""
        skip = {"enabled", "model", "sigma", "n_samples", *_MIXTURE_ONLY}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip
        }

    def mixture_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``MixtureConnectorEstimator`` (seed and components excluded)."""
        names = (
            *_MIXTURE_ONLY,
            "ridge_lambda",
            "n_virtual_units",
            "n_target_sets",
            "state_resolution",
            "validation_fraction",
        )
        return {name: getattr(self, name) for name in names}


_MIXTURE_ONLY = ("max_components", "covariance_type", "n_folds")


def _check_int_or_auto(value: Any, name: str) -> None:
    if value != "auto":
        if isinstance(value, str):
            raise ValueError(f"{name} must be a positive integer or 'auto'; got {value!r}.")
        check_positive_int(value, name)


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false; got {type(value).__name__} {value!r}.")


_SECTIONS = {
    "read": ReadConfig,
    "fit": FitConfig,
    "posterior": PosteriorConfig,
    "distribution": DistributionConfig,
}


@dataclass(frozen=True)
class RunConfig:
    """The whole run: one section per stage plus seed, device and naming.

    Attributes
    ----------
    read, fit, posterior, distribution : section configs
        See :class:`ReadConfig`, :class:`FitConfig`, :class:`PosteriorConfig`,
        :class:`DistributionConfig`.
    seed : int or None, default: 0
        Random seed of every stage (``None``: fresh entropy, not reproducible).
    device : str, default: "cpu"
        Torch device for fitting and flows ("cpu", "cuda", "cuda:1", ...).
    name : str, default: "lrconn_fit"
        Name of the fit group written into the NWB file.
    module_name : str, default: "lrconn"
        Processing module that holds the results.
    keep_failed : bool, default: False
        Write a stage-1 fit that is worse than a trivial baseline (marked failed, without
        posterior or distribution) instead of stopping with an error.

    Examples
    --------
    >>> config = RunConfig().with_overrides(rank=3, bin_width=0.01, seed=1)
    >>> config.fit.rank, config.read.bin_width, config.seed
    (3, 0.01, 1)
    >>> RunConfig.from_json(config.to_json()) == config
    True
    """

    read: ReadConfig = field(default_factory=ReadConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    posterior: PosteriorConfig = field(default_factory=PosteriorConfig)
    distribution: DistributionConfig = field(default_factory=DistributionConfig)
    seed: int | None = 0
    device: str = "cpu"
    name: str = "lrconn_fit"
    module_name: str = "lrconn"
    keep_failed: bool = False

    def __post_init__(self) -> None:
        for section, cls in _SECTIONS.items():
            value = getattr(self, section)
            if not isinstance(value, cls):
                raise TypeError(
                    f"RunConfig.{section} must be a {cls.__name__}; got {type(value).__name__}."
                )
        if self.seed is not None:
            check_positive_int(self.seed, "seed", minimum=0)
            if self.seed > MAX_SEED:
                raise ValueError(
                    f"seed must be between 0 and {MAX_SEED} (2**32 - 1); got {self.seed}."
                )
        _check_str(self.device, "device", optional=False)
        if not (self.device == "cpu" or self.device.split(":")[0] in ("cuda", "mps")):
            raise ValueError(
                f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got {self.device!r}."
            )
        if not isinstance(self.keep_failed, bool):
            raise TypeError(f"keep_failed must be true or false; got {self.keep_failed!r}.")
        for key in ("name", "module_name"):
            value = getattr(self, key)
            _check_str(value, key, optional=False)
            if "/" in value:
                raise ValueError(f"{key} must not contain '/'; got {value!r}.")

    # ----------------------------------------------------------------------------------- dicts
    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as nested plain dicts (tuples become lists)."""
        return json.loads(self.to_json())

    def to_json(self, *, indent: int | None = None) -> str:
        """Return the configuration as JSON (the text stored in ``Provenance.config_json``)."""
        return json.dumps(dataclasses.asdict(self), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build a configuration from nested dicts; missing keys keep their defaults.

        Raises
        ------
        ValueError
            On an unknown section or key (the message lists the valid ones).
        """
        if not isinstance(data, dict):
            raise TypeError(f"a run configuration must be a mapping; got {type(data).__name__}.")
        top_keys = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - top_keys)
        if unknown:
            raise ValueError(
                f"unknown configuration key(s) {unknown}; valid top-level keys are "
                f"{sorted(top_keys)}."
            )
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in _SECTIONS:
                section_cls = _SECTIONS[key]
                if not isinstance(value, dict):
                    raise TypeError(
                        f"configuration section [{key}] must be a table; got {value!r}."
                    )
                valid = {f.name for f in dataclasses.fields(section_cls)}
                bad = sorted(set(value) - valid)
                if bad:
                    raise ValueError(
                        f"unknown key(s) {bad} in section [{key}]; valid keys are {sorted(valid)}."
                    )
                kwargs[key] = section_cls(**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> RunConfig:
        """Load a configuration from a ``.toml`` or ``.json`` file.

        Raises
        ------
        FileNotFoundError
            When the file does not exist.
        ValueError
            When the suffix is neither .toml nor .json, or the content is invalid.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"configuration file not found: {path}")
        suffix = path.suffix.lower()
        text = path.read_text(encoding="utf-8")
        try:
            if suffix == ".toml":
                data = tomllib.loads(text)
            elif suffix == ".json":
                data = json.loads(text)
            else:
                raise ValueError(
                    f"configuration file must end in .toml or .json; got {path.name!r}."
                )
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot parse configuration file {path}: {exc}") from None
        return cls.from_dict(data)

    # ------------------------------------------------------------------------------- overrides
    def with_overrides(self, **flat_keys: Any) -> RunConfig:
        """Return a copy with some fields replaced.

        Keys are field names of any section (``rank=3``, ``bin_width=0.01``), top-level fields
        (``seed=1``), or ``"section.field"`` for names shared by several sections
        (``**{"posterior.enabled": False}``).

        Raises
        ------
        ValueError
            On an unknown or ambiguous key.
        """
        top_level = {f.name for f in dataclasses.fields(self)} - set(_SECTIONS)
        section_changes: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        top_changes: dict[str, Any] = {}
        for key, value in flat_keys.items():
            if "." in key:
                section, _, name = key.partition(".")
                if section not in _SECTIONS or name not in _field_names(_SECTIONS[section]):
                    raise ValueError(f"unknown configuration key {key!r}.")
                section_changes[section][name] = value
                continue
            if key in top_level:
                top_changes[key] = value
                continue
            owners = [s for s, cls in _SECTIONS.items() if key in _field_names(cls)]
            if not owners:
                valid = sorted(
                    top_level | {n for c in _SECTIONS.values() for n in _field_names(c)}
                )
                raise ValueError(f"unknown configuration key {key!r}; valid keys are {valid}.")
            if len(owners) > 1:
                options = ", ".join(f"'{s}.{key}'" for s in owners)
                raise ValueError(f"configuration key {key!r} is ambiguous; use one of {options}.")
            section_changes[owners[0]][key] = value
        sections = {
            name: dataclasses.replace(getattr(self, name), **changes)
            for name, changes in section_changes.items()
            if changes
        }
        return dataclasses.replace(self, **sections, **top_changes)


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}
