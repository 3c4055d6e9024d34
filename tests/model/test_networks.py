"""Ground-truth networks: published loadings, generators, conditional means, simulator."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_lrconn.model.networks import (
    NETWORK_NAMES,
    conditional_mean,
    grid_initial_conditions,
    load_published_network,
    sample_heavy_tailed_network,
    sample_network,
    simulate_latents,
)

# Residual variance of k around g(m), sum over the two ranks, from the published laws.
K_VAR = {"quadstable": 5.65}
RESIDUAL = {"quadstable": 2.0, "bistable": 3.36, "limit_cycle": 1.6, "ring": 2.88}


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_published_loadings_follow_the_law(name, data_dir):
    net = load_published_network(name, data_dir)
    assert net.M.shape == net.K.shape == (1000, 2)
    resid = np.mean(np.sum((net.K - conditional_mean(name, net.M)) ** 2, axis=1))
    assert resid == pytest.approx(RESIDUAL[name], rel=0.15)


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_sampled_network_moments(name):
    net = sample_network(name, 20000, random_state=1)
    np.testing.assert_allclose(net.M.var(axis=0), 1.0, atol=0.05)
    # Var k_r = 4 for the Gaussian laws; for the quadstable mixture Var g + 1 ≈ 5.6, as in the
    # published loadings.
    np.testing.assert_allclose(net.K.var(axis=0), K_VAR.get(name, 4.0), rtol=0.08)
    resid = np.mean(np.sum((net.K - conditional_mean(name, net.M)) ** 2, axis=1))
    assert resid == pytest.approx(RESIDUAL[name], rel=0.05)


def test_sampling_is_seeded():
    a = sample_network("ring", 50, random_state=3)
    b = sample_network("ring", 50, random_state=3)
    np.testing.assert_array_equal(a.K, b.K)


def test_heavy_tailed_network_has_heavy_tails():
    net = sample_heavy_tailed_network(50000, df=6.0, random_state=0)
    m = net.M[:, 0]
    kurt = np.mean(m**4) / np.mean(m**2) ** 2 - 3
    assert np.var(m) == pytest.approx(1.0, abs=0.05)
    assert kurt == pytest.approx(3.0, abs=1.0)  # 6 / (df - 4)
    with pytest.raises(ValueError, match="df must be > 4"):
        sample_heavy_tailed_network(10, df=3.0)


def test_missing_published_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="connector-paper-networks"):
        load_published_network("ring", tmp_path)
    with pytest.raises(ValueError, match="name must be one of"):
        load_published_network("torus", tmp_path)


def test_simulator_matches_explicit_connectivity():
    net = sample_network("limit_cycle", 60, random_state=0)
    init = grid_initial_conditions(3)
    lat = simulate_latents(net.M, net.K, init, 20, alpha=0.1)
    # Full-network Euler step with J = M Kᵀ / N, started in span(M): x = M κ.
    J = net.M @ net.K.T / 60
    x = init @ net.M.T
    for _ in range(19):
        x = 0.9 * x + 0.1 * np.tanh(x) @ J.T
    np.testing.assert_allclose(x, lat[:, -1] @ net.M.T, atol=1e-10)
