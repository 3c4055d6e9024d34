"""A batch's inputs as sessions of one circuit: a joint fit per (rank, seed), a row per session.

:func:`run_joint_batch` fits every input of the batch as one network
(:func:`~nwb_lrconn.pipeline_joint.run_joint_files`) at each rank with each seed, in this process
(one model spans every session, so it cannot be split over workers). Each (rank, seed) writes into
its own folder ``output_dir/joint_rank<R>_seed<S>/`` (DANDI layout below it, one derived file per
session); the summary table has one row per (session, rank, seed) with the columns of a batch
summary plus the check that pooling the session is warranted. Rerunning skips a (rank, seed)
whose folder already holds every session's results of the same configuration.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._validation import check_positive_int
from .plan import batch_seeds, expand_inputs
from .summary import summary_table, write_summary
from .task import SUMMARY_COLUMNS, _comparable_config, _same_source

if TYPE_CHECKING:
    import pandas as pd

    from ..config import RunConfig
    from ..data import Results

__all__ = ["JOINT_COLUMNS", "run_joint_batch"]

JOINT_COLUMNS = (
    "joint_log_likelihood",
    "separate_log_likelihood",
    "joint_minus_separate",
    "stderr",
    "worse",
    "flagged",
    "verdict",
)
"""Columns a joint batch adds to :data:`~nwb_lrconn.batch.SUMMARY_COLUMNS`."""


def _row(source: str, rank: int, seed: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys((*SUMMARY_COLUMNS, *JOINT_COLUMNS))
    row.update(file=source, rank=rank, seed=seed, error="")
    row.update(values)
    return row


def _session_row(results: Results, path: Path, source: str, rank, seed, **values) -> dict:
    metrics, joint = results.fit.metrics, results.joint
    if joint is None:
        raise ValueError(f"{path} holds a single-session fit, not a session of a joint fit.")
    s = joint.session
    return _row(
        source,
        rank,
        seed,
        log_likelihood=metrics.get("log_likelihood", float("nan")),
        bits_per_spike=metrics.get("bits_per_spike", float("nan")),
        r2=metrics.get("r2", float("nan")),
        joint_log_likelihood=float(joint.joint_log_likelihood[s]),
        separate_log_likelihood=float(joint.separate_log_likelihood[s]),
        joint_minus_separate=float(joint.difference[s]),
        stderr=float(joint.stderr[s]),
        worse=bool(joint.worse[s]),
        flagged=None if joint.pooled is None else s in joint.flagged,
        verdict=joint.verdict(s),
        output=str(path),
        **values,
    )


def _finished(folder: Path, sources: Sequence[str], config: RunConfig) -> list | None:
    """Each source's (results, path) when ``folder`` holds a finished joint run of ``config``
    over exactly ``sources`` (in order), else None."""
    from ..extension import read_results

    if not folder.is_dir():
        return None
    found: list = [None] * len(sources)
    # joint runs store their configuration without the posterior stage (they skip it)
    wanted = _comparable_config(config.with_overrides(**{"posterior.enabled": False}).to_json())
    for path in sorted(folder.rglob("*.nwb")):
        try:
            results = read_results(path, config.name, module_name=config.module_name)
        except Exception:  # not ours: the run will say so if it is in the way
            continue
        joint = results.joint
        if joint is None or joint.n_sessions != len(sources):
            continue
        if _comparable_config(results.provenance.config_json) != wanted:
            continue
        if results.provenance.random_seed != config.seed:
            continue
        if _same_source(results.provenance.source, sources[joint.session]):
            found[joint.session] = (results, path)
    return found if all(item is not None for item in found) else None


def run_joint_batch(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    output_dir: str | os.PathLike,
    ranks: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    config: RunConfig | None = None,
    summary: str | os.PathLike | None = "summary.csv",
    overwrite: bool = False,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Fit every input as one session of one network, at each rank with each seed.

    Parameters
    ----------
    inputs : str, path, or iterable of them
        NWB files, glob patterns, URLs or manifests (see
        :func:`~nwb_lrconn.batch.expand_inputs`): the sessions, at least 2.
    output_dir : str or path
        Folder of the outputs: ``joint_rank<R>_seed<S>/`` per run, plus the summary.
    ranks : sequence of int, optional
        Default ``config.fit.candidate_ranks``.
    seeds : sequence of int, optional
        Default ``(config.seed,)``.
    config : RunConfig, optional
        Read settings and fit of every run (default ``RunConfig()``).
    summary : str, path or None, default: "summary.csv"
        Summary file (relative to ``output_dir``); None writes nothing.
    overwrite : bool, default: False
        Replace existing outputs of another configuration.
    progress : bool, default: True
        Progress bars and stage messages.
    cache_dir : str or path, optional
        Keep streamed bytes of remote inputs here.

    Returns
    -------
    pandas.DataFrame
        One row per (session, rank, seed): :data:`~nwb_lrconn.batch.SUMMARY_COLUMNS` (the
        degeneracy counts stay empty: joint fits have no posterior), then
        :data:`JOINT_COLUMNS`: ``joint_log_likelihood`` and ``separate_log_likelihood``
        (held-out, per value, same trials), ``joint_minus_separate`` and its ``stderr``,
        ``worse`` (the session's dynamics disagree with the others') and ``flagged`` (its
        distribution is far from the others'; empty without the pooled distribution) and the
        ``verdict`` in words (:meth:`~nwb_lrconn.data.JointSummary.verdict`). A run
        that fails gives every session a "failed" row with the error.

    Raises
    ------
    ValueError
        Fewer than 2 inputs, or ranks/seeds that are not positive integers.
    """
    from ..config import RunConfig
    from ..extension import read_results
    from ..pipeline_joint import run_joint_files

    config = RunConfig() if config is None else config
    sources = expand_inputs(inputs)
    if len(sources) < 2:
        raise ValueError(
            f"a joint batch needs at least 2 sessions; the inputs gave {len(sources)}: add "
            "sessions, or leave out --joint."
        )
    ranks = tuple(config.fit.candidate_ranks if ranks is None else ranks)
    seeds = batch_seeds(config, seeds)
    for rank in ranks:
        check_positive_int(rank, "rank")
    for seed in seeds:
        check_positive_int(seed, "seed", minimum=0)
    out_dir = Path(output_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for rank in ranks:
        for seed in seeds:
            run_config = config.with_overrides(rank=rank, seed=seed)
            folder = out_dir / f"joint_rank{rank}_seed{seed}"
            done = None if overwrite else _finished(folder, sources, run_config)
            if done is not None:
                rows += [
                    _session_row(res, path, src, rank, seed, status="skipped", time_s=0.0)
                    for (res, path), src in zip(done, sources)
                ]
                continue
            start = time.perf_counter()
            try:
                paths = run_joint_files(
                    sources,
                    run_config,
                    output_dir=folder,
                    overwrite=overwrite,
                    progress=progress,
                    cache_dir=cache_dir,
                )
            except Exception as err:  # reported per session; the other runs go on
                error = " ".join(f"{type(err).__name__}: {err}".split())
                rows += [
                    _row(src, rank, seed, status="failed", error=error, time_s=float("nan"))
                    for src in sources
                ]
                continue
            elapsed = time.perf_counter() - start
            for path, src in zip(paths, sources):
                res = read_results(path, run_config.name, module_name=run_config.module_name)
                rows.append(
                    _session_row(res, path, src, rank, seed, status="done", time_s=elapsed)
                )
    table = summary_table(rows)
    for column in JOINT_COLUMNS:
        table[column] = [row[column] for row in rows]
    for column in JOINT_COLUMNS[:4]:
        table[column] = table[column].astype(float)
    table["output"] = table["output"].fillna("")
    if summary is not None:
        path = Path(summary)
        write_summary(table, path if path.is_absolute() else out_dir / summary)
    return table
