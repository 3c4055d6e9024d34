"""Ridge targets and the state quadrature (inference.connector.ridge)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from nwb_lrconn.inference.connector import (
    build_state_quadrature,
    quadrature_ridge_targets,
    ridge_state_coefficients,
)


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
