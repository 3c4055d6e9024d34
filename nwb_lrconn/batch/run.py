"""Run a planned batch on Dask: skip finished tasks, run the rest, gather the summary."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._validation import check_positive_int
from .plan import BatchTask, plan_batch
from .summary import summary_table, write_summary
from .task import (
    PARTIAL_DIR,
    TaskFunction,
    base_row,
    existing_state,
    resolve_device,
    run_task,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..config import RunConfig

__all__ = ["run_batch", "local_cluster"]


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
    from ..config import RunConfig

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
    and unmapped afresh, which multiplies page faults and costs CPU time on every fit.

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
