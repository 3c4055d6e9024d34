"""Stage 3 picks the model the number of units warrants and says which and why."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_lrconn.data import ConnectivityDistribution
from nwb_lrconn.inference.connector import ConnectorData, ConnectorEstimator
from nwb_lrconn.inference.distribution import (
    MIN_UNITS_FOR_FLOWS,
    choose_distribution_model,
    distribution_estimator,
    fit_distribution,
)
from nwb_lrconn.inference.mixture import MixtureConnectorEstimator
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network, simulate_latents

FLOWS = {
    "hidden_features": 16,
    "n_layers": 2,
    "n_steps_a": 20,
    "n_steps_b": 5,
    "n_virtual_units": 100,
    "n_target_sets": 2,
    "pool_size": 500,
}
MIXTURE = {"n_virtual_units": 100, "n_target_sets": 2}


def _data(n_units: int, *, with_bias: bool = False) -> ConnectorData:
    net = sample_network("ring", max(n_units, 4), random_state=0)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(3), 10)
    d = np.linspace(-0.1, 0.1, n_units) if with_bias else None
    return ConnectorData.from_loadings(net.M[:n_units], lat, alpha=0.1, d=d)


@pytest.mark.parametrize(
    ("n_units", "n_free", "model", "expected", "reason"),
    [
        (3, 2, "auto", "skipped", "3 units are too few for a distribution over the 2 varying"),
        (4, 3, "flows", "skipped", "a covariance with one unit left to check it needs 5"),
        (4, 2, "auto", "gmm", f"4 units < {MIN_UNITS_FOR_FLOWS}: too few for flows"),
        (MIN_UNITS_FOR_FLOWS - 1, 2, "auto", "gmm", "too few for flows to beat a Gaussian"),
        (MIN_UNITS_FOR_FLOWS, 2, "auto", "flows", f"units >= {MIN_UNITS_FOR_FLOWS}: enough"),
        (30, 2, "flows", "flows", "requested (distribution.model = 'flows') for 30 units"),
        (5000, 2, "gaussian", "gaussian", "requested (distribution.model = 'gaussian')"),
    ],
)
def test_the_model_follows_the_number_of_units(n_units, n_free, model, expected, reason):
    chosen, why = choose_distribution_model(n_units, n_free, model)
    assert chosen == expected and reason in why
    assert "\n" not in why


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match=r"model must be one of \['auto', 'flows', 'gmm'"):
        choose_distribution_model(100, 2, "flow")


def test_few_units_get_the_mixture_and_its_reason():
    dist = fit_distribution(
        _data(12), n_samples=40, sigma=0.5, mixture_params=MIXTURE, random_state=0
    )
    assert dist.model == "gaussian"  # 12 units: one component
    assert dist.reason.startswith(f"12 units < {MIN_UNITS_FOR_FLOWS}")
    assert dist.reason.endswith(
        "(one component: more did not raise the cross-validated likelihood)"
    )
    assert dist.samples_z.shape == (40, 3) and dist.sigma == 0.5
    assert isinstance(distribution_estimator(dist), MixtureConnectorEstimator)


def test_tiny_recordings_are_skipped_with_a_reason():
    dist = fit_distribution(_data(4, with_bias=True), random_state=0)  # m and d vary: 3 columns
    assert dist.model == "skipped"
    assert dist.reason == (
        "4 units are too few for a distribution over the 3 varying column(s) of z = (m, b, d): "
        "a covariance with one unit left to check it needs 5"
    )
    assert dist.samples_z.shape == (0, 3) and dist.samples_k.shape == (0, 2)
    assert dist.flow_a_parameters == {} and dist.validation_metrics == {}
    with pytest.raises(ValueError, match="the distribution was skipped, there is nothing to"):
        distribution_estimator(dist)


def test_enough_units_get_the_flows():
    dist = fit_distribution(
        _data(MIN_UNITS_FOR_FLOWS), n_samples=10, flow_params=FLOWS, random_state=0
    )
    assert dist.model == "flows" and dist.architecture["kind"] == "connector-cfm"
    assert dist.reason == f"{MIN_UNITS_FOR_FLOWS} units >= {MIN_UNITS_FOR_FLOWS}: enough for flows"
    assert isinstance(distribution_estimator(dist), ConnectorEstimator)


def test_requested_models_are_used_whatever_the_size():
    data = _data(30)
    flows = fit_distribution(data, model="flows", n_samples=5, flow_params=FLOWS, random_state=0)
    assert flows.model == "flows" and flows.reason.startswith("requested")
    gauss = fit_distribution(data, model="gaussian", mixture_params=MIXTURE, random_state=0)
    assert gauss.model == "gaussian" and gauss.validation_metrics["n_components"] == 1


def _empty(model, reason):
    return ConnectivityDistribution(
        {}, {}, {}, 0.0, 0.0, 0, {}, np.zeros((0, 3)), np.zeros((0, 2)), {}, model, reason
    )


def test_the_result_says_which_model_it_is():
    assert _empty("gmm", "why").model == "gmm"
    with pytest.raises(ValueError, match=r"ConnectivityDistribution.model must be one of"):
        _empty("flow", "")
    with pytest.raises(TypeError, match=r"ConnectivityDistribution.reason must be a string"):
        _empty("skipped", None)
    with pytest.raises(TypeError, match="data must be a LowRankFit or a ConnectorData"):
        fit_distribution(np.zeros(3))
