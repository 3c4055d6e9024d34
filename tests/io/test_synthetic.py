"""Writers: round trip through pynwb, DANDI-level validity, argument checks."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from nwb_lrconn.io import (
    inspect_nwb,
    list_roi_response_series,
    read_ophys,
    read_sorting,
    read_timeseries,
    read_units,
    write_ophys_nwb,
    write_units_nwb,
)


def test_units_round_trip(units_file, spike_trains):
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(units_file), "r") as io:
        nwbfile = io.read()
        units = nwbfile.units
        np.testing.assert_array_equal(units.id[:], [10, 11, 12, 13, 14, 15])
        for i, train in enumerate(spike_trains):
            np.testing.assert_array_equal(units.get_unit_spike_times(i), train)
        assert list(units["quality"].data[:]) == ["good", "good", "mua", "good", "good", "noise"]
        assert nwbfile.subject.species == "Mus musculus"
        assert list(nwbfile.trials["clicks"][1]) == [6.0]


@pytest.mark.parametrize("which", ["units", "ophys"])
def test_written_files_pass_dandi_critical_checks(units_file, ophys_file, which):
    from nwbinspector import Importance, inspect_nwbfile, load_config

    path = units_file if which == "units" else ophys_file
    messages = list(
        inspect_nwbfile(nwbfile_path=str(path), config=load_config(filepath_or_keyword="dandi"))
    )
    critical = [m for m in messages if m.importance == Importance.CRITICAL]
    assert critical == [], [m.message for m in critical]


def test_inspect_nwb(units_file, ophys_file):
    units = inspect_nwb(units_file).to_dict()
    assert units["identifier"] == "synthetic-units"
    (table,) = units["units"]
    assert table["path"] == "units" and table["n_units"] == 6
    assert table["columns"] == ["spike_times", "quality", "snr", "is_ok"]
    assert {t["path"] for t in units["time_intervals"]} == {"intervals/trials", "intervals/epochs"}
    assert units["timeseries"] == [{"path": "acquisition/speed", "shape": [200], "unit": "m/s"}]
    ophys = inspect_nwb(ophys_file)
    assert [s["path"] for s in ophys.roi_response_series] == [
        "processing/ophys/Fluorescence/A",
        "processing/ophys/Fluorescence/B",
    ]
    assert ophys.roi_response_series[0]["rate"] == 10.0
    assert ophys.roi_response_series[1]["n_rois"] == 3


def test_refuses_to_overwrite(units_file, tmp_path):
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        write_units_nwb(units_file, [np.array([1.0])])
    path = write_units_nwb(tmp_path / "a.nwb", [np.array([1.0])])
    assert write_units_nwb(path, [np.array([2.0])], overwrite=True) == path


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ([[]], {}, ValueError, "at least one unit"),
        ([[np.array([np.nan])]], {}, ValueError, "spike_times must be finite"),
        ([[np.array([1.0])]], {"unit_ids": [1, 2]}, ValueError, "unit_ids must have 1 entries"),
        (
            [[np.array([1.0])]],
            {"columns": {"q": [1, 2]}},
            ValueError,
            r"Units column 'q' must have one value per unit \(1\)",
        ),
        ([[np.array([1.0])]], {"trials": np.ones((2, 3))}, ValueError, r"shape \(n, 2\)"),
        ([[np.array([1.0])]], {"trials": np.array([[2.0, 1.0]])}, ValueError, "stop_time >"),
        ([[np.array([1.0])]], {"trials": {"start_time": [0.0]}}, KeyError, "'stop_time'"),
        (
            [[np.array([1.0])]],
            {"trials": {"start_time": [0.0], "stop_time": [1.0], "x": [1, 2]}},
            ValueError,
            "column 'x' has 2 values for 1 rows",
        ),
        (
            [[np.array([1.0])]],
            {"session_start_time": datetime(2020, 1, 1)},
            ValueError,
            "timezone-aware",
        ),
        ([[np.array([1.0])]], {"resolution": 0.0}, ValueError, "resolution must be finite"),
    ],
)
def test_write_units_errors(tmp_path, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        write_units_nwb(tmp_path / "x.nwb", *args, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of rate="),
        ({"rate": 1.0, "timestamps": np.arange(3.0)}, "exactly one of rate="),
        ({"rate": 1.0, "data_orientation": "diag"}, "data_orientation must be one of"),
    ],
)
def test_write_ophys_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_ophys_nwb(tmp_path / "x.nwb", np.ones((3, 2)), **kwargs)


def test_every_reader_leaves_the_file_unchanged(truth, units_file, ophys_file):
    from spikeinterface.extractors import read_nwb_sorting

    before = {p: truth.sha256(p) for p in (units_file, ophys_file)}
    rec = read_units(units_file, bin_width=0.5, trials="trials", unit_ids=[10])
    read_timeseries(units_file, "acquisition/speed", rec)
    inspect_nwb(units_file)
    sorting = read_nwb_sorting(str(units_file), sampling_frequency=1e4, t_start=0.0)
    with pytest.warns(UserWarning, match=r"ids \[15\]"):
        read_sorting(sorting, bin_width=0.5)
    list_roi_response_series(ophys_file)
    read_ophys(ophys_file, series_path="processing/ophys/Fluorescence/B", bin_width=0.5)
    assert {p: truth.sha256(p) for p in before} == before
