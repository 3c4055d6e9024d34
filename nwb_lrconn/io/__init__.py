"""io subpackage: read NWB / spikeinterface recordings into :class:`~nwb_lrconn.data.Recording`,
and write small NWB files (simulations, conversions) that the same readers read back.

pynwb, h5py and spikeinterface are imported inside the functions, so importing this package is
light.
"""

from __future__ import annotations

from .binning import make_grid
from .dandi import DandiAsset, is_dandi_reference, resolve_dandi
from .inspect import NWBSummary, inspect_nwb
from .nwb_units import read_units
from .ophys import list_roi_response_series, read_ophys
from .sorting import read_sorting
from .streaming import NWBSource, is_remote, is_url, open_nwb, open_source
from .synthetic import write_ophys_nwb, write_units_nwb
from .timeseries import read_timeseries

__all__ = [
    "read_units",
    "read_ophys",
    "list_roi_response_series",
    "read_sorting",
    "read_timeseries",
    "open_nwb",
    "open_source",
    "NWBSource",
    "is_url",
    "is_remote",
    "resolve_dandi",
    "DandiAsset",
    "is_dandi_reference",
    "inspect_nwb",
    "NWBSummary",
    "write_units_nwb",
    "write_ophys_nwb",
    "make_grid",
]
