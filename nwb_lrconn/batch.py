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
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._validation import check_positive_int
from .batch_plan import BatchTask, expand_inputs, output_name, plan_batch
from .batch_summary import select_ranks, summary_table, write_summary
from .batch_task import (
    PARTIAL_DIR,
    SUMMARY_COLUMNS,
    TaskFunction,
    base_row,
    existing_state,
    resolve_device,
    run_pipeline_task,
    run_task,
    summarise_output,
)

if TYPE_CHECKING:
    import pandas as pd

    from .config import RunConfig

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
    "local_cluster",
    "select_ranks",
    "write_summary",
    "add_batch_parser",
    "run_batch_command",
]


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
    cache_dir: str | os.PathLike | None = None,
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
    cache_dir : str or path, optional
        Folder keeping streamed bytes of remote inputs, shared by every task (workers must
        see it), so an asset is downloaded once however many ranks and seeds use it.

    Returns
    -------
    pandas.DataFrame
        One row per task, in plan order, columns :data:`SUMMARY_COLUMNS`: ``file``, ``rank``,
        ``seed``, ``status`` ("done", "skipped" or "failed"), held-out ``log_likelihood`` /
        ``bits_per_spike`` / ``r2`` (NaN when the fit does not report them), degeneracy counts
        (``n_constrained``, ``n_degenerate``, ``n_gauge``, ``n_total``; missing when the
        posterior stage is off), ``error`` ("" unless failed), ``time_s`` (wall seconds of the
        task, 0 when skipped) and ``output`` (the output path; "" when failed).

    Raises
    ------
    FileExistsError
        When outputs exist that do not match their task and ``overwrite`` is False.
    ValueError
        On invalid sizes, or resources the embedded workers cannot offer.

    Notes
    -----
    Run one batch at a time per ``output_dir``: scratch folders of this batch's tasks are removed
    when it ends. Failed tasks are rerun by the next call; finished ones are skipped.

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
    tasks = plan_batch(
        inputs,
        ranks=ranks,
        seeds=seeds,
        config=config,
        output_dir=output_dir,
        cache_dir=cache_dir,
    )
    out_dir = Path(output_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: dict[int, dict[str, Any]] = {}
    pending: list[int] = []
    mismatched: list[str] = []
    for i, task in enumerate(tasks):
        if task.problem:  # found by the input check while planning: never run
            rows[i] = {
                **base_row(task),
                "status": "failed",
                "error": task.problem,
                "time_s": float("nan"),
                "output": "",
            }
            continue
        state, info = existing_state(task)
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
    table = summary_table([rows[i] for i in range(len(tasks))])
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
    from distributed import Client, as_completed

    cluster = None
    if scheduler is None:
        cluster = local_cluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            resources=_worker_resources(resources, memory_limit, n_workers),
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


def local_cluster(
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str | int | None = "auto",
    resources: dict[str, float] | None = None,
) -> Any:
    """Start a local Dask cluster of worker processes set up for fitting (as run_batch does).

    Use it to keep one cluster for several batches (pass ``Client(cluster)`` as ``scheduler``).
    Each worker process limits BLAS/OpenMP (and so torch) to one thread per process, as Dask
    does by default, but does not inherit Dask's ``MALLOC_TRIM_THRESHOLD_`` setting: fixing that
    threshold also fixes glibc's mmap threshold, so every medium-sized torch tensor is mapped
    and unmapped afresh (measured here: 4× the page faults and ~30 % more CPU time per fit).

    Parameters
    ----------
    n_workers, threads_per_worker : int, default: 2, 1
        Worker processes and threads per process.
    memory_limit : str, int or None, default: "auto"
        Memory limit per worker ("4GB", bytes, "auto", or None for no limit).
    resources : dict, optional
        Abstract resources each worker offers, e.g. ``{"GPU": 1, "MEMORY": 8e9}``.

    Returns
    -------
    distributed.LocalCluster
        Running; close it (or use it as a context manager) when done.
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            processes=True,
            resources=resources,
            dashboard_address=":0",  # no fixed port: other clusters may run here
            silence_logs=logging.CRITICAL,  # failures are reported in the summary table
        )


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
    row = base_row(task)
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
    for folder in sorted({Path(t.output).parent for t in tasks} | {out_dir}):
        partial = folder / PARTIAL_DIR
        if not partial.is_dir():
            continue
        stems = {Path(t.output).stem for t in tasks}
        for entry in partial.iterdir():
            if entry.name.rsplit(".", 1)[0] in stems:
                shutil.rmtree(entry, ignore_errors=True)
        try:
            partial.rmdir()
        except OSError:  # not empty: scratch of another batch in the same folder
            pass


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
        "--memory-limit",
        default="auto",
        help="per embedded worker, e.g. 4GB, or none (default auto)",
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
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="keep streamed bytes of remote inputs in DIR"
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
            memory_limit=None if args.memory_limit.lower() == "none" else args.memory_limit,
            resources=resources or None,
            retries=args.retries,
            summary=args.summary,
            overwrite=args.overwrite,
            progress=not args.quiet,
            cache_dir=args.cache_dir,
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
