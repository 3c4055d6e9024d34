"""Connector on the published networks with true latents (acceptance, slow)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from nwb_lrconn.inference.connector import (
    ConnectorData,
    ConnectorEstimator,
)
from nwb_lrconn.inference.dynamics import (
    find_fixed_points,
    find_limit_cycle,
    flow_field,
    flow_field_rmse,
)
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
    simulate_latents,
)

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
    # with 1000 units the worst population's score scatters across the 0.05 tolerance from seed
    # to seed. The published 1000-unit network is itself one finite draw of its law, which is
    # why the tolerance is not tighter.
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
