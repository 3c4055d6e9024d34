"""ConnectorEstimator: the sklearn contract, training, sampling and densities."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from sklearn.base import clone

from nwb_lrconn._validation import NotFittedError
from nwb_lrconn.inference.connector import (
    ConnectorData,
    ConnectorEstimator,
    auto_flow_steps,
    auto_hidden_features,
    connector_from_distribution,
)
from nwb_lrconn.inference.dynamics import (
    flow_field,
    flow_field_rmse,
)
from nwb_lrconn.inference.flows import flow_log_prob
from nwb_lrconn.inference.metrics import (
    conditional_mean_error,
)
from nwb_lrconn.model.networks import (
    conditional_mean,
    grid_initial_conditions,
    sample_network,
    simulate_latents,
)


def test_init_stores_hyperparameters_verbatim():
    est = ConnectorEstimator(ridge_lambda=1e-3, state_resolution=None, random_state=7)
    params = est.get_params()
    assert params["ridge_lambda"] == 1e-3 and params["state_resolution"] is None
    assert params["random_state"] == 7 and params["device"] == "cpu"
    assert not any(name.endswith("_") for name in vars(est))


def test_sklearn_clone_params_and_short_repr(small_fit):
    est = ConnectorEstimator(ridge_lambda=1e-3, n_steps_b=3, random_state=7)
    twin = clone(est)
    assert twin is not est and twin.get_params(deep=True) == est.get_params(deep=True)
    assert repr(est) == "ConnectorEstimator(n_steps_b=3, random_state=7, ridge_lambda=0.001)"
    assert est.set_params(n_layers=2).n_layers == 2
    assert ConnectorEstimator(**est.get_params()).get_params() == est.get_params()
    assert len(repr(small_fit)) < 200 and "tensor" not in repr(small_fit)
    assert not hasattr(clone(small_fit), "flow_a_")


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ({"hidden_features": 0}, ValueError, "hidden_features must be >= 1; got 0"),
        ({"n_steps_b": 1.5}, TypeError, "n_steps_b must be an integer"),
        ({"ridge_lambda": -1.0}, ValueError, "ridge_lambda must be finite and > 0"),
        ({"validation_fraction": 1.0}, ValueError, r"validation_fraction must be in \(0, 1\)"),
        ({"pool_size": 10}, ValueError, r"pool_size must be >= n_virtual_units \(1000\)"),
        ({"state_resolution": 0.0}, ValueError, "state_resolution must be finite and > 0"),
        ({"hidden_features": "wide"}, ValueError, "hidden_features must be a positive integer"),
        ({"n_steps_a": -1}, ValueError, "n_steps_a must be >= 0; got -1"),
        ({"validation_every": "often"}, ValueError, r"validation_every must be .* or 'auto'"),
        ({"n_target_sets": 0}, ValueError, "n_target_sets must be >= 1; got 0"),
    ],
)
def test_fit_validates_hyperparameters(ring_data, override, error, match):
    with pytest.raises(error, match=match):
        ConnectorEstimator(**override).fit(ring_data[1])


def test_fit_rejects_other_inputs():
    with pytest.raises(
        TypeError, match="data must be a LowRankFit or a ConnectorData; got ndarray"
    ):
        ConnectorEstimator().fit(np.zeros((3, 3)))


def test_methods_need_a_fit():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ConnectorEstimator().sample(10)


def test_fit_learns_the_ring_and_records_curves(ring_data, small_fit):
    net, _ = ring_data
    est = small_fit
    assert 1 <= est.n_steps_a_ <= 300 and est.n_steps_b_ == 150
    assert set(est.training_curves_) == {"flow_a_loss", "flow_a_val", "flow_b_loss", "flow_b_val"}
    val_a = est.training_curves_["flow_a_val"]
    assert val_a.shape[1] == 2 and np.all(np.isfinite(val_a[:, 1]))
    assert est.validation_metrics_["flow_a_val_nll"] in val_a[:, 1]
    val = est.training_curves_["flow_b_val"]
    assert val.shape[1] == 2 and np.all(np.diff(val[:, 0]) > 0)
    # The last state is kept by default (keep_best=False); its validation error is reported.
    assert est.validation_metrics_["flow_b_val_relative_error"] == pytest.approx(val[-1, 1])
    assert est.validation_metrics_["flow_b_val_relative_error"] < 0.05  # held-out dynamics
    assert set(est.test_trials_).isdisjoint(est.train_trials_)
    z, k = est.sample(2000, random_state=0)
    assert z.shape == (2000, 3) and k.shape == (2000, 2)
    assert np.all(z[:, 2] == 0)  # the constant bias column is reproduced, not learned
    # Loose ground-truth checks for a few-second fit on 36 short trials (the full checks, incl.
    # the conditional mean, are the slow acceptance tests below).
    np.testing.assert_allclose(np.cov(z[:, :2].T), np.eye(2), atol=0.25)
    _, v_true = flow_field(net.M, net.K)
    _, v_sampled = flow_field(z[:, :2], k)
    _, v_zero = flow_field(z[:, :2], 0 * k)
    assert flow_field_rmse(v_true, v_sampled) < 0.15 < flow_field_rmse(v_true, v_zero)


def test_keep_best_restores_the_state_with_the_lowest_validation_error(ring_data, small_params):
    params = {**small_params, "n_steps_a": 100, "validation_every": 10, "patience": 2}
    last = ConnectorEstimator(**params, random_state=0).fit(ring_data[1])
    best = ConnectorEstimator(**params, keep_best=True, random_state=0).fit(ring_data[1])
    val = best.training_curves_["flow_b_val"]
    # Identical until keep_best stops; without it flow B runs its whole schedule.
    np.testing.assert_array_equal(val, last.training_curves_["flow_b_val"][: len(val)])
    assert last.n_steps_b_ == 150
    assert np.argmin(val[:, 1]) < len(val) - 1  # the best state is not the last one here
    assert best.n_steps_b_ < 150  # stopped early: `patience` validations without improvement
    assert best.validation_metrics_["flow_b_val_relative_error"] == pytest.approx(val[:, 1].min())
    last_val = last.training_curves_["flow_b_val"][-1, 1]
    assert last.validation_metrics_["flow_b_val_relative_error"] == pytest.approx(last_val)
    a = torch.cat([p.flatten() for p in best.flow_b_.parameters()])
    b = torch.cat([p.flatten() for p in last.flow_b_.parameters()])
    assert not torch.equal(a, b)


def test_flow_a_stops_when_it_fits_the_units_instead_of_their_law(small_params):
    net = sample_network("ring", 20, random_state=3)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(4), 10)
    data = ConnectorData.from_loadings(net.M, lat, alpha=0.1)
    params = {**small_params, "n_steps_a": 3000, "n_steps_b": 5, "validation_every": 25}
    est = ConnectorEstimator(**params, random_state=0).fit(data)
    val = est.training_curves_["flow_a_val"]
    assert est.n_steps_a_ < 3000 and val[-1, 0] == est.n_steps_a_
    # 20 units: 5 held out, whose negative log-likelihood rises once flow A fits the other 15;
    # the last `patience` checks are all worse than the best by more than its standard error,
    # so the best state is restored (its check is the one reported).
    assert np.all(val[-5:, 1] > val[:, 1].min())
    assert est.validation_metrics_["flow_a_val_nll"] == pytest.approx(val[:, 1].min())
    z_held = np.c_[net.M, np.zeros(20)][est.held_out_units_]
    assert -est.log_prob_z(z_held).mean() == pytest.approx(val[:, 1].min(), rel=1e-4)


@pytest.mark.parametrize(
    ("n_units", "hidden", "steps"),
    [(10, 32, 500), (200, 32, 600), (500, 64, 1500), (1000, 128, 3000), (50_000, 128, 3000)],
)
def test_flow_sizes_follow_the_number_of_units(n_units, hidden, steps):
    assert auto_hidden_features(n_units) == hidden and auto_flow_steps(n_units) == steps


def test_auto_sizes_are_used_and_stored(ring_data, small_params):
    params = {**small_params, "hidden_features": "auto", "n_steps_a": "auto", "n_steps_b": 2}
    est = ConnectorEstimator(**params, random_state=0).fit(ring_data[1])
    assert est.hidden_features_ == 32 and est.max_steps_a_ == 900  # 300 units
    assert est.flow_a_.net[0].out_features == 32
    dist = est.to_distribution(5)
    assert dist.architecture["hidden_features"] == 32 and dist.model == "flows"
    assert connector_from_distribution(dist).flow_b_.net[0].out_features == 32


def test_fresh_targets_at_every_step_without_a_bank(ring_data, small_params):
    params = {**small_params, "n_steps_a": 20, "n_steps_b": 3}
    banked = ConnectorEstimator(**params, n_target_sets=1, random_state=0).fit(ring_data[1])
    fresh = ConnectorEstimator(**params, n_target_sets=None, random_state=0).fit(ring_data[1])
    # Same first target set (hence the same k standardisation), different later ones.
    np.testing.assert_array_equal(banked.k_mean_, fresh.k_mean_)
    loss_b, loss_f = banked.training_curves_["flow_b_loss"], fresh.training_curves_["flow_b_loss"]
    assert loss_b[0] == loss_f[0] and not np.array_equal(loss_b, loss_f)


def test_core_k_is_what_sample_draws_for_k(small_fit):
    z, k = small_fit.sample(50, random_state=4)
    np.testing.assert_allclose(small_fit.core_k(z), k, atol=1e-4)
    with pytest.raises(ValueError, match=r"z must have shape \(any, 3\)"):
        small_fit.core_k(np.zeros((2, 2)))


def test_random_state_is_honoured_exactly(ring_data, small_fit, small_params):
    again = ConnectorEstimator(**small_params, random_state=0).fit(ring_data[1])
    for a, b in zip(small_fit.flow_b_.parameters(), again.flow_b_.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    z1, k1 = small_fit.sample(50, random_state=3)
    z2, k2 = again.sample(50, random_state=3)
    np.testing.assert_array_equal(z1, z2)
    np.testing.assert_array_equal(k1, k2)
    z3, _ = small_fit.sample(50, random_state=4)
    assert not np.array_equal(z1, z3)


def test_sigma_adds_isotropic_spread_on_k_only(small_fit):
    z0, k0 = small_fit.sample(3000, sigma=0.0, random_state=1)
    z1, k1 = small_fit.sample(3000, sigma=1.0, random_state=1)
    np.testing.assert_array_equal(z0, z1)
    diff = k1 - k0
    np.testing.assert_allclose(diff.std(0), [1.0, 1.0], atol=0.05)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        small_fit.sample(3, sigma=-1.0)


def test_core_is_the_centre_of_flow_b_and_closer_to_the_conditional_mean(ring_data, small_fit):
    net, _ = ring_data
    est = small_fit
    z, k_core = est.sample(300, random_state=1)
    z_r, k_rand = est.sample(300, core=False, random_state=1)
    np.testing.assert_array_equal(z, z_r)  # z is drawn first, the same either way
    assert not np.array_equal(k_core, k_rand)
    # The core is flow B's transport of the base mean: the centre of its conditional law.
    x = est._z_to_flow(z[:5], torch.device("cpu")).repeat_interleave(400, 0)
    gen = torch.Generator().manual_seed(0)
    draws = est._sample_k_flow(x, gen).double().numpy() * est.k_std_ + est.k_mean_
    draws = draws.reshape(5, 400, 2)
    offset = np.abs(draws.mean(1) - k_core[:5]) / draws.std(1)
    assert offset.max() < 0.3
    g = partial(conditional_mean, "ring")
    m, m_r = z[:, :2], z_r[:, :2]
    assert conditional_mean_error(m, k_core, g) < conditional_mean_error(m_r, k_rand, g)


def test_quasi_random_draws_cover_the_distribution_more_evenly(small_fit):
    est = small_fit
    z_ref, k_ref = est.sample(20_000, quasi_random=False, random_state=0)
    _, v_ref = flow_field(z_ref[:, :2], k_ref)
    z_q, k_q = est.sample(300, random_state=1)  # quasi-random by default
    np.testing.assert_array_equal(z_q, est.sample(300, random_state=1)[0])
    assert not np.array_equal(z_q, est.sample(300, random_state=2)[0])
    errors_iid = []
    for seed in range(1, 4):
        z_i, k_i = est.sample(300, quasi_random=False, random_state=seed)
        errors_iid.append(flow_field_rmse(v_ref, flow_field(z_i[:, :2], k_i)[1]))
    assert flow_field_rmse(v_ref, flow_field(z_q[:, :2], k_q)[1]) < min(errors_iid)


def test_log_prob_is_a_normalised_density(small_fit):
    # ∫ p(z, k) dk over a grid of k at a fixed z must equal p_A(z), evaluated by flow A alone.
    est = small_fit
    z, k = est.sample(1, random_state=5)
    axis = np.linspace(-5.0, 5.0, 81)  # in units of the flow's k scale, around the draw
    cell = np.prod(est.k_std_) * (axis[1] - axis[0]) ** 2
    unit = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    grid = unit * est.k_std_ + k[0]
    lp_joint = est.log_prob(np.repeat(z, grid.shape[0], 0), grid)
    assert lp_joint.shape == (grid.shape[0],) and np.all(np.isfinite(lp_joint))
    log_mass = np.log(np.exp(lp_joint).sum() * cell)
    x = est._z_to_flow(z, torch.device("cpu"))
    log_pz = flow_log_prob(est.flow_a_, x).double().numpy()[0]
    log_pz -= np.log(est.z_std_[est.z_free_]).sum()
    assert log_mass == pytest.approx(log_pz, abs=0.05)
    assert est.log_prob_z(z)[0] == pytest.approx(log_pz, rel=1e-6)
    with pytest.raises(ValueError, match=r"k must have shape \(1, 2\)"):
        est.log_prob(z, np.zeros((2, 2)))


def test_fit_with_inputs_and_biases(small_params):
    rng = np.random.default_rng(0)
    net = sample_network("bistable", 200, random_state=1)
    B, d = 0.5 * rng.standard_normal((200, 1)), 0.3 * rng.standard_normal(200)
    inputs = np.repeat(rng.standard_normal((16, 1, 1)), 20, axis=1)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(4), 20, B=B, d=d, inputs=inputs)
    data = ConnectorData.from_loadings(net.M, lat, alpha=0.1, B=B, d=d, inputs=inputs)
    assert data.n_inputs == 1 and data.z.shape == (200, 4)
    est = ConnectorEstimator(**{**small_params, "n_steps_a": 50, "n_steps_b": 5}, random_state=0)
    z, k = est.fit(data).sample(10, random_state=0)
    assert est.z_free_.tolist() == [True, True, True, True]
    assert z.shape == (10, 4) and np.all(np.isfinite(est.log_prob(z, k)))
