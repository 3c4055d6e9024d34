"""The few-unit distribution: Gaussian mixture over z, k | z around the ridge conditional mean."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from nwb_lrconn._validation import NotFittedError
from nwb_lrconn.data import ConnectivityDistribution
from nwb_lrconn.inference.connector import (
    ConnectorData,
    build_state_quadrature,
    quadrature_ridge_targets,
)
from nwb_lrconn.inference.dynamics import flow_field, flow_field_rmse
from nwb_lrconn.inference.mixture import (
    MixtureConnectorEstimator,
    max_mixture_components,
    mixture_from_distribution,
)
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network, simulate_latents

FAST = {"n_virtual_units": 300, "n_target_sets": 4}


def _data(name: str, n_units: int, *, seed: int = 0, n_time: int = 20):
    net = sample_network(name, 1000, random_state=seed)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(6), n_time)
    units = np.random.default_rng(seed).permutation(1000)[:n_units]
    return net, ConnectorData.from_loadings(net.M[units], lat, alpha=0.1)


@pytest.fixture(scope="module")
def ring20():
    return _data("ring", 20)


@pytest.fixture(scope="module")
def ring_fit(ring20):
    return MixtureConnectorEstimator(**FAST, random_state=0).fit(ring20[1])


@pytest.mark.parametrize(
    ("n_units", "n_free", "limit", "expected"),
    [(10, 2, 4, 1), (24, 2, 4, 2), (200, 2, 4, 4), (200, 2, 2, 2), (50, 3, 4, 2)],
)
def test_components_tried_need_two_units_per_parameter(n_units, n_free, limit, expected):
    assert max_mixture_components(n_units, n_free, limit) == expected


def test_few_ring_units_give_the_ridge_dynamics(ring20, ring_fit):
    net, data = ring20
    est = ring_fit
    assert est.n_components_ == 1  # 20 units: only one component is tried
    assert set(est.validation_metrics_) == {
        "z_cv_nll",
        "n_components",
        "diagonal_covariance",
        "k_val_relative_error",
    }
    assert est.validation_metrics_["k_val_relative_error"] < 0.02
    z, k = est.sample(1000, random_state=0)
    assert z.shape == (1000, 3) and np.all(z[:, 2] == 0)  # constant d reproduced, not modelled
    # The network sampled from 20 units' Gaussian and g* has the ring's flow field.
    _, v_true = flow_field(net.M, net.K)
    assert flow_field_rmse(v_true, flow_field(z[:, :2], k)[1]) < 0.05


def test_the_core_is_the_ridge_solution_of_the_sampled_units(ring20, ring_fit):
    _, data = ring20
    est = ring_fit
    feats, updates = data.transitions(est.train_trials_)
    quad = build_state_quadrature(feats, updates, resolution=est.state_resolution)
    t = partial(torch.as_tensor, dtype=torch.float64)
    z, k = est.sample(4000, random_state=2)
    k_hat = quadrature_ridge_targets(
        t(quad.features), t(quad.update_sums), t(quad.weights), t(z), alpha=0.1, ridge_lambda=1e-5
    ).numpy()
    # With S = 4000 units the ridge strength differs from the fit's S = 300, and one set carries
    # finite-S jitter, so g* and the direct solution agree on average, not unit by unit.
    assert np.abs((k_hat - k).mean(0)).max() < 0.1 * np.abs(k).mean()
    np.testing.assert_allclose(est.core_k(z), k)


def test_mixture_components_are_kept_when_they_raise_the_held_out_likelihood():
    _, data = _data("quadstable", 400, n_time=5)
    est = MixtureConnectorEstimator(**FAST, random_state=0).fit(data)
    assert est.n_components_ == 4 and est.covariance_type_ == "full"
    curve = est.z_cv_curves_["z_cv_nll_full"]
    assert curve[:, 0].tolist() == [1, 2, 3, 4] and np.argmin(curve[:, 1]) == 3
    assert est.validation_metrics_["z_cv_nll"] == pytest.approx(curve[3, 1])
    one = MixtureConnectorEstimator(**FAST, n_components=1, random_state=0).fit(data)
    assert one.n_components_ == 1 and set(one.z_cv_curves_) == {"z_cv_nll_full", "z_cv_nll_diag"}
    assert one.validation_metrics_["z_cv_nll"] > est.validation_metrics_["z_cv_nll"]


def test_the_full_gaussian_has_the_units_moments(ring20):
    _, data = ring20
    est = MixtureConnectorEstimator(
        **FAST, n_components=1, covariance_type="full", random_state=0
    ).fit(data)
    m = data.z[:, :2]
    z, _ = est.sample(200_000, quasi_random=False, random_state=1)
    np.testing.assert_allclose(z[:, :2].mean(0), m.mean(0), atol=0.02)
    np.testing.assert_allclose(np.cov(z[:, :2].T), np.cov(m.T, bias=True), atol=0.03)


def test_densities_are_normalised(ring_fit):
    est = ring_fit
    axis = np.linspace(-6, 6, 121)
    cell = (axis[1] - axis[0]) ** 2
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    z_grid = np.c_[grid, np.zeros(len(grid))]
    assert np.exp(est.log_prob_z(z_grid)).sum() * cell == pytest.approx(1.0, abs=1e-3)
    z, k = est.sample(1, random_state=3)
    k_grid = k[0] + grid * np.sqrt(np.diag(est.residual_covariance_)) / 1.5
    k_cell = cell * np.prod(np.sqrt(np.diag(est.residual_covariance_))) / 1.5**2
    log_mass = np.log(np.exp(est.log_prob(np.repeat(z, len(grid), 0), k_grid)).sum() * k_cell)
    assert log_mass == pytest.approx(est.log_prob_z(z)[0], abs=1e-3)


def test_sampling_options(ring_fit):
    est = ring_fit
    z0, k0 = est.sample(3000, random_state=1)
    z1, k1 = est.sample(3000, sigma=1.0, random_state=1)
    np.testing.assert_array_equal(z0, z1)
    np.testing.assert_allclose((k1 - k0).std(0), [1.0, 1.0], atol=0.05)
    _, k_spread = est.sample(3000, core=False, random_state=1)
    np.testing.assert_allclose(
        np.cov((k_spread - k0).T), est.residual_covariance_, rtol=0.15, atol=1e-6
    )
    np.testing.assert_array_equal(z0, est.sample(3000, random_state=1)[0])
    assert not np.array_equal(z0, est.sample(3000, random_state=2)[0])
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        est.sample(3, sigma=-1.0)


def test_round_trip_through_plain_arrays_is_exact(ring_fit):
    dist = ring_fit.to_distribution(50, sigma=0.5, random_state=2)
    assert isinstance(dist, ConnectivityDistribution)
    assert dist.model == "gaussian" and dist.architecture["kind"] == "connector-gmm"
    assert dist.samples_z.shape == (50, 3) and dist.samples_k.shape == (50, 2)
    assert all(isinstance(v, np.ndarray) for v in dist.flow_b_parameters.values())
    rebuilt = mixture_from_distribution(dist)
    z, k = rebuilt.sample(50, sigma=0.5, random_state=2)
    np.testing.assert_array_equal(z, dist.samples_z)
    np.testing.assert_array_equal(k, dist.samples_k)
    np.testing.assert_array_equal(rebuilt.log_prob(z, k), ring_fit.log_prob(z, k))
    assert rebuilt.get_params() == ring_fit.get_params()
    with pytest.raises(ValueError, match="architecture kind must be 'connector-gmm'"):
        mixture_from_distribution(ConnectivityDistribution(**{**vars(dist), "architecture": {}}))


def test_too_few_units_and_bad_parameters_are_refused(ring20):
    _, data = ring20
    few = ConnectorData.from_loadings(data.z[:3, :2], data.latents, alpha=0.1)
    with pytest.raises(ValueError, match=r"3 units cannot fit a Gaussian over the 2 varying"):
        MixtureConnectorEstimator().fit(few)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        MixtureConnectorEstimator().sample(3)
    with pytest.raises(TypeError, match="data must be a LowRankFit or a ConnectorData"):
        MixtureConnectorEstimator().fit(np.zeros(3))


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ({"n_components": "many"}, ValueError, "n_components must be a positive integer or"),
        ({"n_components": 0}, ValueError, "n_components must be >= 1; got 0"),
        ({"covariance_type": "tied"}, ValueError, "covariance_type must be one of"),
        ({"n_folds": 1}, ValueError, "n_folds must be >= 2; got 1"),
        ({"n_target_sets": 0}, ValueError, "n_target_sets must be >= 1; got 0"),
        ({"ridge_lambda": 0.0}, ValueError, "ridge_lambda must be finite and > 0"),
        ({"validation_fraction": 0.0}, ValueError, r"validation_fraction must be in \(0, 1\)"),
    ],
)
def test_hyperparameters_are_validated(ring20, override, error, match):
    with pytest.raises(error, match=match):
        MixtureConnectorEstimator(**override).fit(ring20[1])
