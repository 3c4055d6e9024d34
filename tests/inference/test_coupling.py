"""Block-plus-low-rank algebra and the coupling subspace of the structured posterior."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from nwb_lrconn.inference.coupling import BlockLowRank, coupling_subspace
from nwb_lrconn.inference.curvature import gauge_directions, linearise


def _random_matrix(seed=0, n_blocks=7, p=3, m=5):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_blocks, p, p))
    blocks = a @ a.transpose(0, 2, 1) + p * np.eye(p)
    index = rng.permutation(n_blocks * p).reshape(n_blocks, p)
    vectors = rng.normal(size=(n_blocks * p, m)) / np.sqrt(n_blocks * p)
    values = rng.normal(size=m)  # either sign, small enough to stay positive definite
    dense = np.zeros((n_blocks * p, n_blocks * p))
    for i, idx in enumerate(index):
        dense[np.ix_(idx, idx)] = blocks[i]
    dense += (vectors * values) @ vectors.T
    assert np.linalg.eigvalsh(dense).min() > 0
    return BlockLowRank(blocks, index, vectors, values), dense


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_low_rank_matches_its_dense_matrix(seed):
    cov, dense = _random_matrix(seed)
    n = dense.shape[0]
    x = np.random.default_rng(seed + 10).normal(size=(n, 4))
    np.testing.assert_allclose(cov.matvec(x), dense @ x, rtol=1e-12)
    np.testing.assert_allclose(cov.solve(x), np.linalg.solve(dense, x), rtol=1e-9)
    np.testing.assert_allclose(cov.diagonal(), dense.diagonal(), rtol=1e-12)
    idx = cov.index
    np.testing.assert_allclose(cov.marginal_blocks(), dense[idx[:, :, None], idx[:, None, :]])
    assert cov.logdet() == pytest.approx(np.linalg.slogdet(dense)[1], rel=1e-10)
    root = cov.sqrt_apply(np.eye(n))
    np.testing.assert_allclose(root @ root.T, dense, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov.whiten(root), np.eye(n), atol=1e-9)
    evals = np.linalg.eigvalsh(dense)
    for level in np.quantile(evals, [0.0, 0.1, 0.5, 0.9]) + 1e-6:
        assert cov.count_below(level) == int(np.sum(evals < level))
    assert cov.count_below(evals.max() + 1.0) == n


def test_coupling_subspace_contains_gauge_and_shrinks_its_residual(make_case):
    fit, recording = make_case(n_units=12, observation="poisson")
    lin = linearise(fit, recording)
    gauge = linalg.orth(gauge_directions(fit.M, fit.K, 0))
    rng = np.random.default_rng(0)
    small = coupling_subspace(lin, gauge, tol=1e-12, max_rank=8, rng=rng, block=8)
    large = coupling_subspace(lin, gauge, tol=1e-12, max_rank=40, rng=rng, block=8)
    full = coupling_subspace(lin, gauge, tol=1e-12, max_rank=1000, rng=rng, block=64)
    for sub in (small, large, full):
        np.testing.assert_allclose(sub.basis.T @ sub.basis, np.eye(sub.basis.shape[1]), atol=1e-10)
        np.testing.assert_allclose(sub.basis[:, : gauge.shape[1]], gauge)
    assert small.basis.shape[1] == gauge.shape[1] + 8
    assert 0 < large.residual < small.residual <= 1
    assert full.basis.shape[1] == lin.n_params and full.residual == 0.0
