"""LowRankRNN module and observation models: shapes, gauge invariance, gradients, likelihoods."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nwb_lrconn.model.lowrank import LowRankRNN
from nwb_lrconn.model.observation import (
    expected_observation,
    indicator_kernel,
    masked_mean,
    observation_nll,
)


def _random_model(n_units=12, rank=2, n_inputs=1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    model = LowRankRNN(n_units, rank, n_inputs=n_inputs, alpha=0.2, dtype=dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    return model


def test_forward_matches_dense_recurrence():
    model = _random_model()
    g = torch.Generator().manual_seed(1)
    initial = torch.randn(3, 2, generator=g, dtype=torch.float64)
    inputs = torch.randn(3, 7, 1, generator=g, dtype=torch.float64)
    latents, activity = model(initial, 7, inputs=inputs)
    assert latents.shape == (3, 7, 2) and activity.shape == (3, 7, 12)
    # Full-rank form: x(t+1) = (1-α) x(t) + α J φ(x(t)) + α B u(t+1) ... in potentials space,
    # checked through κ: x = M κ + B u + d.
    J = model.connectivity()
    x = latents @ model.M.T + inputs @ model.B.T + model.d
    kappa_next = (1 - 0.2) * latents[:, :-1] + 0.2 * torch.tanh(x[:, :-1]) @ model.K / 12
    torch.testing.assert_close(latents[:, 1:], kappa_next)
    torch.testing.assert_close(activity, torch.tanh(x))
    torch.testing.assert_close(J, model.M @ model.K.T / 12)


def test_predictions_are_gauge_invariant():
    model = _random_model()
    g = torch.Generator().manual_seed(2)
    initial = torch.randn(4, 2, generator=g, dtype=torch.float64)
    inputs = torch.randn(4, 9, 1, generator=g, dtype=torch.float64)
    _, before = model(initial, 9, inputs=inputs)
    J = model.connectivity()
    A = torch.randn(2, 2, generator=g, dtype=torch.float64) + 3 * torch.eye(2, dtype=torch.float64)
    with torch.no_grad():
        model.M.copy_(model.M @ torch.linalg.inv(A))
        model.K.copy_(model.K @ A.T)
    _, after = model(initial @ A.T, 9, inputs=inputs)
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(model.connectivity(), J)


@pytest.mark.parametrize("observation", ["gaussian", "poisson", "calcium"])
def test_gradients_reach_every_parameter(observation):
    model = _random_model()
    initial = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    inputs = torch.ones(2, 5, 1, dtype=torch.float64)
    _, activity = model(initial, 5, inputs=inputs)
    expected = expected_observation(
        model.readout(activity), observation, bin_width=0.02, calcium_decay=0.3
    )
    data = torch.ones_like(expected)
    nll = observation_nll(data, expected, observation, noise_std=model.log_noise_std.exp())
    masked_mean(nll, torch.ones(2, 5, dtype=torch.bool)).backward()
    for name, p in model.named_parameters():
        if observation == "poisson" and name == "log_noise_std":
            continue  # the Poisson likelihood has no noise scale
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    assert torch.count_nonzero(initial.grad) > 0


def test_forward_requires_inputs_when_the_network_has_them():
    model = _random_model()
    with pytest.raises(ValueError, match="has 1 input channel"):
        model(torch.zeros(1, 2, dtype=torch.float64), 3)


def test_unknown_nonlinearity_is_refused():
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh', 'relu' or 'softplus'"):
        LowRankRNN(4, 2, nonlinearity="sigmoid")


def test_poisson_nll_matches_scipy():
    from scipy.stats import poisson

    rate = torch.tensor([[[0.3, 2.0]]], dtype=torch.float64)
    counts = torch.tensor([[[1.0, 4.0]]], dtype=torch.float64)
    got = observation_nll(counts, rate, "poisson")
    want = -poisson.logpmf(counts.numpy(), rate.numpy())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-7)


def test_gaussian_nll_matches_formula():
    y = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)
    mu = torch.tensor([[[0.5, 0.0]]], dtype=torch.float64)
    sigma = torch.tensor([2.0, 0.5], dtype=torch.float64)
    got = observation_nll(y, mu, "gaussian", noise_std=sigma)
    want = 0.5 * ((y - mu) / sigma) ** 2 + torch.log(sigma) + 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(got, want)


def test_poisson_expectation_is_softplus_rate_times_bin_width():
    readout = torch.tensor([[[-1.0, 0.0, 3.0]]], dtype=torch.float64)
    got = expected_observation(readout, "poisson", bin_width=0.02)
    torch.testing.assert_close(got, 0.02 * torch.log1p(torch.exp(readout)))


def test_indicator_kernel_is_exponential_with_unit_gain():
    impulse = torch.zeros(1, 6, 1, dtype=torch.float64)
    impulse[0, 1, 0] = 1.0
    out = indicator_kernel(impulse, 0.5)
    torch.testing.assert_close(
        out[0, :, 0], torch.tensor([0, 0.5, 0.25, 0.125, 0.0625, 0.03125], dtype=torch.float64)
    )
    const = torch.full((1, 5, 2), 3.0, dtype=torch.float64)
    torch.testing.assert_close(indicator_kernel(const, 0.8), const)
    assert indicator_kernel(impulse, 0.0) is impulse


def test_masked_mean_ignores_masked_bins():
    values = torch.arange(12, dtype=torch.float64).reshape(1, 6, 2)
    mask = torch.tensor([[True, True, False, False, False, False]])
    assert float(masked_mean(values, mask)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="mask selects no bin"):
        masked_mean(values, torch.zeros(1, 6, dtype=torch.bool))


def test_unknown_observation_is_refused():
    x = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="observation must be 'gaussian', 'poisson' or"):
        expected_observation(x, "binomial", bin_width=0.01)
    with pytest.raises(ValueError, match="observation must be 'gaussian', 'poisson' or"):
        observation_nll(x, x, "binomial")


def test_rollout_activity_agrees_with_latent_rollout():
    from nwb_lrconn.model.rollout import latent_rollout, rollout_activity

    model = _random_model()
    g = torch.Generator().manual_seed(4)
    initial = torch.randn(3, 2, generator=g, dtype=torch.float64)
    inputs = torch.randn(3, 6, 1, generator=g, dtype=torch.float64)
    noise = 0.1 * torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    args = (model.M, model.K, model.B, model.d, initial, 6)
    kw = {"alpha": 0.2, "inputs": inputs, "noise": noise}
    lat_a, x = latent_rollout(*args, **kw)
    lat_b, y = rollout_activity(*args, **kw)
    torch.testing.assert_close(lat_a, lat_b)
    torch.testing.assert_close(torch.tanh(x), y)
