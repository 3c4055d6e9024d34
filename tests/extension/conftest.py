"""Fixtures for the ndx-lrconn tests: mock sources, matching Results, a deep equality check."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from nwb_lrconn.data import SourceInfo
from nwb_lrconn.extension import mock_ophys_nwb, mock_results, mock_units_nwb
from nwb_lrconn.extension.mock import OPHYS_SERIES, OPHYS_TABLE, UNITS_TABLE
from nwb_lrconn.io import open_nwb
from nwb_lrconn.io._identity import session_identity


def _identity(path: Path) -> dict:
    with open_nwb(path) as nwbfile:
        return session_identity(nwbfile)


def _assert_same(a, b, where: str = "results") -> None:
    if dataclasses.is_dataclass(a):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert a.dtype == b.dtype, f"{where}: dtype {a.dtype} != {b.dtype}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture
def assert_same():
    """Deep equality of dataclasses/dicts/arrays (arrays: same dtype and values)."""
    return _assert_same


@pytest.fixture
def units_source(tmp_path: Path) -> Path:
    return mock_units_nwb(tmp_path / "units.nwb", n_units=8, identifier="mock-units")


@pytest.fixture
def ophys_source(tmp_path: Path) -> Path:
    return mock_ophys_nwb(tmp_path / "ophys.nwb", n_rois=8, identifier="mock-ophys")


@pytest.fixture
def units_results(units_source):
    source = SourceInfo(
        identifier="mock-units",
        path=str(units_source),
        object_path=UNITS_TABLE,
        table_path=UNITS_TABLE,
        selection={"unit_ids": list(range(8)), "bin_width": 0.02},
        session=_identity(units_source),
        origin={"kind": "local"},
    )
    return mock_results(n_units=8, source=source)


@pytest.fixture
def ophys_results(ophys_source):
    source = SourceInfo(
        identifier="mock-ophys",
        path=str(ophys_source),
        object_path=OPHYS_SERIES,
        table_path=OPHYS_TABLE,
        session=_identity(ophys_source),
        origin={"kind": "local"},
    )
    return mock_results(n_units=8, observation="calcium", structure="blocks", source=source)
