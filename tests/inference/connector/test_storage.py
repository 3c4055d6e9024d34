"""A Connector rebuilt from its stored arrays (inference.connector.storage)."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_lrconn.data import ConnectivityDistribution
from nwb_lrconn.inference.connector import connector_from_distribution


def test_distribution_round_trip_is_exact(small_fit):
    dist = small_fit.to_distribution(100, sigma=0.5, random_state=2)
    assert isinstance(dist, ConnectivityDistribution)
    assert dist.samples_z.shape == (100, 3) and dist.samples_k.shape == (100, 2)
    assert dist.sigma == 0.5 and dist.n_virtual_units == 200
    assert all(isinstance(v, np.ndarray) for v in dist.flow_a_parameters.values())
    rebuilt = connector_from_distribution(dist)
    z, k = rebuilt.sample(100, sigma=0.5, random_state=2)
    np.testing.assert_array_equal(z, dist.samples_z)
    np.testing.assert_array_equal(k, dist.samples_k)
    np.testing.assert_array_equal(rebuilt.log_prob(z, k), small_fit.log_prob(z, k))
    assert rebuilt.get_params() == small_fit.get_params()
    with pytest.raises(TypeError, match="dist must be a ConnectivityDistribution; got dict"):
        connector_from_distribution({})
