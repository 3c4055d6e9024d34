"""The batch summary table: building it, writing it, and choosing a rank per file from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .task import SUMMARY_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["summary_table", "write_summary", "select_ranks"]


def summary_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Build the summary table from one row (dict) per task, with stable column types.

    Parameters
    ----------
    rows : list of dict
        Keys :data:`~nwb_lrconn.batch.SUMMARY_COLUMNS`.

    Returns
    -------
    pandas.DataFrame
        Columns in that order; counts as nullable integers (missing when the posterior stage is
        off or the task failed), metrics and times as floats, ``error`` as text ("" when none).
    """
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
