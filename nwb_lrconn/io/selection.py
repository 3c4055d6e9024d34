"""Select rows of a Units table or PlaneSegmentation: by id, and by column values.

One selection language for units and ROIs alike: a boolean column name (``"iscell"``),
``(column, op, value)`` with ``op`` in ``==, !=, >, >=, <, <=, in``, or a list of those (all must
hold). On the command line the same clauses are written ``--where location==ADn``,
``--where "quality in good,mua"`` or ``--where iscell`` (:func:`parse_where`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "WHERE_OPS",
    "Where",
    "select_rows",
    "parse_where",
    "describe_columns",
    "classified_cells",
    "json_where",
]

WHERE_OPS = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "in": lambda a, b: np.isin(a, list(b)),
}
Where = str | tuple[str, str, Any] | Sequence[tuple[str, str, Any] | str]

_CLAUSE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|>=|<=|>|<|\s+in\s+)\s*(.+?)\s*$")


def _value(text: str) -> Any:
    """A number when the text is one, else the text (quotes stripped)."""
    text = text.strip().strip("'\"")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_where(text: str) -> str | tuple[str, str, Any]:
    """Parse one command-line clause: ``column``, ``column OP value`` or ``column in a,b``.

    Raises
    ------
    ValueError
        When the text is none of these (the message shows the accepted forms).
    """
    if re.fullmatch(r"\s*[A-Za-z_][\w.]*\s*", text):
        return text.strip()
    match = _CLAUSE.match(text)
    if match is None:
        raise ValueError(
            f"cannot read the filter {text!r}; write COLUMN (a true/false column), COLUMN==VALUE "
            "(also !=, >, >=, <, <=) or 'COLUMN in A,B', e.g. --where location==ADn"
        )
    column, op, value = match.group(1), match.group(2).strip(), match.group(3)
    if op == "in":
        return column, "in", tuple(_value(v) for v in value.split(","))
    return column, op, _value(value)


def _kind(table: Any) -> str:
    return "Units table" if type(table).__name__ == "Units" else type(table).__name__


def _column_array(table: Any, column: str, source: str, path: str) -> np.ndarray:
    if column not in table.colnames:
        raise KeyError(
            f"Unknown column {column!r} in the {_kind(table)} {path!r} of {source}; "
            f"columns are {list(table.colnames)}."
        )
    col = table[column]
    if not hasattr(col, "data") or type(col).__name__ in ("VectorIndex", "DynamicTableRegion"):
        raise ValueError(
            f"Column {column!r} of {path!r} in {source} is ragged or a reference; "
            "a filter needs a column with one value per row."
        )
    values = np.asarray(col.data[:])
    if values.ndim == 2:  # e.g. suite2p's iscell: (is a cell, classifier probability)
        values = values[:, 0]
    if values.dtype.kind in "OSU":
        values = np.array([v.decode() if isinstance(v, bytes) else v for v in values])
    return values


def _evaluate(table: Any, clause: Any, source: str, path: str) -> np.ndarray:
    if isinstance(clause, str):
        values = _column_array(table, clause, source, path)
        if values.dtype.kind in "iuf" and np.isin(values, (0, 1)).all():
            values = values.astype(bool)  # 0/1 flags, as suite2p writes them
        if values.dtype != bool:
            raise TypeError(
                f"where={clause!r} names a column of dtype {values.dtype}, not true/false; "
                "use (column, op, value), e.g. --where location==ADn."
            )
        return values
    if not (isinstance(clause, tuple) and len(clause) == 3):
        raise TypeError(
            f"where must be a bool column name or (column, op, value); got {clause!r}."
        )
    column, op, value = clause
    if op not in WHERE_OPS:
        raise ValueError(f"where operator must be one of {list(WHERE_OPS)}; got {op!r}.")
    values = _column_array(table, column, source, path)
    return np.asarray(WHERE_OPS[op](values, value), dtype=bool)


def _clauses(where: Any) -> list[Any]:
    """Normalise ``where`` into a list of clauses (JSON configs turn tuples into lists)."""
    if isinstance(where, (str, tuple)):
        return [where]
    if (
        isinstance(where, list)
        and len(where) == 3
        and isinstance(where[0], str)
        and isinstance(where[1], str)
        and where[1] in WHERE_OPS
    ):
        return [tuple(where)]
    if isinstance(where, list):
        return [tuple(c) if isinstance(c, list) else c for c in where]
    raise TypeError(
        f"where must be a bool column name, (column, op, value) or a list of those; got {where!r}."
    )


def select_rows(
    table: Any,
    *,
    unit_ids: Sequence[int] | None,
    where: Where | None,
    source: str,
    path: str,
) -> np.ndarray:
    """Rows of ``table`` selected by ids and a column filter.

    Rows come in table order, or in the order of ``unit_ids`` when given.

    Raises
    ------
    KeyError
        An id or column that the table does not have (the message lists what it has).
    ValueError
        When nothing matches.
    """
    ids = np.asarray(table.id.data[:])
    rows = np.arange(ids.size)
    if unit_ids is not None:
        wanted = np.asarray(unit_ids).reshape(-1)
        lookup = {int(v): i for i, v in enumerate(ids)}
        missing = [int(u) for u in wanted if int(u) not in lookup]
        if missing:
            raise KeyError(
                f"unit_ids {missing} are not in the {_kind(table)} {path!r} of {source}; its "
                f"ids run {ids.min()}..{ids.max()} ({ids.size} rows)."
            )
        rows = np.array([lookup[int(u)] for u in wanted], dtype=np.int64)
    if where is not None:
        keep = np.ones(ids.size, dtype=bool)
        for clause in _clauses(where):
            keep &= _evaluate(table, clause, source, path)
        rows = rows[keep[rows]]
    if rows.size == 0:
        raise ValueError(
            f"No row of the {_kind(table)} {path!r} in {source} matches unit_ids={unit_ids!r}, "
            f"where={where!r}."
        )
    return rows


def classified_cells(table: Any) -> np.ndarray | None:
    """suite2p's cell classification: True for ROIs its ``iscell`` column calls cells.

    Returns None when the table has no ``iscell`` column.
    """
    if "iscell" not in table.colnames:
        return None
    values = np.asarray(table["iscell"].data[:])
    values = values[:, 0] if values.ndim == 2 else values
    return values.astype(float) > 0.5


def describe_columns(table: Any, *, max_values: int = 8) -> dict[str, Any]:
    """The filterable columns of ``table``: ``{column: sorted distinct values}`` for text and
    true/false columns with few values, ``{column: [min, max]}`` for numbers."""
    out: dict[str, Any] = {}
    for name in table.colnames:
        col = table[name]
        if not hasattr(col, "data") or type(col).__name__ in ("VectorIndex", "DynamicTableRegion"):
            continue
        try:
            values = np.asarray(col.data[:])
        except (TypeError, ValueError):
            continue
        if values.ndim == 2 and values.shape[1] >= 1:
            values = values[:, 0]
        if values.ndim != 1 or values.size == 0:
            continue
        if values.dtype.kind in "OSU":
            texts = sorted({v.decode() if isinstance(v, bytes) else str(v) for v in values})
            out[name] = texts[:max_values] + (["..."] if len(texts) > max_values else [])
        elif values.dtype.kind == "b" or np.isin(values, (0, 1)).all():
            out[name] = sorted({bool(v) for v in values})
        elif values.dtype.kind in "iuf":
            out[name] = [float(np.nanmin(values)), float(np.nanmax(values))]
    return out


def json_where(where: Any) -> Any:
    """``where`` as plain JSON values (for the provenance)."""
    from ._identity import plain_value

    if where is None or isinstance(where, str):
        return where
    if isinstance(where, tuple):
        value = where[2]
        if isinstance(value, (list, tuple, set, np.ndarray)):
            value = [plain_value(v) for v in value]
        else:
            value = plain_value(value)
        return [where[0], where[1], value]
    return [json_where(w) for w in where]
