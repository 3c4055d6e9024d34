"""Laplace posterior: curvature against independent oracles, gauge nulls, sampling, densities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from scipy.stats import multivariate_normal

from nwb_lrconn.data import LowRankFit, Recording
from nwb_lrconn.inference.curvature import (
    dense_profiled_ggn,
    flatten_parameters,
    gauge_directions,
    initial_state_terms,
    linearise,
    output_block_matvec,
    profiled_ggn_matvec,
    unit_diagonal_blocks,
    unit_indices,
)
from nwb_lrconn.inference.laplace import (
    LaplacePosterior,
    laplace_posterior,
    log_prob,
    sample,
    unflatten,
)
from nwb_lrconn.model.networks import phi, simulate_latents
from nwb_lrconn.model.rollout import latent_rollout


def make_case(
    n_units=8,
    rank=2,
    n_trials=5,
    n_time=20,
    n_inputs=0,
    observation="gaussian",
    nonlinearity="tanh",
    seed=0,
):
    """A ground-truth "fit" and the recording it explains (no fitter needed)."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n_units, rank))
    K = 1.6 * M + rng.normal(size=(n_units, rank))
    B = rng.normal(size=(n_units, n_inputs))
    d = 0.3 * rng.normal(size=n_units)
    inputs = rng.normal(size=(n_trials, n_time, n_inputs)) if n_inputs else None
    initial = rng.uniform(-2, 2, size=(n_trials, rank))
    latents = simulate_latents(
        M, K, initial, n_time, nonlinearity=nonlinearity, B=B, d=d, inputs=inputs
    )
    x = latents @ M.T + d + (0 if inputs is None else inputs @ B.T)
    gain, offset = 1 + 0.5 * rng.random(n_units), 0.1 * rng.normal(size=n_units)
    eta = gain * phi(x, nonlinearity) + offset
    mask = np.ones((n_trials, n_time), bool)
    mask[-1, n_time // 2 :] = False
    if observation == "poisson":
        data = rng.poisson(np.logaddexp(0, eta)).astype(float)
        noise = np.ones(n_units)
    else:
        noise = np.full(n_units, 0.3)
        data = eta + noise * rng.normal(size=eta.shape)
    data[~mask] = 0
    recording = Recording(
        data=data,
        mask=mask,
        bin_width=0.02,
        kind="spikes" if observation == "poisson" else "rates",
        unit_ids=np.arange(n_units),
        unit_rows=np.arange(n_units),
        trial_start_times=np.arange(n_trials, dtype=float),
        inputs=inputs,
    )
    fit = LowRankFit(
        M=M,
        K=K,
        B=B,
        d=d,
        readout_gain=gain,
        readout_offset=offset,
        noise_std=noise,
        rank=rank,
        nonlinearity=nonlinearity,
        alpha=0.1,
        bin_width=0.02,
        observation=observation,
        latents=latents,
        latent_mask=mask,
        trial_start_times=np.arange(n_trials, dtype=float),
        loss_history=np.zeros((0, 2)),
        metrics={},
        unit_quality=np.zeros(n_units),
        train_trials=np.arange(n_trials),
        test_trials=np.arange(0),
        unit_ids=np.arange(n_units),
    )
    return fit, recording


CASES = [
    dict(observation="gaussian"),
    dict(observation="poisson", n_inputs=1),
    dict(observation="calcium", nonlinearity="softplus", rank=3),
]


def _hessian_oracle(fit, recording):
    """Fisher = Hessian of the NLL at data equal to the model mean; profile κ(0) by Schur."""
    n_trials, n_time, n_units = recording.data.shape
    rank, n_inputs = fit.rank, fit.B.shape[1]
    P = n_units * (2 * rank + n_inputs + 1)
    inputs = None if recording.inputs is None else torch.as_tensor(recording.inputs)
    gain, offset = torch.as_tensor(fit.readout_gain), torch.as_tensor(fit.readout_offset)
    mask = torch.as_tensor(recording.mask, dtype=torch.float64)[..., None]
    act = {"tanh": torch.tanh, "softplus": torch.nn.functional.softplus}[fit.nonlinearity]

    def eta(params):
        th, k0 = params[:P], params[P:].reshape(n_trials, rank)
        nr, nd = n_units * rank, n_units * n_inputs
        M, K = th[:nr].reshape(n_units, rank), th[nr : 2 * nr].reshape(n_units, rank)
        B, d = th[2 * nr : 2 * nr + nd].reshape(n_units, n_inputs), th[2 * nr + nd :]
        _, x = latent_rollout(M, K, B, d, k0, n_time, alpha=fit.alpha, inputs=inputs,
                              nonlinearity=fit.nonlinearity)  # fmt: skip
        return gain * act(x) + offset

    theta0 = torch.as_tensor(np.concatenate([flatten_parameters(fit.M, fit.K, fit.B, fit.d),
                                             fit.latents[:, 0].ravel()]))  # fmt: skip
    with torch.no_grad():
        target = eta(theta0)
        if fit.observation == "poisson":
            target = fit.bin_width * torch.nn.functional.softplus(target)

    def nll(params):
        e = eta(params)
        if fit.observation == "poisson":
            rate = fit.bin_width * torch.nn.functional.softplus(e)
            return ((rate - target * torch.log(rate)) * mask).sum()
        noise = torch.as_tensor(fit.noise_std)
        return (0.5 * (e - target) ** 2 / noise**2 * mask).sum()

    H = torch.autograd.functional.hessian(nll, theta0).numpy()
    F = H[:P, :P].copy()
    for n in range(n_trials):
        idx = P + np.arange(n * rank, (n + 1) * rank)
        F -= H[:P, idx] @ np.linalg.pinv(H[np.ix_(idx, idx)]) @ H[idx, :P]
    return F


@pytest.mark.parametrize("case", CASES)
def test_dense_fisher_matches_hessian_oracle(case):
    fit, recording = make_case(**case)
    F = dense_profiled_ggn(linearise(fit, recording)).numpy()
    oracle = _hessian_oracle(fit, recording)
    np.testing.assert_allclose(F, oracle, rtol=1e-8, atol=1e-8 * np.abs(oracle).max())


@pytest.mark.parametrize("case", CASES)
def test_matrix_free_pieces_match_dense(case):
    fit, recording = make_case(**case)
    lin = linearise(fit, recording)
    F = dense_profiled_ggn(lin, max_elements=5000).numpy()  # several trial chunks
    terms = initial_state_terms(lin, chunk_elements=2000)
    P, scale = F.shape[0], np.abs(F).max()
    eye = torch.eye(P, dtype=torch.float64)
    Fv = np.stack([profiled_ggn_matvec(lin, terms, eye[i]).numpy() for i in range(P)], axis=1)
    np.testing.assert_allclose(Fv, F, atol=1e-11 * scale)
    NR = fit.n_units * fit.rank
    FK = output_block_matvec(lin, terms, torch.eye(NR, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(FK, F[NR : 2 * NR, NR : 2 * NR], atol=1e-11 * scale)
    blocks = unit_diagonal_blocks(lin, terms, unit_chunk_elements=100).numpy()  # several chunks
    index = unit_indices(fit.n_units, fit.rank, fit.B.shape[1])
    np.testing.assert_allclose(blocks, F[index[:, :, None], index[:, None, :]], atol=1e-11 * scale)


@pytest.mark.parametrize("case", CASES)
def test_gauge_directions_are_exact_nulls(case):
    fit, recording = make_case(**case)
    F = dense_profiled_ggn(linearise(fit, recording)).numpy()
    G = linalg.orth(gauge_directions(fit.M, fit.K, fit.B.shape[1]))
    assert G.shape[1] == fit.rank**2
    assert np.abs(F @ G).max() < 1e-10 * np.abs(F).max()
    evals = np.linalg.eigvalsh(F)
    assert np.sum(np.abs(evals) < 1e-10 * evals.max()) == fit.rank**2


def test_connectivity_invariant_along_gauge():
    fit, _ = make_case(rank=3)
    nr = fit.n_units * fit.rank
    J = fit.M @ fit.K.T / fit.n_units
    for g in gauge_directions(fit.M, fit.K, 0).T:
        dM, dK = g[:nr].reshape(fit.M.shape), g[nr : 2 * nr].reshape(fit.K.shape)
        assert np.abs(g[2 * nr :]).max() == 0.0  # B and d do not move
        # dJ = (dM Kᵀ + M dKᵀ)/N vanishes: J is invariant to first order ...
        np.testing.assert_allclose(dM @ fit.K.T + fit.M @ dK.T, 0.0, atol=1e-12)
        eps = 1e-4
        moved = (fit.M + eps * dM) @ (fit.K + eps * dK).T / fit.n_units
        assert np.abs(moved - J).max() < 10 * eps**2 * np.abs(J).max()
    # ... and a finite gauge transformation leaves J exactly unchanged.
    A = np.eye(3) + 0.3 * np.random.default_rng(0).normal(size=(3, 3))
    J_moved = (fit.M @ np.linalg.inv(A)) @ (fit.K @ A.T).T / fit.n_units
    np.testing.assert_allclose(J_moved, J, atol=1e-12)


@pytest.mark.parametrize("case", CASES[:2])
def test_dense_posterior_covariance_sample_and_density(case):
    fit, recording = make_case(**case)
    lam = 0.5
    post = laplace_posterior(fit, recording, prior_precision=lam)
    assert post.structure == "dense"
    F = dense_profiled_ggn(linearise(fit, recording)).numpy()
    cov = np.linalg.inv(F + lam * np.eye(F.shape[0]))
    np.testing.assert_allclose(post.covariance, cov, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(post.mean, flatten_parameters(fit.M, fit.K, fit.B, fit.d))
    draws = sample(post, (20000,), random_state=0)
    assert draws.shape == (20000, post.n_params)
    assert np.abs(draws.mean(0) - post.mean).max() < 5 * np.sqrt(cov.diagonal().max() / 20000)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05 * np.abs(cov).max())
    ref = multivariate_normal(post.mean, cov).logpdf(draws[:7])
    np.testing.assert_allclose(log_prob(post, draws[:7]), ref, rtol=1e-8)
    np.testing.assert_array_equal(sample(post, (3,), random_state=1), sample(post, (3,), 1))


def test_blocks_with_all_eigenpairs_is_exact():
    """With every non-gauge eigenpair kept, the block-plus-low-rank posterior is exact."""
    fit, recording = make_case(n_units=6, observation="poisson", n_inputs=1)
    dense = LaplacePosterior(laplace_posterior(fit, recording, structure="dense"))
    P = dense.posterior.n_params
    blocks = LaplacePosterior(
        laplace_posterior(
            fit,
            recording,
            structure="blocks",
            eigen_subspace="all",
            n_eigenpairs=P - fit.rank**2,
        )
    )
    np.testing.assert_allclose(blocks.variance, dense.variance, rtol=1e-6)
    np.testing.assert_allclose(blocks.unit_covariance(), dense.unit_covariance(), atol=1e-6)
    theta = dense.sample((5,), random_state=0)
    np.testing.assert_allclose(blocks.log_prob(theta), dense.log_prob(theta), rtol=1e-6)


@pytest.mark.parametrize("subspace", ["output", "all"])
def test_blocks_posterior_is_self_consistent(subspace):
    """Variances, unit blocks, samples and densities all describe the same Gaussian Π⁻¹."""
    fit, recording = make_case(n_units=10, observation="poisson")
    post = laplace_posterior(
        fit, recording, structure="blocks", eigen_subspace=subspace, n_eigenpairs=6
    )
    lp = LaplacePosterior(post)
    P, lam = post.n_params, post.prior_precision
    # Rebuild Π densely from the stored fields.
    A = np.zeros((P, P))
    for i, idx in enumerate(post.unit_indices):
        A[np.ix_(idx, idx)] = np.linalg.inv(post.unit_blocks[i])
    A += (post.eigenvectors * post.eigenvalues) @ post.eigenvectors.T
    G = linalg.orth(gauge_directions(fit.M, fit.K, 0))
    perp = np.eye(P) - G @ G.T
    cov = np.linalg.inv(perp @ A @ perp + lam * G @ G.T)
    np.testing.assert_allclose(lp.variance, cov.diagonal(), rtol=1e-8)
    idx = post.unit_indices
    np.testing.assert_allclose(lp.unit_covariance(), cov[idx[:, :, None], idx[:, None, :]],
                               atol=1e-10)  # fmt: skip
    draws = lp.sample((20000,), random_state=0)
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05 * np.abs(cov).max())
    ref = multivariate_normal(post.mean, cov).logpdf(draws[:5])
    np.testing.assert_allclose(lp.log_prob(draws[:5]), ref, rtol=1e-8)
    # The leading eigenvalues are those of F (or of its K-block).
    F = dense_profiled_ggn(linearise(fit, recording)).numpy()
    NR = fit.n_units * fit.rank
    target = F[NR : 2 * NR, NR : 2 * NR] if subspace == "output" else perp @ F @ perp
    np.testing.assert_allclose(post.eigenvalues, np.linalg.eigvalsh(target)[::-1][:6], rtol=1e-6)


def test_unflatten_round_trip():
    fit, recording = make_case(n_inputs=2)
    post = laplace_posterior(fit, recording)
    parts = unflatten(post, np.stack([post.mean, post.mean]))
    assert set(parts) == {"M", "K", "B", "d"}
    np.testing.assert_array_equal(parts["K"][1], fit.K)
    np.testing.assert_array_equal(parts["B"][0], fit.B)
    np.testing.assert_array_equal(LaplacePosterior(post).unflatten(post.mean)["d"], fit.d)


def test_validation_messages():
    fit, recording = make_case()
    other_fit, other_rec = make_case(n_units=5)
    post = laplace_posterior(fit, recording)
    with pytest.raises(ValueError, match="structure must be one of"):
        laplace_posterior(fit, recording, structure="sparse")
    with pytest.raises(ValueError, match="eigen_subspace must be one of"):
        laplace_posterior(fit, recording, eigen_subspace="input")
    with pytest.raises(ValueError, match="prior_precision must be finite and > 0"):
        laplace_posterior(fit, recording, prior_precision=-1.0)
    with pytest.raises(ValueError, match="n_eigenpairs must be between 1 and 16"):
        laplace_posterior(fit, recording, structure="blocks", n_eigenpairs=17)
    with pytest.raises(ValueError, match="n_eigenpairs must be between 1 and 39"):
        laplace_posterior(
            fit, recording, structure="blocks", eigen_subspace="all", n_eigenpairs=40
        )
    with pytest.raises(ValueError, match="fit and recording disagree"):
        laplace_posterior(fit, other_rec)
    with pytest.raises(ValueError, match="fit.B has 1 input columns but the recording has 0"):
        bad = make_case(n_inputs=1)[0]
        laplace_posterior(bad, recording)
    with pytest.raises(ValueError, match="calcium_decay = 0"):
        kernel = LowRankFit(**{**fit.__dict__, "observation": "calcium", "calcium_decay": 0.9})
        laplace_posterior(kernel, recording)
    with pytest.raises(ValueError, match=r"theta must have shape \(\.\.\., 40\)"):
        log_prob(post, np.zeros(3))
    with pytest.raises(ValueError, match=r"theta must have shape \(\.\.\., 40\)"):
        unflatten(post, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="posterior must be a PosteriorCovariance"):
        LaplacePosterior(other_fit)
