"""Fixtures of the posterior tests: small ground-truth fits, an independent Fisher oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nwb_lrconn.data import LowRankFit, Recording
from nwb_lrconn.inference.curvature import flatten_parameters
from nwb_lrconn.model.networks import phi, simulate_latents
from nwb_lrconn.model.rollout import latent_rollout


def _make_case(
    n_units=8,
    rank=2,
    n_trials=5,
    n_time=20,
    n_inputs=0,
    observation="gaussian",
    nonlinearity="tanh",
    sampling="well",
    seed=0,
):
    """A ground-truth "fit" and the recording it explains (no fitter needed)."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n_units, rank))
    K = 1.6 * M + rng.normal(size=(n_units, rank))
    B = rng.normal(size=(n_units, n_inputs))
    d = 0.3 * rng.normal(size=n_units)
    inputs = rng.normal(size=(n_trials, n_time, n_inputs)) if n_inputs else None
    if sampling == "well":
        initial = rng.uniform(-2, 2, size=(n_trials, rank))
    else:  # every trial starts near one point and relaxes to the same fixed point
        start = simulate_latents(M, K, np.full((1, rank), 0.8), 300, nonlinearity=nonlinearity,
                                 d=d)[0, -1]  # fmt: skip
        initial = start + 0.05 * rng.normal(size=(n_trials, rank))
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


def _fisher_oracle(fit, recording, *, readout: str, prior_precision: float) -> np.ndarray:
    """F over θ from the autograd Hessian of the NLL at data equal to the model mean.

    κ(0) (flat prior) is profiled out by a Schur complement; with ``readout="marginal"`` the
    gain and offset join the parameters with prior precision λ and are integrated out too.
    """
    n_trials, n_time, n_units = recording.data.shape
    rank, n_inputs = fit.rank, fit.B.shape[1]
    P = n_units * (2 * rank + n_inputs + 1)
    inputs = None if recording.inputs is None else torch.as_tensor(recording.inputs)
    mask = torch.as_tensor(recording.mask, dtype=torch.float64)[..., None]
    act = {"tanh": torch.tanh, "softplus": torch.nn.functional.softplus}[fit.nonlinearity]
    n_k0 = n_trials * rank

    def eta(params):
        th, k0 = params[:P], params[P : P + n_k0].reshape(n_trials, rank)
        gain, offset = params[P + n_k0 : P + n_k0 + n_units], params[P + n_k0 + n_units :]
        nr, nd = n_units * rank, n_units * n_inputs
        M, K = th[:nr].reshape(n_units, rank), th[nr : 2 * nr].reshape(n_units, rank)
        B, d = th[2 * nr : 2 * nr + nd].reshape(n_units, n_inputs), th[2 * nr + nd :]
        _, x = latent_rollout(M, K, B, d, k0, n_time, alpha=fit.alpha, inputs=inputs,
                              nonlinearity=fit.nonlinearity)  # fmt: skip
        return gain * act(x) + offset

    theta0 = torch.as_tensor(
        np.concatenate(
            [
                flatten_parameters(fit.M, fit.K, fit.B, fit.d),
                fit.latents[:, 0].ravel(),
                fit.readout_gain,
                fit.readout_offset,
            ]
        )
    )
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
    theta = np.arange(P)
    if readout == "marginal":
        nuisance = np.arange(P, H.shape[0])
        prior = np.r_[np.zeros(n_k0), np.full(2 * n_units, prior_precision)]
    else:
        nuisance = np.arange(P, P + n_k0)
        prior = np.zeros(n_k0)
    block = H[np.ix_(nuisance, nuisance)] + np.diag(prior)
    cross = H[np.ix_(theta, nuisance)]
    return H[np.ix_(theta, theta)] - cross @ np.linalg.pinv(block, hermitian=True) @ cross.T


@pytest.fixture
def make_case():
    """Factory of small ground-truth fits: ``make_case(n_units=8, rank=2, ...)``."""
    return _make_case


@pytest.fixture
def fisher_oracle():
    """``fisher_oracle(fit, recording, readout=..., prior_precision=...)``: F over θ."""
    return _fisher_oracle
