"""read_sorting: spikeinterface sortings binned like read_units."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from nwb_lrconn.io import read_sorting, read_units, write_units_nwb

FS = 30000.0


@pytest.fixture(scope="module")
def sampled_units_file(tmp_path_factory):
    """Spike times on the 30 kHz sample grid, so that seconds -> samples -> seconds is exact."""
    rng = np.random.default_rng(4)
    trains = [np.sort(rng.choice(300_000, size=n, replace=False)) / FS for n in (50, 200, 120)]
    path = tmp_path_factory.mktemp("si") / "sampled.nwb"
    return write_units_nwb(path, trains, unit_ids=[3, 7, 9], resolution=1 / FS)


@pytest.mark.parametrize("time_base", ["times", "frames"])
def test_nwb_sorting_counts_equal_read_units(sampled_units_file, time_base):
    from spikeinterface.extractors import read_nwb_sorting

    sorting = read_nwb_sorting(str(sampled_units_file), sampling_frequency=FS, t_start=0.0)
    rec = read_sorting(sorting, bin_width=0.05, time_base=time_base, window_length=2.0)
    ref = read_units(sampled_units_file, bin_width=0.05, window_length=2.0)
    np.testing.assert_array_equal(rec.data, ref.data)
    np.testing.assert_array_equal(rec.mask, ref.mask)
    np.testing.assert_allclose(rec.trial_start_times, ref.trial_start_times)
    np.testing.assert_array_equal(rec.unit_ids, [3, 7, 9])
    assert rec.source.selection["time_base"] == time_base


def test_time_offset_and_intervals():
    import spikeinterface.core as si

    sorting = si.NumpySorting.from_unit_dict(
        {"a": np.array([0, 100, 250])}, sampling_frequency=100.0
    )
    rec = read_sorting(sorting, bin_width=1.0, time_offset=10.0, intervals=[[10.0, 13.0]])
    np.testing.assert_array_equal(rec.data[0, :, 0], [1, 1, 1])
    np.testing.assert_array_equal(rec.unit_ids, ["a"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"unit_ids": ["zz"]}, KeyError, r"unit_ids \['zz'\] are not in the sorting"),
        ({"segment_index": 2}, ValueError, r"segment_index must be in \[0, 1\)"),
        ({"time_base": "samples"}, ValueError, "time_base must be one of"),
        ({"intervals": [1.0, 2.0]}, ValueError, r"intervals must have shape \(n_trials, 2\)"),
    ],
)
def test_read_sorting_errors(kwargs, error, match):
    import spikeinterface.core as si

    sorting = si.NumpySorting.from_unit_dict({"a": np.array([0, 100])}, sampling_frequency=100.0)
    with pytest.raises(error, match=match):
        read_sorting(sorting, bin_width=0.1, **kwargs)


def test_not_a_sorting():
    with pytest.raises(TypeError, match="sorting must be a spikeinterface BaseSorting; got list"):
        read_sorting([1, 2], bin_width=0.1)


def test_missing_spikeinterface_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "spikeinterface", None)
    monkeypatch.setitem(sys.modules, "spikeinterface.core", None)
    with pytest.raises(ImportError, match=r"pip install nwb-lrconn\[spikeinterface\]"):
        read_sorting(object(), bin_width=0.1)
