"""Read a Units table (spike times) into a binned :class:`~nwb_lrconn.data.Recording`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import check_positive, check_positive_int
from ..data import Recording
from ._assemble import grid_recording, nwb_source_info, optional_inputs
from ._identity import plain_value
from ._paths import get_object
from .binning import make_grid
from .selection import Where, json_where, select_rows
from .streaming import open_source
from .trials import IntervalSpec, build_intervals, record_trial_rows

__all__ = ["read_units", "read_spike_trains", "bin_spike_trains"]


def read_spike_trains(table: Any, rows: np.ndarray, source: str, path: str):
    """Bulk-read the ragged ``spike_times`` column (two dataset reads) for ``rows``.

    Returns
    -------
    times : ndarray of shape (n_spikes,)
        Spike times in seconds of the selected units, concatenated.
    labels : ndarray of shape (n_spikes,), int
        Position in ``rows`` of each spike's unit.
    """
    if "spike_times" not in table.colnames:
        raise KeyError(
            f"The Units table {path!r} of {source} has no 'spike_times' column; "
            f"columns are {list(table.colnames)}."
        )
    index = table["spike_times"]
    ends = np.asarray(index.data[:], dtype=np.int64)
    flat = np.asarray(index.target.data[:], dtype=np.float64)
    counts = np.diff(np.concatenate([[0], ends]))
    position = np.full(ends.size, -1, dtype=np.int64)
    position[rows] = np.arange(rows.size)
    labels = np.repeat(position, counts)
    keep = labels >= 0
    times, labels = flat[keep], labels[keep]
    n_bad = int(np.count_nonzero(~np.isfinite(times)))
    if n_bad:
        units = np.unique(labels[~np.isfinite(times)])
        raise ValueError(
            f"spike_times of {path!r} in {source} must be finite; found {n_bad} NaN/inf "
            f"value(s) in rows {rows[units].tolist()}."
        )
    negative = np.unique(labels[times < 0])
    if negative.size:
        raise ValueError(
            f"spike_times of {path!r} in {source} hold negative times (before the session "
            f"start) in rows {rows[negative][:10].tolist()}; NWB times count from "
            "session_start_time: fix the file, or leave those units out (--unit-ids/--where)."
        )
    same_unit = labels[1:] == labels[:-1]
    unsorted = np.unique(labels[1:][same_unit & (np.diff(times) < 0)])
    if unsorted.size:
        raise ValueError(
            f"spike_times of {path!r} in {source} are not sorted ascending in rows "
            f"{rows[unsorted][:10].tolist()} (NWB requires ascending spike times per unit); the "
            "file is damaged or was written incorrectly."
        )
    return times, labels


def _default_range(times: np.ndarray, bin_width: float, source: str) -> tuple[float, float]:
    if times.size == 0:
        raise ValueError(f"The selected units of {source} have no spikes at all.")
    t0, t1 = float(times.min()), float(times.max())
    if bin_width > t1 - t0:
        raise ValueError(
            f"bin_width={bin_width} s is longer than the data: the spikes of {source} span "
            f"{t1 - t0:.6g} s."
        )
    n = int(np.floor((t1 - t0) / bin_width)) + 1
    return t0, t0 + n * bin_width


def bin_spike_trains(
    times: np.ndarray,
    labels: np.ndarray,
    unit_ids: np.ndarray,
    unit_rows: np.ndarray,
    *,
    grid: Any,
    min_spikes: int,
    source: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Count spikes per bin and drop units with fewer than ``min_spikes`` spikes in the bins.

    Returns ``(counts, unit_ids, unit_rows, dropped_ids)``; warns when units are dropped and
    raises ValueError when none is left.
    """
    from .binning import bin_events

    counts = bin_events(times, labels, unit_ids.size, grid)
    totals = counts.sum(axis=(0, 1))
    low = totals < min_spikes
    dropped = [plain_value(u) for u in unit_ids[low]]
    if low.all():
        raise ValueError(
            f"No unit of {source} has >= {min_spikes} spike(s) in the selected bins "
            f"({unit_ids.size} unit(s) checked, the most had {int(totals.max())})."
        )
    if low.any():
        warnings.warn(
            f"Dropping {int(low.sum())} unit(s) with fewer than {min_spikes} spike(s) in the "
            f"selected bins: ids {dropped}.",
            stacklevel=3,
        )
    if not low.any():
        return counts, unit_ids, unit_rows, dropped
    return counts[:, :, ~low], unit_ids[~low], unit_rows[~low], dropped


def read_units(
    path: str | os.PathLike,
    *,
    bin_width: float,
    units_path: str = "units",
    unit_ids: Sequence[int] | None = None,
    where: Where | None = None,
    time_range: tuple[float, float] | None = None,
    trials: str | None = None,
    event: str | None = None,
    window: tuple[float, float] | None = None,
    window_length: float | None = None,
    epochs: Any = None,
    inputs: Sequence[str] | None = None,
    min_spikes: int = 1,
    partial_bin: str = "drop",
    cache_dir: str | os.PathLike | None = None,
) -> Recording:
    """Read spike times from a Units table and bin them into trials or windows.

    The file is opened read-only and lazily (local path, URL, DANDI reference or open
    ``NWBFile``, see :func:`~nwb_lrconn.io.streaming.open_nwb`); the
    ragged ``spike_times`` column is read in bulk (flat data + index, two reads).

    Which intervals become trials (rows of ``Recording.data``):

    - ``trials="trials"`` (or any TimeIntervals name/path such as ``"intervals/xyz"``): each row
      ``[start_time, stop_time)``; with ``window=(before, after)`` the window
      ``[start_time - before, start_time + after)``; with ``event="column"`` (needs
      ``window``) the window ``[t - before, t + after)`` around that column's time ``t``.
    - otherwise ``epochs`` (``"epochs"``, ``("epochs", "wake")`` or
      ``("epochs", column, value)``): the selected epoch intervals;
    - otherwise one interval over ``time_range`` (default: first to last spike of the
      selected units, in whole bins).

    Intervals are clipped to ``time_range``; with ``window_length`` each is cut into
    consecutive windows of that length (the last one shorter, so the windows cover it).
    Ragged trials are padded at the end and masked.

    Parameters
    ----------
    path : str, path-like, DandiAsset or pynwb.NWBFile
        NWB file: local path, ``http(s)://`` / ``s3://`` URL, DANDI reference (e.g.
        ``"DANDI:000207/sub-4/sub-4_ses-4_ecephys+image.nwb"``) or an open ``NWBFile``.
    bin_width : float
        Bin width in seconds.
    units_path : str, default: "units"
        Path of the Units table in the file.
    unit_ids : sequence of int, optional
        Ids (the table's ``id`` column) of the units to read, in this order.
    where : str or tuple or list of tuples, optional
        Column filter: a bool column name, ``(column, op, value)`` with op in
        ``==, !=, >, >=, <, <=, in``, or a list of those combined with AND.
    time_range : (float, float), optional
        ``(start, stop)`` in seconds.
    trials : str, optional
        TimeIntervals table giving the trials.
    event : str, optional
        Column of ``trials`` holding the alignment time of each trial.
    window : (float, float), optional
        ``(before, after)`` in seconds around the event (or trial start).
    window_length : float, optional
        Cut intervals into windows of this many seconds.
    epochs : str or tuple, optional
        TimeIntervals table (optionally with a label filter) restricting the data when no
        ``trials`` are given.
    inputs : sequence of str, optional
        Paths of TimeSeries and/or event-time columns binned into ``Recording.inputs``.
    min_spikes : int, default: 1
        Units with fewer spikes in the bins are dropped with a warning.
    partial_bin : {"drop", "keep"}, default: "drop"
        The remainder of an interval shorter than ``bin_width``: dropped, or kept as a shorter
        last bin (then every spike inside the intervals is counted).
    cache_dir : str or path-like, optional
        Disk cache for streamed bytes (see :func:`~nwb_lrconn.io.streaming.open_nwb`).

    Returns
    -------
    Recording
        ``kind="spikes"``; ``data`` holds counts of shape (n_trials, n_time, n_units);
        ``unit_rows`` index the Units table; ``source.selection`` records every choice and
        ``source.origin`` where the bytes came from.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    KeyError
        Missing table / column / unit id (the message lists what exists).
    ValueError
        Empty Units table, NaN spike times, bad ``bin_width`` or window, no unit with spikes.
    """
    min_spikes = check_positive_int(min_spikes, "min_spikes", minimum=0)
    bin_width = check_positive(bin_width, "bin_width")
    with open_source(path, cache_dir=cache_dir) as opened:
        from pynwb.misc import Units

        nwbfile, source = opened.nwbfile, opened.label
        table = get_object(nwbfile, units_path, Units, "Units table", source)
        if len(table.id) == 0:
            raise ValueError(f"The Units table {units_path!r} of {source} is empty (0 units).")
        rows = select_rows(table, unit_ids=unit_ids, where=where, source=source, path=units_path)
        times, labels = read_spike_trains(table, rows, source, units_path)
        ids = np.asarray(table.id.data[:])[rows]
        spec = IntervalSpec(
            trials=trials,
            event=event,
            window=window,
            window_length=window_length,
            epochs=epochs,
            time_range=time_range,
        )
        starts, stops, trial_rows, selection = build_intervals(
            nwbfile, spec, source, default_range=lambda: _default_range(times, bin_width, source)
        )
        grid = make_grid(starts, stops, bin_width, partial_bin=partial_bin, n_units=len(rows))
        record_trial_rows(selection, trial_rows, grid.source_index)
        counts, ids_kept, rows_kept, dropped = bin_spike_trains(
            times, labels, ids, rows, grid=grid, min_spikes=min_spikes, source=source
        )
        u, names = optional_inputs(nwbfile, inputs, grid, source)
        selection.update(
            units_path=units_path,
            unit_ids=None if unit_ids is None else [plain_value(v) for v in unit_ids],
            where=json_where(where),
            min_spikes=min_spikes,
            dropped_unit_ids=dropped,
            bin_width=float(grid.bin_width),
            partial_bin=partial_bin,
            inputs=list(names),
        )
        info = nwb_source_info(
            opened, object_path=units_path, table_path=units_path, selection=selection
        )
    return grid_recording(
        grid,
        counts,
        kind="spikes",
        unit_ids=ids_kept,
        unit_rows=rows_kept,
        source=info,
        inputs=u,
        input_names=names,
    )
