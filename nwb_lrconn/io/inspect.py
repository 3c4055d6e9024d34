"""Summarise what an NWB file holds that nwb_lrconn can fit (used by the CLI ``inspect``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._paths import file_identifier, object_paths
from .streaming import open_source

__all__ = ["inspect_nwb", "NWBSummary"]


@dataclass(frozen=True)
class NWBSummary:
    """What a file holds that can be fitted.

    Attributes
    ----------
    path : str
        Local path or streamed URL of the file ("" for an open NWBFile of unknown origin).
    identifier : str
        ``NWBFile.identifier``.
    units : list of dict
        One per Units table: ``path``, ``n_units``, ``n_spikes``, ``columns``,
        ``time_range`` ([first, last] spike, seconds, or None).
    roi_response_series : list of dict
        One per RoiResponseSeries: ``path``, ``shape``, ``rate`` (Hz; from ``rate`` or the
        median frame interval), ``n_rois``, ``plane_segmentation``.
    time_intervals : list of dict
        One per TimeIntervals table (trials, epochs, others): ``path``, ``n_rows``,
        ``columns``.
    timeseries : list of dict
        Other TimeSeries (behaviour, stimuli; candidate inputs): ``path``, ``shape``, ``unit``.
    origin : dict
        Where the bytes came from, as ``SourceInfo.origin`` (DANDI ids, URL, size).
    """

    path: str
    identifier: str
    units: list[dict[str, Any]] = field(default_factory=list)
    roi_response_series: list[dict[str, Any]] = field(default_factory=list)
    time_intervals: list[dict[str, Any]] = field(default_factory=list)
    timeseries: list[dict[str, Any]] = field(default_factory=list)
    origin: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as a JSON-serialisable dict."""
        return asdict(self)


def inspect_nwb(path: Any, *, cache_dir: str | os.PathLike | None = None) -> NWBSummary:
    """Summarise the fittable content of an NWB file (reads metadata and index arrays only).

    Parameters
    ----------
    path : str, path-like, DandiAsset or pynwb.NWBFile
        NWB file: local path, URL, DANDI reference or open ``NWBFile`` (see
        :func:`~nwb_lrconn.io.streaming.open_nwb`).
    cache_dir : str or path-like, optional
        Disk cache for streamed bytes.

    Returns
    -------
    NWBSummary
        Units tables, RoiResponseSeries, TimeIntervals tables and other TimeSeries.
    """
    from pynwb import TimeSeries
    from pynwb.epoch import TimeIntervals
    from pynwb.misc import Units
    from pynwb.ophys import RoiResponseSeries

    with open_source(path, cache_dir=cache_dir) as opened:
        nwbfile = opened.nwbfile
        summary = NWBSummary(path=opened.path, identifier="", origin=opened.origin)
        for p, obj in sorted(object_paths(nwbfile).items()):
            if isinstance(obj, Units):
                summary.units.append(_units_info(p, obj))
            elif isinstance(obj, RoiResponseSeries):
                summary.roi_response_series.append(_rrs_info(p, obj))
            elif isinstance(obj, TimeIntervals):
                summary.time_intervals.append(
                    {"path": p, "n_rows": len(obj), "columns": list(obj.colnames)}
                )
            elif isinstance(obj, TimeSeries):
                summary.timeseries.append(
                    {"path": p, "shape": list(obj.data.shape), "unit": str(obj.unit)}
                )
        identifier = file_identifier(nwbfile)
    return NWBSummary(
        path=summary.path,
        identifier=identifier,
        units=summary.units,
        roi_response_series=summary.roi_response_series,
        time_intervals=summary.time_intervals,
        timeseries=summary.timeseries,
        origin=summary.origin,
    )


def _units_info(path: str, units: Any) -> dict[str, Any]:
    n_units = len(units.id)
    info: dict[str, Any] = {
        "path": path,
        "n_units": n_units,
        "n_spikes": 0,
        "columns": list(units.colnames),
        "time_range": None,
    }
    if "spike_times" in units.colnames and n_units:
        data = units["spike_times"].target.data
        info["n_spikes"] = int(data.shape[0])
        if data.shape[0]:
            flat = np.asarray(data[:])
            info["time_range"] = [float(np.nanmin(flat)), float(np.nanmax(flat))]
    return info


def _rrs_info(path: str, rrs: Any) -> dict[str, Any]:
    if rrs.rate is not None:
        rate = float(rrs.rate)
    else:
        ts = np.asarray(rrs.timestamps[: min(len(rrs.timestamps), 1000)])
        rate = float(1.0 / np.median(np.diff(ts))) if ts.size > 1 else None
    return {
        "path": path,
        "shape": list(rrs.data.shape),
        "rate": rate,
        "n_rois": len(rrs.rois.data),
        "plane_segmentation": rrs.rois.table.name,
    }
