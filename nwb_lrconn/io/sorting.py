"""Read any spikeinterface sorting (``BaseSorting``) into a :class:`~nwb_lrconn.data.Recording`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import check_choice, check_positive_int
from ..data import Recording, SourceInfo
from ._assemble import grid_recording
from .binning import make_grid
from .nwb_units import bin_spike_trains
from .trials import check_time_range, clip_intervals, split_windows

__all__ = ["read_sorting", "TIME_BASES"]

TIME_BASES = ("times", "frames")


def _require_spikeinterface() -> Any:
    try:
        import spikeinterface.core as si
    except ImportError:
        raise ImportError(
            "read_sorting needs spikeinterface: pip install nwb-lrconn[spikeinterface]"
        ) from None
    return si


def read_sorting(
    sorting: Any,
    *,
    bin_width: float,
    time_offset: float = 0.0,
    segment_index: int = 0,
    time_base: str = "times",
    unit_ids: Sequence[Any] | None = None,
    time_range: tuple[float, float] | None = None,
    intervals: np.ndarray | None = None,
    window_length: float | None = None,
    min_spikes: int = 1,
    partial_bin: str = "drop",
) -> Recording:
    """Bin the spike trains of a spikeinterface sorting.

    The time base is explicit: ``time_base="times"`` uses
    ``sorting.get_unit_spike_train(unit_id, segment_index, return_times=True)`` (the sorting's
    own clock: its recording's times, or native seconds for NWB sortings); ``"frames"`` uses
    ``frames / sampling_frequency``. ``time_offset`` (seconds) is then added to every spike.

    Parameters
    ----------
    sorting : spikeinterface.core.BaseSorting
        Any sorting (e.g. from ``spikeinterface.extractors.read_nwb_sorting``).
    bin_width : float
        Bin width in seconds.
    time_offset : float, default: 0.0
        Added to every spike time (seconds).
    segment_index : int, default: 0
        Segment to read.
    time_base : {"times", "frames"}, default: "times"
        See above.
    unit_ids : sequence, optional
        Units to read (default all, in the sorting's order).
    time_range : (float, float), optional
        ``(start, stop)`` in seconds after the offset (default: first to last spike).
    intervals : ndarray of shape (n_trials, 2), optional
        Trial ``(start, stop)`` times in seconds after the offset; default one interval over
        ``time_range``.
    window_length : float, optional
        Cut intervals into windows of this many seconds.
    min_spikes : int, default: 1
        Units with fewer spikes in the bins are dropped with a warning.
    partial_bin : {"drop", "keep"}, default: "drop"
        See :mod:`nwb_lrconn.io.binning`.

    Returns
    -------
    Recording
        ``kind="spikes"``; ``unit_ids`` are the sorting's unit ids; ``unit_rows`` their position
        in ``sorting.unit_ids``.

    Raises
    ------
    ImportError
        When spikeinterface is not installed.
    TypeError
        When ``sorting`` is not a ``BaseSorting``.
    """
    si = _require_spikeinterface()
    if not isinstance(sorting, si.BaseSorting):
        raise TypeError(
            f"sorting must be a spikeinterface BaseSorting; got {type(sorting).__name__}."
        )
    check_choice(time_base, "time_base", TIME_BASES)
    min_spikes = check_positive_int(min_spikes, "min_spikes", minimum=0)
    n_segments = sorting.get_num_segments()
    if not 0 <= segment_index < n_segments:
        raise ValueError(f"segment_index must be in [0, {n_segments}); got {segment_index}.")
    all_ids = list(sorting.unit_ids)
    ids = all_ids if unit_ids is None else list(unit_ids)
    missing = [u for u in ids if u not in all_ids]
    if missing:
        raise KeyError(f"unit_ids {missing} are not in the sorting; its units are {all_ids}.")
    trains = []
    for u in ids:
        if time_base == "times":
            t = sorting.get_unit_spike_train(
                unit_id=u, segment_index=segment_index, return_times=True
            )
        else:
            t = sorting.get_unit_spike_train(unit_id=u, segment_index=segment_index)
            t = np.asarray(t, dtype=np.float64) / sorting.get_sampling_frequency()
        trains.append(np.asarray(t, dtype=np.float64) + float(time_offset))
    times = np.concatenate(trains) if trains else np.zeros(0)
    labels = np.repeat(np.arange(len(ids)), [t.size for t in trains])
    rng = check_time_range(time_range)
    if intervals is not None:
        arr = np.asarray(intervals, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"intervals must have shape (n_trials, 2); got {arr.shape}.")
        starts, stops = arr[:, 0], arr[:, 1]
    elif rng is not None:
        starts, stops = np.array([rng[0]]), np.array([rng[1]])
    else:
        if times.size == 0:
            raise ValueError("The sorting has no spikes in the selected units and segment.")
        t0 = float(times.min())
        n = int(np.floor((float(times.max()) - t0) / bin_width)) + 1
        starts, stops = np.array([t0]), np.array([t0 + n * bin_width])
    starts, stops, _ = clip_intervals(starts, stops, rng)
    if window_length is not None:
        starts, stops, _ = split_windows(starts, stops, window_length)
    grid = make_grid(starts, stops, bin_width, partial_bin=partial_bin, n_units=len(ids))
    id_array = np.asarray(ids)
    rows = np.array([all_ids.index(u) for u in ids], dtype=np.int64)
    counts, ids_kept, rows_kept, dropped = bin_spike_trains(
        times, labels, id_array, rows, grid=grid, min_spikes=min_spikes, source="the sorting"
    )
    selection = {
        "sorting": type(sorting).__name__,
        "segment_index": segment_index,
        "time_base": time_base,
        "time_offset": float(time_offset),
        "sampling_frequency": float(sorting.get_sampling_frequency()),
        "unit_ids": [_plain(u) for u in ids],
        "time_range": None if rng is None else list(rng),
        "window_length": window_length,
        "bin_width": float(bin_width),
        "partial_bin": partial_bin,
        "min_spikes": min_spikes,
        "dropped_unit_ids": dropped,
    }
    return grid_recording(
        grid,
        counts,
        kind="spikes",
        unit_ids=ids_kept,
        unit_rows=rows_kept,
        source=SourceInfo(selection=selection),
    )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
