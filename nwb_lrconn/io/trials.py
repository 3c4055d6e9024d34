"""Intervals to bin: trials of a TimeIntervals table, event-aligned windows, epochs, windows."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_positive
from ._paths import get_object

__all__ = [
    "interval_labels",
    "IntervalSpec",
    "build_intervals",
    "record_trial_rows",
    "check_time_range",
    "EpochSpec",
    "resolve_intervals_path",
    "trial_intervals",
    "epoch_intervals",
    "clip_intervals",
    "split_windows",
    "column_values",
]

# ``epochs`` argument: a TimeIntervals name/path, optionally with a label filter.
EpochSpec = str | tuple[str, Any] | tuple[str, str, Any]
_LABEL_COLUMNS = ("tags", "label")


def resolve_intervals_path(nwbfile: Any, name: str, source: str) -> Any:
    """Return the TimeIntervals table named ``name`` (``"trials"``, ``"epochs"``, ``"xyz"``) or
    at path ``name`` (``"intervals/xyz"``)."""
    from pynwb.epoch import TimeIntervals

    path = name if "/" in name.strip("/") else f"intervals/{name.strip('/')}"
    return get_object(nwbfile, path, TimeIntervals, "TimeIntervals table", source)


def column_values(table: Any, column: str, source: str, *, what: str = "column") -> Any:
    """Return the column ``column`` of a DynamicTable, or raise KeyError listing the columns."""
    if column not in table.colnames and column not in ("start_time", "stop_time"):
        raise KeyError(
            f"Unknown {what} {column!r} in {table.name!r} of {source}; "
            f"columns are {list(table.colnames)}."
        )
    return table[column]


def _as_text(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values], dtype=object)


def trial_intervals(
    nwbfile: Any,
    trials: str,
    source: str,
    *,
    event: str | None = None,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trial intervals from a TimeIntervals table.

    Without ``event``, trial ``i`` is ``[start_time_i, stop_time_i)``, or
    ``[start_time_i - before, start_time_i + after)`` when ``window=(before, after)`` is given.
    With ``event="column"``, it is ``[t_i - before, t_i + after)`` around the event time
    ``t_i`` of that column (``window`` is then required). Trials whose event time is NaN are
    dropped with a warning.

    Returns
    -------
    starts, stops : ndarray of shape (n_trials,)
        Seconds.
    rows : ndarray of shape (n_trials,), int
        Row of each trial in the table.
    """
    table = resolve_intervals_path(nwbfile, trials, source)
    n_rows = len(table)
    if n_rows == 0:
        raise ValueError(f"The TimeIntervals table {trials!r} in {source} has no rows.")
    t_start = np.asarray(table["start_time"].data[:], dtype=np.float64)
    t_stop = np.asarray(table["stop_time"].data[:], dtype=np.float64)
    rows = np.arange(n_rows)
    if window is not None:
        before, after = _check_window(window)
    if event is not None:
        if window is None:
            raise ValueError(
                f"event={event!r} needs window=(before, after) in seconds around the event."
            )
        from hdmf.common import VectorIndex

        col = column_values(table, event, source, what="event column")
        shape = (len(col), "ragged") if isinstance(col, VectorIndex) else col.data.shape
        if isinstance(col, VectorIndex) or len(shape) != 1:
            raise ValueError(
                f"Event column {event!r} must hold one time per trial; got shape {shape}."
            )
        t_event = np.asarray(col.data[:], dtype=np.float64)
        bad = ~np.isfinite(t_event)
        if bad.all():
            raise ValueError(f"Event column {event!r} in {source} holds no finite time.")
        if bad.any():
            warnings.warn(
                f"Dropping {int(bad.sum())} trial(s) of {trials!r} whose {event!r} is NaN: "
                f"rows {rows[bad].tolist()}.",
                stacklevel=3,
            )
        rows = rows[~bad]
        anchor = t_event[rows]
        return anchor - before, anchor + after, rows
    if window is not None:
        return t_start - before, t_start + after, rows
    bad = ~(t_stop > t_start)
    if bad.any():
        raise ValueError(
            f"Trials of {trials!r} in {source} must have stop_time > start_time; "
            f"rows {rows[bad].tolist()} do not."
        )
    return t_start, t_stop, rows


def _check_window(window: Sequence[float]) -> tuple[float, float]:
    if len(window) != 2:
        raise ValueError(f"window must be (before, after) in seconds; got {window!r}.")
    before, after = float(window[0]), float(window[1])
    if not np.isfinite(before + after) or before + after <= 0:
        raise ValueError(
            f"window=(before, after) must span a positive duration (before + after > 0); "
            f"got {tuple(window)!r}."
        )
    return before, after


def epoch_intervals(nwbfile: Any, epochs: EpochSpec, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Intervals of a TimeIntervals table, optionally only the rows with a given label.

    ``epochs`` is ``"epochs"`` (all rows), ``("epochs", "wake")`` (rows whose ``tags`` contain
    ``"wake"`` or whose ``label`` column equals it) or ``("epochs", column, value)`` (rows whose
    ``column`` equals ``value``; ``value`` may be a list of accepted values).

    Returns
    -------
    starts, stops : ndarray
        Seconds, sorted by start time.
    """
    if isinstance(epochs, list):  # JSON configs turn tuples into lists
        epochs = tuple(epochs)
    if isinstance(epochs, str):
        name, column, value = epochs, None, None
    elif isinstance(epochs, tuple) and len(epochs) == 2:
        (name, value), column = epochs, None
    elif isinstance(epochs, tuple) and len(epochs) == 3:
        name, column, value = epochs
    else:
        raise TypeError(
            "epochs must be a table name, (table, label) or (table, column, value); "
            f"got {epochs!r}."
        )
    table = resolve_intervals_path(nwbfile, name, source)
    starts = np.asarray(table["start_time"].data[:], dtype=np.float64)
    stops = np.asarray(table["stop_time"].data[:], dtype=np.float64)
    keep = np.ones(starts.size, dtype=bool)
    if value is not None:
        wanted = {str(v) for v in (value if isinstance(value, (list, tuple, set)) else [value])}
        columns = [column] if column is not None else [c for c in _LABEL_COLUMNS if c in table]
        if not columns:
            raise KeyError(
                f"Cannot filter {name!r} of {source} by label {value!r}: it has no "
                f"{' or '.join(_LABEL_COLUMNS)} column; columns are {list(table.colnames)}. "
                "Pass (table, column, value)."
            )
        keep[:] = False
        for col in columns:
            keep |= _label_match(column_values(table, col, source), wanted)
        if not keep.any():
            found = sorted({v for col in columns for v in _labels(table[col])})
            example = f"--epochs {name}:{found[0]}" if found else "another table"
            raise ValueError(
                f"No row of {name!r} in {source} has label {sorted(wanted)} in {columns}; the "
                f"labels there are {found[:20]} (e.g. {example})."
            )
    order = np.argsort(starts[keep], kind="stable")
    return starts[keep][order], stops[keep][order]


def _labels(col: Any) -> list[str]:
    from hdmf.common import VectorIndex

    if isinstance(col, VectorIndex):
        return _as_text(np.asarray(col.target.data[:])).tolist()
    return _as_text(np.asarray(col.data[:])).tolist()


def interval_labels(table: Any) -> dict[str, list[str]]:
    """The labels of a TimeIntervals table: ``{column: sorted distinct values}`` for its
    ``tags``/``label`` columns (what ``epochs=(table, label)`` can select)."""
    return {c: sorted(set(_labels(table[c]))) for c in _LABEL_COLUMNS if c in table.colnames}


def _label_match(col: Any, wanted: set[str]) -> np.ndarray:
    from hdmf.common import VectorIndex

    if isinstance(col, VectorIndex):  # ragged, e.g. the standard ``tags`` column
        flat = _as_text(np.asarray(col.target.data[:]))
        ends = np.asarray(col.data[:], dtype=np.int64)
        hit = np.array([w in wanted for w in flat], dtype=bool)
        cum = np.concatenate([[0], np.cumsum(hit)])
        return (cum[ends] - cum[np.concatenate([[0], ends[:-1]])]) > 0
    values = _as_text(np.asarray(col.data[:]))
    return np.array([v in wanted for v in values], dtype=bool)


def clip_intervals(
    starts: np.ndarray, stops: np.ndarray, time_range: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersect intervals with ``time_range``; return the non-empty ones and their indices."""
    starts = np.asarray(starts, dtype=np.float64)
    stops = np.asarray(stops, dtype=np.float64)
    if time_range is not None:
        starts = np.maximum(starts, time_range[0])
        stops = np.minimum(stops, time_range[1])
    keep = np.flatnonzero(stops > starts)
    return starts[keep], stops[keep], keep


def check_time_range(time_range: Sequence[float] | None) -> tuple[float, float] | None:
    """Validate ``time_range=(start, stop)`` in seconds."""
    if time_range is None:
        return None
    if len(time_range) != 2:
        raise ValueError(f"time_range must be (start, stop) in seconds; got {time_range!r}.")
    t0, t1 = float(time_range[0]), float(time_range[1])
    if not (np.isfinite(t0) and np.isfinite(t1) and t1 > t0):
        raise ValueError(
            f"time_range must be finite with stop > start; got {tuple(time_range)!r}."
        )
    return t0, t1


def split_windows(
    starts: np.ndarray, stops: np.ndarray, window_length: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each interval into consecutive windows of ``window_length`` seconds.

    The last window of an interval is shorter when the length is not a multiple (it is kept:
    the windows cover every interval completely).

    Returns
    -------
    starts, stops : ndarray of shape (n_windows,)
        Seconds.
    parent : ndarray of shape (n_windows,), int
        Index of the interval each window was cut from.

    Raises
    ------
    ValueError
        When ``window_length`` is not > 0 or is longer than every interval.
    """
    window_length = check_positive(window_length, "window_length")
    lengths = stops - starts
    longest = float(lengths.max())
    if window_length > longest * (1 + 1e-9):
        raise ValueError(
            f"window_length={window_length} s is longer than the longest trial/interval "
            f"({longest:.6g} s)."
        )
    out_s, out_e, parent = [], [], []
    for i, (s, e) in enumerate(zip(starts, stops)):
        n = max(int(np.ceil((e - s) / window_length - 1e-9)), 1)
        w = s + window_length * np.arange(n + 1)
        w[-1] = e
        out_s.append(w[:-1])
        out_e.append(w[1:])
        parent.append(np.full(n, i))
    return np.concatenate(out_s), np.concatenate(out_e), np.concatenate(parent)


@dataclass(frozen=True)
class IntervalSpec:
    """How the intervals (trials or windows) of a read are chosen; see :func:`build_intervals`."""

    trials: str | None = None
    event: str | None = None
    window: tuple[float, float] | None = None
    window_length: float | None = None
    epochs: EpochSpec | None = None
    time_range: tuple[float, float] | None = None


def build_intervals(
    nwbfile: Any,
    spec: IntervalSpec,
    source: str,
    *,
    default_range: Callable[[], tuple[float, float]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Resolve an :class:`IntervalSpec` into interval bounds.

    Trials (with optional event/window) come first; otherwise epochs; otherwise one interval over
    ``time_range`` or ``default_range()``. Trials must lie inside ``time_range`` (others are
    dropped, so event windows keep their length); epochs and the single interval are clipped to
    it. ``window_length`` then cuts each interval into windows.

    Returns
    -------
    starts, stops : ndarray of shape (n_intervals,)
        Seconds.
    rows : ndarray of shape (n_intervals,), int
        Row of the trials table each interval comes from (-1 when not from trials); record
        the rows of the intervals finally kept with :func:`record_trial_rows`.
    selection : dict
        JSON-serialisable record of the choices.
    """
    time_range = check_time_range(spec.time_range)
    selection: dict[str, Any] = {
        "trials": spec.trials,
        "event": spec.event,
        "window": None if spec.window is None else [float(w) for w in spec.window],
        "window_length": spec.window_length,
        "epochs": None if spec.epochs is None else _json_epochs(spec.epochs),
        "time_range": None if time_range is None else list(time_range),
    }
    if spec.trials is not None:
        if spec.epochs is not None:
            raise ValueError("Give trials= or epochs=, not both.")
        starts, stops, rows = trial_intervals(
            nwbfile, spec.trials, source, event=spec.event, window=spec.window
        )
        if time_range is not None:
            inside = (starts >= time_range[0]) & (stops <= time_range[1])
            if not inside.any():
                raise ValueError(
                    f"No trial of {spec.trials!r} in {source} lies inside time_range={time_range}."
                )
            starts, stops, rows = starts[inside], stops[inside], rows[inside]
    else:
        if spec.event is not None or spec.window is not None:
            raise ValueError(
                "event= and window= align windows to trials: they need trials= "
                "(a TimeIntervals table)."
            )
        if spec.epochs is not None:
            starts, stops = epoch_intervals(nwbfile, spec.epochs, source)
        else:
            t0, t1 = time_range if time_range is not None else default_range()
            starts, stops = np.array([t0]), np.array([t1])
            selection["time_range"] = [float(t0), float(t1)]
        starts, stops, _ = clip_intervals(starts, stops, time_range)
        rows = np.full(starts.size, -1)
        if starts.size == 0:  # only epochs can miss time_range entirely
            raise ValueError(
                f"No epoch of {spec.epochs!r} in {source} overlaps time_range={time_range}."
            )
    if spec.window_length is not None:
        starts, stops, parent = split_windows(starts, stops, spec.window_length)
        rows = rows[parent]
    return starts, stops, rows, selection


def record_trial_rows(selection: dict[str, Any], rows: np.ndarray, kept: np.ndarray) -> None:
    """Store in ``selection["trial_rows"]`` the trials-table row of every kept interval."""
    if selection.get("trials") is not None:
        selection["trial_rows"] = [int(r) for r in rows[kept]]


def _json_epochs(epochs: Any) -> Any:
    if isinstance(epochs, str):
        return epochs
    return [list(e) if isinstance(e, (list, tuple, set)) else e for e in epochs]
