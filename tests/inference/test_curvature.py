"""Curvature pieces: matrix-free products against their adjoints and dense sensitivities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nwb_lrconn.inference.curvature import (
    backpropagate,
    dense_joint_fisher,
    direct_blocks,
    direct_cross,
    gauge_directions,
    initial_state_cross,
    initial_state_tangents,
    latent_forcing,
    latent_forcing_adjoint,
    latent_gram,
    linearise,
    propagate,
    unit_indices,
)

CASES = [
    dict(observation="gaussian"),
    dict(observation="poisson", n_inputs=1),
    dict(observation="calcium", nonlinearity="softplus", rank=3),
]


def _profile(F, cross, f_kk):
    pinv = np.linalg.pinv(0.5 * (f_kk + f_kk.transpose(0, 2, 1)), hermitian=True)
    return F - np.einsum("nap,nab,nbq->pq", cross, pinv, cross)


@pytest.mark.parametrize("case", CASES)
def test_dense_fisher_matches_hessian_oracle(case, make_case, fisher_oracle):
    fit, recording = make_case(**case)
    lin = linearise(fit, recording)
    F, cross, f_kk = (a.numpy() for a in dense_joint_fisher(lin, readout=False))
    index = unit_indices(fit.n_units, fit.rank, fit.B.shape[1]).ravel()
    theta = np.empty_like(F)
    theta[np.ix_(index, index)] = _profile(F, cross, f_kk)
    oracle = fisher_oracle(fit, recording, readout="held", prior_precision=1.0)
    np.testing.assert_allclose(theta, oracle, rtol=1e-8, atol=1e-8 * np.abs(oracle).max())


@pytest.mark.parametrize("case", CASES)
def test_matrix_free_products_are_adjoint_and_match_sensitivities(case, make_case):
    fit, recording = make_case(**case)
    lin = linearise(fit, recording)
    rng = np.random.default_rng(1)
    P, R = lin.n_params, lin.rank
    n_trials, n_time = recording.mask.shape
    V = torch.from_numpy(rng.normal(size=(P, 3)))
    mu = torch.from_numpy(rng.normal(size=(n_trials, n_time, R, 3)))
    mu[:, -1] = 0.0
    f = latent_forcing(lin, V)
    lhs = torch.einsum("ntrb,ntrb->b", f[:, :-1], mu[:, :-1])
    rhs = torch.einsum("pb,pb->b", V, latent_forcing_adjoint(lin, mu))
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=0)
    # propagate and backpropagate are adjoint (the forcing of step t moves κ(t+1)).
    tau = propagate(lin, f)
    cot = torch.from_numpy(rng.normal(size=tau.shape))
    back = backpropagate(lin, cot)
    lhs = torch.einsum("ntrb,ntrb->b", tau, cot)
    rhs = torch.einsum("ntrb,ntrb->b", f[:, :-1], back[:, 1:])
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=0)
    # The latent Gram and the direct cross terms reproduce the dense Fisher on span V: the
    # latent-mediated Fisher VᵀL̃ᵀWL̃V and DᵀWL̃V are blocks of the full F minus its direct part.
    F, _, _ = (a.numpy() for a in dense_joint_fisher(lin, readout=True))
    p0, p = 2 * R + lin.n_inputs + 1, 2 * R + lin.n_inputs + 3
    blocks = direct_blocks(lin, readout=True).numpy()
    N = lin.n_units
    index = unit_indices(N, R, lin.n_inputs)
    Vu = np.zeros((N * p, 3))
    Vu.reshape(N, p, 3)[:, :p0] = V.numpy()[index]
    Y = direct_cross(lin, tau, readout=True).numpy().reshape(N * p, 3)
    H = latent_gram(lin, tau, tau).sum(0).numpy()
    direct = np.zeros_like(F)
    for i in range(N):
        direct[i * p : (i + 1) * p, i * p : (i + 1) * p] = blocks[i]
    latent_part = F - direct
    np.testing.assert_allclose(
        Vu.T @ latent_part @ Vu, Y.T @ Vu + Vu.T @ Y + H, rtol=1e-9, atol=1e-12
    )


def test_initial_state_cross_matches_dense(make_case):
    fit, recording = make_case(observation="poisson", n_inputs=1)
    lin = linearise(fit, recording)
    _, cross, f_kk = (a.numpy() for a in dense_joint_fisher(lin, readout=True))
    Q = initial_state_tangents(lin)
    np.testing.assert_allclose(latent_gram(lin, Q, Q).numpy(), f_kk, rtol=1e-10)
    # The direct part of the κ(0) cross terms: rows of the readout (no latent part) agree.
    direct = initial_state_cross(lin, Q, readout=True).numpy()
    p = direct.shape[-1]
    n = direct.shape[0]
    readout_cols = cross.reshape(n, fit.rank, fit.n_units, p)[..., -2:]
    np.testing.assert_allclose(direct[..., -2:], readout_cols, rtol=1e-10)


def test_gauge_directions_are_exact_nulls(make_case):
    fit, recording = make_case(rank=3, observation="poisson")
    lin = linearise(fit, recording)
    F, cross, f_kk = (a.numpy() for a in dense_joint_fisher(lin, readout=False))
    index = unit_indices(fit.n_units, fit.rank, 0).ravel()
    theta = np.empty_like(F)
    theta[np.ix_(index, index)] = _profile(F, cross, f_kk)
    G = np.linalg.qr(gauge_directions(fit.M, fit.K, 0))[0]
    assert np.abs(theta @ G).max() < 1e-10 * np.abs(theta).max()


def test_connectivity_invariant_along_gauge(make_case):
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


def test_linearise_validation(make_case):
    fit, recording = make_case()
    _, other = make_case(n_units=5)
    with pytest.raises(ValueError, match="fit and recording disagree"):
        linearise(fit, other)
    with pytest.raises(ValueError, match="fit.B has 1 input columns but the recording has 0"):
        linearise(make_case(n_inputs=1)[0], recording)
    from nwb_lrconn.data import LowRankFit

    kernel = LowRankFit(**{**fit.__dict__, "observation": "calcium", "calcium_decay": 0.9})
    with pytest.raises(ValueError, match="calcium_decay = 0"):
        linearise(kernel, recording)
