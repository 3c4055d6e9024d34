"""Bins inside intervals: edges, partial bins, disjoint vs overlapping assignment, averaging."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_lrconn.io.binning import assign_to_bins, bin_events, bin_samples, make_grid


def _reference_counts(times, labels, n_labels, grid):
    out = np.zeros((grid.n_trials, grid.n_time, n_labels))
    for i in range(grid.n_trials):
        edges = grid.edges(i)
        for u in range(n_labels):
            t = times[labels == u]
            t = t[t < edges[-1]]  # np.histogram closes its last bin; ours are half-open
            out[i, : edges.size - 1, u] = np.histogram(t, bins=edges)[0]
    return out


def test_grid_drop_and_keep_partial_bins():
    drop = make_grid([0.0, 10.0], [1.05, 10.3], 0.1)
    np.testing.assert_array_equal(drop.n_bins, [10, 3])
    np.testing.assert_allclose(drop.stops, [1.0, 10.3])
    keep = make_grid([0.0, 10.0], [1.05, 10.3], 0.1, partial_bin="keep")
    np.testing.assert_array_equal(keep.n_bins, [11, 3])
    np.testing.assert_allclose(keep.edges(0)[-2:], [1.0, 1.05])
    assert keep.mask.sum() == 14 and keep.mask.shape == (2, 11)


def test_grid_drops_intervals_shorter_than_a_bin():
    grid = make_grid([0.0, 5.0], [1.0, 5.05], 0.1)
    assert grid.n_trials == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bin_width": 0.0}, "bin_width must be finite and > 0"),
        ({"bin_width": 2.0}, "bin_width=2.0 s is longer than the data"),
        ({"bin_width": 0.1, "partial_bin": "pad"}, "partial_bin must be one of"),
    ],
)
def test_grid_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_grid([0.0], [1.0], **kwargs)


def test_grid_empty_interval_list():
    with pytest.raises(ValueError, match="No interval to bin"):
        make_grid([], [], 0.1)


@pytest.mark.parametrize("overlap", [False, True])
def test_bin_events_matches_histogram(overlap):
    rng = np.random.default_rng(3)
    times = rng.uniform(-1.0, 12.0, 5000)
    labels = rng.integers(0, 3, times.size)
    starts = np.array([0.0, 2.0, 6.5]) if not overlap else np.array([0.0, 1.5, 6.5])
    stops = np.array([2.0, 5.33, 11.0])
    grid = make_grid(starts, stops, 0.25, partial_bin="keep")
    counts = bin_events(times, labels, 3, grid)
    np.testing.assert_array_equal(counts, _reference_counts(times, labels, 3, grid))
    assert counts[~grid.mask].sum() == 0


def test_overlapping_trials_count_an_event_in_both():
    grid = make_grid([0.0, 0.5], [1.0, 1.5], 0.5)
    index, flat = assign_to_bins(np.array([0.75]), grid)
    np.testing.assert_array_equal(index, [0, 0])
    np.testing.assert_array_equal(np.sort(flat), [1, 2])  # trial 0 bin 1, trial 1 bin 0


def test_bin_samples_mean_and_circmean():
    times = np.arange(0.0, 2.0, 0.1)
    values = np.stack([times * 10, np.full(times.size, np.pi - 0.05)], axis=1)
    values[-5:, 1] = -np.pi + 0.05  # wraps around ±π
    grid = make_grid([0.0], [2.0], 1.0)
    mean, n = bin_samples(values[:, :1], times, grid)
    np.testing.assert_allclose(mean[0, :, 0], [4.5, 14.5])
    np.testing.assert_array_equal(n[0, :, 0], [10, 10])
    circ, _ = bin_samples(values[:, 1:], times, grid, reduce="circmean")
    assert abs(abs(circ[0, 1, 0]) - np.pi) < 0.03  # not the arithmetic mean near 0


def test_bin_samples_ignores_nan_and_marks_empty_bins():
    times = np.array([0.05, 0.15, 0.25])
    values = np.array([[1.0], [np.nan], [3.0]])
    grid = make_grid([0.0], [0.4], 0.1)
    mean, n = bin_samples(values, times, grid)
    np.testing.assert_allclose(mean[0, :, 0], [1.0, np.nan, 3.0, np.nan])
    np.testing.assert_array_equal(n[0, :, 0], [1, 0, 1, 0])
