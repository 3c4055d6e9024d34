"""Summarise what an NWB file holds that nwb_lrconn can fit (used by the CLI ``inspect``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._identity import plain_value
from ._paths import file_identifier, object_paths
from .selection import classified_cells, describe_columns
from .streaming import open_source
from .trials import interval_labels

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
        One per Units table: ``path``, ``n_units``, ``n_spikes``, ``columns``, ``filters``
        (filterable columns and their values, see ``selection.describe_columns``),
        ``time_range`` ([first, last] spike, seconds, or None).
    roi_response_series : list of dict
        One per RoiResponseSeries: ``path``, ``shape``, ``rate`` (Hz; from ``rate`` or the
        median frame interval), ``n_rois``, ``plane_segmentation``, ``filters``, ``n_cells``
        (ROIs an ``iscell`` column calls cells, or None) and ``constant_rois`` (ids).
    time_intervals : list of dict
        One per TimeIntervals table (trials, epochs, others): ``path``, ``n_rows``,
        ``columns``, ``labels`` (the values of its ``tags``/``label`` columns).
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

    def to_text(self, label: str | None = None, *, prog: str = "nwb-lrconn") -> str:
        """The summary in words, with a ``fit`` command that works on the file.

        Parameters
        ----------
        label : str, optional
            How the user named the file (default ``path``).
        prog : str, default: "nwb-lrconn"
            Command name used in the suggestions.
        """
        label = label or self.path
        lines = [f"{label} (identifier {self.identifier!r})"]
        select = _suggested_intervals(self.time_intervals)
        if not self.units and not self.roi_response_series:
            lines.append("  nothing to fit: no Units table and no RoiResponseSeries")
        for u in self.units:
            span = u["time_range"]
            span_text = f", spikes in [{span[0]:.1f}, {span[1]:.1f}] s" if span else ""
            lines.append(
                f"  Units table {u['path']!r}: {u['n_units']} units, {u['n_spikes']} spikes"
                f"{span_text}"
            )
            lines += _filter_lines(u.get("filters", {}), "units")
            lines.append(
                f"    fit with: {prog} fit {label} --units {u['path']} --bin-width 0.02"
                f"{select} --rank auto"
            )
        for r in self.roi_response_series:
            rate = f"{r['rate']:.3g} Hz" if r["rate"] else "unknown rate"
            lines.append(
                f"  RoiResponseSeries {r['path']!r}: shape {tuple(r['shape'])}, "
                f"{r['n_rois']} ROIs, {rate}"
            )
            if r.get("n_cells") is not None:
                lines.append(
                    f"    iscell: {r['n_cells']} of {r['n_rois']} ROIs classified as cells "
                    "(only those are fitted; --all-rois fits every ROI)"
                )
            constant = r.get("constant_rois") or []
            if constant:
                lines.append(
                    f"    {len(constant)} constant ROI(s), ids {constant[:10]}: dropped when "
                    "fitted"
                )
            lines += _filter_lines(r.get("filters", {}), "ROIs")
            lines.append(
                f"    fit with: {prog} fit {label} --ophys {r['path']}{select} --rank auto"
            )
        for t in self.time_intervals:
            lines.append(
                f"  intervals {t['path']!r}: {t['n_rows']} rows; columns {', '.join(t['columns'])}"
            )
            for column, values in (t.get("labels") or {}).items():
                lines.append(f"    {column}: {', '.join(map(str, values[:12]))}")
        for ts in self.timeseries:
            lines.append(
                f"  TimeSeries {ts['path']!r}: shape {tuple(ts['shape'])} ({ts['unit']}); "
                "behaviour or input"
            )
        return "\n".join(lines)


def _suggested_intervals(tables: list[dict[str, Any]]) -> str:
    """The trial/epoch flags of the suggested command."""
    by_name = {t["path"].rsplit("/", 1)[-1]: t for t in tables}
    if "trials" in by_name and by_name["trials"]["n_rows"] >= 2:
        return f" --trials {by_name['trials']['path']}"
    epochs = by_name.get("epochs")
    if epochs is not None:
        labels = [v for values in (epochs.get("labels") or {}).values() for v in values]
        chosen = next((v for v in labels if "wake" in v.lower()), labels[0] if labels else None)
        target = f"{epochs['path'].rsplit('/', 1)[-1]}:{chosen}" if chosen else "epochs"
        return f" --window 2 --epochs {target}"
    return " --window 2"


def _filter_lines(filters: dict[str, Any], what: str) -> list[str]:
    """One line per filterable column, with an example ``--where``."""
    lines = []
    for column, values in filters.items():
        if column in ("spike_times", "obs_intervals", "pixel_mask", "image_mask"):
            continue
        if values and isinstance(values[0], bool):
            example = column
        elif values and isinstance(values[0], str):
            example = f"{column}=={values[0]}"
        elif len(values) == 2:
            example = f"'{column}>={values[0]:.4g}'"
        else:
            continue
        shown = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values)
        lines.append(f"    filter {what} by {column} ({shown}): --where {example}")
    return lines


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
                    {
                        "path": p,
                        "n_rows": len(obj),
                        "columns": list(obj.colnames),
                        "labels": interval_labels(obj),
                    }
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
        "filters": describe_columns(units),
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
    rate: float | None
    if rrs.rate is not None:
        rate = float(rrs.rate)
    else:
        ts = np.asarray(rrs.timestamps[: min(len(rrs.timestamps), 1000)])
        rate = float(1.0 / np.median(np.diff(ts))) if ts.size > 1 else None
    table = rrs.rois.table
    rows = np.asarray(rrs.rois.data[:], dtype=np.int64)
    cells = classified_cells(table)
    return {
        "path": path,
        "shape": list(rrs.data.shape),
        "rate": rate,
        "n_rois": int(rows.size),
        "plane_segmentation": table.name,
        "filters": describe_columns(table),
        "n_cells": None if cells is None else int(cells[rows].sum()),
        "constant_rois": _constant_rois(rrs, rows, np.asarray(table.id.data[:])),
    }


def _constant_rois(rrs: Any, rows: np.ndarray, ids: np.ndarray) -> list[Any]:
    """Ids of ROIs whose trace never changes (over at most the first 5000 frames)."""
    data = rrs.data
    shape = data.shape
    if len(shape) != 2:
        return []
    time_first = shape[1] == rows.size or shape[0] != rows.size
    sample = np.asarray(data[:5000] if time_first else data[:, :5000], dtype=np.float64)
    sample = sample if time_first else sample.T
    with np.errstate(invalid="ignore"):
        spread = np.nanmax(sample, axis=0) - np.nanmin(sample, axis=0)
    flat = ~(spread > 0)
    return [plain_value(v) for v in ids[rows[flat]]]
