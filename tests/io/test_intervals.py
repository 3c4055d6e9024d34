"""Trial / epoch / window selection errors, read_timeseries, and the remaining messages."""

from __future__ import annotations

import sys
import warnings

import h5py
import numpy as np
import pytest

from nwb_lrconn.io import open_nwb, read_ophys, read_timeseries, read_units, write_units_nwb


@pytest.fixture
def small(tmp_path):
    def make(name="s.nwb", **kwargs):
        return write_units_nwb(tmp_path / name, [np.arange(0.05, 10.0, 0.1)], **kwargs)

    return make


def test_trials_table_without_rows(small):
    path = small(trials=np.array([[0.0, 1.0]]))
    with h5py.File(path, "a") as f:
        for name in ("id", "start_time", "stop_time"):
            f["intervals/trials"][name].resize((0,))
    with pytest.raises(ValueError, match="The TimeIntervals table 'trials' in .* has no rows"):
        read_units(path, bin_width=0.1, trials="trials")


def test_trials_with_stop_before_start(small):
    path = small(trials=np.array([[0.0, 1.0], [2.0, 3.0]]))
    with h5py.File(path, "a") as f:
        f["intervals/trials/stop_time"][1] = 1.5
    with pytest.raises(ValueError, match=r"must have stop_time > start_time; rows \[1\] do not"):
        read_units(path, bin_width=0.1, trials="trials")


def test_event_column_checks(small):
    trials = {
        "start_time": [0.0, 5.0],
        "stop_time": [4.0, 9.0],
        "nan_time": [np.nan, np.nan],
        "clicks": [[1.0, 2.0], [6.0]],
    }
    path = small(trials=trials)
    with pytest.raises(ValueError, match="Event column 'nan_time' in .* holds no finite time"):
        read_units(path, bin_width=0.1, trials="trials", event="nan_time", window=(1, 1))
    with pytest.raises(ValueError, match="Event column 'clicks' must hold one time per trial"):
        read_units(path, bin_width=0.1, trials="trials", event="clicks", window=(1, 1))
    with pytest.raises(ValueError, match=r"window must be \(before, after\) in seconds"):
        read_units(path, bin_width=0.1, trials="trials", window=(1, 2, 3))


def test_window_relative_to_trial_start(small):
    path = small(trials=np.array([[1.0, 4.0], [5.0, 9.0]]))
    rec = read_units(path, bin_width=0.1, trials="trials", window=(0.5, 1.0))
    np.testing.assert_allclose(rec.trial_start_times, [0.5, 4.5])
    assert rec.n_time == 15 and rec.data.sum() == 30


def test_time_range_excludes_everything(small):
    path = small(trials=np.array([[1.0, 4.0]]), epochs=np.array([[0.0, 2.0]]))
    with pytest.raises(ValueError, match=r"No trial of 'trials' .* lies inside time_range"):
        read_units(path, bin_width=0.1, trials="trials", time_range=(5.0, 8.0))
    with pytest.raises(ValueError, match="No epoch of 'epochs' in .* overlaps time_range"):
        read_units(path, bin_width=0.1, epochs="epochs", time_range=(5.0, 8.0))


def test_where_on_a_ragged_column(small):
    path = small()
    with pytest.raises(ValueError, match="Column 'spike_times' .* is ragged or a reference"):
        read_units(path, bin_width=0.1, where=("spike_times", ">", 1.0))


def test_read_timeseries_on_recording_bins(units_file):
    rec = read_units(units_file, bin_width=0.5, trials="trials", unit_ids=[12])
    speed = read_timeseries(units_file, "acquisition/speed", rec)
    centers = rec.trial_start_times[:, None] + 0.5 * np.arange(rec.n_time)[None]
    np.testing.assert_allclose(speed[..., 0][rec.mask], (10 * centers + 2.0)[rec.mask])
    assert np.isnan(speed[~rec.mask]).all()
    fine = read_units(units_file, bin_width=0.05, trials="trials", unit_ids=[12])
    filled = read_timeseries(units_file, "acquisition/speed", fine)[..., 0]
    gaps = read_timeseries(units_file, "acquisition/speed", fine, fill=False)[..., 0]
    empty = np.isnan(gaps) & fine.mask
    assert empty.sum() > 0  # 10-Hz samples leave every other 50-ms bin empty
    centers = fine.trial_start_times[:, None] + 0.05 * np.arange(fine.n_time)[None] + 0.025
    np.testing.assert_allclose(filled[empty], 10 * centers[empty])  # linear interpolation


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (["acquisition/none"], {}, KeyError, r"No TimeSeries at 'acquisition/none'.*speed"),
        (["acquisition/speed"], {"reduce": "median"}, ValueError, "reduce must be one of"),
    ],
)
def test_read_timeseries_errors(units_file, args, kwargs, error, match):
    rec = read_units(units_file, bin_width=0.5, unit_ids=[12])
    with pytest.raises(error, match=match):
        read_timeseries(units_file, *args, rec, **kwargs)


def test_timestamps_length_mismatch(tmp_path):
    from pynwb import NWBHDF5IO, TimeSeries

    path = write_units_nwb(tmp_path / "ts.nwb", [np.arange(0.05, 5.0, 0.1)])
    with NWBHDF5IO(str(path), "a") as io:
        nwbfile = io.read()
        nwbfile.add_acquisition(
            TimeSeries(name="x", data=np.ones(5), unit="a.u.", timestamps=np.arange(5.0))
        )
        io.write(nwbfile)
    with h5py.File(path, "a") as f:  # truncate the timestamps, keeping their attributes
        attrs = dict(f["acquisition/x/timestamps"].attrs)
        del f["acquisition/x/timestamps"]
        f["acquisition/x/timestamps"] = np.arange(4.0)
        f["acquisition/x/timestamps"].attrs.update(attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynwb warns about the length mismatch on read
        rec = read_units(path, bin_width=0.5)
        with pytest.raises(ValueError, match="acquisition/x in .* has 4 timestamps for 5 samples"):
            read_timeseries(path, "acquisition/x", rec)


def test_ophys_trials_without_frames(tmp_path):
    from nwb_lrconn.io import write_ophys_nwb

    path = write_ophys_nwb(
        tmp_path / "o.nwb",
        np.arange(20.0).reshape(10, 2),
        rate=10.0,
        trials=np.array([[50.0, 60.0]]),
    )
    with pytest.raises(ValueError, match="No frame falls inside the selected trials/windows"):
        read_ophys(path, trials="trials")


@pytest.mark.parametrize(
    ("blocked", "backend", "match"),
    [
        (("remfile",), "remfile", r"backend='remfile' needs the remfile package"),
        (("remfile", "fsspec"), "auto", r"needs remfile or fsspec: pip install nwb-lrconn\[str"),
    ],
)
def test_streaming_without_packages(monkeypatch, blocked, backend, match):
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=match):
        with open_nwb("https://example.invalid/x.nwb", backend=backend):
            pass


def test_sorting_without_spikes():
    import spikeinterface.core as si

    from nwb_lrconn.io import read_sorting

    sorting = si.NumpySorting.from_unit_dict({"a": np.array([], dtype=int)}, 100.0)
    with pytest.raises(ValueError, match="The sorting has no spikes in the selected units"):
        read_sorting(sorting, bin_width=0.1)
