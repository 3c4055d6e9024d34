"""The tail every reader shares: the inputs on the grid, the source record and the Recording."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data import Recording, SourceInfo
from ._identity import session_identity
from ._paths import file_identifier
from .binning import BinGrid
from .streaming import NWBSource
from .timeseries import build_inputs

__all__ = ["grid_recording", "nwb_source_info", "optional_inputs"]


def optional_inputs(
    nwbfile: Any, inputs: Sequence[str] | None, grid: BinGrid, source: str
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """:func:`.build_inputs` for the given paths; (None, ()) when there are none."""
    if not inputs:
        return None, ()
    return build_inputs(nwbfile, inputs, grid, source)


def nwb_source_info(
    opened: NWBSource, *, object_path: str, table_path: str, selection: dict[str, Any]
) -> SourceInfo:
    """Where a recording read from ``opened`` came from (call inside :func:`.open_source`)."""
    return SourceInfo(
        identifier=file_identifier(opened.nwbfile),
        path=opened.path,
        object_path=object_path,
        table_path=table_path,
        selection=selection,
        session=session_identity(opened.nwbfile),
        origin=opened.origin,
    )


def grid_recording(
    grid: BinGrid,
    data: np.ndarray,
    *,
    kind: str,
    unit_ids: np.ndarray,
    unit_rows: np.ndarray,
    source: SourceInfo,
    mask: np.ndarray | None = None,
    keep: np.ndarray | None = None,
    inputs: np.ndarray | None = None,
    input_names: tuple[str, ...] = (),
) -> Recording:
    """A Recording of ``data`` (n_trials, n_time, n_units) binned on ``grid``.

    ``mask`` defaults to the grid's own; ``keep`` (bool per trial of the grid) keeps only those
    trials of ``data``, ``mask`` and the grid's start times (``inputs`` are taken as given).
    """
    mask = grid.mask if mask is None else mask
    starts = grid.starts
    if keep is not None:
        data, mask, starts = data[keep], mask[keep], starts[keep]
    return Recording(
        data=data,
        mask=mask,
        bin_width=grid.bin_width,
        kind=kind,
        unit_ids=unit_ids,
        unit_rows=unit_rows,
        trial_start_times=starts,
        inputs=inputs,
        input_names=input_names,
        source=source,
    )
