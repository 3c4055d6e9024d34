"""Latents against behaviour: gauge invariance, perfect and useless latents, the baselines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nwb_lrconn.data import LowRankFit, Recording
from nwb_lrconn.inference.behaviour import (
    LATENT,
    PCA_RAW,
    PCA_SQRT,
    PCA_ZSCORE,
    circular_r2,
    relate_to_behaviour,
)

N_TRIALS, N_TIME, N_UNITS = 40, 25, 12


def _head_direction(rng) -> np.ndarray:
    """A random walk on the circle per trial (radians in [-π, π])."""
    steps = rng.normal(0, 0.25, (N_TRIALS, N_TIME))
    return np.angle(np.exp(1j * (rng.uniform(-np.pi, np.pi, (N_TRIALS, 1)) + steps.cumsum(1))))


def _ring_data(seed: int = 0):
    """Head-direction cells (von Mises tuning, one unit 20× the others) and a ring latent."""
    rng = np.random.default_rng(seed)
    theta = _head_direction(rng)
    preferred = np.linspace(-np.pi, np.pi, N_UNITS, endpoint=False)
    peak = np.full(N_UNITS, 1.0)
    peak[0] = 20.0
    rates = peak * np.exp(2.0 * (np.cos(theta[..., None] - preferred) - 1))
    counts = rng.poisson(rates).astype(float)
    recording = Recording(
        data=counts,
        mask=np.ones((N_TRIALS, N_TIME), bool),
        bin_width=0.1,
        kind="spikes",
        unit_ids=np.arange(N_UNITS),
        unit_rows=np.arange(N_UNITS),
        trial_start_times=np.arange(N_TRIALS) * 3.0,
    )
    latents = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    return theta, recording, latents


def _fit(latents: np.ndarray) -> LowRankFit:
    n_trials, n_time, rank = latents.shape
    return LowRankFit(
        M=np.ones((N_UNITS, rank)),
        K=np.ones((N_UNITS, rank)),
        B=np.zeros((N_UNITS, 0)),
        d=np.zeros(N_UNITS),
        readout_gain=np.ones(N_UNITS),
        readout_offset=np.zeros(N_UNITS),
        noise_std=np.ones(N_UNITS),
        rank=rank,
        nonlinearity="tanh",
        alpha=0.1,
        bin_width=0.1,
        observation="poisson",
        latents=latents,
        latent_mask=np.ones((n_trials, n_time), bool),
        trial_start_times=np.arange(n_trials) * 3.0,
        loss_history=np.zeros((1, 2)),
        metrics={},
        unit_quality=np.zeros(N_UNITS),
        train_trials=np.arange(30),
        test_trials=np.arange(30, n_trials),
        unit_ids=np.arange(N_UNITS),
    )


@pytest.fixture(scope="module")
def ring():
    return _ring_data()


def test_a_perfect_latent_scores_one_and_beats_the_baselines(ring):
    theta, recording, latents = ring
    report = relate_to_behaviour(_fit(latents), recording, theta, unit="radians")
    assert report.kind == "angle" and report.measure == "circular R²"
    assert report.scores[LATENT] == pytest.approx(1.0, abs=1e-12)
    assert report.errors[LATENT] == pytest.approx(0.0, abs=1e-9)
    assert report.fair_baselines == (PCA_ZSCORE, PCA_SQRT)
    assert report.best_baseline in report.fair_baselines
    assert report.interval[0] > 0 and "clearly better" in report.verdict
    assert report.n_test_trials == 10 and report.n_test_bins == 10 * N_TIME
    test = np.zeros(N_TRIALS, bool)
    test[30:] = True
    np.testing.assert_allclose(report.decoded[test, :, 0], theta[test], atol=1e-9)
    assert np.isnan(report.decoded[~test]).all()


@pytest.mark.parametrize(
    "transform",
    [
        np.array([[0.0, -1.0], [1.0, 0.0]]),  # rotation by 90°
        np.array([[1.0, 0.0], [0.0, -1.0]]),  # reflection
        np.array([[3.0, 0.0], [0.0, 0.2]]),  # anisotropic scaling
        np.array([[0.6, -1.7], [2.2, 0.4]]),  # any invertible map
    ],
)
def test_scores_are_invariant_to_the_latent_gauge(ring, transform):
    theta, recording, latents = ring
    rng = np.random.default_rng(3)
    noisy = latents + 0.4 * rng.normal(size=latents.shape)  # an imperfect latent
    before = relate_to_behaviour(_fit(noisy), recording, theta, kind="angle")
    moved = noisy @ transform.T + np.array([5.0, -2.0])
    after = relate_to_behaviour(_fit(moved), recording, theta, kind="angle")
    assert before.scores[LATENT] < 0.99
    assert after.scores == pytest.approx(before.scores, abs=1e-10)
    assert after.errors == pytest.approx(before.errors, abs=1e-8)
    assert after.interval == pytest.approx(before.interval, abs=1e-10)


def test_a_noise_latent_scores_no_better_than_guessing_the_mean_and_loses(ring):
    theta, recording, latents = ring
    noise = np.random.default_rng(5).normal(size=latents.shape)
    report = relate_to_behaviour(_fit(noise), recording, theta, kind="angle")
    # Decoded angles of noise are random: worse than always guessing the mean direction (0).
    assert report.scores[LATENT] < 0.0
    assert report.errors[LATENT] > 60.0
    assert report.scores[report.best_baseline] > 0.5
    assert report.interval[1] < 0 and "WORSE" in report.verdict


def test_the_baselines_are_pca_of_zscored_and_sqrt_counts_fitted_on_training_bins(ring):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    theta, recording, latents = ring
    report = relate_to_behaviour(_fit(latents), recording, theta, kind="angle")
    train = recording.data[:30].reshape(-1, N_UNITS)
    test = recording.data[30:].reshape(-1, N_UNITS)
    y_train, y_test = theta[:30].ravel(), theta[30:].ravel()
    for name, transform in (
        (PCA_ZSCORE, lambda x: StandardScaler().fit(train).transform(x)),
        (PCA_SQRT, np.sqrt),
        (PCA_RAW, lambda x: x),
    ):
        pca = PCA(2, svd_solver="full").fit(transform(train))
        decoder = LinearRegression().fit(
            pca.transform(transform(train)), np.c_[np.cos(y_train), np.sin(y_train)]
        )
        xy = decoder.predict(pca.transform(transform(test)))
        error = np.arctan2(xy[:, 1], xy[:, 0]) - y_test
        spread = y_test - np.angle(np.mean(np.exp(1j * y_test)))
        expected = 1 - np.sum(1 - np.cos(error)) / np.sum(1 - np.cos(spread))
        assert report.scores[name] == pytest.approx(expected, abs=1e-9), name
    # The high-rate unit dominates raw-count PCA: the fair baselines do better.
    assert report.scores[PCA_RAW] < min(report.scores[PCA_ZSCORE], report.scores[PCA_SQRT])


def test_degrees_are_converted_and_nan_bins_left_out(ring):
    theta, recording, latents = ring
    radians = relate_to_behaviour(_fit(latents), recording, theta, unit="radians")
    gappy = np.degrees(theta)
    gappy[:, -3:] = np.nan
    degrees = relate_to_behaviour(_fit(latents), recording, gappy, unit="degrees")
    assert degrees.kind == "angle"
    assert degrees.scores[LATENT] == pytest.approx(radians.scores[LATENT], abs=1e-12)
    assert degrees.n_test_bins == 10 * (N_TIME - 3)


def test_linear_variables_get_held_out_r2(ring):
    theta, recording, latents = ring
    speed = 2.0 * latents[..., 0] - 0.5 * latents[..., 1] + 1.0
    report = relate_to_behaviour(_fit(latents), recording, speed, variable="speed", unit="m/s")
    assert report.kind == "linear" and report.measure == "R²"
    assert report.scores[LATENT] == pytest.approx(1.0, abs=1e-12)
    assert report.errors[LATENT] == pytest.approx(0.0, abs=1e-9)
    two = np.stack([speed, -speed], axis=-1)
    report = relate_to_behaviour(_fit(latents), recording, two, kind="linear")
    assert report.values.shape == (N_TRIALS, N_TIME, 2)
    assert report.scores[LATENT] == pytest.approx(1.0, abs=1e-12)
    noise = np.random.default_rng(2).normal(size=latents.shape[:2])
    report = relate_to_behaviour(_fit(latents), recording, noise, kind="linear")
    assert report.scores[LATENT] < 0.05


def test_calcium_recordings_get_no_sqrt_baseline(ring):
    theta, recording, latents = ring
    calcium = dataclasses.replace(recording, kind="calcium", data=recording.data - 1.0)
    report = relate_to_behaviour(_fit(latents), calcium, theta, kind="angle")
    assert report.fair_baselines == (PCA_ZSCORE,)
    assert "PCA of raw activity (reference)" in report.scores


def test_summary_lines_name_every_score_and_the_verdict(ring):
    theta, recording, latents = ring
    report = relate_to_behaviour(
        _fit(latents), recording, theta, variable="head_direction", unit="radians"
    )
    text = "\n".join(report.summary_lines())
    assert text.startswith("head_direction (angle; held-out circular R², 2-D")
    for name in report.scores:
        assert name in text
    assert report.verdict in text and "median |error|" in text


def test_bad_behaviour_input_is_named(ring):
    theta, recording, latents = ring
    fit = _fit(latents)
    with pytest.raises(ValueError, match=r"an angle must have one channel; 'hd' has 2"):
        relate_to_behaviour(
            fit, recording, np.stack([theta, theta], -1), variable="hd", kind="angle"
        )
    with pytest.raises(ValueError, match=r"recording has shape \(2, 25, 12\)"):
        relate_to_behaviour(fit, recording.select_trials(np.arange(2)), theta)
    with pytest.raises(ValueError, match=r"'hd' is present on 0 training and 0 held-out bins"):
        relate_to_behaviour(fit, recording, np.full_like(theta, np.nan), variable="hd")
    with pytest.raises(ValueError, match=r"kind must be one of"):
        relate_to_behaviour(fit, recording, theta, kind="circular")


def test_circular_r2_is_one_when_exact_zero_for_the_mean_direction_and_wraps():
    rng = np.random.default_rng(0)
    truth = rng.vonmises(0.5, 1.0, 500)
    assert circular_r2(truth, truth) == pytest.approx(1.0)
    assert circular_r2(truth + 2 * np.pi, truth) == pytest.approx(1.0)
    mean = np.angle(np.mean(np.exp(1j * truth)))
    assert circular_r2(np.full_like(truth, mean), truth) == pytest.approx(0.0, abs=1e-12)
    assert circular_r2(truth + np.pi, truth) < -1


@pytest.mark.parametrize("kind", ["angle", "linear"])
def test_bootstrap_sums_equal_scoring_each_resample_directly(kind):
    from nwb_lrconn.inference.behaviour import _bootstrap_difference, _score

    rng = np.random.default_rng(4)
    trial_of_bin = np.repeat(np.arange(6), 5)
    truth = rng.uniform(-np.pi, np.pi, (30, 1)) if kind == "angle" else rng.normal(size=(30, 2))
    latent = truth + 0.3 * rng.normal(size=truth.shape)
    baseline = truth + 0.9 * rng.normal(size=truth.shape)
    low, high = _bootstrap_difference(kind, truth, latent, baseline, trial_of_bin, 50, 7)
    draws = np.random.default_rng(7).integers(6, size=(50, 6))
    direct = []
    for draw in draws:
        rows = np.concatenate([np.flatnonzero(trial_of_bin == t) for t in draw])
        t = truth[rows]
        direct.append(_score(kind, t, latent[rows])[0] - _score(kind, t, baseline[rows])[0])
    assert (low, high) == pytest.approx(tuple(np.percentile(direct, [2.5, 97.5])), abs=1e-10)
    assert low < high


def test_smoothed_baselines_average_valid_bins_within_trials(ring):
    from nwb_lrconn.inference.behaviour import smooth_within_trials

    data = np.arange(12, dtype=float).reshape(2, 6, 1)
    mask = np.ones((2, 6), bool)
    mask[1, 4:] = False  # a shorter second trial
    out = smooth_within_trials(data, mask, 3)
    np.testing.assert_allclose(out[0, :, 0], [0.5, 1, 2, 3, 4, 4.5])
    np.testing.assert_allclose(out[1, :, 0], [6.5, 7, 8, 8.5, 0, 0])  # no bleed into padding
    theta, recording, latents = ring
    report = relate_to_behaviour(_fit(latents), recording, theta, kind="angle", smooth_bins=3)
    assert report.fair_baselines == (
        f"{PCA_ZSCORE}, 3-bin smoothed",
        f"{PCA_SQRT}, 3-bin smoothed",
    )
    assert f"{PCA_RAW}, 3-bin smoothed" in report.scores
