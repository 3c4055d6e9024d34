"""Write spike times or calcium traces to small, valid NWB files (simulations, conversions).

Simulated data go through these writers and then through the same readers as real data. The
files carry a Subject (id, species, sex, age), so DANDI's critical checks pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_array, check_choice, check_positive

__all__ = ["write_units_nwb", "write_ophys_nwb"]

IntervalsLike = np.ndarray | Mapping[str, Any]


_SYNTHETIC_SUBJECT = {
    "subject_id": "synthetic-1",
    "species": "Mus musculus",
    "sex": "U",
    "age": "P90D",
    "description": "simulated subject (nwb_lrconn synthetic writer)",
}


def _new_file(
    path: str | os.PathLike,
    identifier: str | None,
    session_start_time: datetime | None,
    description: str,
    overwrite: bool,
    trials: IntervalsLike | None,
    epochs: IntervalsLike | None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[Path, Any]:
    from pynwb import NWBFile
    from pynwb.file import Subject

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    start = session_start_time or datetime(2000, 1, 1, tzinfo=timezone.utc)
    if start.tzinfo is None:
        raise ValueError(
            f"session_start_time must be timezone-aware (e.g. tzinfo=timezone.utc); got {start}."
        )
    extra = {"session_id": "session-1", **dict(metadata or {})}
    subject = Subject(**{**_SYNTHETIC_SUBJECT, **dict(extra.pop("subject", None) or {})})
    nwbfile = NWBFile(
        session_description=description,
        identifier=identifier or path.stem,
        session_start_time=start,
        subject=subject,
        trials=None if trials is None else _intervals("trials", trials, "trials"),
        epochs=None if epochs is None else _intervals("epochs", epochs, "epochs"),
        **extra,
    )
    return path, nwbfile


def _column(name: str, values: Any, description: str) -> list[Any]:
    """One VectorData (plus a VectorIndex when ``values`` is a list of arrays/lists)."""
    from hdmf.common import VectorData, VectorIndex

    if (
        isinstance(values, (list, tuple))
        and values
        and isinstance(values[0], (list, tuple, np.ndarray))
    ):
        flat = np.concatenate([np.asarray(v).reshape(-1) for v in values]) if values else []
        ends = np.cumsum([len(v) for v in values])
        data = VectorData(name=name, data=flat, description=description)
        return [data, VectorIndex(name=f"{name}_index", data=ends, target=data)]
    return [VectorData(name=name, data=np.asarray(values), description=description)]


def _intervals(name: str, intervals: IntervalsLike, what: str) -> Any:
    from hdmf.common import ElementIdentifiers
    from pynwb.epoch import TimeIntervals

    if not isinstance(intervals, Mapping):
        arr = check_array(intervals, what, ndim=2, dtype=np.float64, finite=True)
        if arr.shape[1] != 2:
            raise ValueError(f"{what} must have shape (n, 2) (start, stop); got {arr.shape}.")
        intervals = {"start_time": arr[:, 0], "stop_time": arr[:, 1]}
    for key in ("start_time", "stop_time"):
        if key not in intervals:
            raise KeyError(f"{what} needs a {key!r} column; got columns {sorted(intervals)}.")
    starts = np.asarray(intervals["start_time"], dtype=np.float64)
    stops = np.asarray(intervals["stop_time"], dtype=np.float64)
    if starts.shape != stops.shape or np.any(~(stops > starts)):
        raise ValueError(f"{what} must have stop_time > start_time for every row.")
    columns = []
    for key, values in intervals.items():
        values = np.asarray(values, dtype=np.float64) if key.endswith("_time") else values
        if len(values) != starts.size:
            raise ValueError(
                f"{what} column {key!r} has {len(values)} values for {starts.size} rows."
            )
        columns += _column(key, values, f"{key} ({what})")
    return TimeIntervals(
        name=name,
        description=f"{what} written by nwb_lrconn",
        id=ElementIdentifiers(name="id", data=np.arange(starts.size)),
        columns=columns,
    )


def _write(path: Path, nwbfile: Any) -> Path:
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def write_units_nwb(
    path: str | os.PathLike,
    spike_times: Sequence[np.ndarray],
    *,
    unit_ids: Sequence[int] | None = None,
    trials: IntervalsLike | None = None,
    epochs: IntervalsLike | None = None,
    columns: Mapping[str, Any] | None = None,
    identifier: str | None = None,
    session_start_time: datetime | None = None,
    resolution: float | None = None,
    description: str = "spike times written by nwb_lrconn",
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write spike trains as an NWB Units table (flat VectorData + VectorIndex, no per-unit loop).

    Parameters
    ----------
    path : str or path-like
        Output file.
    spike_times : sequence of 1-D arrays
        Spike times in seconds, one array per unit (may be empty).
    unit_ids : sequence of int, optional
        Ids of the units (default ``0 … n_units − 1``).
    trials, epochs : ndarray of shape (n, 2) or dict of columns, optional
        Start/stop times in seconds, or a dict with ``start_time``, ``stop_time`` and any other
        columns (one value per row, or a list of arrays for a ragged column such as click
        times or ``tags``).
    columns : dict of str to array_like, optional
        Extra Units columns, one value per unit (e.g. ``{"quality": [...]}``).
    identifier : str, optional
        ``NWBFile.identifier`` (default: the file stem).
    session_start_time : datetime, optional
        Timezone-aware; default 2000-01-01 UTC.
    resolution : float, optional
        ``Units.resolution`` (spike time precision in seconds).
    description : str
        Session description.
    metadata : dict, optional
        Other NWBFile fields (``session_id``, ``experimenter``, ``lab``, ...) and ``subject``, a
        dict of Subject fields; default a synthetic subject and session "session-1".
    overwrite : bool, default: False
        Replace an existing file.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    FileExistsError
        When ``path`` exists and ``overwrite`` is False.
    ValueError
        Non-finite spike times, or per-unit columns / ids of the wrong length.
    """
    from hdmf.common import ElementIdentifiers, VectorData, VectorIndex
    from pynwb.misc import Units

    trains = [np.asarray(t, dtype=np.float64).reshape(-1) for t in spike_times]
    n_units = len(trains)
    if n_units == 0:
        raise ValueError("spike_times must hold at least one unit; got an empty sequence.")
    flat = np.concatenate(trains)
    if not np.all(np.isfinite(flat)):
        raise ValueError("spike_times must be finite; found NaN or infinite values.")
    ids = np.arange(n_units) if unit_ids is None else np.asarray(unit_ids, dtype=np.int64)
    if ids.shape != (n_units,):
        raise ValueError(f"unit_ids must have {n_units} entries; got shape {ids.shape}.")
    path, nwbfile = _new_file(
        path, identifier, session_start_time, description, overwrite, trials, epochs, metadata
    )
    times = VectorData(name="spike_times", data=flat, description="spike times (s)")
    cols = [
        times,
        VectorIndex(
            name="spike_times_index", data=np.cumsum([t.size for t in trains]), target=times
        ),
    ]
    for key, values in (columns or {}).items():
        values = np.asarray(values)
        if values.shape[:1] != (n_units,):
            raise ValueError(
                f"Units column {key!r} must have one value per unit ({n_units}); "
                f"got shape {values.shape}."
            )
        cols.append(VectorData(name=key, data=values, description=f"{key} per unit"))
    kwargs = {} if resolution is None else {"resolution": check_positive(resolution, "resolution")}
    nwbfile.units = Units(
        name="units",
        description="units written by nwb_lrconn",
        id=ElementIdentifiers(name="id", data=ids),
        columns=cols,
        **kwargs,
    )
    return _write(path, nwbfile)


def write_ophys_nwb(
    path: str | os.PathLike,
    traces: np.ndarray | Mapping[str, np.ndarray],
    *,
    rate: float | None = None,
    timestamps: np.ndarray | None = None,
    starting_time: float = 0.0,
    trials: IntervalsLike | None = None,
    epochs: IntervalsLike | None = None,
    identifier: str | None = None,
    session_start_time: datetime | None = None,
    unit: str = "a.u.",
    data_orientation: str = "time_first",
    roi_columns: Mapping[str, Any] | None = None,
    description: str = "calcium traces written by nwb_lrconn",
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write calcium traces as RoiResponseSeries in ``processing/ophys/Fluorescence``.

    Each series gets its own PlaneSegmentation ``processing/ophys/ImageSegmentation/rois_<name>``
    (one-pixel placeholder masks) and a ``rois`` region over all its rows.

    Parameters
    ----------
    path : str or path-like
        Output file.
    traces : ndarray of shape (n_time, n_rois) or dict of str to such arrays
        Fluorescence; a dict writes one series per entry (default name ``"RoiResponseSeries"``).
        NaN frames are allowed.
    rate : float, optional
        Frame rate in Hz (give ``rate`` or ``timestamps``).
    timestamps : ndarray of shape (n_time,), optional
        Frame times in seconds.
    starting_time : float, default: 0.0
        Time of the first frame when ``rate`` is given.
    trials, epochs : ndarray of shape (n, 2) or dict of columns, optional
        As in :func:`write_units_nwb`.
    identifier : str, optional
        ``NWBFile.identifier``.
    session_start_time : datetime, optional
        Timezone-aware.
    unit : str, default: "a.u."
        Unit of the traces.
    data_orientation : {"time_first", "rois_first"}, default: "time_first"
        ``"rois_first"`` stores each series transposed, (n_rois, n_time), as some converters do
        (against the NWB convention); for testing readers.
    roi_columns : dict of str to array_like, optional
        Extra PlaneSegmentation columns, one value (or row, e.g. suite2p's two-column
        ``iscell``) per ROI, added to every series' table.
    description : str
        Session description.
    metadata : dict, optional
        Other NWBFile fields (``session_id``, ``experimenter``, ``lab``, ...) and ``subject``, a
        dict of Subject fields; default a synthetic subject and session "session-1".
    overwrite : bool, default: False
        Replace an existing file.

    Returns
    -------
    Path
        The written file.
    """
    from pynwb.ophys import Fluorescence, ImageSegmentation, OpticalChannel, RoiResponseSeries

    check_choice(data_orientation, "data_orientation", ("time_first", "rois_first"))
    if (rate is None) == (timestamps is None):
        raise ValueError("Give exactly one of rate= (Hz) or timestamps= (seconds).")
    series = dict(traces) if isinstance(traces, Mapping) else {"RoiResponseSeries": traces}
    arrays = {
        k: check_array(v, f"traces[{k!r}]", ndim=2, dtype=np.float64) for k, v in series.items()
    }
    path, nwbfile = _new_file(
        path, identifier, session_start_time, description, overwrite, trials, epochs, metadata
    )
    device = nwbfile.create_device(name="microscope")
    module = nwbfile.create_processing_module("ophys", "optical physiology")
    segmentation = ImageSegmentation()
    fluorescence = Fluorescence()
    module.add(segmentation)
    module.add(fluorescence)
    time_kwargs: dict[str, Any] = (
        {"rate": check_positive(rate, "rate"), "starting_time": float(starting_time)}
        if rate is not None
        else {"timestamps": np.asarray(timestamps, dtype=np.float64)}
    )
    for name, arr in arrays.items():
        n_rois = arr.shape[1]
        plane = nwbfile.create_imaging_plane(
            name=f"plane_{name}",
            optical_channel=OpticalChannel(name="channel", description="", emission_lambda=500.0),
            description="imaging plane",
            device=device,
            excitation_lambda=920.0,
            indicator="GCaMP",
            location="unknown",
        )
        rois = segmentation.create_plane_segmentation(
            name=f"rois_{name}", description=f"{n_rois} ROIs", imaging_plane=plane
        )
        for i in range(n_rois):
            rois.add_roi(pixel_mask=[(i, 0, 1.0)])
        for column, values in (roi_columns or {}).items():
            rois.add_column(name=column, description=column, data=np.asarray(values))
        region = rois.create_roi_table_region(region=list(range(n_rois)), description="all ROIs")
        data = arr if data_orientation == "time_first" else arr.T.copy()
        fluorescence.add_roi_response_series(
            RoiResponseSeries(name=name, data=data, rois=region, unit=unit, **time_kwargs)
        )
    return _write(path, nwbfile)
