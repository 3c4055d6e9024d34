"""One run of the whole method: read → fit → posterior → degeneracy → distribution → Results.

:func:`run` is what the CLI, the tutorials and the batch runner call; :func:`run_file` also writes
the results into NWB: a new, small derived file by default, a copy of the source plus the
results, or the source itself (see :func:`nwb_lrconn.extension.write_results`). Everything that
can be checked before the fit (input readable and NWB, output writable, fit name free, enough
units, bins and trials for the rank) is checked before it. Each stage can be switched off in the
:class:`~nwb_lrconn.config.RunConfig`.

With ``fit.rank = "auto"`` every rank in ``fit.ranks`` is fitted with the same seed (hence the
same held-out trials) and the rank with the highest held-out log-likelihood per observed value is
kept; the whole curve is stored in the kept fit's metrics as ``rank_<r>_log_likelihood``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .config import RunConfig
from .data import LowRankFit, Provenance, Recording, Results

__all__ = [
    "PipelineError",
    "FitFailedError",
    "assess_fit",
    "judge_fit",
    "check_input",
    "check_recording",
    "read_recording",
    "fit_lowrank",
    "run",
    "run_file",
    "output_path",
]

Log = Callable[[str], None]


class PipelineError(ValueError):
    """Raised for inputs the pipeline cannot run on; the message says what to do instead."""


def _is_remote(value: Any) -> bool:
    """A URL, a DANDI reference or a resolved DANDI asset: read over the network."""
    from .io import DandiAsset, is_remote

    return isinstance(value, DandiAsset) or is_remote(value)


def _is_local(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) and not _is_remote(value)


def _is_nwb_source(value: Any) -> bool:
    """A path, URL, DANDI reference/asset or open pynwb.NWBFile (not a Recording/sorting)."""
    if isinstance(value, (str, os.PathLike)) or _is_remote(value):
        return True
    from pynwb import NWBFile

    return isinstance(value, NWBFile)


def resolve_source(source: Any) -> Any:
    """Resolve a DANDI reference (``DANDI:000207/sub-4/...``, ``dandi://...``, a landing or API
    URL) to its asset once, so later reads need no further API calls; other sources pass."""
    from .io import is_dandi_reference, resolve_dandi

    return resolve_dandi(source) if is_dandi_reference(source) else source


def check_input(source: Any, *, cache_dir: str | os.PathLike | None = None) -> None:
    """The one check of an input NWB file, run before any work (``fit``, ``inspect``, ...).

    A local file must exist, be a complete HDF5 file with an NWBFile root, and open with pynwb;
    a URL or DANDI asset must answer and open. Anything else (a Recording, a sorting, an open
    NWBFile) passes.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        Missing, a folder, unreadable or locked by a writer.
    PipelineError
        Not HDF5, damaged, not NWB, or pynwb cannot read it; the message names the file.
    """
    if not (isinstance(source, (str, os.PathLike)) or _is_remote(source)):
        return
    from .extension._files import check_nwb_file
    from .io import open_nwb

    if _is_local(source):
        try:
            check_nwb_file(source)
        except ValueError as err:
            raise PipelineError(str(err)) from None
    try:
        with warnings.catch_warnings():  # the file's own warnings show once, at the real read
            warnings.simplefilter("ignore")
            with open_nwb(source, cache_dir=cache_dir):
                pass
    except (FileNotFoundError, PermissionError, ImportError):
        raise
    except Exception as err:  # hdmf/h5py raise many kinds for damaged content
        reason = " ".join(str(err).split()) or type(err).__name__
        raise PipelineError(
            f"{source} could not be read as an NWB file ({reason}); check that it is a complete "
            "NWB file (e.g. `nwbinspector` or `pynwb-validate` on it)."
        ) from None


logger = logging.getLogger(__name__)


def _emitter(log: Log | None) -> Log:
    """Messages go to the package logger (the CLI shows them), and to ``log`` when given."""
    if log is not None and getattr(log, "_nwb_lrconn_emitter", False):
        return log

    def emit(message: str) -> None:
        logger.info(message)
        if log is not None:
            log(message)

    emit._nwb_lrconn_emitter = True  # type: ignore[attr-defined]
    return emit


def read_recording(
    config: RunConfig, source: Any, *, cache_dir: str | os.PathLike | None = None
) -> Recording:
    """Turn ``source`` into a :class:`~nwb_lrconn.data.Recording` following ``config.read``.

    Parameters
    ----------
    config : RunConfig
        Uses ``config.read``.
    source : str, path-like, DandiAsset, pynwb.NWBFile, Recording or spikeinterface BaseSorting
        An NWB file: a local path, a URL, a DANDI reference (``DANDI:000207/sub-4/...``,
        ``dandi://...``, a landing or API URL) or an already-open ``NWBFile`` (read with
        ``read_units`` or ``read_ophys``); an in-memory recording (returned unchanged); or a
        sorting (``read.source="sorting"``).
    cache_dir : path, optional
        Keep streamed bytes here so later reads of the same asset download nothing.

    Returns
    -------
    Recording

    Raises
    ------
    FileNotFoundError
        When a local source file does not exist.
    PipelineError
        When the source type does not match ``config.read.source``.
    """
    if isinstance(source, Recording):
        return source
    read = config.read
    if read.source == "sorting":
        if isinstance(source, (str, os.PathLike)):
            raise PipelineError(
                "read.source='sorting' takes a spikeinterface sorting object, not a path; for an "
                "NWB file use read.source='units' (CLI: --units)."
            )
        from .io import read_sorting

        return read_sorting(source, **read.reader_kwargs())
    if not _is_nwb_source(source):
        raise PipelineError(
            f"source must be an NWB path, URL, DANDI reference or open NWBFile, a Recording, or "
            f"(with read.source='sorting') a spikeinterface sorting; got "
            f"{type(source).__name__}."
        )
    if _is_local(source):
        path = Path(source)
        if path.is_dir():
            raise IsADirectoryError(f"Expected an NWB file, found a folder: {path}")
        if not path.is_file():
            raise FileNotFoundError(f"NWB file not found: {path}")
    if read.source == "units":
        from .io import read_units

        return read_units(source, cache_dir=cache_dir, **read.reader_kwargs())
    from .io import read_ophys

    return read_ophys(source, cache_dir=cache_dir, **read.reader_kwargs())


def _usable_ranks(config: RunConfig, recording: Recording, where: str) -> tuple[int, ...]:
    n_units = recording.n_units
    candidates = config.fit.candidate_ranks
    usable = tuple(r for r in candidates if r <= n_units)
    if not usable:
        if config.fit.rank == "auto":
            raise PipelineError(
                f"every rank tried ({list(candidates)}) is larger than the {n_units} units read "
                f"from {where}; use ranks <= {n_units} or select more units."
            )
        raise PipelineError(
            f"rank {candidates[0]} is larger than the {n_units} units read from {where}; "
            f"choose a rank <= {n_units} (CLI: --rank) or select more units."
        )
    return usable


def _drop_constant_units(recording: Recording, where: str, log: Log) -> Recording:
    """Traces that never change carry no information: drop them, naming them."""
    if recording.kind == "spikes":
        return recording
    mask = recording.mask[..., None]
    count = recording.mask.sum()
    mean = (recording.data * mask).sum(axis=(0, 1)) / count
    spread = np.sqrt((((recording.data - mean) * mask) ** 2).sum(axis=(0, 1)) / count)
    scale = np.maximum(np.abs(mean), 1.0)
    constant = np.flatnonzero(spread <= 1e-9 * scale)
    if constant.size == 0:
        return recording
    ids = recording.unit_ids[constant].tolist()
    if constant.size == recording.n_units:
        raise PipelineError(
            f"every trace read from {where} is constant ({recording.n_units} units/ROIs); "
            "nothing can be fitted: check the series (CLI: nwb-lrconn inspect)."
        )
    log(
        f"dropped {constant.size} constant trace(s) of {recording.n_units} (ids "
        f"{ids[:10]}{' ...' if len(ids) > 10 else ''}): they carry no information"
    )
    keep = np.setdiff1d(np.arange(recording.n_units), constant)
    selection = {**recording.source.selection, "dropped_constant_ids": ids}
    source = dataclasses.replace(recording.source, selection=selection)
    return dataclasses.replace(recording.select_units(keep), source=source)


def check_recording(
    config: RunConfig, recording: Recording, *, log: Log | None = None
) -> Recording:
    """Check, before any fitting, that ``recording`` can be fitted as ``config`` asks.

    Constant traces (calcium, rates) are dropped with a note; everything else that makes a fit
    impossible raises.

    Returns
    -------
    Recording
        ``recording``, without its constant traces.

    Raises
    ------
    PipelineError
        Fewer than 2 units, a rank above the number of units, fewer than 2 trials, or fewer
        than 2 trials with at least 2 bins; the message says what to change.
    """
    log = _emitter(log)
    where = recording.source.path or "the recording"
    recording = _drop_constant_units(recording, where, log)
    if recording.n_units < 2:
        raise PipelineError(
            f"{where} gave {recording.n_units} unit; a low-rank network needs at least 2 units "
            "(select more units, or check --unit-ids/--where)."
        )
    _usable_ranks(config, recording, where)
    if recording.n_trials < 2:
        raise PipelineError(
            f"{where} gave a single trial; fitting holds out trials, so it needs at least 2: "
            "set read.window_length (CLI: --window) to cut the data into windows, or use a "
            "trials table (CLI: --trials)."
        )
    long_enough = int((recording.mask.sum(axis=1) >= 2).sum())
    if long_enough < 2:
        raise PipelineError(
            f"{where} gave {recording.n_trials} trials but {long_enough} with at least 2 bins of "
            f"{recording.bin_width:g} s; the dynamics need consecutive bins: use a smaller bin "
            "width (CLI: --bin-width) or longer trials/windows (CLI: --window)."
        )
    return recording


def fit_lowrank(
    config: RunConfig, recording: Recording, *, progress: bool = True, log: Log | None = None
) -> LowRankFit:
    """Stage 1: fit the low-rank RNN (one rank, or every candidate rank for ``rank="auto"``).

    Parameters
    ----------
    config : RunConfig
        Uses ``config.fit``, ``config.seed`` and ``config.device``.
    recording : Recording
        The data.
    progress : bool, default: True
        Show the estimator's progress bar.
    log : callable, optional
        Receives one line per fitted rank.

    Returns
    -------
    LowRankFit
        The kept fit; for ``rank="auto"`` its metrics hold ``rank_<r>_log_likelihood`` for every
        rank tried and ``selected_rank``.

    Raises
    ------
    PipelineError
        When the rank exceeds the number of units, or there is a single trial.
    """
    from .model.estimator import LowRankRNNEstimator

    log = _emitter(log)
    ranks = _usable_ranks(config, recording, recording.source.path or "the recording")
    fits: dict[int, LowRankFit] = {}
    for rank in ranks:
        estimator = LowRankRNNEstimator(
            **config.fit.estimator_kwargs(rank),
            random_state=config.seed,
            device=config.device,
            progress=progress,
        )
        fits[rank] = estimator.fit(recording).fit_
        log(
            f"rank {rank}: held-out log-likelihood "
            f"{fits[rank].metrics.get('log_likelihood', float('nan')):.5g} per value"
        )
    if config.fit.rank != "auto":
        return fits[ranks[0]]
    best = max(ranks, key=lambda r: fits[r].metrics.get("log_likelihood", float("-inf")))
    curve = {f"rank_{r}_log_likelihood": fits[r].metrics["log_likelihood"] for r in ranks}
    metrics = {**fits[best].metrics, **curve, "selected_rank": float(best)}
    log(f"selected rank {best} (best held-out log-likelihood)")
    return dataclasses.replace(fits[best], metrics=metrics)


def _read_checked(
    config: RunConfig, source: Any, log: Log, cache_dir=None, *, checked: bool = False
) -> Recording:
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig; got {type(config).__name__}.")
    if not checked:
        check_input(source, cache_dir=cache_dir)
    log("reading the recording")
    recording = read_recording(config, source, cache_dir=cache_dir)
    log(
        f"read {recording.n_units} units, {recording.n_trials} trials of up to "
        f"{recording.n_time} bins ({recording.bin_width:g} s)"
    )
    return check_recording(config, recording, log=log)


def assess_fit(fit: LowRankFit) -> str | None:
    """Why a stage-1 fit must not be trusted, in plain words, or None when it can be.

    A fit fails when it predicts held-out data worse than the trivial baseline (a constant rate
    per unit for spikes: bits/spike <= 0; the mean of each unit for rates and calcium: R² <= 0),
    or when its held-out likelihood is not finite or absurdly low (a collapsed noise scale).
    """
    metrics = fit.metrics
    loglik = metrics.get("log_likelihood", float("nan"))
    if not np.isfinite(loglik) or loglik < -1e3:
        return (
            f"its held-out log-likelihood is {loglik:.3g} per value: the noise scale has "
            "collapsed or the data are far from the model's range (normalise calcium traces, "
            "check for constant or saturated units)"
        )
    if "bits_per_spike" in metrics and not metrics["bits_per_spike"] > 0:
        return (
            f"it predicts held-out spikes no better than a constant rate per unit "
            f"({metrics['bits_per_spike']:.3g} bits/spike)"
        )
    if "r2" in metrics and not metrics["r2"] > 0:
        return (
            f"it predicts held-out activity no better than each unit's mean "
            f"(R² {metrics['r2']:.3g})"
        )
    return None


class FitFailedError(PipelineError):
    """Stage 1 gave a fit worse than a trivial baseline (see :func:`assess_fit`)."""


def _stage_one(config: RunConfig, recording: Recording, *, progress: bool, log: Log):
    start = time.perf_counter()
    fit = fit_lowrank(config, recording, progress=progress, log=log)
    fit = dataclasses.replace(fit, unit_rows=recording.unit_rows)
    log(f"stage 1 (low-rank RNN fit) done in {time.perf_counter() - start:.1f} s")
    where = recording.source.path or "the recording"
    not_done = "the posterior and the distribution were not computed and "
    return judge_fit(config, fit, where, log, not_done=not_done)


def judge_fit(
    config: RunConfig, fit: LowRankFit, where: str, log: Log, *, not_done: str = ""
) -> tuple[LowRankFit, str | None]:
    """Keep a stage-1 fit that can be trusted (:func:`assess_fit`); refuse one that cannot.

    Returns
    -------
    fit : LowRankFit
        Unchanged, or with ``metrics["failed"] = 1`` when it failed and ``config.keep_failed``.
    reason : str or None
        Why it failed, or None.

    Raises
    ------
    FitFailedError
        When it failed and ``config.keep_failed`` is False; the message names ``where``, what
        was not done (``not_done``) and the flag that keeps a failed fit.
    """
    reason = assess_fit(fit)
    if reason is None:
        return fit, None
    if not config.keep_failed:
        raise FitFailedError(
            f"the fit of {where} failed: {reason}; {not_done}nothing was written "
            "(--keep-failed writes the failed fit)."
        )
    log(f"the fit of {where} FAILED: {reason}; kept as asked")
    return dataclasses.replace(fit, metrics={**fit.metrics, "failed": 1.0}), reason


def _results(config: RunConfig, recording: Recording, fit: LowRankFit, **parts) -> Results:
    provenance = Provenance(
        software_version=__version__,
        config_json=config.to_json(),
        random_seed=config.seed,
        source=recording.source,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return Results(name=config.name, fit=fit, provenance=provenance, **parts)


def _stages(
    config: RunConfig,
    recording: Recording,
    *,
    progress: bool,
    log: Log,
    fit: LowRankFit | None = None,
    after_stage_one: Callable[[Results], None] | None = None,
) -> Results:
    failed = None
    if fit is None:
        fit, failed = _stage_one(config, recording, progress=progress, log=log)
        if after_stage_one is not None and failed is None:
            after_stage_one(_results(config, recording, fit))
    posterior = degeneracy = distribution = None
    if failed is not None:
        return _results(config, recording, fit)
    if config.posterior.enabled:
        from .inference.degeneracy import compute_degeneracy
        from .inference.laplace import laplace_posterior

        start = time.perf_counter()
        log("Laplace posterior and degeneracy")
        posterior = laplace_posterior(fit, recording, **config.posterior.posterior_kwargs())
        degeneracy = compute_degeneracy(fit, recording, posterior)
        log(f"posterior and degeneracy done in {time.perf_counter() - start:.1f} s")
    if config.distribution.enabled:
        from .inference.distribution import fit_distribution

        start = time.perf_counter()
        log("connectivity distribution")
        dist = config.distribution
        distribution = fit_distribution(
            fit,
            model=dist.model,
            n_samples=dist.n_samples,
            sigma=dist.sigma,
            flow_params={**dist.estimator_kwargs(), "device": config.device, "progress": progress},
            mixture_params=dist.mixture_kwargs(),
            inputs=recording.inputs,
            random_state=config.seed,
        )
        log(f"distribution model: {distribution.model} ({distribution.reason})")
        log(f"connectivity distribution done in {time.perf_counter() - start:.1f} s")
    return _results(
        config,
        recording,
        fit,
        posterior=posterior,
        degeneracy=degeneracy,
        distribution=distribution,
    )


def run(
    config: RunConfig,
    source: Any,
    *,
    progress: bool = True,
    log: Log | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Results:
    """Run every enabled stage on ``source`` and return the results (nothing is written).

    Parameters
    ----------
    config : RunConfig
        What to read and how to fit; stored as JSON in ``Results.provenance.config_json``.
    source : str, path-like, DandiAsset, NWBFile, Recording or spikeinterface BaseSorting
        An NWB file (path, URL, DANDI reference or open NWBFile), an in-memory recording, or a
        sorting (see :func:`read_recording`).
    progress : bool, default: True
        Progress bars on the long steps (the fit and the flows).
    log : callable, optional
        Receives a one-line message at the start of each stage (the CLI prints them).
    cache_dir : path, optional
        Keep streamed bytes here (remote sources).

    Returns
    -------
    Results
        Named ``config.name``; posterior/degeneracy/distribution are None when disabled.

    Raises
    ------
    FileNotFoundError
        Missing input file.
    PipelineError
        Rank larger than the number of units, a single trial, or a source of the wrong type.
    """
    log = _emitter(log)
    recording = _read_checked(config, resolve_source(source), log, cache_dir)
    return _stages(config, recording, progress=progress, log=log)


def output_path(
    config: RunConfig,
    recording: Recording,
    source: Any,
    *,
    output_dir: str | os.PathLike | None = None,
) -> Path:
    """Where :func:`run_file` writes a derived file when no output is given.

    Under ``output_dir`` (or, for a local source without ``output_dir``, beside the source;
    for a remote one, the current folder) the DANDI-layout name
    ``sub-<subject>/sub-<subject>_ses-<session>_desc-lrconn[-<name>]_<modality>.nwb``, or
    ``<source stem>_desc-lrconn[-<name>].nwb`` when the source has no subject id. The same
    source and fit name always give the same path.
    """
    from .extension import derived_file_name

    relative = derived_file_name(recording.source, config.name)
    if output_dir is not None:
        return Path(output_dir) / relative
    if _is_local(source):
        return Path(source).with_name(relative.name)
    return Path.cwd() / relative


def _check_in_place(input: Any, config: RunConfig, overwrite: bool) -> None:
    """In place: a local, writable file whose fit name is free (or --overwrite)."""
    import h5py

    from .extension._files import check_writable_file

    if not _is_local(input):
        raise PipelineError(
            f"cannot write in place into a remote or in-memory source ({input}); write a "
            "derived file instead (leave out --in-place)."
        )
    check_writable_file(Path(input))
    with h5py.File(input, "r") as handle:
        taken = f"processing/{config.module_name}/{config.name}" in handle
    if taken and not overwrite:
        raise FileExistsError(
            f"{input} already holds a fit named {config.name!r} in module "
            f"{config.module_name!r}; pass --overwrite to replace it or choose another name "
            "(--name)."
        )


def _missing_folders(folder: Path) -> list[Path]:
    """The folders to create for ``folder`` (outermost first), after checking their parent."""
    from .extension._files import check_output_path

    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    if missing:  # the deepest existing folder must take a new entry
        check_output_path(folder / missing[-1].name, overwrite=False)
    return missing[::-1]


def run_file(
    input: str | os.PathLike,
    output: str | os.PathLike | None = None,
    config: RunConfig | None = None,
    *,
    mode: str = "derived",
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Log | None = None,
    cache_dir: str | os.PathLike | None = None,
    link_from: str | os.PathLike | None = None,
) -> Path:
    """Run the pipeline on an NWB file and write the results into NWB.

    Parameters
    ----------
    input : str, path-like or DandiAsset
        Source NWB file: a local path, a URL, or a DANDI reference (``DANDI:000207/sub-4/...``,
        ``dandi://DANDI/000207/sub-4/...``, a landing or API URL).
    output : str or path-like, optional
        The output file (``"derived"`` and ``"copy"``); by default see :func:`output_path`
        (a copy defaults to ``<input stem>_lrconn.nwb`` beside the input).
    config : RunConfig, optional
        Default :class:`~nwb_lrconn.config.RunConfig`.
    mode : {"derived", "copy", "in-place"}, default: "derived"
        A new small file with the results and the source's identity and links; a copy of the
        source plus the results; or the results added to ``input`` itself. No mode ever
        changes anything in the source but the added results group.
    output_dir : str or path-like, optional
        Folder of the derived file when ``output`` is not given (DANDI layout below it).
    overwrite : bool, default: False
        Replace an existing output file, or in place a fit with the same name.
    progress : bool, default: True
        Progress bars on the long steps.
    log : callable, optional
        Receives a one-line message per stage.
    cache_dir : path, optional
        Keep streamed bytes here, so reruns and batch tasks download an asset once.
    link_from : path, optional
        Folder the derived file will be read from if it is moved after writing (see
        :func:`nwb_lrconn.extension.write_results`).

    Returns
    -------
    Path
        The written file (read the results back with
        :func:`nwb_lrconn.extension.read_results`).

    Raises
    ------
    FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError
        Checked before fitting: missing or unreadable input, unwritable or existing output,
        fit name taken.
    PipelineError
        See :func:`run`; also an input that is not NWB, or in place into a remote file.
    """
    from .extension import MODES, write_results
    from .extension._files import check_output_path

    config = RunConfig() if config is None else config
    log = _emitter(log)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}; got {mode!r}.")
    input = resolve_source(input)
    local = _is_local(input)
    check_input(input, cache_dir=cache_dir)
    if mode == "in-place":
        if output is not None or output_dir is not None:
            raise PipelineError(
                f"in-place writing goes into the input {input}; do not also give an output."
            )
        _check_in_place(input, config, overwrite)
    elif mode == "copy" and not local:
        raise PipelineError(
            f"--copy-source needs a local input file; {input} is remote: write a derived file "
            "(leave out --copy-source)."
        )
    if output is not None and not _partial_run(output, config, overwrite):
        check_output_path(output, overwrite=overwrite, source=input if local else None)
    elif output_dir is not None:
        if Path(output_dir).exists() and not Path(output_dir).is_dir():
            raise NotADirectoryError(f"--output-dir {output_dir} is a file, not a folder.")
        _missing_folders(Path(output_dir) / "sub")  # its deepest existing folder is writable
    recording = _read_checked(config, input, log, cache_dir, checked=True)
    if mode == "in-place":
        target = Path(input)
    elif output is not None:
        target = Path(output)
    elif mode == "copy":
        target = Path(input).with_name(f"{Path(input).stem}_lrconn.nwb")
    else:
        target = output_path(config, recording, input, output_dir=output_dir)
    missing = [] if mode == "in-place" else _missing_folders(target.parent)
    earlier = None if mode != "derived" or missing else _partial_run(target, config, overwrite)
    if earlier is not None and earlier.provenance.source.identifier != (
        recording.source.identifier
    ):
        earlier = None  # another source's results under this name: not ours to continue
    if mode != "in-place" and not missing and earlier is None:
        check_output_path(target, overwrite=overwrite, source=input if local else None)
    if earlier is not None:
        log(f"continuing from the stage-1 fit saved in {target} by an interrupted run")
    for_later: dict[str, Any] = {"overwrite": overwrite, "module_name": config.module_name}
    for_later.update(unit_rows=recording.unit_rows, link_from=link_from)

    def save_stage_one(partial: Results) -> None:
        """A derived output keeps stage 1 while the later stages run (resumable)."""
        if mode != "derived":
            return
        for folder in missing:  # e.g. the sub-<subject>/ folder of the DANDI layout
            folder.mkdir(exist_ok=True)
        fit = dataclasses.replace(partial.fit, metrics={**partial.fit.metrics, "partial": 1.0})
        write_results(dataclasses.replace(partial, fit=fit), input, target, **for_later)
        for_later["overwrite"] = True  # the final write replaces our own checkpoint
        log(f"stage 1 saved in {target}; a rerun of the same command continues from it")

    if earlier is not None:
        for_later["overwrite"] = True
    results = _stages(
        config,
        recording,
        progress=progress,
        log=log,
        fit=None if earlier is None else earlier.fit,
        after_stage_one=save_stage_one,
    )
    for folder in missing:
        folder.mkdir(exist_ok=True)
    log(f"writing the results ({mode}) to {target}")
    return write_results(
        results, input, None if mode == "in-place" else target, mode=mode, **for_later
    )


def _partial_run(output: str | os.PathLike, config: RunConfig, overwrite: bool) -> Results | None:
    """The stage-1 results an interrupted run of the same configuration left in ``output``."""
    from .extension import read_results

    path = Path(output)
    if overwrite or not path.is_file():
        return None
    try:
        saved = read_results(path, config.name, module_name=config.module_name)
    except Exception:  # not ours, or not a results file: the output check will say so
        return None
    same = json.loads(saved.provenance.config_json) == json.loads(config.to_json())
    if saved.fit.metrics.get("partial") != 1.0 or not same:
        return None
    metrics = {k: v for k, v in saved.fit.metrics.items() if k != "partial"}
    return dataclasses.replace(saved, fit=dataclasses.replace(saved.fit, metrics=metrics))
