"""Read calcium traces (RoiResponseSeries) into a :class:`~nwb_lrconn.data.Recording`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._validation import check_choice, check_positive
from ..data import Recording
from ._assemble import grid_recording, nwb_source_info, optional_inputs
from ._identity import plain_value
from ._paths import get_object, object_paths, path_of
from .binning import BinGrid, bin_samples, make_grid
from .selection import Where, classified_cells, json_where, select_rows
from .streaming import open_source
from .timeseries import sample_times
from .trials import IntervalSpec, build_intervals, record_trial_rows

__all__ = ["read_ophys", "list_roi_response_series", "resolve_orientation", "normalize_traces"]

log = logging.getLogger(__name__)

NORMALIZATIONS = (None, "zscore", "dff")
ORIENTATIONS = ("auto", "time_first", "rois_first")


def _series_paths(nwbfile: Any) -> list[str]:
    from pynwb.ophys import RoiResponseSeries

    return sorted(p for p, o in object_paths(nwbfile).items() if isinstance(o, RoiResponseSeries))


def list_roi_response_series(
    path: Any, *, cache_dir: str | os.PathLike | None = None
) -> list[str]:
    """Return the paths of every RoiResponseSeries in an NWB file (sorted).

    ``path`` is any source :func:`~nwb_lrconn.io.streaming.open_nwb` takes. Examples:
    ``"processing/ophys/Fluorescence/EPG"``, ``"processing/ophys/DfOverF/plane0"``.
    """
    with open_source(path, cache_dir=cache_dir) as opened:
        return _series_paths(opened.nwbfile)


def resolve_orientation(
    shape: tuple[int, ...], n_rois: int, n_timestamps: int | None, orientation: str, where: str
) -> tuple[str, str]:
    """Decide whether a series is stored (time, ROIs) or (ROIs, time).

    The NWB convention is (time, ROIs); the number of ROIs comes from the series' ``rois``
    region and, when the series has timestamps, the number of frames from their length.

    Returns
    -------
    orientation : {"time_first", "rois_first"}
        The layout.
    reason : str
        Why, in words (recorded in ``SourceInfo.selection``).

    Raises
    ------
    ValueError
        When the data are not 2-D, match neither layout, match both (``"auto"`` with as many
        frames as ROIs), or contradict an explicit ``orientation``.
    """
    check_choice(orientation, "orientation", ORIENTATIONS)
    if len(shape) != 2:
        raise ValueError(f"{where} must be 2-D (time, ROIs); got shape {tuple(shape)}.")
    n_frames_note = "no timestamps" if n_timestamps is None else f"{n_timestamps} timestamps"

    def fits(time_axis: int) -> bool:
        roi_axis = 1 - time_axis
        ok = shape[roi_axis] == n_rois
        return ok and (n_timestamps is None or shape[time_axis] == n_timestamps)

    time_first, rois_first = fits(0), fits(1)
    facts = f"data shape {tuple(shape)}, {n_rois} ROIs in the rois region, {n_frames_note}"
    if orientation != "auto":
        if not (time_first if orientation == "time_first" else rois_first):
            raise ValueError(f"orientation={orientation!r} does not fit {where}: {facts}.")
        return orientation, f"{orientation} as requested ({facts})"
    if time_first and rois_first:
        raise ValueError(
            f"Cannot tell the orientation of {where}: {facts} fit both (time, ROIs) and "
            "(ROIs, time). Pass orientation='time_first' or 'rois_first'."
        )
    if not (time_first or rois_first):
        raise ValueError(f"{where} matches neither (time, ROIs) nor (ROIs, time): {facts}.")
    chosen = "time_first" if time_first else "rois_first"
    return chosen, f"{chosen}: {facts}"


def normalize_traces(
    values: np.ndarray, normalize: str | None, *, dff_percentile: float, where: str
) -> np.ndarray:
    """Normalise traces of shape (n_frames, n_rois) per ROI over all finite frames.

    ``"zscore"``: (F − mean) / std. ``"dff"``: (F − F0) / F0 with F0 the ``dff_percentile``-th
    percentile of the ROI's trace over the whole series (a baseline that ignores transients).
    """
    check_choice(normalize, "normalize", NORMALIZATIONS)
    if normalize is None:
        return values
    good = np.all(np.isfinite(values), axis=1)
    if normalize == "zscore":
        mean = values[good].mean(axis=0)
        std = values[good].std(axis=0)
        flat = np.flatnonzero(std == 0)
        if flat.size:
            raise ValueError(
                f"Cannot z-score {where}: ROI column(s) {flat.tolist()} are constant (std 0)."
            )
        return (values - mean) / std
    f0 = np.percentile(values[good], dff_percentile, axis=0)
    bad = np.flatnonzero(f0 <= 0)
    if bad.size:
        raise ValueError(
            f"Cannot compute dF/F of {where}: the baseline F0 (percentile {dff_percentile}) "
            f"is <= 0 for ROI column(s) {bad.tolist()}; use normalize='zscore' or raw traces."
        )
    return (values - f0) / f0


def _constant_columns(values: np.ndarray) -> np.ndarray:
    """ROIs whose finite values never change (relative to their size)."""
    finite = np.where(np.isfinite(values), values, np.nan)
    spread = np.nanmax(finite, axis=0) - np.nanmin(finite, axis=0)
    scale = np.maximum(np.nanmax(np.abs(finite), axis=0), 1e-300)
    return ~(spread > 1e-9 * scale)


def _chosen_columns(
    table: Any,
    rows: np.ndarray,
    unit_ids: Sequence[int] | None,
    where: Where | None,
    cells_only: bool | None,
    source: str,
    table_path: str,
    series_path: str,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Columns of the series to keep: the selection, else suite2p's cells, else all."""
    column_of = {int(r): j for j, r in enumerate(rows)}
    if unit_ids is not None or where is not None:
        selected = select_rows(
            table, unit_ids=unit_ids, where=where, source=source, path=table_path
        )
        absent = [int(r) for r in selected if int(r) not in column_of]
        if unit_ids is not None and absent:
            ids = np.asarray(table.id.data[:])
            raise KeyError(
                f"ROI ids {ids[absent][:10].tolist()} are rows of {table_path} but not columns of "
                f"{series_path} in {source}; choose ids the series holds."
            )
        columns = np.array([column_of[int(r)] for r in selected if int(r) in column_of])
        if columns.size == 0:
            raise ValueError(
                f"No ROI of {series_path} in {source} matches unit_ids={unit_ids!r}, "
                f"where={where!r}."
            )
        return columns, {"cells_only": False}
    cells = classified_cells(table) if cells_only is not False else None
    if cells is None:
        if cells_only:
            raise KeyError(
                f"cells_only=True but {table_path} in {source} has no 'iscell' column; "
                f"its columns are {list(table.colnames)}."
            )
        return np.arange(rows.size), {"cells_only": False}
    columns = np.flatnonzero(cells[rows])
    if columns.size == 0:
        raise ValueError(
            f"{table_path} in {source} classifies none of the ROIs of {series_path} as cells "
            "(its iscell column); pass cells_only=False (CLI: --all-rois) to fit them all."
        )
    log.info(
        "%s: kept the %d of %d ROIs that the iscell column of %s classifies as cells "
        "(cells_only=False, CLI --all-rois, keeps all)",
        series_path,
        columns.size,
        rows.size,
        table_path,
    )
    return columns, {"cells_only": True, "n_rois_in_series": int(rows.size)}


def _frame_grid(times: np.ndarray, starts: np.ndarray, stops: np.ndarray, period: float):
    """Native bins (one frame = one bin): frame indices of each interval."""
    lo = np.searchsorted(times, starts, side="left")
    hi = np.searchsorted(times, stops, side="left")
    keep = hi > lo
    if not keep.any():
        raise ValueError("No frame falls inside the selected trials/windows.")
    lo, hi = lo[keep], hi[keep]
    n = hi - lo
    grid = BinGrid(times[lo], times[lo] + n * period, n, period, np.flatnonzero(keep))
    frames = np.full((lo.size, int(n.max())), -1, dtype=np.int64)
    for i, (a, b) in enumerate(zip(lo, hi)):
        frames[i, : b - a] = np.arange(a, b)
    return grid, frames


def read_ophys(
    path: Any,
    *,
    series_path: str | None = None,
    bin_width: float | None = None,
    trials: str | None = None,
    event: str | None = None,
    window: tuple[float, float] | None = None,
    window_length: float | None = None,
    epochs: Any = None,
    time_range: tuple[float, float] | None = None,
    normalize: str | None = None,
    dff_percentile: float = 10.0,
    orientation: str = "auto",
    unit_ids: Sequence[int] | None = None,
    where: Where | None = None,
    cells_only: bool | None = None,
    inputs: Sequence[str] | None = None,
    partial_bin: str = "drop",
    cache_dir: str | os.PathLike | None = None,
) -> Recording:
    """Read a RoiResponseSeries (calcium traces) into trials or windows.

    Parameters
    ----------
    path : str, path-like, DandiAsset or pynwb.NWBFile
        NWB file: local path, URL, DANDI reference or open ``NWBFile`` (see
        :func:`~nwb_lrconn.io.streaming.open_nwb`).
    series_path : str, optional
        Path of the RoiResponseSeries, e.g. ``"processing/ophys/Fluorescence/EPG"``. Required
        when the file holds more than one (see :func:`list_roi_response_series`).
    bin_width : float, optional
        Bin width in seconds. None: one bin per frame (the native frame period, the median
        frame interval). Otherwise frames are averaged into bins, which must be at least one
        frame period wide.
    trials, event, window, window_length, epochs, time_range
        As in :func:`read_units`. Without any of them: one trial over the whole series.
    normalize : {None, "zscore", "dff"}, default: None
        Per ROI over the whole series: z-score, or ΔF/F = (F − F0)/F0 with F0 the
        ``dff_percentile``-th percentile of the trace.
    dff_percentile : float, default: 10.0
        Percentile giving the baseline F0.
    orientation : {"auto", "time_first", "rois_first"}, default: "auto"
        Layout of the stored data; ``"auto"`` compares the data shape with the number of ROIs
        and of timestamps (see :func:`resolve_orientation`).
    inputs : sequence of str, optional
        TimeSeries / event-column paths binned into ``Recording.inputs``.
    partial_bin : {"drop", "keep"}, default: "drop"
        See :mod:`nwb_lrconn.io.binning` (only with ``bin_width``).
    cache_dir : str or path-like, optional
        Disk cache for streamed bytes (see :func:`~nwb_lrconn.io.streaming.open_nwb`).

    Returns
    -------
    Recording
        ``kind="calcium"``, data of shape (n_trials, n_time, n_rois). Frames holding NaN in any
        ROI, and bins without a valid frame, are masked. ``unit_rows`` are rows of the
        PlaneSegmentation (``source.table_path``); ``source.object_path`` is the series.

    Raises
    ------
    KeyError
        No RoiResponseSeries at ``series_path`` (the message lists those that exist).
    ValueError
        Several series and no ``series_path`` (all candidates are listed); ambiguous or
        inconsistent orientation; NaN or non-increasing timestamps; bad ``bin_width``.
    """
    from pynwb.ophys import RoiResponseSeries

    with open_source(path, cache_dir=cache_dir) as opened:
        nwbfile, source = opened.nwbfile, opened.label
        candidates = _series_paths(nwbfile)
        if series_path is None:
            if not candidates:
                raise KeyError(f"No RoiResponseSeries in {source}.")
            if len(candidates) > 1:
                raise ValueError(
                    f"{source} holds {len(candidates)} RoiResponseSeries; choose one with "
                    f"series_path=: {candidates}."
                )
            series_path = candidates[0]
        rrs = get_object(nwbfile, series_path, RoiResponseSeries, "RoiResponseSeries", source)
        rows = np.asarray(rrs.rois.data[:], dtype=np.int64)
        table = rrs.rois.table
        table_path = path_of(nwbfile, table)
        ids = np.asarray(table.id.data[:])[rows]
        shape = tuple(rrs.data.shape)
        n_ts = None if rrs.timestamps is None else len(rrs.timestamps)
        layout, reason = resolve_orientation(
            shape, rows.size, n_ts, orientation, f"{series_path} in {source}"
        )
        if layout == "rois_first":
            log.warning(
                "%s in %s stores its data as (ROIs, frames), not (frames, ROIs) as NWB asks; "
                "read transposed (%s)",
                series_path,
                source,
                reason,
            )
        raw = np.asarray(rrs.data[:], dtype=np.float64)
        raw = raw if layout == "time_first" else raw.T
        values = raw * float(rrs.conversion or 1.0) + float(getattr(rrs, "offset", 0.0) or 0.0)
        columns, choice = _chosen_columns(
            table, rows, unit_ids, where, cells_only, source, table_path, series_path
        )
        values, rows, ids = values[:, columns], rows[columns], ids[columns]
        times = sample_times(rrs, values.shape[0], series_path, source)
        empty = ~np.isfinite(values).any(axis=0)
        if empty.all():
            raise ValueError(
                f"Every ROI of {series_path} in {source} is NaN/inf in every frame; there is "
                "nothing to fit: check the series (nwb-lrconn inspect)."
            )
        dropped_empty = ids[empty].tolist()
        if empty.any():  # an all-NaN ROI would otherwise mask every frame
            log.warning(
                "%s in %s: dropped %d ROI(s) that are NaN in every frame (ids %s)",
                series_path,
                source,
                int(empty.sum()),
                dropped_empty[:10],
            )
            values, rows, ids = values[:, ~empty], rows[~empty], ids[~empty]
        constant = _constant_columns(values)
        dropped_constant = ids[constant].tolist()
        if constant.all():
            raise ValueError(
                f"Every selected ROI of {series_path} in {source} is constant; there is "
                "nothing to fit: check the series (nwb-lrconn inspect)."
            )
        if constant.any():  # no information, and a zero spread breaks normalisation
            log.warning(
                "%s in %s: dropped %d constant ROI(s) (ids %s)",
                series_path,
                source,
                int(constant.sum()),
                dropped_constant[:10],
            )
            values, rows, ids = values[:, ~constant], rows[~constant], ids[~constant]
        values = normalize_traces(
            values, normalize, dff_percentile=dff_percentile, where=f"{series_path} in {source}"
        )
        period = float(np.median(np.diff(times))) if times.size > 1 else 1.0 / float(rrs.rate)
        spec = IntervalSpec(
            trials=trials,
            event=event,
            window=window,
            window_length=window_length,
            epochs=epochs,
            time_range=time_range,
        )
        starts, stops, trial_rows, selection = build_intervals(
            nwbfile,
            spec,
            source,
            default_range=lambda: (float(times[0]), float(times[-1]) + period),
        )
        valid = np.all(np.isfinite(values), axis=1)
        if bin_width is None:
            grid, frames = _frame_grid(times, starts, stops, period)
            inside = frames >= 0
            mask = inside & valid[np.where(inside, frames, 0)]
            data = np.where(mask[..., None], values[np.where(inside, frames, 0)], 0.0)
        else:
            bin_width = check_positive(bin_width, "bin_width")
            if bin_width < period * (1 - 1e-6):
                raise ValueError(
                    f"bin_width={bin_width} s is shorter than the frame period {period:.6g} s "
                    f"of {series_path}; use bin_width=None for one bin per frame."
                )
            grid = make_grid(starts, stops, bin_width, partial_bin=partial_bin, n_units=len(rows))
            masked = np.where(valid[:, None], values, np.nan)
            data, counts = bin_samples(masked, times, grid)
            mask = grid.mask & (counts[..., 0] > 0)
            data = np.where(mask[..., None], data, 0.0)
        keep = mask.any(axis=1)
        record_trial_rows(selection, trial_rows, grid.source_index[keep])
        u, names = optional_inputs(nwbfile, inputs, grid, source)
        if u is not None:
            u = u[keep]
        selection.update(
            series_path=series_path,
            bin_width=None if bin_width is None else float(bin_width),
            frame_period=period,
            normalize=normalize,
            dff_percentile=float(dff_percentile) if normalize == "dff" else None,
            orientation=reason,
            masked_frames=int((~valid).sum()),
            dropped_all_nan_ids=[plain_value(v) for v in dropped_empty],
            dropped_constant_ids=[plain_value(v) for v in dropped_constant],
            unit_ids=None if unit_ids is None else [plain_value(v) for v in unit_ids],
            where=json_where(where),
            **choice,
            inputs=list(names),
        )
        info = nwb_source_info(
            opened, object_path=series_path, table_path=table_path, selection=selection
        )
    return grid_recording(
        grid,
        data,
        kind="calcium",
        unit_ids=ids,
        unit_rows=rows,
        source=info,
        mask=mask,
        keep=keep,
        inputs=u,
        input_names=names,
    )
