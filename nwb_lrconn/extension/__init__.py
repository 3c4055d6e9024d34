"""The ``ndx-lrconn`` NWB extension: schema, neurodata classes, and results I/O.

Importing this subpackage loads the ``ndx-lrconn`` namespace into pynwb (it must happen before
any ``NWBHDF5IO`` that writes our types is opened; the writers check it). The YAML comes from the
installed package (``nwb_lrconn/spec``) or, in a source checkout, from the repository's ``spec/``.
"""

from __future__ import annotations

# importing .types (also done by .read and .write) loads the namespace into pynwb
from ._namespace import NAMESPACE, load_namespace, spec_path
from .mock import mock_ophys_nwb, mock_results, mock_units_nwb
from .read import list_results, read_results
from .types import (
    ConnectivityDistribution,
    DegeneracyReport,
    FitProvenance,
    LaplacePosterior,
    LatentTrajectories,
    LowRankRNNFit,
    NamedArray,
    NamedArrays,
)
from .write import write_results

__all__ = [
    "NAMESPACE",
    "spec_path",
    "load_namespace",
    "write_results",
    "read_results",
    "list_results",
    "mock_results",
    "mock_units_nwb",
    "mock_ophys_nwb",
    "LowRankRNNFit",
    "LatentTrajectories",
    "FitProvenance",
    "LaplacePosterior",
    "DegeneracyReport",
    "ConnectivityDistribution",
    "NamedArrays",
    "NamedArray",
]
