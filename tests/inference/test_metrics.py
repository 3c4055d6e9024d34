"""Metrics: Sinkhorn divergence, dissimilarities, GMM curve, populations, silencing, baselines."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from nwb_lrconn.inference.dynamics import find_fixed_points, flow_field, flow_field_rmse
from nwb_lrconn.inference.metrics import (
    conditional_mean_error,
    connectivity_dissimilarity,
    gmm_cv_log_likelihood,
    gradient_descent_output_loadings,
    population_labels,
    silence_population,
    sinkhorn_divergence,
    valente_dissimilarity,
)
from nwb_lrconn.model.networks import (
    conditional_mean,
    grid_initial_conditions,
    sample_network,
    simulate_latents,
)


def test_sinkhorn_of_a_translation_is_half_the_squared_shift():
    # For cost |x−y|²/2, S(a, a + μ) = ½|μ|² exactly (the debiased divergence removes the blur).
    x = np.random.default_rng(0).standard_normal((300, 2))
    mu = np.array([0.3, -0.2])
    assert sinkhorn_divergence(x, x + mu) == pytest.approx(0.5 * mu @ mu, rel=1e-6)
    assert sinkhorn_divergence(x, x) == pytest.approx(0.0, abs=1e-9)


def test_sinkhorn_matches_gaussian_w2():
    # A dilation y = 1.5 x is the OT map (gradient of a convex function), so
    # W₂² = mean |0.5 x|²; for N(0, I) vs N(0, 1.5² I) in 2-D this is 0.5 and S ≈ ½ W₂² = 0.25.
    x = np.random.default_rng(1).standard_normal((400, 2))
    y = 1.5 * x
    expected = 0.5 * np.mean(np.sum((0.5 * x) ** 2, axis=1))
    value = sinkhorn_divergence(x, y, scaling=0.9)
    assert value == pytest.approx(expected, rel=0.03)
    assert expected == pytest.approx(0.25, abs=0.03)
    assert sinkhorn_divergence(y, x, scaling=0.9) == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"y": np.zeros((3, 3))}, r"y must have shape \(any, 2\)"),
        ({"blur": 0.0}, "blur must be finite and > 0"),
        ({"scaling": 1.0}, r"scaling must be in \(0, 1\); got 1.0"),
    ],
)
def test_sinkhorn_validation(kwargs, match):
    args = {"x": np.zeros((3, 2)), "y": np.ones((3, 2)), **kwargs}
    with pytest.raises(ValueError, match=match):
        sinkhorn_divergence(**args)


def test_conditional_mean_error_and_dissimilarity():
    net = sample_network("ring", 400, random_state=0)
    g = partial(conditional_mean, "ring")
    assert conditional_mean_error(net.M, g(net.M), g) == 0.0
    assert conditional_mean_error(net.M, g(net.M) + 1.0, g) == pytest.approx(2.0)
    same = connectivity_dissimilarity(net.M, net.M, g(net.M), g)
    other = connectivity_dissimilarity(net.M, net.M, conditional_mean("bistable", net.M), g)
    assert same == pytest.approx(0.0, abs=1e-9)
    assert other > 0.5
    with pytest.raises(ValueError, match=r"g\(m\) must have shape"):
        conditional_mean_error(net.M, net.K[:10], g)


def test_valente_is_gauge_invariant_and_rejects_mismatched_sizes():
    net = sample_network("limit_cycle", 300, random_state=0)
    A = np.array([[2.0, 0.5], [-0.3, 1.0]])
    M2, K2 = net.M @ A, net.K @ np.linalg.inv(A).T
    assert valente_dissimilarity(net.M, net.K, M2, K2) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="same number of units in A and B; got 300 and 10"):
        valente_dissimilarity(net.M, net.K, net.M[:10], net.K[:10])


def test_gmm_curve_peaks_at_the_number_of_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [4, 0], [0, 4]])
    X = np.concatenate([c + 0.5 * rng.standard_normal((100, 2)) for c in centres])
    curve = gmm_cv_log_likelihood(X, n_components=range(1, 6), random_state=0)
    assert curve.shape == (5,)
    assert int(np.argmax(curve)) + 1 == 3 or curve[2] >= curve.max() - 0.02
    with pytest.raises(ValueError, match="n_folds must be >= 2; got 1"):
        gmm_cv_log_likelihood(X, n_folds=1)


def test_silencing_a_quadstable_population_removes_its_attractor():
    net = sample_network("quadstable", 800, random_state=0)
    labels = population_labels(np.c_[net.M, net.K], random_state=0)
    comp = np.arange(800) % 4  # the generator's components
    # k-means recovers the 4 planted populations (up to relabelling).
    table = np.zeros((4, 4), int)
    np.add.at(table, (labels, comp), 1)
    assert (table.max(axis=1) / table.sum(axis=1)).min() > 0.85
    silenced = silence_population(net.M, labels, 0)
    assert np.all(silenced[labels == 0] == 0) and np.all(
        silenced[labels != 0] == net.M[labels != 0]
    )
    n_stable = sum(f.stable for f in find_fixed_points(silenced, net.K))
    assert n_stable == 2  # 4 attractors minus the silenced population's two corners
    _, v0 = flow_field(net.M, net.K)
    _, v1 = flow_field(silenced, net.K)
    assert flow_field_rmse(v0, v1) > 0.05
    with pytest.raises(ValueError, match=r"population 7 not among the labels \[0, 1, 2, 3\]"):
        silence_population(net.M, labels, 7)


def test_least_squares_baseline_fits_updates_but_not_the_conditional_mean():
    # Fewer visited states (16 trials × 19 transitions) than units (400): Φ has a null space.
    net = sample_network("quadstable", 400, random_state=0)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(4), 20)
    g = partial(conditional_mean, "quadstable")
    truth_error = conditional_mean_error(net.M, net.K, g)  # ≈ 2 (k = g(m) + N(0, I))
    K_min = gradient_descent_output_loadings(net.M, lat, alpha=0.1, init_scale=0.0)
    K_gd = gradient_descent_output_loadings(net.M, lat, alpha=0.1, random_state=0)
    for K in (K_min, K_gd):  # both reproduce the latent updates on the data
        np.testing.assert_allclose(simulate_latents(net.M, K, lat[:, 0], 20), lat, atol=1e-8)
    # Minimum norm ≈ ridge with λ → 0 lies near g; gradient descent from a N(0, 2²) start keeps
    # the start's null-space part: spurious spread unrelated to m.
    error_min = conditional_mean_error(net.M, K_min, g)
    assert error_min < truth_error
    assert conditional_mean_error(net.M, K_gd, g) > max(truth_error, 4 * error_min)
    with pytest.raises(ValueError, match="init_scale must be finite and >= 0"):
        gradient_descent_output_loadings(net.M, lat, alpha=0.1, init_scale=-1.0)
