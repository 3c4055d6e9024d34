"""What Connector learns from (inference.connector.data)."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_lrconn.data import LowRankFit
from nwb_lrconn.inference.connector import ConnectorData


def _low_rank_fit(net, lat, *, n_inputs=0, test_trials=(0, 1)):
    n = net.M.shape[0]
    ones = np.ones(n)
    return LowRankFit(
        M=net.M, K=net.K, B=np.zeros((n, n_inputs)), d=np.zeros(n), readout_gain=ones,
        readout_offset=0 * ones, noise_std=ones, rank=2, nonlinearity="tanh", alpha=0.1,
        bin_width=0.01, observation="gaussian", latents=lat,
        latent_mask=np.ones(lat.shape[:2], bool), trial_start_times=np.zeros(lat.shape[0]),
        loss_history=np.zeros((1, 2)), metrics={}, unit_quality=ones,
        train_trials=np.arange(2, lat.shape[0]), test_trials=np.asarray(test_trials),
        unit_ids=np.arange(n),
    )  # fmt: skip


def test_connector_data_from_fit_uses_its_held_out_trials(ring_data):
    net, data = ring_data
    fit = _low_rank_fit(net, data.latents)
    from_fit = ConnectorData.from_fit(fit)
    np.testing.assert_array_equal(from_fit.z, np.c_[net.M, np.zeros(300)])
    np.testing.assert_array_equal(from_fit.test_trials, [0, 1])
    assert from_fit.rank == 2 and from_fit.n_inputs == 0
    with pytest.raises(ValueError, match=r"fit has 1 input channel\(s\).*pass the recording"):
        ConnectorData.from_fit(_low_rank_fit(net, data.latents, n_inputs=1))
    with pytest.raises(TypeError, match="fit must be a LowRankFit; got dict"):
        ConnectorData.from_fit({})


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ({"z": np.zeros((5, 2))}, ValueError, r"ConnectorData.z must have shape \(any, 3\)"),
        ({"alpha": 0.0}, ValueError, "ConnectorData.alpha must be finite and > 0"),
        ({"nonlinearity": "relu6"}, ValueError, "ConnectorData.nonlinearity must be one of"),
        ({"test_trials": [99]}, ValueError, r"test_trials must be trial indices in \[0, 4\)"),
        ({"latent_mask": np.eye(4, 3, dtype=bool)}, ValueError, "leaves no transition"),
        ({"z": np.zeros((1, 3))}, ValueError, "needs at least 2 units; got 1"),
    ],
)
def test_connector_data_validation(override, error, match):
    args = {
        "z": np.zeros((5, 3)),
        "latents": np.zeros((4, 3, 2)),
        "latent_mask": np.ones((4, 3), bool),
        "alpha": 0.1,
        **override,
    }
    with pytest.raises(error, match=match):
        ConnectorData(**args)
