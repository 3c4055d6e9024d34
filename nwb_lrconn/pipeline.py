"""One run of the whole method: read → fit → posterior → degeneracy → distribution → Results.

:func:`run` is what the CLI, the tutorials and the batch runner call; :func:`run_file` also writes
the results into an NWB file (a new file by default, or the source itself with ``in_place=True``,
atomically). Each stage can be switched off in the :class:`~nwb_lrconn.config.RunConfig`.

With ``fit.rank = "auto"`` every rank in ``fit.ranks`` is fitted with the same seed (hence the
same held-out trials) and the rank with the highest held-out log-likelihood per observed value is
kept; the whole curve is stored in the kept fit's metrics as ``rank_<r>_log_likelihood``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig
from .data import LowRankFit, Provenance, Recording, Results

__all__ = ["PipelineError", "read_recording", "fit_lowrank", "run", "run_file", "default_output"]

Log = Callable[[str], None]


class PipelineError(ValueError):
    """Raised for inputs the pipeline cannot run on; the message says what to do instead."""


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.split("://", 1)[0] in ("http", "https", "s3")


def _quiet(_: str) -> None:
    return None


def read_recording(config: RunConfig, source: Any) -> Recording:
    """Turn ``source`` into a :class:`~nwb_lrconn.data.Recording` following ``config.read``.

    Parameters
    ----------
    config : RunConfig
        Uses ``config.read``.
    source : str, path-like, Recording or spikeinterface BaseSorting
        An NWB file path or URL (read with ``read_units`` or ``read_ophys``), an in-memory
        recording (returned unchanged), or a sorting (``read.source="sorting"``).

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
    if not isinstance(source, (str, os.PathLike)):
        raise PipelineError(
            f"source must be an NWB path or URL, a Recording, or (with read.source='sorting') a "
            f"spikeinterface sorting; got {type(source).__name__}."
        )
    if not _is_url(source) and not Path(source).is_file():
        raise FileNotFoundError(f"input file not found: {source}")
    if read.source == "units":
        from .io import read_units

        return read_units(source, **read.reader_kwargs())
    from .io import read_ophys

    return read_ophys(source, **read.reader_kwargs())


def _check_ranks(config: RunConfig, recording: Recording) -> tuple[int, ...]:
    n_units = recording.n_units
    where = recording.source.path or "the recording"
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
    if recording.n_trials < 2:
        raise PipelineError(
            f"{where} gave a single trial; fitting holds out trials, so it needs at least 2: "
            "set read.window_length (CLI: --window) to cut the data into windows, or use a "
            "trials table (CLI: --trials)."
        )
    return usable


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

    log = log or _quiet
    ranks = _check_ranks(config, recording)
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


def _run(
    config: RunConfig, source: Any, *, progress: bool, log: Log | None
) -> tuple[Results, Recording]:
    log = log or _quiet
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig; got {type(config).__name__}.")
    log("reading the recording")
    recording = read_recording(config, source)
    log(
        f"read {recording.n_units} units, {recording.n_trials} trials of up to "
        f"{recording.n_time} bins ({recording.bin_width:g} s)"
    )
    fit = fit_lowrank(config, recording, progress=progress, log=log)
    posterior = degeneracy = distribution = None
    if config.posterior.enabled:
        from .inference.degeneracy import compute_degeneracy
        from .inference.laplace import laplace_posterior

        log("Laplace posterior and degeneracy")
        posterior = laplace_posterior(fit, recording, **config.posterior.posterior_kwargs())
        degeneracy = compute_degeneracy(fit, recording, posterior)
    if config.distribution.enabled:
        from .inference.distribution import fit_distribution

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
    provenance = Provenance(
        software_version=__version__,
        config_json=config.to_json(),
        random_seed=config.seed,
        source=recording.source,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    results = Results(
        name=config.name,
        fit=fit,
        provenance=provenance,
        posterior=posterior,
        degeneracy=degeneracy,
        distribution=distribution,
    )
    return results, recording


def run(
    config: RunConfig, source: Any, *, progress: bool = True, log: Log | None = None
) -> Results:
    """Run every enabled stage on ``source`` and return the results (nothing is written).

    Parameters
    ----------
    config : RunConfig
        What to read and how to fit; stored as JSON in ``Results.provenance.config_json``.
    source : str, path-like, Recording or spikeinterface BaseSorting
        NWB file path or URL, an in-memory recording, or a sorting (see
        :func:`read_recording`).
    progress : bool, default: True
        Progress bars on the long steps (the fit and the flows).
    log : callable, optional
        Receives a one-line message at the start of each stage (the CLI prints them).

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
    return _run(config, source, progress=progress, log=log)[0]


def default_output(input: str | os.PathLike) -> Path:
    """Default output of :func:`run_file`: ``<input stem>_lrconn.nwb`` beside the input."""
    path = Path(input)
    return path.with_name(f"{path.stem}_lrconn.nwb")


def _check_output(input: Any, output: Path, *, in_place: bool, overwrite: bool) -> None:
    """Fail before the (long) fit when the results could not be written."""
    if in_place:
        if _is_url(input):
            raise PipelineError(f"cannot write in place into a remote file ({input}); use --out.")
        if output.resolve() != Path(input).resolve():
            raise PipelineError(
                f"in-place writing goes into the input {input}; do not also give an output "
                f"({output})."
            )
        if not os.access(input, os.W_OK) or not os.access(Path(input).resolve().parent, os.W_OK):
            raise PermissionError(
                f"cannot write in place: {input} or its folder is read-only; write a new file "
                "with --out instead."
            )
        return
    if not _is_url(input) and output.resolve() == Path(input).resolve():
        raise PipelineError(
            f"the output {output} is the input file; use --in-place to add the results to it, or "
            "choose another output."
        )
    folder = output.resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder does not exist (or is not a folder): {folder}")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"output folder is not writable: {folder}; choose another --out.")
    if output.exists() and not overwrite:
        raise FileExistsError(
            f"output file already exists: {output}; pass --overwrite (overwrite=True) or choose "
            "another output."
        )


def run_file(
    input: str | os.PathLike,
    output: str | os.PathLike | None = None,
    config: RunConfig | None = None,
    *,
    in_place: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Log | None = None,
) -> Results:
    """Run the pipeline on an NWB file and write the results into NWB.

    Parameters
    ----------
    input : str or path-like
        Source NWB file (local path or URL).
    output : str or path-like, optional
        New output file; default ``<input stem>_lrconn.nwb`` beside a local input. It holds the
        source's content plus the results (processing module ``config.module_name``).
    config : RunConfig, optional
        Default :class:`~nwb_lrconn.config.RunConfig`.
    in_place : bool, default: False
        Add the results to ``input`` itself, atomically (the source is never left half-written).
    overwrite : bool, default: False
        Replace an existing output file, or a fit with the same name.
    progress : bool, default: True
        Progress bars on the long steps.
    log : callable, optional
        Receives a one-line message per stage.

    Returns
    -------
    Results
        What was written.

    Raises
    ------
    FileNotFoundError, PermissionError, FileExistsError
        Checked before fitting: missing input, unwritable or existing output.
    PipelineError
        See :func:`run`; also output equal to the input without ``in_place``.
    """
    config = RunConfig() if config is None else config
    if not _is_url(input) and not Path(input).is_file():
        raise FileNotFoundError(f"input file not found: {input}")
    if output is None:
        if _is_url(input):
            raise PipelineError(f"give an output file for the remote input {input} (CLI: --out).")
        output = Path(input) if in_place else default_output(input)
    output = Path(output)
    _check_output(input, output, in_place=in_place, overwrite=overwrite)
    from .extension import write_results

    results, recording = _run(config, input, progress=progress, log=log)
    (log or _quiet)("writing the results")
    write_results(
        results,
        None if _is_url(input) else input,
        None if in_place else output,
        in_place=in_place,
        overwrite=overwrite,
        module_name=config.module_name,
        unit_rows=recording.unit_rows,
    )
    return results
