"""Observation simulators: ground truth consistency, realistic rates, NWB round trip."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_lrconn.model.networks import sample_network, simulate_latents
from nwb_lrconn.model.simulate import simulate_calcium, simulate_rates, simulate_spikes


@pytest.fixture(scope="module")
def net():
    return sample_network("quadstable", 80, random_state=0)


def test_rates_follow_the_latents(net):
    initial = np.random.default_rng(0).uniform(-2, 2, (5, 2))
    s = simulate_rates(net, initial=initial, n_time=40)
    np.testing.assert_allclose(s.latents, simulate_latents(net.M, net.K, initial, 40))
    np.testing.assert_allclose(s.data, np.tanh(s.latents @ net.M.T))
    rec = s.to_recording()
    assert rec.kind == "rates" and rec.data.shape == (5, 40, 80)
    np.testing.assert_allclose(s.trials[:, 1] - s.trials[:, 0], 40 * 0.01)
    noisy = simulate_rates(net, initial=initial, n_time=40, noise_std=0.1, random_state=1)
    assert np.std(noisy.data - s.data) == pytest.approx(0.1, rel=0.05)


def test_default_is_the_paper_grid(net):
    s = simulate_rates(net, n_time=3)
    assert s.latents.shape == (400, 3, 2)
    assert s.latents[:, 0].min() == pytest.approx(-2.4) and s.latents[:, 0].max() == 2.4


def test_spikes_have_realistic_rates_and_consistent_times(net):
    s = simulate_spikes(net, n_time=100, bin_width=0.02, random_state=3)
    rate = np.logaddexp(0, s.readout_gain * s.activity + s.readout_offset)
    assert rate.min() >= 1.0 - 1e-9 and rate.max() <= 30.0 + 1e-9
    per_unit = s.data.mean(axis=(0, 1)) / 0.02
    assert 1.0 < per_unit.min() and per_unit.max() < 30.0
    np.testing.assert_allclose(s.data.mean() / 0.02, rate.mean(), rtol=0.02)
    # Spike times bin back to the counts.
    for unit in (0, 17, 79):
        times = s.spike_times[unit]
        assert np.all(np.diff(times) >= 0)
        trial = np.searchsorted(s.trial_start_times, times, side="right") - 1
        assert np.all(times < s.trial_stop_times[trial])
        bins = ((times - s.trial_start_times[trial]) / 0.02).astype(int)
        counts = np.zeros(s.data.shape[:2])
        np.add.at(counts, (trial, bins), 1)
        np.testing.assert_array_equal(counts, s.data[:, :, unit])
    assert np.all(s.trial_start_times[1:] - s.trial_stop_times[:-1] == pytest.approx(0.5))


def test_calcium_is_filtered_readout_plus_noise(net):
    initial = np.zeros((2, 2)) + 1.0
    s = simulate_calcium(net, initial=initial, n_time=30, decay=0.6, noise_std=0.0)
    drive = s.readout_gain * s.activity + s.readout_offset
    np.testing.assert_allclose(s.data[:, 0], drive[:, 0])
    np.testing.assert_allclose(s.data[:, 5], 0.6 * s.data[:, 4] + 0.4 * drive[:, 5])
    assert s.continuous_traces().shape == (60, 80)
    assert s.to_recording().kind == "calcium" and s.calcium_decay == 0.6


def test_simulators_are_deterministic(net):
    a = simulate_spikes(net, n_time=20, random_state=7)
    b = simulate_spikes(net, n_time=20, random_state=7)
    np.testing.assert_array_equal(a.data, b.data)
    for x, y in zip(a.spike_times, b.spike_times):
        np.testing.assert_array_equal(x, y)


def test_simulator_errors(net):
    with pytest.raises(TypeError, match="network must be a GroundTruthNetwork"):
        simulate_rates(net.M)
    with pytest.raises(ValueError, match="initial must have shape"):
        simulate_rates(net, initial=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="rate_range must satisfy"):
        simulate_spikes(net, rate_range=(5.0, 20.0))
    with pytest.raises(ValueError, match="decay must lie in"):
        simulate_calcium(net, decay=1.0)
    with pytest.raises(ValueError, match="n_time must be >= 2"):
        simulate_rates(net, n_time=1)


def test_spikes_round_trip_through_nwb(net, tmp_path):
    from nwb_lrconn.io import read_units, write_units_nwb

    s = simulate_spikes(net, initial=np.ones((4, 2)), n_time=50, bin_width=0.02, random_state=2)
    path = write_units_nwb(tmp_path / "sim.nwb", s.spike_times, trials=s.trials)
    rec = read_units(path, bin_width=0.02, trials="trials")
    n = min(rec.n_time, 50)
    assert rec.n_trials == 4 and n >= 49
    np.testing.assert_array_equal(rec.data[:, :n], s.data[:, :n])
    np.testing.assert_allclose(rec.trial_start_times, s.trial_start_times)
