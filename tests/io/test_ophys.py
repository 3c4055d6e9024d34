"""read_ophys on synthetic files with known traces: frames, bins, NaN, normalisation, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from nwb_lrconn.io import list_roi_response_series, read_ophys, write_ophys_nwb
from nwb_lrconn.io.ophys import normalize_traces, resolve_orientation


def test_list_and_explicit_choice(ophys_file):
    paths = list_roi_response_series(ophys_file)
    assert paths == ["processing/ophys/Fluorescence/A", "processing/ophys/Fluorescence/B"]
    with pytest.raises(ValueError, match=r"holds 2 RoiResponseSeries.*Fluorescence/A.*Fluo"):
        read_ophys(ophys_file)


def test_native_frames_with_nan_frame_masked(ophys_file, ophys_traces):
    rec = read_ophys(ophys_file, series_path="processing/ophys/Fluorescence/A")
    a = ophys_traces["A"]
    assert rec.kind == "calcium" and rec.data.shape == (1, 100, 4)
    assert rec.bin_width == pytest.approx(0.1)
    assert not rec.mask[0, 7] and rec.mask.sum() == 99
    np.testing.assert_allclose(rec.data[0, rec.mask[0]], a[np.isfinite(a).all(axis=1)])
    assert np.all(rec.data[0, 7] == 0)
    assert rec.source.table_path == "processing/ophys/ImageSegmentation/rois_A"
    assert rec.source.object_path == "processing/ophys/Fluorescence/A"
    np.testing.assert_array_equal(rec.unit_rows, np.arange(4))
    assert rec.source.selection["orientation"].startswith("time_first")
    assert rec.source.selection["masked_frames"] == 1


def test_bins_average_frames_and_trials(ophys_file, ophys_traces):
    rec = read_ophys(
        ophys_file, series_path="processing/ophys/Fluorescence/B", bin_width=0.5, trials="trials"
    )
    b = ophys_traces["B"]
    assert rec.data.shape == (2, 9, 3)
    np.testing.assert_array_equal(rec.mask.sum(axis=1), [8, 9])
    np.testing.assert_allclose(rec.data[0, 0], b[0:5].mean(axis=0))
    np.testing.assert_allclose(rec.data[1, 2], b[60:65].mean(axis=0))


def test_native_frames_per_trial(ophys_file):
    rec = read_ophys(ophys_file, series_path="processing/ophys/Fluorescence/B", trials="trials")
    np.testing.assert_array_equal(rec.mask.sum(axis=1), [40, 50])
    np.testing.assert_allclose(rec.trial_start_times, [0.0, 5.0])


def test_zscore_and_dff(ophys_file, ophys_traces):
    z = read_ophys(ophys_file, series_path="processing/ophys/Fluorescence/B", normalize="zscore")
    np.testing.assert_allclose(z.data[0].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.data[0].std(axis=0), 1.0)
    dff = read_ophys(ophys_file, series_path="processing/ophys/Fluorescence/B", normalize="dff")
    b = ophys_traces["B"]
    f0 = np.percentile(b, 10, axis=0)
    np.testing.assert_allclose(dff.data[0], (b - f0) / f0)
    assert dff.source.selection["dff_percentile"] == 10.0


def test_rois_first_detected_and_explained(tmp_path):
    traces = np.random.default_rng(0).normal(size=(30, 5)) + 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynwb warns about the transposed layout
        path = write_ophys_nwb(tmp_path / "t.nwb", traces, rate=5.0, data_orientation="rois_first")
        rec = read_ophys(path)
        assert rec.source.selection["orientation"].startswith("rois_first: data shape (5, 30)")
        np.testing.assert_allclose(rec.data[0], traces)
        with pytest.raises(ValueError, match="orientation='time_first' does not fit"):
            read_ophys(path, orientation="time_first")


def test_square_data_without_timestamps_is_ambiguous(tmp_path):
    path = write_ophys_nwb(tmp_path / "sq.nwb", np.arange(16.0).reshape(4, 4), rate=1.0)
    with pytest.raises(ValueError, match="Cannot tell the orientation.*Pass orientation="):
        read_ophys(path)
    rec = read_ophys(path, orientation="time_first")
    assert rec.data.shape == (1, 4, 4)


def test_orientation_rules():
    assert resolve_orientation((100, 4), 4, 100, "auto", "x")[0] == "time_first"
    assert resolve_orientation((4, 4), 4, 4, "rois_first", "x")[0] == "rois_first"
    with pytest.raises(ValueError, match="matches neither"):
        resolve_orientation((10, 7), 4, None, "auto", "x")
    with pytest.raises(ValueError, match="must be 2-D"):
        resolve_orientation((10, 7, 2), 4, None, "auto", "x")
    with pytest.raises(ValueError, match="orientation must be one of"):
        resolve_orientation((10, 4), 4, None, "sideways", "x")


def test_timestamps_must_be_finite_and_ordered(tmp_path):
    ts = np.arange(10) * 0.1
    ts[4] = np.nan
    bad = write_ophys_nwb(tmp_path / "nan.nwb", np.ones((10, 2)), timestamps=ts)
    with pytest.raises(ValueError, match="must be finite; found 1 NaN"):
        read_ophys(bad)
    ts = np.arange(10) * 0.1
    ts[[3, 4]] = ts[[4, 3]]
    unordered = write_ophys_nwb(tmp_path / "order.nwb", np.ones((10, 2)), timestamps=ts)
    with pytest.raises(
        ValueError, match="must be non-decreasing; t\\[4\\]=0.3\\d* follows t\\[3\\]=0.4"
    ):
        read_ophys(unordered)


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ({"series_path": "processing/ophys/X"}, KeyError, "No RoiResponseSeries at .*Fluo"),
        ({"bin_width": 0.05}, ValueError, "shorter than the frame period"),
        ({"bin_width": -1.0}, ValueError, "bin_width must be finite and > 0"),
        ({"normalize": "max"}, ValueError, "normalize must be one of"),
        ({"window_length": 30.0}, ValueError, "window_length=30.0 s is longer"),
    ],
)
def test_read_ophys_errors(ophys_file, override, error, match):
    kwargs = {"series_path": "processing/ophys/Fluorescence/B", **override}
    with pytest.raises(error, match=match):
        read_ophys(ophys_file, **kwargs)


def test_dff_needs_positive_baseline(tmp_path):
    path = write_ophys_nwb(
        tmp_path / "neg.nwb", -np.ones((10, 2)) + np.arange(10)[:, None], rate=1.0
    )
    with pytest.raises(ValueError, match=r"baseline F0 \(percentile 10.0\) is <= 0"):
        read_ophys(path, normalize="dff")
    with pytest.raises(ValueError, match=r"Cannot z-score .*column\(s\) \[0, 1\] are constant"):
        normalize_traces(np.ones((10, 2)), "zscore", dff_percentile=10.0, where="x")
    const = write_ophys_nwb(tmp_path / "const.nwb", np.ones((10, 2)), rate=1.0)
    with pytest.raises(ValueError, match=r"Every selected ROI of .*const.nwb is constant"):
        read_ophys(const, normalize="zscore")


def test_constant_and_empty_rois_are_dropped_and_named(tmp_path, caplog):
    traces = np.column_stack(
        [np.ones(20), np.arange(20.0), np.full(20, np.nan), np.sin(np.arange(20))]
    )
    path = write_ophys_nwb(tmp_path / "mixed.nwb", traces, rate=1.0)
    with caplog.at_level("WARNING", logger="nwb_lrconn"):
        rec = read_ophys(path, normalize="zscore")
    np.testing.assert_array_equal(rec.unit_ids, [1, 3])
    assert rec.source.selection["dropped_constant_ids"] == [0]
    assert rec.source.selection["dropped_all_nan_ids"] == [2]
    assert "dropped 1 constant ROI(s) (ids [0])" in caplog.text
    assert "NaN in every frame (ids [2])" in caplog.text


def test_no_series_at_all(units_file):
    with pytest.raises(KeyError, match="No RoiResponseSeries in"):
        read_ophys(units_file)


def test_reader_never_modifies_the_file(truth, ophys_file):
    before = truth.sha256(ophys_file)
    read_ophys(ophys_file, series_path="processing/ophys/Fluorescence/A", normalize="zscore")
    assert truth.sha256(ophys_file) == before


def _suite2p_like(tmp_path):
    rng = np.random.default_rng(0)
    traces = rng.standard_normal((300, 6)) + 100.0  # raw fluorescence around 100
    iscell = np.array([[1, 0.9], [0, 0.2], [1, 0.8], [0, 0.1], [1, 0.7], [1, 0.95]])
    return write_ophys_nwb(
        tmp_path / "s2p.nwb",
        traces,
        rate=30.0,
        data_orientation="rois_first",
        roi_columns={"iscell": iscell, "plane": ["p0", "p0", "p1", "p1", "p0", "p1"]},
    )


def test_iscell_keeps_cells_by_default(tmp_path, caplog):
    path = _suite2p_like(tmp_path)
    with caplog.at_level("INFO", logger="nwb_lrconn"):
        rec = read_ophys(path, window_length=1.0)
    np.testing.assert_array_equal(rec.unit_ids, [0, 2, 4, 5])
    assert rec.source.selection["cells_only"] is True
    assert "kept the 4 of 6 ROIs that the iscell column" in caplog.text
    assert "stores its data as (ROIs, frames)" in caplog.text
    every = read_ophys(path, window_length=1.0, cells_only=False)
    assert every.n_units == 6


def test_roi_selection_by_ids_and_columns(tmp_path):
    path = _suite2p_like(tmp_path)
    rec = read_ophys(path, window_length=1.0, unit_ids=[5, 1])
    np.testing.assert_array_equal(rec.unit_ids, [5, 1])
    rec = read_ophys(path, window_length=1.0, where=("plane", "==", "p1"))
    np.testing.assert_array_equal(rec.unit_ids, [2, 3, 5])
    rec = read_ophys(path, window_length=1.0, where=["iscell", ("plane", "==", "p0")])
    np.testing.assert_array_equal(rec.unit_ids, [0, 4])
    with pytest.raises(KeyError, match=r"unit_ids \[9\] are not in the PlaneSegmentation"):
        read_ophys(path, unit_ids=[9])
    with pytest.raises(KeyError, match=r"Unknown column 'location' in the PlaneSegmentation"):
        read_ophys(path, where=("location", "==", "x"))
    no_iscell = write_ophys_nwb(tmp_path / "plain.nwb", np.arange(40.0).reshape(20, 2), rate=1.0)
    with pytest.raises(KeyError, match=r"cells_only=True but .* has no 'iscell' column"):
        read_ophys(no_iscell, cells_only=True)


def test_no_orientation_warning_from_pynwb(tmp_path):
    path = _suite2p_like(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_ophys(path, window_length=1.0)
