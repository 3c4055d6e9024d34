"""Shared fixtures of the Connector tests: the ring network's latents and a small fit."""

from __future__ import annotations

import pytest

from nwb_lrconn.inference.connector import ConnectorData, ConnectorEstimator
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network, simulate_latents

SMALL = {
    "hidden_features": 32,
    "n_layers": 2,
    "n_steps_a": 300,
    "n_steps_b": 150,
    "n_virtual_units": 200,
    "pool_size": 2000,
    "validation_every": 20,
}


@pytest.fixture
def small_params():
    """Flow sizes small enough for a test (a fresh copy each time)."""
    return dict(SMALL)


@pytest.fixture(scope="module")
def ring_data():
    net = sample_network("ring", 300, random_state=0)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(6), 30)
    return net, ConnectorData.from_loadings(net.M, lat, alpha=0.1)


@pytest.fixture(scope="module")
def small_fit(ring_data):
    _, data = ring_data
    return ConnectorEstimator(**SMALL, random_state=0).fit(data)
