"""Canonical gauge and affine alignment."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_lrconn.inference.dynamics import latent_velocity
from nwb_lrconn.model.gauge import align_latents, apply_gauge, canonical_gauge
from nwb_lrconn.model.networks import sample_network, simulate_latents


@pytest.fixture(scope="module")
def small():
    net = sample_network("limit_cycle", 60, random_state=3)
    rng = np.random.default_rng(0)
    latents = simulate_latents(net.M, net.K, rng.uniform(-2, 2, (10, 2)), 40)
    return net, latents


def test_canonical_gauge_whitens_and_diagonalises(small):
    net, latents = small
    A = canonical_gauge(latents, net.M)
    M, K, B, d, lat = apply_gauge(net.M, net.K, np.zeros((60, 0)), np.zeros(60), latents, A)
    pts = lat.reshape(-1, 2)
    np.testing.assert_allclose(pts.T @ pts / pts.shape[0], np.eye(2), atol=1e-10)
    gram = M.T @ M
    assert abs(gram[0, 1]) < 1e-8 and gram[0, 0] >= gram[1, 1]
    for r in range(2):
        assert M[np.argmax(np.abs(M[:, r])), r] > 0
    # The potentials and the connectivity do not change.
    np.testing.assert_allclose(lat @ M.T, latents @ net.M.T, atol=1e-10)
    np.testing.assert_allclose(M @ K.T, net.M @ net.K.T, atol=1e-10)


def test_canonical_gauge_is_unique_across_gauges(small):
    """Two fits that differ by a gauge map to the same canonical numbers."""
    net, latents = small
    G = np.array([[0.3, -1.2], [2.0, 0.7]])
    M1, K1, B1, d1, l1 = apply_gauge(net.M, net.K, np.zeros((60, 0)), np.zeros(60), latents, G)
    outs = []
    for M, K, lat in ((net.M, net.K, latents), (M1, K1, l1)):
        A = canonical_gauge(lat, M)
        outs.append(apply_gauge(M, K, np.zeros((60, 0)), np.zeros(60), lat, A))
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_allclose(a, b, atol=1e-8)


def test_dynamics_are_preserved_by_a_linear_gauge(small):
    net, latents = small
    A = np.array([[1.5, 0.2], [-0.4, 0.8]])
    M, K, _, _, lat = apply_gauge(net.M, net.K, np.zeros((60, 0)), np.zeros(60), latents, A)
    sim = simulate_latents(M, K, lat[:, 0], 40)
    np.testing.assert_allclose(sim, lat, atol=1e-10)
    pts = np.array([[0.3, -0.5], [1.0, 1.0]])
    np.testing.assert_allclose(
        latent_velocity(pts, M, K), latent_velocity(pts @ np.linalg.inv(A).T, net.M, net.K) @ A.T
    )


def test_align_latents_recovers_an_affine_map(small):
    _, latents = small
    A_true, c_true = np.array([[2.0, 1.0], [-0.5, 0.3]]), np.array([0.4, -1.0])
    reference = latents @ A_true.T + c_true
    A, c = align_latents(latents, reference)
    np.testing.assert_allclose(A, A_true, atol=1e-10)
    np.testing.assert_allclose(c, c_true, atol=1e-10)
    A0, c0 = align_latents(latents, latents @ A_true.T, affine=False)
    np.testing.assert_allclose(A0, A_true, atol=1e-10)
    assert np.all(c0 == 0)


def test_apply_gauge_with_offset_preserves_potentials(small):
    net, latents = small
    A, c = np.array([[2.0, 1.0], [-0.5, 0.3]]), np.array([0.4, -1.0])
    d = np.linspace(-1, 1, 60)
    M, _, _, d2, lat = apply_gauge(net.M, net.K, np.zeros((60, 0)), d, latents, A, c)
    np.testing.assert_allclose(lat @ M.T + d2, latents @ net.M.T + d, atol=1e-10)


def test_gauge_errors(small):
    net, latents = small
    flat = np.zeros_like(latents)
    flat[..., 0] = 1.0
    with pytest.raises(ValueError, match="span fewer than 2 dimensions"):
        canonical_gauge(flat, net.M)
    with pytest.raises(ValueError, match="mask selects no bin"):
        canonical_gauge(latents, net.M, np.zeros(latents.shape[:2], bool))
    with pytest.raises(ValueError, match="reference must cover the same trials and bins"):
        align_latents(latents, latents[:2])
    with pytest.raises(ValueError, match="A must be square"):
        apply_gauge(net.M, net.K, np.zeros((60, 0)), np.zeros(60), latents, np.ones((2, 3)))
