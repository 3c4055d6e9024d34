"""Batch analysis of many sessions on Dask: files × ranks × seeds, resumable, one output per task.

:func:`run_batch` expands the inputs (files, globs, manifests of paths or URLs), plans one task per
(file, rank, seed), skips every task whose output already holds a matching result, runs the rest
on a Dask cluster (an embedded ``LocalCluster`` by default, or an existing scheduler), and returns
a summary table with one row per task. :func:`select_ranks` picks a rank per file from that table.

Guarantees:

- **one writer per file**: each task writes its own output, whose name is a deterministic function
  of (input, rank, seed): ``<stem>_<digest>_rank<R>_seed<S>.nwb`` in ``output_dir``;
- **atomic outputs**: a task writes into a private scratch folder ``output_dir/.partial/`` and
  renames the file into place only after reading it back and checking its provenance, so a killed
  worker never leaves a partial file under a finished name (scratch folders left by killed workers
  are removed when the batch ends);
- **resumable**: an existing output counts as finished when its provenance matches the task (the
  run configuration JSON, the seed, and the source path and ``NWBFile.identifier``); such tasks
  are skipped and their rows rebuilt from the file. The torch ``device`` is an execution detail
  and is not compared;
- **nothing dropped silently**: a failing task is retried ``retries`` times, then reported in the
  table with its error while the other tasks finish; Dask reschedules the tasks of a worker that
  dies.

Inputs are opened by each task from their path or URL (streamed by the io readers); only the path
string travels to the workers, never the data.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._validation import check_positive_int

if TYPE_CHECKING:
    import pandas as pd

    from .config import RunConfig
    from .data import Results

__all__ = [
    "SUMMARY_COLUMNS",
    "BatchTask",
    "expand_inputs",
    "plan_batch",
    "output_name",
    "resolve_device",
    "run_pipeline_task",
    "run_task",
    "summarise_output",
    "run_batch",
    "select_ranks",
    "write_summary",
    "add_batch_parser",
    "run_batch_command",
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
_MANIFEST_SUFFIXES = (".txt", ".csv", ".tsv")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_PARTIAL_DIR = ".partial"

TaskFunction = Callable[["BatchTask", Path], None]


@dataclass(frozen=True)
class BatchTask:
    """One unit of batch work: fit one input at one rank with one seed.

    Attributes
    ----------
    input : str
        Absolute local path or URL of the source NWB file.
    rank : int
        Rank R of the fit.
    seed : int
        Random seed of the run.
    output : str
        Absolute path of the output NWB file (unique to this task).
    config_json : str
        The full :class:`~nwb_lrconn.config.RunConfig` of this task as JSON (rank and seed set).
    """

    input: str
    rank: int
    seed: int
    output: str
    config_json: str

    @property
    def is_url(self) -> bool:
        """Whether the input is a URL (``scheme://...``) rather than a local file."""
        return bool(_URL_RE.match(self.input))


# ------------------------------------------------------------------------------------- planning
def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Expand files, glob patterns and manifests into a list of unique sources.

    Parameters
    ----------
    inputs : str, path, or iterable of them
        Each entry is one of: a local NWB file; a glob pattern (``data/*.nwb``, ``**`` allowed);
        a URL (``http(s)://``, ``s3://``, ...), kept as is; or a manifest, a ``.txt`` file with
        one path or URL per line (blank lines and ``#`` comments ignored) or a ``.csv``/``.tsv``
        file whose ``path`` or ``url`` column (else its first column) lists them. Relative paths
        in a manifest are relative to the manifest's folder.

    Returns
    -------
    list of str
        Absolute local paths and URLs, in the order given, without duplicates.

    Raises
    ------
    FileNotFoundError
        When a file or manifest does not exist, or a glob pattern matches nothing.
    ValueError
        When nothing is left to process.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[str] = []
    for entry in inputs:
        found.extend(_expand_one(os.fspath(entry), base=Path.cwd()))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ValueError("no inputs to process: give NWB files, glob patterns, URLs or manifests.")
    return unique


def _expand_one(entry: str, *, base: Path) -> list[str]:
    entry = entry.strip()
    if _URL_RE.match(entry):
        return [entry]
    path = Path(entry).expanduser()
    if not path.is_absolute():
        path = base / path
    if glob.has_magic(entry):
        matches = sorted(glob.glob(os.fspath(path), recursive=True))
        files = [str(Path(m).resolve()) for m in matches if Path(m).is_file()]
        if not files:
            raise FileNotFoundError(f"glob pattern {entry!r} matched no file.")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    if path.suffix.lower() in _MANIFEST_SUFFIXES:
        return _read_manifest(path)
    return [str(path.resolve())]


def _read_manifest(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        entries = [line.strip() for line in lines]
        entries = [e for e in entries if e and not e.startswith("#")]
    else:
        import pandas as pd

        table = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str)
        if table.empty or not len(table.columns):
            raise ValueError(f"manifest {path} lists no input.")
        columns = [c for c in ("path", "url") if c in table.columns]
        column = columns[0] if columns else table.columns[0]
        entries = [str(v).strip() for v in table[column].dropna()]
    out: list[str] = []
    for entry in entries:
        if glob.has_magic(entry) or not entry.lower().endswith(_MANIFEST_SUFFIXES):
            out.extend(_expand_one(entry, base=path.parent))
        else:
            raise ValueError(f"manifest {path} lists another manifest ({entry!r}); not supported.")
    return out


def output_name(source: str, rank: int, seed: int) -> str:
    """Return the deterministic output file name of a task.

    Parameters
    ----------
    source : str
        Absolute local path or URL of the input (as returned by :func:`expand_inputs`).
    rank, seed : int
        Rank and seed of the task.

    Returns
    -------
    str
        ``<stem>_<digest>_rank<rank>_seed<seed>.nwb``, where ``stem`` is the input's file name
        without ``.nwb`` (characters other than letters, digits, ``.``, ``_`` and ``-`` replaced
        by ``_``) and ``digest`` the first 8 hex digits of the SHA-256 of ``source``, so two
        inputs with the same file name never share an output.
    """
    tail = source.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    stem = re.sub(r"\.nwb$", "", tail, flags=re.IGNORECASE)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).strip("._") or "input"
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:8]
    return f"{stem}_{digest}_rank{rank}_seed{seed}.nwb"


def plan_batch(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    ranks: Sequence[int] | None,
    seeds: Sequence[int] | None,
    config: RunConfig,
    output_dir: str | os.PathLike,
) -> list[BatchTask]:
    """Plan the tasks of a batch: every input × rank × seed, in that order.

    Parameters
    ----------
    inputs : str, path, or iterable of them
        See :func:`expand_inputs`.
    ranks : sequence of int or None
        Ranks to fit; None uses ``config.fit.candidate_ranks``.
    seeds : sequence of int or None
        Seeds (integers >= 0); None uses ``(config.seed,)``.
    config : RunConfig
        Base configuration; each task overrides its rank and seed.
    output_dir : str or path
        Folder of the outputs.

    Returns
    -------
    list of BatchTask
        One task per (input, rank, seed).

    Raises
    ------
    ValueError
        On an empty or repeated rank or seed list, or a seed of None.
    TypeError
        When ``config`` is not a RunConfig, or a rank or seed is not an integer.
    """
    from .config import RunConfig

    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig; got {type(config).__name__}.")
    ranks = tuple(config.fit.candidate_ranks if ranks is None else ranks)
    if seeds is None:
        if config.seed is None:
            raise ValueError(
                "batch runs need integer seeds (outputs are matched by seed); config.seed is "
                "None: pass seeds=[...] or set seed in the configuration."
            )
        seeds = (config.seed,)
    seeds = tuple(seeds)
    ranks = _check_int_list(ranks, "ranks", minimum=1)
    seeds = _check_int_list(seeds, "seeds", minimum=0)
    sources = expand_inputs(inputs)
    out_dir = Path(output_dir).expanduser().resolve()
    tasks = []
    for source in sources:
        for rank in ranks:
            for seed in seeds:
                task_config = config.with_overrides(rank=rank, seed=seed)
                tasks.append(
                    BatchTask(
                        input=source,
                        rank=rank,
                        seed=seed,
                        output=str(out_dir / output_name(source, rank, seed)),
                        config_json=task_config.to_json(),
                    )
                )
    return tasks


def _check_int_list(values: tuple, name: str, *, minimum: int) -> tuple[int, ...]:
    if not values:
        raise ValueError(f"{name} must list at least one value; got an empty list.")
    checked = tuple(check_positive_int(v, f"{name} entries", minimum=minimum) for v in values)
    if len(set(checked)) != len(checked):
        raise ValueError(f"{name} must not repeat a value; got {list(checked)}.")
    return checked


# ----------------------------------------------------------------------------------- one task
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
    from .config import RunConfig
    from .pipeline import run_file

    config = RunConfig.from_json(task.config_json)
    device = resolve_device(config.device)
    if device != config.device:
        config = config.with_overrides(device=device)
    run_file(task.input, output=output, config=config, progress=False)


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
    scratch = final.parent / _PARTIAL_DIR / f"{final.stem}.{uuid.uuid4().hex[:12]}"
    scratch.mkdir(parents=True, exist_ok=False)
    try:
        written = scratch / final.name
        task_fn(task, written)
        if not written.is_file():
            raise RuntimeError(f"the task function wrote no file at {written}.")
        row = summarise_output(written, task)
        _fsync_file(written)
        os.replace(written, final)
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    row.update(status="done", time_s=time.perf_counter() - start, output=str(final))
    return row


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- output checking
def _read_task_results(path: Path, task: BatchTask) -> Results:
    from .extension import read_results

    config = json.loads(task.config_json)
    return read_results(path, config["name"], module_name=config["module_name"])


def _source_identifier(source: str) -> str | None:
    """``NWBFile.identifier`` of a local HDF5 NWB file (None for URLs)."""
    if _URL_RE.match(source):
        return None
    import h5py

    with h5py.File(source, "r") as f:
        value = f["identifier"][()]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _comparable_config(config_json: str) -> dict[str, Any]:
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
    if not _same_source(prov.source.path, task.input):
        return f"source {prov.source.path!r} != {task.input!r}"
    identifier = _source_identifier(task.input)
    if identifier is not None and prov.source.identifier != identifier:
        return f"source identifier {prov.source.identifier!r} != {identifier!r}"
    return None


def _same_source(recorded: str, source: str) -> bool:
    if _URL_RE.match(source) or _URL_RE.match(recorded):
        return recorded == source
    return os.path.realpath(recorded) == os.path.realpath(source)


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
        **_base_row(task),
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


def _base_row(task: BatchTask) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(SUMMARY_COLUMNS)
    row.update(file=task.input, rank=task.rank, seed=task.seed, output=task.output, error="")
    return row


def _existing_state(task: BatchTask) -> tuple[str, dict[str, Any] | str | None]:
    """("missing", None), ("complete", row) or ("mismatch", reason) for a planned task."""
    if not os.path.exists(task.output):
        return "missing", None
    try:
        return "complete", summarise_output(task.output, task)
    except Exception as exc:  # unreadable or foreign file: never counted as finished
        return "mismatch", f"{type(exc).__name__}: {exc}"


# -------------------------------------------------------------------------------------- batch
def run_batch(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    ranks: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    config: RunConfig | None = None,
    output_dir: str | os.PathLike,
    scheduler: Any = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = "auto",
    resources: dict[str, float] | None = None,
    retries: int = 1,
    summary: str | os.PathLike | None = "summary.csv",
    overwrite: bool = False,
    progress: bool = True,
    task_fn: TaskFunction | None = None,
) -> pd.DataFrame:
    """Fit every input at every rank with every seed on Dask, resumably; return the summary.

    Parameters
    ----------
    inputs : str, path, or iterable of them
        NWB files, glob patterns, URLs or manifests (see :func:`expand_inputs`).
    ranks : sequence of int, optional
        Ranks to fit; default ``config.fit.candidate_ranks``.
    seeds : sequence of int, optional
        Seeds; default ``(config.seed,)``.
    config : RunConfig, optional
        Base configuration of every run (default ``RunConfig()``). ``config.device="cuda"``
        fits on the GPU; on an embedded cluster without CUDA the batch falls back to the CPU
        with one warning.
    output_dir : str or path
        Folder of the outputs (created if needed), one NWB file per task, plus the summary.
    scheduler : str or distributed.Client, optional
        None starts an embedded ``LocalCluster`` (closed at the end); a scheduler address
        (``"tcp://host:8786"``) or a ``Client`` uses an existing cluster.
    n_workers, threads_per_worker : int, default: 2, 1
        Size of the embedded cluster (worker processes and threads per process). Each worker
        process limits BLAS/OpenMP (and so torch) to one thread.
    memory_limit : str, int or None, default: "auto"
        Memory limit per worker of the embedded cluster ("4GB", bytes, "auto" = system memory
        shared among workers, None = no limit); Dask pauses and restarts workers above it.
    resources : dict, optional
        Abstract resources each task needs, e.g. ``{"MEMORY": 2e9}`` (bytes) or ``{"GPU": 1}``.
        Embedded workers offer ``MEMORY`` = their memory limit and ``n`` of any other requested
        resource (so ``{"GPU": 1}`` runs one task at a time per worker); on an existing cluster,
        start workers with e.g. ``dask worker --resources "GPU=1,MEMORY=16e9"``.
    retries : int, default: 1
        How many times a failed task is retried before it is reported as failed.
    summary : str, path or None, default: "summary.csv"
        Where to write the summary table (relative to ``output_dir``); a Parquet copy is written
        beside it when pyarrow is installed. None writes nothing.
    overwrite : bool, default: False
        Replace existing outputs that do not match their task (another configuration, seed or
        source, or an unreadable file). By default they raise.
    progress : bool, default: True
        Show a progress bar over tasks.
    task_fn : callable, optional
        ``task_fn(task, path)`` writing the results of one :class:`BatchTask` to ``path``;
        default :func:`run_pipeline_task`. Must be picklable (a module-level function).

    Returns
    -------
    pandas.DataFrame
        One row per task, in plan order, columns :data:`SUMMARY_COLUMNS`: ``file``, ``rank``,
        ``seed``, ``status`` ("done", "skipped" or "failed"), held-out ``log_likelihood`` /
        ``bits_per_spike`` / ``r2`` (NaN when the fit does not report them), degeneracy counts
        (``n_constrained``, ``n_degenerate``, ``n_gauge``, ``n_total``; missing when the
        posterior stage is off), ``error`` ("" unless failed), ``time_s`` (wall seconds of the
        task, 0 when skipped) and ``output`` (the output path).

    Raises
    ------
    FileExistsError
        When outputs exist that do not match their task and ``overwrite`` is False.
    ValueError
        On invalid sizes, or resources the embedded workers cannot offer.

    Examples
    --------
    >>> from nwb_lrconn.config import RunConfig
    >>> table = run_batch(  # doctest: +SKIP
    ...     "sessions/*.nwb", ranks=[1, 2, 3], seeds=[0, 1],
    ...     config=RunConfig(), output_dir="results",
    ... )
    >>> select_ranks(table)  # doctest: +SKIP
    """
    from .config import RunConfig

    config = RunConfig() if config is None else config
    check_positive_int(n_workers, "n_workers")
    check_positive_int(threads_per_worker, "threads_per_worker")
    check_positive_int(retries, "retries", minimum=0)
    resources = _check_resources(resources)
    embedded = scheduler is None
    if embedded and resolve_device(config.device) != config.device:
        config = config.with_overrides(device="cpu")
    tasks = plan_batch(inputs, ranks=ranks, seeds=seeds, config=config, output_dir=output_dir)
    out_dir = Path(output_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: dict[int, dict[str, Any]] = {}
    pending: list[int] = []
    mismatched: list[str] = []
    for i, task in enumerate(tasks):
        state, info = _existing_state(task)
        if state == "complete":
            rows[i] = info  # type: ignore[assignment]
        else:
            pending.append(i)
            if state == "mismatch":
                mismatched.append(f"{task.output} ({info})")
    if mismatched and not overwrite:
        shown = "; ".join(mismatched[:3]) + (" ..." if len(mismatched) > 3 else "")
        raise FileExistsError(
            f"{len(mismatched)} output(s) in {out_dir} exist but do not match their task: "
            f"{shown}. Use another output_dir, or overwrite=True to replace them."
        )
    try:
        if pending:
            rows.update(
                _run_on_dask(
                    [tasks[i] for i in pending],
                    pending,
                    scheduler=scheduler,
                    n_workers=n_workers,
                    threads_per_worker=threads_per_worker,
                    memory_limit=memory_limit,
                    resources=resources,
                    retries=retries,
                    progress=progress,
                    task_fn=task_fn,
                )
            )
    finally:
        _remove_partials(out_dir, tasks)
    table = _table([rows[i] for i in range(len(tasks))])
    if summary is not None:
        summary_path = Path(summary)
        write_summary(table, summary_path if summary_path.is_absolute() else out_dir / summary)
    return table


def _check_resources(resources: dict[str, float] | None) -> dict[str, float]:
    if resources is None:
        return {}
    if not isinstance(resources, dict):
        raise TypeError(f"resources must be a dict such as {{'MEMORY': 2e9}}; got {resources!r}.")
    for key, value in resources.items():
        if not isinstance(key, str) or isinstance(value, bool):
            raise TypeError(f"resources must map names to amounts; got {key!r}: {value!r}.")
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"resources[{key!r}] must be a number > 0; got {value!r}.")
    return dict(resources)


def _worker_resources(
    resources: dict[str, float], memory_limit: str | int | None, n_workers: int
) -> dict[str, float] | None:
    """Resources each embedded worker offers for the requested task resources."""
    if not resources:
        return None
    from dask.utils import parse_bytes
    from distributed.system import MEMORY_LIMIT

    offered: dict[str, float] = {}
    for key, amount in resources.items():
        if key != "MEMORY":
            offered[key] = amount
            continue
        if memory_limit is None or memory_limit == "auto":
            capacity = MEMORY_LIMIT // n_workers
        elif isinstance(memory_limit, str):
            capacity = parse_bytes(memory_limit)
        else:
            capacity = int(memory_limit)
        if amount > capacity:
            raise ValueError(
                f"resources['MEMORY'] = {amount:.0f} bytes exceeds the memory of each embedded "
                f"worker ({capacity} bytes); lower it, raise memory_limit or use fewer workers."
            )
        offered[key] = capacity
    return offered


def _run_on_dask(
    tasks: list[BatchTask],
    indices: list[int],
    *,
    scheduler: Any,
    n_workers: int,
    threads_per_worker: int,
    memory_limit: str | int | None,
    resources: dict[str, float],
    retries: int,
    progress: bool,
    task_fn: TaskFunction | None,
) -> dict[int, dict[str, Any]]:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            processes=True,
            resources=_worker_resources(resources, memory_limit, n_workers),
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # failures are reported in the summary table
        )
        client = Client(cluster)
    elif isinstance(scheduler, Client):
        client = scheduler
    else:
        client = Client(scheduler)
    try:
        if scheduler is not None and resources:
            _warn_if_unoffered(client, resources)
        futures = {}
        for index, task in zip(indices, tasks):
            future = client.submit(
                run_task,
                task,
                task_fn=task_fn,
                key=f"lrconn-{Path(task.output).stem}-{uuid.uuid4().hex[:8]}",
                resources=resources or None,
                retries=retries,
                pure=False,
            )
            futures[future] = (index, task)
        rows = {}
        bar = _progress_bar(len(futures), progress)
        try:
            for future in as_completed(list(futures)):
                index, task = futures[future]
                rows[index] = _row_from_future(future, task)
                bar.update(1)
        finally:
            bar.close()
        return rows
    finally:
        if client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()


def _warn_if_unoffered(client: Any, resources: dict[str, float]) -> None:
    workers = client.scheduler_info().get("workers", {}).values()
    for key, amount in resources.items():
        if not any(w.get("resources", {}).get(key, 0) >= amount for w in workers):
            warnings.warn(
                f"no worker connected to the scheduler offers resource {key}={amount}; the "
                "tasks wait until one joins (start workers with --resources).",
                RuntimeWarning,
                stacklevel=3,
            )


def _row_from_future(future: Any, task: BatchTask) -> dict[str, Any]:
    if future.status == "finished":
        return future.result()
    row = _base_row(task)
    try:
        exc = future.exception()
    except Exception as err:  # cancelled futures raise here
        exc = err
    row.update(
        status="failed", error=f"{type(exc).__name__}: {exc}", time_s=float("nan"), output=""
    )
    return row


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, progress: bool) -> Any:
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="batch", unit="task")


def _remove_partials(out_dir: Path, tasks: list[BatchTask]) -> None:
    """Remove scratch folders of this batch's tasks (left by killed workers)."""
    partial = out_dir / _PARTIAL_DIR
    if not partial.is_dir():
        return
    stems = {Path(t.output).stem for t in tasks}
    for entry in partial.iterdir():
        if entry.name.rsplit(".", 1)[0] in stems:
            shutil.rmtree(entry, ignore_errors=True)
    try:
        partial.rmdir()
    except OSError:  # not empty: scratch of another batch in the same folder
        pass


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    for column in ("n_constrained", "n_degenerate", "n_gauge", "n_total"):
        table[column] = table[column].astype("Int64")
    for column in ("log_likelihood", "bits_per_spike", "r2", "time_s"):
        table[column] = table[column].astype(float)
    table["rank"] = table["rank"].astype(int)
    table["seed"] = table["seed"].astype(int)
    table["error"] = table["error"].fillna("").astype(str)
    return table


def write_summary(table: pd.DataFrame, path: str | os.PathLike) -> list[Path]:
    """Write a summary table as CSV, plus Parquet beside it when pyarrow is installed.

    Parameters
    ----------
    table : pandas.DataFrame
        As returned by :func:`run_batch`.
    path : str or path
        CSV path; the Parquet copy has the same stem and suffix ``.parquet``.

    Returns
    -------
    list of Path
        The files written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    written = [path]
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return written
    parquet = path.with_suffix(".parquet")
    table.to_parquet(parquet, index=False)
    written.append(parquet)
    return written


# ---------------------------------------------------------------------------- rank selection
def select_ranks(table: pd.DataFrame, *, rule: str = "best") -> pd.DataFrame:
    """Choose one rank per file from a batch summary, by held-out log-likelihood.

    For each file, the held-out log-likelihood of every successful task is averaged over seeds
    per rank. ``rule="best"`` keeps the rank with the highest mean; ``rule="one_se"`` keeps the
    smallest rank whose mean is within one standard error (over seeds) of the best one, a
    parsimonious choice when several seeds were run.

    Parameters
    ----------
    table : pandas.DataFrame
        A summary as returned by :func:`run_batch` (columns ``file``, ``rank``, ``seed``,
        ``status``, ``log_likelihood``, ``output``).
    rule : {"best", "one_se"}, default: "best"
        Selection rule.

    Returns
    -------
    pandas.DataFrame
        One row per file, in order of first appearance: ``file``, ``rank`` (the chosen rank;
        missing when no task of the file succeeded), ``log_likelihood`` (mean over seeds at that
        rank), ``log_likelihood_sem``, ``n_seeds``, ``best_seed`` and ``output`` (the seed and
        file with the highest log-likelihood at that rank), ``ranks_tried`` (ranks with at least
        one successful fit).

    Raises
    ------
    ValueError
        On an unknown rule or missing columns.
    """
    import numpy as np
    import pandas as pd

    if rule not in ("best", "one_se"):
        raise ValueError(f"rule must be one of ['best', 'one_se']; got {rule!r}.")
    needed = {"file", "rank", "seed", "status", "log_likelihood", "output"}
    missing = sorted(needed - set(table.columns))
    if missing:
        raise ValueError(f"table lacks column(s) {missing}; pass the table run_batch returns.")
    ok = table[table["status"].isin(("done", "skipped")) & np.isfinite(table["log_likelihood"])]
    out = []
    for file in dict.fromkeys(table["file"]):
        rows = ok[ok["file"] == file]
        record: dict[str, Any] = {
            "file": file,
            "rank": pd.NA,
            "log_likelihood": float("nan"),
            "log_likelihood_sem": float("nan"),
            "n_seeds": 0,
            "best_seed": pd.NA,
            "output": "",
            "ranks_tried": sorted(int(r) for r in rows["rank"].unique()),
        }
        if len(rows):
            stats = rows.groupby("rank")["log_likelihood"].agg(["mean", "std", "count"])
            stats["sem"] = (stats["std"] / np.sqrt(stats["count"])).fillna(0.0)
            best = stats["mean"].idxmax()
            chosen = best
            if rule == "one_se":
                floor = stats.loc[best, "mean"] - stats.loc[best, "sem"]
                chosen = min(r for r in stats.index if stats.loc[r, "mean"] >= floor)
            at_rank = rows[rows["rank"] == chosen]
            top = at_rank.loc[at_rank["log_likelihood"].idxmax()]
            record.update(
                rank=int(chosen),
                log_likelihood=float(stats.loc[chosen, "mean"]),
                log_likelihood_sem=float(stats.loc[chosen, "sem"]),
                n_seeds=int(stats.loc[chosen, "count"]),
                best_seed=int(top["seed"]),
                output=str(top["output"]),
            )
        out.append(record)
    result = pd.DataFrame(out)
    result["rank"] = result["rank"].astype("Int64")
    result["best_seed"] = result["best_seed"].astype("Int64")
    return result


# ---------------------------------------------------------------------------------------- CLI
_EPILOG = """examples:
  nwb-lrconn batch sessions/*.nwb --output-dir results --ranks 1 2 3 --seeds 0 1
  nwb-lrconn batch manifest.txt --output-dir results --config run.toml --n-workers 8
  nwb-lrconn batch manifest.csv --output-dir results --scheduler tcp://10.0.0.5:8786 --gpu

Rerunning the same command skips every finished output; failed tasks are listed in the summary
(results/summary.csv) and rerun next time.
"""


def add_batch_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``batch`` subcommand to an argparse subparsers object.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The ``batch`` parser; its ``func`` default is :func:`run_batch_command`.
    """
    parser = subparsers.add_parser(
        "batch",
        help="fit many NWB files × ranks × seeds on Dask (resumable)",
        description="Fit every input at every rank with every seed on a Dask cluster, one "
        "output NWB file per task, and write a summary table. Inputs are NWB files, glob "
        "patterns, URLs, or manifests (.txt with one path/URL per line, .csv with a 'path' or "
        "'url' column).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", help="NWB files, globs, URLs or manifests")
    parser.add_argument("--output-dir", "-o", required=True, help="folder of the outputs")
    parser.add_argument("--ranks", type=int, nargs="+", help="ranks (default: from config)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: config seed)")
    parser.add_argument("--config", help="run configuration (.toml or .json)")
    parser.add_argument("--device", help="torch device, e.g. cuda (default: from config)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler")
    parser.add_argument("--n-workers", type=int, default=2, help="embedded workers (default 2)")
    parser.add_argument("--threads-per-worker", type=int, default=1, help="default 1")
    parser.add_argument(
        "--memory-limit", default="auto", help="per embedded worker, e.g. 4GB (default auto)"
    )
    parser.add_argument("--task-memory", help="memory each task reserves, e.g. 2GB")
    parser.add_argument(
        "--gpu", action="store_true", help="run tasks on GPU workers (resource GPU=1, cuda)"
    )
    parser.add_argument("--retries", type=int, default=1, help="retries per task (default 1)")
    parser.add_argument("--summary", default="summary.csv", help="summary file name")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace outputs that do not match their task"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_batch_command)
    return parser


def run_batch_command(args: argparse.Namespace) -> int:
    """Run the ``batch`` subcommand from parsed arguments.

    Parameters
    ----------
    args : argparse.Namespace
        As parsed by the parser of :func:`add_batch_parser`.

    Returns
    -------
    int
        0 when every task finished or was skipped, 1 when some failed (listed in the summary),
        2 on bad input (a one-line message on stderr).
    """
    import sys

    from .config import RunConfig

    try:
        config = RunConfig() if args.config is None else RunConfig.from_file(args.config)
        resources: dict[str, float] = {}
        if args.task_memory is not None:
            from dask.utils import parse_bytes

            resources["MEMORY"] = float(parse_bytes(args.task_memory))
        device = args.device
        if args.gpu:
            resources["GPU"] = 1
            device = device or "cuda"
        if device is not None:
            config = config.with_overrides(device=device)
        table = run_batch(
            args.inputs,
            ranks=args.ranks,
            seeds=args.seeds,
            config=config,
            output_dir=args.output_dir,
            scheduler=args.scheduler,
            n_workers=args.n_workers,
            threads_per_worker=args.threads_per_worker,
            memory_limit=args.memory_limit,
            resources=resources or None,
            retries=args.retries,
            summary=args.summary,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (FileNotFoundError, FileExistsError, ValueError, TypeError) as exc:
        print(f"nwb-lrconn batch: error: {exc}", file=sys.stderr)
        return 2
    counts = table["status"].value_counts()
    n_failed = int(counts.get("failed", 0))
    print(
        f"{len(table)} task(s): {int(counts.get('done', 0))} done, "
        f"{int(counts.get('skipped', 0))} skipped, {n_failed} failed; summary in "
        f"{Path(args.output_dir) / args.summary}"
    )
    for row in table[table["status"] == "failed"].itertuples():
        print(f"failed: {row.file} rank={row.rank} seed={row.seed}: {row.error}", file=sys.stderr)
    chosen = select_ranks(table)
    for row in chosen.itertuples():
        if row.n_seeds:
            print(
                f"{row.file}: rank {row.rank} (held-out log-likelihood {row.log_likelihood:.4g})"
            )
    return 1 if n_failed else 0
