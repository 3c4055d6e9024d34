"""Running one batch task on a worker, and recognising a finished output by its provenance.

A task writes into a private scratch folder, reads the file back, checks its provenance, and only
then renames it into place, so a killed worker never leaves a partial file under a finished name.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..extension._files import fsync_file, fsync_folder
from .plan import BatchTask

if TYPE_CHECKING:
    from ..data import Results, SourceInfo

__all__ = [
    "SUMMARY_COLUMNS",
    "PARTIAL_DIR",
    "TaskFunction",
    "resolve_device",
    "run_pipeline_task",
    "run_task",
    "summarise_output",
]

SUMMARY_COLUMNS = (
    "file",
    "rank",
    "seed",
    "status",
    "log_likelihood",
    "bits_per_spike",
    "r2",
    "n_constrained",
    "n_degenerate",
    "n_gauge",
    "n_total",
    "error",
    "time_s",
    "output",
)
PARTIAL_DIR = ".partial"

TaskFunction = Callable[[BatchTask, Path], None]


def resolve_device(device: str) -> str:
    """Return ``device``, or ``"cpu"`` with a warning when CUDA is asked for but absent.

    Parameters
    ----------
    device : str
        A torch device string ("cpu", "cuda", "cuda:1", "mps").

    Returns
    -------
    str
        ``device`` when usable here, else ``"cpu"``.

    Warns
    -----
    RuntimeWarning
        When a CUDA device is asked for and ``torch.cuda.is_available()`` is False (shown once
        per process by Python's default warning filter).
    """
    if device.split(":")[0] != "cuda":
        return device
    import torch

    if torch.cuda.is_available():
        return device
    warnings.warn(
        f"device={device!r} was requested but CUDA is not available on this machine; "
        "fitting on the CPU instead.",
        RuntimeWarning,
        stacklevel=2,
    )
    return "cpu"


def run_pipeline_task(task: BatchTask, output: Path) -> None:
    """Run the pipeline for one task, writing the results to ``output`` (the default task).

    Parameters
    ----------
    task : BatchTask
        What to run.
    output : Path
        Where to write the NWB results file (a scratch path chosen by :func:`run_task`).
    """
    from ..config import RunConfig
    from ..pipeline import run_file

    config = RunConfig.from_json(task.config_json)
    device = resolve_device(config.device)
    if device != config.device:
        config = config.with_overrides(device=device)
    run_file(
        task.input,
        output=output,
        config=config,
        progress=False,
        cache_dir=task.cache_dir,
        link_from=Path(task.output).parent,
    )


def run_task(task: BatchTask, *, task_fn: TaskFunction | None = None) -> dict[str, Any]:
    """Run one task on a worker: write to scratch, verify, rename into place.

    The task function writes into a fresh folder ``<output_dir>/.partial/<name>.<token>/``.
    The file is then read back and its provenance checked against the task; only then is it
    renamed (atomically, same file system) to ``task.output``. On an exception the scratch
    folder is removed and the exception propagates (so Dask can retry).

    Parameters
    ----------
    task : BatchTask
        What to run.
    task_fn : callable, optional
        ``task_fn(task, path)`` writes the results of ``task`` to ``path``; default
        :func:`run_pipeline_task`.

    Returns
    -------
    dict
        The task's summary row (see :data:`SUMMARY_COLUMNS`), with status ``"done"``.

    Raises
    ------
    RuntimeError
        When the written file's provenance does not match the task.
    """
    task_fn = run_pipeline_task if task_fn is None else task_fn
    start = time.perf_counter()
    final = Path(task.output)
    scratch = final.parent / PARTIAL_DIR / f"{final.stem}.{uuid.uuid4().hex[:12]}"
    scratch.mkdir(parents=True, exist_ok=False)
    try:
        written = scratch / final.name
        task_fn(task, written)
        if not written.is_file():
            raise RuntimeError(f"the task function wrote no file at {written}.")
        row = summarise_output(written, task)
        fsync_file(written)
        os.replace(written, final)
        fsync_folder(final.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    row.update(status="done", time_s=time.perf_counter() - start, output=str(final))
    return row


def _read_task_results(path: Path, task: BatchTask) -> Results:
    from ..extension import read_results

    config = json.loads(task.config_json)
    return read_results(path, config["name"], module_name=config["module_name"])


def _source_identifier(source: str) -> str | None:
    """``NWBFile.identifier`` of a local HDF5 NWB file (None for remote sources)."""
    from ..io import is_remote

    if is_remote(source):
        return None
    import h5py

    with h5py.File(source, "r") as f:
        value = f["identifier"][()]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _comparable_config(config_json: str) -> dict[str, Any]:
    """The configuration with defaults filled in and the execution-only ``device`` dropped."""
    from ..config import RunConfig

    try:
        data = RunConfig.from_json(config_json).to_dict()
    except (TypeError, ValueError):  # written by another version: compare the raw JSON
        data = json.loads(config_json)
    data.pop("device", None)
    return data


def _provenance_mismatch(results: Results, task: BatchTask) -> str | None:
    """Why ``results`` are not the output of ``task``, or None when they are."""
    prov = results.provenance
    if prov.random_seed != task.seed:
        return f"seed {prov.random_seed} != {task.seed}"
    if _comparable_config(prov.config_json) != _comparable_config(task.config_json):
        return "the run configuration differs"
    if not _same_source(prov.source, task.input):
        return f"source {prov.source.path!r} != {task.input!r}"
    identifier = _source_identifier(task.input)
    if identifier is not None and prov.source.identifier != identifier:
        return f"source identifier {prov.source.identifier!r} != {identifier!r}"
    return None


def _same_source(recorded: SourceInfo, source: str) -> bool:
    """Whether the results came from ``source`` (a DANDI asset is matched by its id)."""
    from ..io import is_dandi_reference, is_remote

    if is_dandi_reference(source):
        from ..io import resolve_dandi

        return recorded.origin.get("asset_id") == resolve_dandi(source).asset_id
    if is_remote(source) or is_remote(recorded.path):
        return recorded.path == source
    return os.path.realpath(recorded.path) == os.path.realpath(source)


def summarise_output(path: str | os.PathLike, task: BatchTask) -> dict[str, Any]:
    """Read an output file and return its summary row, checking that it belongs to ``task``.

    Parameters
    ----------
    path : str or path
        An NWB results file.
    task : BatchTask
        The task it should hold the results of.

    Returns
    -------
    dict
        Keys :data:`SUMMARY_COLUMNS`; ``status`` is ``"skipped"`` and ``time_s`` 0 (the caller
        sets them for freshly run tasks).

    Raises
    ------
    RuntimeError
        When the file's provenance does not match the task.
    """
    results = _read_task_results(Path(path), task)
    reason = _provenance_mismatch(results, task)
    if reason is not None:
        raise RuntimeError(f"{path} does not hold the results of this task: {reason}.")
    metrics = results.fit.metrics
    deg = results.degeneracy
    return {
        **base_row(task),
        "status": "skipped",
        "log_likelihood": metrics.get("log_likelihood", float("nan")),
        "bits_per_spike": metrics.get("bits_per_spike", float("nan")),
        "r2": metrics.get("r2", float("nan")),
        "n_constrained": None if deg is None else deg.n_constrained,
        "n_degenerate": None if deg is None else deg.n_degenerate,
        "n_gauge": None if deg is None else deg.n_gauge,
        "n_total": None if deg is None else deg.n_total,
        "time_s": 0.0,
    }


def base_row(task: BatchTask) -> dict[str, Any]:
    """Return a summary row of ``task`` with its identity filled in and every result empty."""
    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS)
    row.update(file=task.input, rank=task.rank, seed=task.seed, output=task.output, error="")
    return row


def existing_state(task: BatchTask) -> tuple[str, dict[str, Any] | str | None]:
    """Return ("missing", None), ("complete", row) or ("mismatch", reason) for a planned task.

    A file that cannot be read, or whose provenance does not match, is a mismatch: it is never
    counted as finished.
    """
    if not os.path.exists(task.output):
        return "missing", None
    try:
        return "complete", summarise_output(task.output, task)
    except Exception as exc:  # unreadable or foreign file: never counted as finished
        return "mismatch", f"{type(exc).__name__}: {exc}"
