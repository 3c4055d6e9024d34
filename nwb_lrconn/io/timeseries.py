"""TimeSeries and event columns resampled onto the bins of a Recording (inputs, behaviour)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import check_choice
from ..data import Recording
from ._paths import object_paths
from .binning import BinGrid, bin_events, bin_samples
from .streaming import open_source

__all__ = ["read_timeseries", "grid_from_recording", "series_samples", "build_inputs"]


def series_samples(ts: Any, path: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(values, times)`` of a TimeSeries in its units.

    ``values`` has shape (n_samples, n_channels) (``data * conversion + offset``; a series of
    more than 2 dimensions is flattened per sample); ``times`` has shape (n_samples,) in seconds,
    from ``timestamps`` or from ``starting_time + k / rate``.

    Raises
    ------
    ValueError
        When the timestamps hold NaN, are not increasing, or do not match the data length.
    """
    data = np.asarray(ts.data[:])
    values = data.reshape(data.shape[0], -1).astype(np.float64)
    values = values * float(getattr(ts, "conversion", 1.0) or 1.0)
    values = values + float(getattr(ts, "offset", 0.0) or 0.0)
    times = sample_times(ts, data.shape[0], path, source)
    return values, times


def sample_times(ts: Any, n_samples: int, path: str, source: str) -> np.ndarray:
    """Sample times of a TimeSeries with ``n_samples`` samples, checked (see series_samples)."""
    if ts.timestamps is not None:
        times = np.asarray(ts.timestamps[:], dtype=np.float64)
        if times.size != n_samples:
            raise ValueError(
                f"{path} in {source} has {times.size} timestamps for {n_samples} samples."
            )
        check_timestamps(times, path, source)
        return times
    rate = float(ts.rate)
    return float(ts.starting_time or 0.0) + np.arange(n_samples) / rate


def check_timestamps(times: np.ndarray, path: str, source: str) -> None:
    """Raise ValueError when ``times`` holds NaN or decreases somewhere."""
    n_nan = int(np.count_nonzero(~np.isfinite(times)))
    if n_nan:
        raise ValueError(
            f"Timestamps of {path} in {source} must be finite; found {n_nan} NaN/inf value(s)."
        )
    steps = np.diff(times)
    if np.any(steps < 0):
        i = int(np.flatnonzero(steps < 0)[0])
        raise ValueError(
            f"Timestamps of {path} in {source} must be non-decreasing; "
            f"t[{i + 1}]={float(times[i + 1])!r} follows t[{i}]={float(times[i])!r}."
        )


def grid_from_recording(recording: Recording) -> BinGrid:
    """The bins of a Recording: trial starts, bin width and the last bin of each trial."""
    mask = recording.mask
    n_bins = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
    starts = recording.trial_start_times
    return BinGrid(
        starts,
        starts + n_bins * recording.bin_width,
        n_bins,
        recording.bin_width,
        np.arange(starts.size),
    )


def _fill_empty(
    binned: np.ndarray, values: np.ndarray, times: np.ndarray, grid: BinGrid, reduce: str
) -> np.ndarray:
    centers = grid.centers()
    out = binned.copy()
    for c in range(values.shape[1]):
        good = np.isfinite(values[:, c])
        if not good.any():
            continue
        t, v = times[good], values[good, c]
        if reduce == "circmean":
            v = np.unwrap(v)
        empty = np.isnan(out[..., c]) & np.isfinite(centers)
        filled = np.interp(centers[empty], t, v)
        out[..., c][empty] = np.angle(np.exp(1j * filled)) if reduce == "circmean" else filled
    return out


def resample_series(
    values: np.ndarray, times: np.ndarray, grid: BinGrid, reduce: str, fill: bool
) -> np.ndarray:
    """Average samples into the bins; fill bins without samples by interpolation at their
    centre when ``fill``; NaN on padded bins."""
    binned, _ = bin_samples(values, times, grid, reduce=reduce)
    if fill:
        binned = _fill_empty(binned, values, times, grid, reduce)
    binned[~grid.mask] = np.nan
    return binned


def read_timeseries(
    path: Any,
    series_path: str,
    recording: Recording,
    *,
    reduce: str = "mean",
    fill: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Read a TimeSeries (e.g. head direction, heading, running speed) on a Recording's bins.

    Parameters
    ----------
    path : str, path-like, DandiAsset or pynwb.NWBFile
        NWB file: local path, URL, DANDI reference or open ``NWBFile`` (see
        :func:`~nwb_lrconn.io.streaming.open_nwb`).
    series_path : str
        Path of the TimeSeries in the file, e.g.
        ``"processing/behavior/CompassDirection/head_direction"``.
    recording : Recording
        Gives the bins: ``trial_start_times``, ``bin_width`` and ``mask``.
    reduce : {"mean", "circmean"}, default: "mean"
        How the samples inside one bin are combined; ``"circmean"`` for angles in radians.
    fill : bool, default: True
        Fill bins that hold no sample by (circular) linear interpolation at the bin centre.
    cache_dir : str or path-like, optional
        Disk cache for streamed bytes (see :func:`~nwb_lrconn.io.streaming.open_nwb`).

    Returns
    -------
    ndarray of shape (n_trials, n_time, n_channels)
        The series per bin, in the series' units (``data * conversion + offset``); NaN where
        ``recording.mask`` is False.

    Raises
    ------
    KeyError
        When there is no TimeSeries at ``series_path`` (the message lists those that exist).
    ValueError
        When the timestamps hold NaN or decrease.
    """
    from pynwb import TimeSeries

    from ._paths import get_object

    check_choice(reduce, "reduce", ("mean", "circmean"))
    with open_source(path, cache_dir=cache_dir) as opened:
        nwbfile, source = opened.nwbfile, opened.label
        ts = get_object(nwbfile, series_path, TimeSeries, "TimeSeries", source)
        values, times = series_samples(ts, series_path, source)
    out = resample_series(values, times, grid_from_recording(recording), reduce, fill)
    out[~recording.mask] = np.nan
    return out


def build_inputs(
    nwbfile: Any, inputs: Sequence[str], grid: BinGrid, source: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Binned external inputs u(t) from TimeSeries and/or event-time columns.

    Each entry of ``inputs`` is a path in the file: a TimeSeries (acquisition, stimulus,
    processing) is averaged into the bins (empty bins interpolated; one channel per column);
    a column of a TimeIntervals table (e.g. ``"intervals/trials/left_clicks"``, ragged or not)
    is treated as event times and counted per bin (one channel).

    Returns
    -------
    inputs : ndarray of shape (n_trials, n_time, n_inputs)
        0 on padded bins.
    names : tuple of str
        One name per channel.
    """
    from hdmf.common import VectorData, VectorIndex
    from pynwb import TimeSeries

    if isinstance(inputs, str) or not all(isinstance(p, str) for p in inputs):
        raise TypeError(f"inputs must be a list of paths (str); got {inputs!r}.")
    objects = object_paths(nwbfile)
    channels, names = [], []
    for item in inputs:
        obj = objects.get(item.strip("/"))
        if isinstance(obj, TimeSeries):
            values, times = series_samples(obj, item, source)
            binned = resample_series(values, times, grid, "mean", True)
            channels.append(np.nan_to_num(binned, nan=0.0))
            n_ch = values.shape[1]
            names += [item] if n_ch == 1 else [f"{item}[{j}]" for j in range(n_ch)]
        elif isinstance(obj, VectorData) and not isinstance(obj, VectorIndex):
            events = np.asarray(obj.data[:], dtype=np.float64).reshape(-1)
            events = events[np.isfinite(events)]
            channels.append(bin_events(events, np.zeros(events.size, int), 1, grid))
            names.append(item)
        else:
            found = sorted(
                p
                for p, o in objects.items()
                if isinstance(o, TimeSeries)
                or (isinstance(o, VectorData) and not isinstance(o, VectorIndex))
                and p.startswith("intervals/")
            )
            raise KeyError(
                f"Input {item!r} is neither a TimeSeries nor an event-time column in {source}; "
                f"found {found}."
            )
    out = np.concatenate(channels, axis=2)
    out[~grid.mask] = 0.0
    return out, tuple(names)
