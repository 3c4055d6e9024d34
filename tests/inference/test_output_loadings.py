"""Closed-form K-block pieces: Φ, F_K, ridge and least-squares K̂."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nwb_lrconn.inference.degeneracy import classify_directions
from nwb_lrconn.inference.dynamics import flow_field, flow_field_rmse
from nwb_lrconn.inference.output_loadings import (
    k_block_fisher,
    latent_updates,
    least_squares_output_loadings,
    ridge_output_loadings,
    state_matrix,
)
from nwb_lrconn.model.networks import (
    NETWORK_NAMES,
    conditional_mean,
    grid_initial_conditions,
    load_published_network,
    simulate_latents,
)


def _small(n_units=10, rank=2, n_trials=6, n_time=30, seed=0, duplicates=1):
    rng = np.random.default_rng(seed)
    M = np.repeat(rng.normal(size=(n_units // duplicates, rank)), duplicates, axis=0)
    K = 1.6 * M + rng.normal(size=M.shape)
    latents = simulate_latents(M, K, rng.uniform(-2, 2, (n_trials, rank)), n_time)
    return M, K, latents, np.ones((n_trials, n_time), bool)


def test_state_matrix_rows_and_values():
    M, _, latents, mask = _small()
    mask[0, 20:] = False
    Phi = state_matrix(latents, mask, M)
    assert Phi.shape == (mask.sum(), M.shape[0])
    np.testing.assert_allclose(Phi[0], np.tanh(M @ latents[0, 0]))
    upd = state_matrix(latents, mask, M, updates_only=True)
    assert upd.shape[0] == latent_updates(latents, mask, alpha=0.1).shape[0] == mask.sum() - 6


def test_k_block_fisher_matches_autodiff_hessian():
    """F_K = (α/N)² ΦᵀΦ ⊗ I_R / σ² equals the Hessian of the Gaussian update likelihood."""
    M, K, latents, mask = _small()
    sigma, alpha = 0.3, 0.1
    Phi = state_matrix(latents, mask, M, updates_only=True)
    Y = latent_updates(latents, mask, alpha=alpha)
    n_units, rank = M.shape
    X, Yt = torch.as_tensor(Phi), torch.as_tensor(Y)

    def nll(k):
        resid = Yt - (alpha / n_units) * X @ k.reshape(n_units, rank)
        return 0.5 * (resid**2).sum() / sigma**2

    hess = torch.autograd.functional.hessian(nll, torch.as_tensor(K).reshape(-1)).numpy()
    F = k_block_fisher(Phi, alpha=alpha, n_units=n_units, rank=rank, noise_std=sigma)
    np.testing.assert_allclose(F, hess, rtol=1e-8, atol=1e-8 * np.abs(hess).max())


@pytest.mark.parametrize("duplicates", [2, 5])
def test_degenerate_count_is_r_times_nullity(duplicates):
    """Units sharing the same m give identical Φ columns: rank Φ = N / duplicates."""
    M, _, latents, mask = _small(n_units=20, duplicates=duplicates)
    Phi = state_matrix(latents, mask, M, updates_only=True)
    rank_phi = 20 // duplicates
    assert np.linalg.matrix_rank(Phi) == rank_phi
    F = k_block_fisher(Phi, alpha=0.1, n_units=20, rank=2, noise_std=0.01)
    n_constrained, n_degenerate = classify_directions(np.linalg.eigvalsh(F), 1e-8)
    assert n_degenerate == 2 * (20 - rank_phi)
    assert n_constrained == 2 * rank_phi


def test_linear_gaussian_toy_posterior_is_exact():
    """Ridge mean and (F_K + λI)⁻¹ equal Bayesian linear regression done by brute force."""
    M, K, latents, mask = _small(n_units=6, n_trials=4, n_time=15)
    rng = np.random.default_rng(3)
    alpha, sigma, lam = 0.1, 0.05, 2.0
    noisy = latents + 0.01 * rng.normal(size=latents.shape)
    Phi = state_matrix(noisy, mask, M, updates_only=True)
    Y = latent_updates(noisy, mask, alpha=alpha)
    n_units, rank = M.shape
    # Design over vec(K) (C order): y_(s, r) = Σ_i (α/N) Φ[s, i] K[i, r].
    design = np.kron((alpha / n_units) * Phi, np.eye(rank))
    cov = np.linalg.inv(design.T @ design / sigma**2 + lam * np.eye(n_units * rank))
    mean = cov @ design.T @ Y.reshape(-1) / sigma**2
    K_hat = ridge_output_loadings(
        noisy, mask, M, alpha=alpha, prior_precision=lam, noise_std=sigma
    )
    np.testing.assert_allclose(K_hat.reshape(-1), mean, rtol=1e-9, atol=1e-12)
    F = k_block_fisher(Phi, alpha=alpha, n_units=n_units, rank=rank, noise_std=sigma)
    np.testing.assert_allclose(np.linalg.inv(F + lam * np.eye(F.shape[0])), cov, rtol=1e-9)


def test_ridge_matches_published_closed_form():
    """k̂ = (S/α)(ΦᵀΦ + λS²/α² I)⁻¹ΦᵀY with S = N (the published convention, σ = 1)."""
    M, _, latents, mask = _small()
    alpha, lam, S = 0.1, 1e-3, M.shape[0]
    Phi = state_matrix(latents, mask, M, updates_only=True)
    Y = latent_updates(latents, mask, alpha=alpha)
    ref = (S / alpha) * np.linalg.solve(Phi.T @ Phi + lam * S**2 / alpha**2 * np.eye(S), Phi.T @ Y)
    got = ridge_output_loadings(latents, mask, M, alpha=alpha, prior_precision=lam)
    np.testing.assert_allclose(got, ref, rtol=1e-8)


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_published_ridge_recovers_conditional_mean(name, data_dir):
    """λ = 1e-4 ridge on the true latents lands near g(m); plain least squares does not."""
    net = load_published_network(name, data_dir)
    latents = simulate_latents(net.M, net.K, grid_initial_conditions(20, 2.4), 100)
    mask = np.ones(latents.shape[:2], bool)
    K_ridge = ridge_output_loadings(latents, mask, net.M, alpha=0.1, prior_precision=1e-4)
    mse = np.mean((K_ridge - conditional_mean(name, net.M)) ** 2)
    assert mse < 0.15
    if name == "quadstable":
        K_ls = least_squares_output_loadings(latents, mask, net.M, alpha=0.1)
        assert K_ls.std() > 20
        # It still reproduces the latent updates and the flow field.
        Phi = state_matrix(latents, mask, net.M, updates_only=True)
        Y = latent_updates(latents, mask, alpha=0.1)
        resid = Y - (0.1 / net.n_units) * Phi @ K_ls
        assert np.abs(resid).max() < 1e-3 * np.abs(Y).max()
        _, truth = flow_field(net.M, net.K, extent=1.5)
        _, fitted = flow_field(net.M, K_ls, extent=1.5)
        assert flow_field_rmse(truth, fitted) < 0.05


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda M, L, m: state_matrix(L, m[:, :-1], M), r"mask must have shape"),
        (lambda M, L, m: state_matrix(L, m, M[:, :1]), r"M must have shape"),
        (
            lambda M, L, m: state_matrix(L, m, M, inputs=np.zeros((6, 30, 1))),
            "inputs were given without input weights B",
        ),
        (
            lambda M, L, m: state_matrix(
                L, m, M, inputs=np.zeros((6, 29, 1)), B=np.zeros((10, 1))
            ),
            r"inputs must have shape \(6, 30, n_inputs\)",
        ),
        (
            lambda M, L, m: k_block_fisher(np.ones((5, 4)), alpha=0.1, n_units=3, rank=2),
            "Phi must have n_units=3 columns",
        ),
        (
            lambda M, L, m: ridge_output_loadings(L, m, M, alpha=0.1, prior_precision=0.0),
            "prior_precision must be finite and > 0",
        ),
        (
            lambda M, L, m: ridge_output_loadings(L, m & False, M, alpha=0.1, prior_precision=1.0),
            "mask leaves no pair of consecutive valid bins",
        ),
        (
            lambda M, L, m: least_squares_output_loadings(L, m, M, alpha=-1.0),
            "alpha must be finite and > 0",
        ),
    ],
)
def test_validation_messages(call, match):
    M, _, latents, mask = _small()
    with pytest.raises(ValueError, match=match):
        call(M, latents, mask)
