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

With ``--joint`` (:func:`run_joint_batch`) the inputs are sessions of one circuit, fitted as one
network per (rank, seed) in this process, one output per session.

Inputs are opened by each task from their path or URL (streamed by the io readers); only the path
string travels to the workers, never the data.
"""

from __future__ import annotations

from .joint import JOINT_COLUMNS, run_joint_batch
from .plan import BatchTask, expand_inputs, output_name, plan_batch
from .run import local_cluster, run_batch
from .summary import select_ranks, summary_table, write_summary
from .task import (
    PARTIAL_DIR,
    SUMMARY_COLUMNS,
    resolve_device,
    run_pipeline_task,
    run_task,
    summarise_output,
)

__all__ = [
    "SUMMARY_COLUMNS",
    "PARTIAL_DIR",
    "BatchTask",
    "expand_inputs",
    "plan_batch",
    "output_name",
    "resolve_device",
    "run_pipeline_task",
    "run_task",
    "summarise_output",
    "run_batch",
    "run_joint_batch",
    "JOINT_COLUMNS",
    "local_cluster",
    "select_ranks",
    "summary_table",
    "write_summary",
]
