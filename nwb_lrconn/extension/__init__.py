"""The ``ndx-lrconn`` NWB extension: schema, neurodata classes, and results I/O.

Importing this subpackage loads the ``ndx-lrconn`` namespace into pynwb (it must happen before
any ``NWBHDF5IO`` that writes our types is opened; the writers check it). The YAML comes from the
installed package (``nwb_lrconn/spec``) or, in a source checkout, from the repository's ``spec/``.
"""

from __future__ import annotations

# importing .containers (also done by .read and .write) loads the namespace into pynwb
from ._derived import derived_file_name
from ._namespace import NAMESPACE, load_namespace, spec_path
from .containers import (
    DegeneracyAnalysis,
    FitProvenance,
    JointFitSummary,
    JointSessionTable,
    LaplacePosterior,
    LatentTrajectories,
    LoadingDistribution,
    LowRankRNNFit,
    MetricsTable,
    NamedArray,
    NamedArrays,
    UnitLoadings,
)
from .mock import mock_joint, mock_ophys_nwb, mock_results, mock_units_nwb
from .read import list_results, read_results, read_unit_table
from .write import MODES, write_results

__all__ = [
    "NAMESPACE",
    "spec_path",
    "load_namespace",
    "MODES",
    "write_results",
    "derived_file_name",
    "read_results",
    "read_unit_table",
    "list_results",
    "mock_results",
    "mock_joint",
    "mock_units_nwb",
    "mock_ophys_nwb",
    "LowRankRNNFit",
    "LatentTrajectories",
    "FitProvenance",
    "LaplacePosterior",
    "DegeneracyAnalysis",
    "LoadingDistribution",
    "UnitLoadings",
    "JointFitSummary",
    "JointSessionTable",
    "MetricsTable",
    "NamedArrays",
    "NamedArray",
]
