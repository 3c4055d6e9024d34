"""Connector: ridge targets, state quadrature, the estimator contract, round trips, acceptance."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from sklearn.base import clone

from nwb_lrconn._validation import NotFittedError
from nwb_lrconn.data import ConnectivityDistribution, LowRankFit
from nwb_lrconn.inference.connector import (
    ConnectorData,
    ConnectorEstimator,
    auto_flow_steps,
    auto_hidden_features,
    build_state_quadrature,
    connector_from_distribution,
    quadrature_ridge_targets,
    ridge_state_coefficients,
)
from nwb_lrconn.inference.dynamics import (
    find_fixed_points,
    find_limit_cycle,
    flow_field,
    flow_field_rmse,
)
from nwb_lrconn.inference.flows import flow_log_prob
from nwb_lrconn.inference.metrics import (
    conditional_mean_error,
    gmm_cv_log_likelihood,
    gradient_descent_output_loadings,
    population_labels,
    silence_population,
    sinkhorn_divergence,
)
from nwb_lrconn.model.networks import (
    conditional_mean,
    grid_initial_conditions,
    load_published_network,
    sample_heavy_tailed_network,
    sample_network,
    simulate_latents,
)

SMALL = {
    "hidden_features": 32,
    "n_layers": 2,
    "n_steps_a": 300,
    "n_steps_b": 150,
    "n_virtual_units": 200,
    "pool_size": 2000,
    "validation_every": 20,
}


@pytest.fixture(scope="module")
def ring_data():
    net = sample_network("ring", 300, random_state=0)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(6), 30)
    return net, ConnectorData.from_loadings(net.M, lat, alpha=0.1)


@pytest.fixture(scope="module")
def small_fit(ring_data):
    _, data = ring_data
    return ConnectorEstimator(**SMALL, random_state=0).fit(data)


# --------------------------------------------------------------------------- ridge and quadrature
def _ridge_numpy(features, updates, z, alpha, lam):
    phi = np.tanh(features @ z.T)
    s = z.shape[0]
    design = (alpha / s) * phi
    return np.linalg.solve(design.T @ design + lam * np.eye(s), design.T @ updates)


@pytest.mark.parametrize("n_virtual", [20, 200])  # rows ≥ S (S×S form) and rows < S (rows form)
def test_ridge_matches_the_normal_equations(n_virtual):
    rng = np.random.default_rng(0)
    features = np.c_[rng.standard_normal((60, 2)), np.ones(60)]
    updates = rng.standard_normal((60, 2))
    z = np.c_[rng.standard_normal((n_virtual, 2)), np.zeros(n_virtual)]
    t = partial(torch.as_tensor, dtype=torch.float64)
    k = quadrature_ridge_targets(
        t(features), t(updates), t(np.ones(60)), t(z), alpha=0.1, ridge_lambda=1e-3
    )
    np.testing.assert_allclose(k.numpy(), _ridge_numpy(features, updates, z, 0.1, 1e-3), rtol=1e-6)


@pytest.mark.parametrize("n_virtual", [20, 200])
def test_ridge_state_coefficients_give_the_ridge_targets_as_a_function_of_z(n_virtual):
    rng = np.random.default_rng(1)
    t = partial(torch.as_tensor, dtype=torch.float64)
    features = t(np.c_[rng.standard_normal((60, 2)), np.ones(60)])
    updates, weights = t(rng.standard_normal((60, 2))), t(rng.integers(1, 4, 60))
    sets = [t(np.c_[rng.standard_normal((n_virtual, 2)), np.zeros(n_virtual)]) for _ in range(3)]
    kw = {"alpha": 0.1, "ridge_lambda": 1e-3}
    # One set: g*(z_s) at the set's own units is that set's ridge solution.
    beta = ridge_state_coefficients(features, updates, weights, sets[:1], **kw)
    k_set = quadrature_ridge_targets(features, updates, weights, sets[0], **kw)
    torch.testing.assert_close(torch.tanh(sets[0] @ features.T) @ beta, k_set)
    # Several sets: the Gram matrices are averaged, which is the one-set answer for identical sets.
    same = ridge_state_coefficients(features, updates, weights, [sets[0]] * 3, **kw)
    torch.testing.assert_close(same, beta)
    mixed = ridge_state_coefficients(features, updates, weights, sets, **kw)
    assert not torch.allclose(mixed, beta)


def test_state_quadrature_is_exact_without_resolution_and_close_with_it(ring_data):
    _, data = ring_data
    feats, updates = data.transitions(np.arange(36))
    assert feats.shape == (36 * 29, 3) and np.all(feats[:, 2] == 1)
    exact = build_state_quadrature(feats, updates, resolution=None)
    assert exact.weights.sum() == feats.shape[0]
    merged = build_state_quadrature(feats, updates, resolution=0.1)
    assert merged.weights.sum() == feats.shape[0]
    assert merged.features.shape[0] < 0.7 * feats.shape[0]
    np.testing.assert_allclose(merged.update_sums.sum(0), updates.sum(0), atol=1e-9)
    z = torch.as_tensor(np.c_[np.random.default_rng(1).standard_normal((100, 2)), np.zeros(100)])
    t = partial(torch.as_tensor, dtype=torch.float64)
    k_exact, k_merged = (
        quadrature_ridge_targets(
            t(q.features), t(q.update_sums), t(q.weights), z, alpha=0.1, ridge_lambda=1e-4
        ).numpy()
        for q in (exact, merged)
    )
    assert np.abs(k_merged - k_exact).max() < 0.02 * np.abs(k_exact).max()


# --------------------------------------------------------------------------- data containers
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


# --------------------------------------------------------------------------- estimator contract
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


def test_keep_best_restores_the_state_with_the_lowest_validation_error(ring_data):
    params = {**SMALL, "n_steps_a": 100, "validation_every": 10}
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


def test_flow_a_stops_when_it_fits_the_units_instead_of_their_law():
    net = sample_network("ring", 20, random_state=3)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(4), 10)
    data = ConnectorData.from_loadings(net.M, lat, alpha=0.1)
    params = {**SMALL, "n_steps_a": 3000, "n_steps_b": 5, "validation_every": 25}
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


def test_auto_sizes_are_used_and_stored(ring_data):
    params = {**SMALL, "hidden_features": "auto", "n_steps_a": "auto", "n_steps_b": 2}
    est = ConnectorEstimator(**params, random_state=0).fit(ring_data[1])
    assert est.hidden_features_ == 32 and est.max_steps_a_ == 900  # 300 units
    assert est.flow_a_.net[0].out_features == 32
    dist = est.to_distribution(5)
    assert dist.architecture["hidden_features"] == 32 and dist.model == "flows"
    assert connector_from_distribution(dist).flow_b_.net[0].out_features == 32


def test_fresh_targets_at_every_step_without_a_bank(ring_data):
    params = {**SMALL, "n_steps_a": 20, "n_steps_b": 3}
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


def test_random_state_is_honoured_exactly(ring_data, small_fit):
    again = ConnectorEstimator(**SMALL, random_state=0).fit(ring_data[1])
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


def test_fit_with_inputs_and_biases():
    rng = np.random.default_rng(0)
    net = sample_network("bistable", 200, random_state=1)
    B, d = 0.5 * rng.standard_normal((200, 1)), 0.3 * rng.standard_normal(200)
    inputs = np.repeat(rng.standard_normal((16, 1, 1)), 20, axis=1)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(4), 20, B=B, d=d, inputs=inputs)
    data = ConnectorData.from_loadings(net.M, lat, alpha=0.1, B=B, d=d, inputs=inputs)
    assert data.n_inputs == 1 and data.z.shape == (200, 4)
    est = ConnectorEstimator(**{**SMALL, "n_steps_a": 50, "n_steps_b": 5}, random_state=0)
    z, k = est.fit(data).sample(10, random_state=0)
    assert est.z_free_.tolist() == [True, True, True, True]
    assert z.shape == (10, 4) and np.all(np.isfinite(est.log_prob(z, k)))


# --------------------------------------------------------------------------- acceptance (slow)
NETWORKS = ("quadstable", "bistable", "limit_cycle", "ring")


@pytest.fixture(scope="module")
def published_fits(data_dir):
    fits = {}
    for name in NETWORKS:
        net = load_published_network(name, data_dir)
        lat = simulate_latents(net.M, net.K, grid_initial_conditions(), 100)
        data = ConnectorData.from_loadings(net.M, lat, alpha=0.1)
        fits[name] = (net, lat, ConnectorEstimator(random_state=0).fit(data))
    return fits


@pytest.mark.slow
@pytest.mark.parametrize("name", NETWORKS)
def test_acceptance_with_true_latents(published_fits, name):
    net, _, est = published_fits[name]
    z, k = est.sample(1000, random_state=1)
    m = z[:, :2]
    assert sinkhorn_divergence(net.M, m) < 0.05
    np.testing.assert_allclose(m.mean(0), net.M.mean(0), atol=0.1)
    np.testing.assert_allclose(np.cov(m.T), np.cov(net.M.T), atol=0.1)
    assert conditional_mean_error(m, k, partial(conditional_mean, name)) < 0.2
    _, v_true = flow_field(net.M, net.K)
    _, v_sampled = flow_field(m, k)
    assert flow_field_rmse(v_true, v_sampled) < 0.05
    if name in ("quadstable", "bistable"):
        truth = np.array([f.location for f in find_fixed_points(net.M, net.K) if f.stable])
        found = np.array([f.location for f in find_fixed_points(m, k) if f.stable])
        assert len(found) == len(truth)
        assert np.linalg.norm(found[:, None] - truth[None], axis=-1).min(1).max() < 0.15
    elif name == "limit_cycle":
        cycle = find_limit_cycle(m, k)
        assert (
            cycle is not None and abs(cycle.radius - find_limit_cycle(net.M, net.K).radius) < 0.05
        )
    else:  # ring: slow manifold radius from long simulations of many starts
        starts = grid_initial_conditions(6)
        r_true = np.linalg.norm(simulate_latents(net.M, net.K, starts, 300)[:, -1], axis=1)
        r_samp = np.linalg.norm(simulate_latents(m, k, starts, 300)[:, -1], axis=1)
        assert abs(np.median(r_samp) - np.median(r_true)) < 0.05


@pytest.mark.slow
def test_quadstable_gmm_structure(published_fits):
    net, lat, est = published_fits["quadstable"]
    z, k = est.sample(1000, sigma=1.0, random_state=2)
    # The reference is the network's ground-truth law, n = g(m) + N(0, I) over the true m (the
    # published recipe; its curve plateaus at -5.66 here, -5.56 in the paper). The published
    # file's K carries extra residual clusters that the dynamics do not determine (its own
    # curve plateaus at -4.41), which no maximum-entropy law can or should reproduce.
    noise = np.random.default_rng(0).standard_normal(net.K.shape)
    truth_curve = gmm_cv_log_likelihood(
        np.c_[net.M, conditional_mean("quadstable", net.M) + noise]
    )
    ours = gmm_cv_log_likelihood(np.c_[z[:, :2], k])
    assert np.argmax(ours) + 1 >= 4 and ours[3] >= ours.max() - 0.02  # peak or plateau at 4
    assert abs(ours[3] - truth_curve[3]) < 0.2
    k_gd = gradient_descent_output_loadings(net.M, lat, alpha=0.1, random_state=0)
    gd_curve = gmm_cv_log_likelihood(np.c_[net.M, k_gd])
    assert abs(gd_curve[3] - truth_curve[3]) > 0.2


@pytest.mark.slow
def test_quadstable_silencing(published_fits):
    net, _, est = published_fits["quadstable"]
    # Silencing: sampled network (σ = 0) vs truth, population by population (matched by centre).
    # 4000 sampled units, so that what is compared is the learnt law, not one finite draw of it:
    # the worst population scores 0.044-0.051 over seeds with 1000 units and 0.047-0.048 with
    # 4000 or 10000 (measured 2026-11-28). The published 1000-unit network is itself one finite
    # draw: 10000 units of its generating law score 0.030-0.063 against it (three draws).
    z0, k0 = est.sample(4000, random_state=3)
    lab_t = population_labels(np.c_[net.M, net.K])
    lab_s = population_labels(np.c_[z0[:, :2], k0])
    for p in range(4):
        centre = net.M[lab_t == p].mean(0)
        q = int(np.argmin([np.linalg.norm(z0[lab_s == j, :2].mean(0) - centre) for j in range(4)]))
        m_t, m_s = silence_population(net.M, lab_t, p), silence_population(z0[:, :2], lab_s, q)
        _, v_t = flow_field(m_t, net.K)
        _, v_s = flow_field(m_s, k0)
        assert flow_field_rmse(v_t, v_s) < 0.05
        n_t = sum(f.stable for f in find_fixed_points(m_t, net.K))
        assert sum(f.stable for f in find_fixed_points(m_s, k0)) == n_t


@pytest.mark.slow
def test_heavy_tails_are_kept_and_a_gaussian_fails():
    net = sample_heavy_tailed_network(4000, random_state=0)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(10), 50)
    data = ConnectorData.from_loadings(net.M, lat, alpha=0.1)
    est = ConnectorEstimator(n_steps_b=50, random_state=0).fit(data)
    m = est.sample(100_000, random_state=0)[0][:, :2]
    gauss = np.random.default_rng(0).multivariate_normal(
        net.M.mean(0), np.cov(net.M.T), size=100_000
    )

    def stats(x):
        q = np.quantile(np.abs(x), [0.99, 0.999])
        kurt = np.mean((x - x.mean(0)) ** 4, 0) / np.var(x, 0) ** 2
        return np.r_[q, kurt.mean()]

    truth = stats(net.M)
    assert np.all(np.abs(stats(m) / truth - 1) < 0.2)
    assert np.any(np.abs(stats(gauss) / truth - 1) > 0.2)
