"""read_units on synthetic files with known spike times: counts, selection, trials, errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from nwb_lrconn.io import read_units, write_units_nwb


def _hist(train, edges):
    train = train[train < edges[-1]]
    return np.histogram(train, bins=edges)[0]


def test_single_window_counts_match_histogram(units_file, spike_trains):
    with pytest.warns(UserWarning, match=r"Dropping 1 unit\(s\).*ids \[15\]"):
        rec = read_units(units_file, bin_width=0.1)
    assert rec.kind == "spikes" and rec.n_trials == 1
    np.testing.assert_array_equal(rec.unit_ids, [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(rec.unit_rows, [0, 1, 2, 3, 4])
    edges = rec.trial_start_times[0] + 0.1 * np.arange(rec.n_time + 1)
    for j in range(5):
        np.testing.assert_array_equal(rec.data[0, :, j], _hist(spike_trains[j], edges))
        assert rec.data[0, :, j].sum() == spike_trains[j].size  # the range covers every spike
    assert rec.source.identifier == "synthetic-units"
    assert rec.source.selection["dropped_unit_ids"] == [15]
    json.loads(rec.source.to_json())


def test_trials_are_ragged_padded_and_masked(truth, units_file, spike_trains):
    rec = read_units(units_file, bin_width=0.25, trials="trials", unit_ids=[12, 10])
    np.testing.assert_array_equal(rec.unit_ids, [12, 10])
    np.testing.assert_array_equal(rec.mask.sum(axis=1), [12, 18, 9, 24])
    np.testing.assert_allclose(rec.trial_start_times, truth.trials[:, 0])
    for i, start in enumerate(truth.trials[:, 0]):
        n = rec.mask[i].sum()
        edges = start + 0.25 * np.arange(n + 1)
        np.testing.assert_array_equal(rec.data[i, :n, 0], _hist(spike_trains[2], edges))
        assert rec.data[i, n:].sum() == 0


def test_event_aligned_windows_drop_nan_events(truth, units_file, spike_trains):
    with pytest.warns(UserWarning, match=r"Dropping 1 trial\(s\) of 'trials' whose 'cue_time'"):
        rec = read_units(
            units_file,
            bin_width=0.1,
            trials="trials",
            event="cue_time",
            window=(0.5, 1.0),
            unit_ids=[11],
        )
    np.testing.assert_allclose(rec.trial_start_times, truth.event[[0, 1, 3]] - 0.5)
    assert rec.n_time == 15 and rec.mask.all()
    assert rec.source.selection["trial_rows"] == [0, 1, 3]
    for i, t in enumerate(truth.event[[0, 1, 3]]):
        edges = t - 0.5 + 0.1 * np.arange(16)
        np.testing.assert_array_equal(rec.data[i, :, 0], _hist(spike_trains[1], edges))


def test_where_filters(units_file):
    good = read_units(units_file, bin_width=0.5, where=("quality", "==", "good"))
    np.testing.assert_array_equal(good.unit_ids, [10, 11, 13, 14])
    snr = read_units(units_file, bin_width=0.5, where=[("snr", ">=", 2.0), "is_ok"])
    np.testing.assert_array_equal(snr.unit_ids, [10, 12, 14])
    as_list = read_units(units_file, bin_width=0.5, where=["quality", "in", ["mua"]])
    np.testing.assert_array_equal(as_list.unit_ids, [12])


def test_epochs_with_label_and_windows_cover_every_spike(units_file, spike_trains):
    rec = read_units(
        units_file,
        bin_width=0.3,
        epochs=("epochs", "wake"),
        window_length=2.0,
        partial_bin="keep",
        unit_ids=[10, 11, 12],
    )
    # wake = [0, 8) and [15, 20): windows of 2 s -> 4 + 3 (the last one 1 s long)
    np.testing.assert_allclose(rec.trial_start_times, [0, 2, 4, 6, 15, 17, 19])
    for j in range(3):
        t = spike_trains[j]
        inside = ((t >= 0) & (t < 8)) | ((t >= 15) & (t < 20))
        assert rec.data[..., j].sum() == inside.sum()
    with pytest.warns(UserWarning, match=r"ids \[14, 15\]"):
        dropped = read_units(units_file, bin_width=0.3, epochs=("epochs", "label", ["sleep"]))
    assert dropped.mask.sum() == 23  # 7 s / 0.3 s, the partial bin dropped


def test_time_range_clips(units_file, spike_trains):
    rec = read_units(units_file, bin_width=1.0, time_range=(2.0, 6.0), unit_ids=[12])
    assert rec.n_time == 4
    t = spike_trains[2]
    assert rec.data.sum() == ((t >= 2) & (t < 6)).sum()


def test_inputs_from_event_column_and_timeseries(truth, units_file):
    rec = read_units(
        units_file,
        bin_width=0.5,
        trials="trials",
        unit_ids=[12],
        inputs=["intervals/trials/clicks", "acquisition/speed"],
    )
    assert rec.input_names == ("intervals/trials/clicks", "acquisition/speed")
    clicks = rec.inputs[..., 0]
    assert clicks.sum() == sum(c.size for c in truth.clicks)
    assert clicks[3, 2] == 2  # 14.0 and 14.05 in [14.0, 14.5) of trial 3 (start 13)
    speed = rec.inputs[..., 1]
    # speed = 10 t sampled at 10 Hz: the mean of a bin [a, a + 0.5) is 10 a + 2
    centers = rec.trial_start_times[:, None] + 0.5 * np.arange(rec.n_time)[None]
    np.testing.assert_allclose(speed[rec.mask], (10 * centers + 2.0)[rec.mask])
    assert np.all(rec.inputs[~rec.mask] == 0)


def test_min_spikes(units_file):
    with pytest.warns(UserWarning, match="fewer than 100 spike"):
        rec = read_units(units_file, bin_width=0.5, min_spikes=100)
    np.testing.assert_array_equal(rec.unit_ids, [10, 11, 12])


def test_reader_never_modifies_the_file(truth, units_file):
    before = truth.sha256(units_file)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_units(units_file, bin_width=0.1, trials="trials", inputs=["acquisition/speed"])
    assert truth.sha256(units_file) == before


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        (
            {"units_path": "processing/x"},
            KeyError,
            r"No Units table at 'processing/x'.*\['units'\]",
        ),
        ({"bin_width": 0.0}, ValueError, "bin_width must be finite and > 0"),
        ({"bin_width": 100.0}, ValueError, "longer than the data"),
        ({"unit_ids": [10, 99]}, KeyError, r"unit_ids \[99\] are not in the Units table"),
        ({"where": ("colour", "==", "red")}, KeyError, "Unknown column 'colour'.*quality"),
        ({"where": ("snr", "~", 1)}, ValueError, "where operator must be one of"),
        ({"where": "quality"}, TypeError, "names a column of dtype"),
        ({"where": 3}, TypeError, "where must be a bool column name"),
        ({"where": ("snr", ">", 100.0)}, ValueError, "No row of the Units table 'units'.*matches"),
        ({"trials": "nope"}, KeyError, r"No TimeIntervals table at 'intervals/nope'.*trials"),
        ({"trials": "trials", "event": "go"}, ValueError, "needs window=\\(before, after\\)"),
        (
            {"trials": "trials", "event": "go", "window": (1, 1)},
            KeyError,
            "Unknown event column 'go'",
        ),
        ({"trials": "trials", "window": (-1.0, 0.5)}, ValueError, "must span a positive"),
        ({"event": "cue_time", "window": (1, 1)}, ValueError, "they need trials="),
        ({"trials": "trials", "epochs": "epochs"}, ValueError, "not both"),
        ({"window_length": 50.0}, ValueError, "window_length=50.0 s is longer than the longest"),
        ({"epochs": ("epochs", "run")}, ValueError, r"No row of 'epochs'.*\['run'\]"),
        ({"epochs": ("epochs", "a", "b", "c")}, TypeError, "epochs must be a table name"),
        ({"time_range": (5.0, 1.0)}, ValueError, "time_range must be finite with stop > start"),
        ({"time_range": (1.0,)}, ValueError, "time_range must be \\(start, stop\\)"),
        ({"unit_ids": [15]}, ValueError, "The selected units of .* have no spikes at all"),
        (
            {"unit_ids": [14], "time_range": (5.0, 10.0)},
            ValueError,
            r"No unit of .* has >= 1 spike\(s\) in the selected bins \(1 unit",
        ),
        ({"inputs": ["acquisition/nothing"]}, KeyError, "neither a TimeSeries nor.*speed"),
        ({"inputs": "acquisition/speed"}, TypeError, "inputs must be a list of paths"),
        ({"min_spikes": -1}, ValueError, "min_spikes must be >= 0"),
    ],
)
def test_read_units_errors(units_file, override, error, match):
    kwargs = {"bin_width": 0.1, **override}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=match):
            read_units(units_file, **kwargs)


def test_epoch_label_needs_a_label_column(tmp_path):
    path = write_units_nwb(tmp_path / "e.nwb", [np.array([0.5])], epochs=np.array([[0.0, 1.0]]))
    with pytest.raises(KeyError, match="has no tags or label column"):
        read_units(path, bin_width=0.1, epochs=("epochs", "wake"))


def test_tags_column_selects_epochs(tmp_path):
    epochs = {"start_time": [0.0, 2.0], "stop_time": [1.0, 3.0], "tags": [["a", "wake"], ["b"]]}
    path = write_units_nwb(tmp_path / "t.nwb", [np.array([0.5, 2.5])], epochs=epochs)
    rec = read_units(path, bin_width=0.5, epochs=("epochs", "wake"))
    assert rec.n_trials == 1 and rec.data.sum() == 1


def test_empty_units_table_and_nan_spikes(tmp_path):
    from pynwb import NWBHDF5IO

    path = write_units_nwb(tmp_path / "nan.nwb", [np.array([0.5, 1.0])])
    with NWBHDF5IO(str(path), "a") as io:  # corrupt a copy on purpose
        io.read()
        io._file["units/spike_times"][1] = np.nan
    with pytest.raises(ValueError, match=r"spike_times of 'units' .* must be finite; found 1"):
        read_units(path, bin_width=0.1)
    empty = write_units_nwb(tmp_path / "empty.nwb", [np.array([1.0])])
    with NWBHDF5IO(str(empty), "a") as io:
        io.read()
        del io._file["units"]
    with pytest.raises(KeyError, match=r"No Units table at 'units'.*found \[\]"):
        read_units(empty, bin_width=0.1)


def test_units_table_with_zero_rows(tmp_path):
    import h5py

    path = write_units_nwb(tmp_path / "zero.nwb", [np.array([1.0])])
    with h5py.File(path, "a") as f:
        for name in ("id", "spike_times", "spike_times_index"):
            f["units"][name].resize((0,))
    with pytest.raises(ValueError, match="is empty \\(0 units\\)"):
        read_units(path, bin_width=0.1)


def test_trial_rows_follow_dropped_and_split_trials(units_file):
    # trial lengths 3, 4.5, 2.25 and 6 s: with 2.5-s bins trial 2 holds no full bin
    rec = read_units(units_file, bin_width=2.5, trials="trials", unit_ids=[12])
    assert rec.source.selection["trial_rows"] == [0, 1, 3]
    np.testing.assert_allclose(rec.trial_start_times, [1.0, 5.0, 13.0])
    windows = read_units(
        units_file, bin_width=0.5, trials="trials", window_length=2.0, unit_ids=[12]
    )
    # the 0.25-s remainder of trial 2 holds no full bin and is left out
    assert windows.source.selection["trial_rows"] == [0, 0, 1, 1, 1, 2, 3, 3, 3]
    np.testing.assert_array_equal(windows.mask.sum(axis=1), [4, 2, 4, 4, 1, 4, 4, 4, 4])


def test_where_on_a_bytes_column(tmp_path):
    trains = [np.array([0.5, 1.5]), np.array([0.7]), np.array([1.2])]
    quality = np.array([b"good", b"mua", b"good"])  # as some DANDI files store strings
    path = write_units_nwb(tmp_path / "b.nwb", trains, columns={"quality": quality})
    rec = read_units(path, bin_width=0.5, where=("quality", "==", "good"))
    np.testing.assert_array_equal(rec.unit_rows, [0, 2])


def test_parse_where_clauses():
    from nwb_lrconn.io.selection import parse_where

    assert parse_where("location==ADn") == ("location", "==", "ADn")
    assert parse_where("snr >= 2.5") == ("snr", ">=", 2.5)
    assert parse_where("quality in good,mua") == ("quality", "in", ("good", "mua"))
    assert parse_where("iscell") == "iscell"
    with pytest.raises(ValueError, match=r"cannot read the filter 'a b c'; write COLUMN"):
        parse_where("a b c")
