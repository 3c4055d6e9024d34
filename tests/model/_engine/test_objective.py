"""The closed-form chunk objective against autograd and against the plain likelihood."""

from __future__ import annotations

import copy

import pytest
import torch

from nwb_lrconn.model._engine import chunk_loss
from nwb_lrconn.model._engine.objective import (
    Batch,
    ChunkObjective,
    TrainConfig,
    backward_batch_loss,
    batch_loss,
)
from nwb_lrconn.model.lowrank import LowRankRNN
from nwb_lrconn.model.observation import expected_observation, masked_mean, observation_nll

N_TRIALS, N_TIME, N_UNITS = 4, 9, 13


def _data(observation, masked, seed=0):
    g = torch.Generator().manual_seed(seed)
    data = 3 * torch.rand(N_TRIALS, N_TIME, N_UNITS, generator=g, dtype=torch.float64)
    if observation == "poisson":
        data = data.round()
    mask = torch.ones(N_TRIALS, N_TIME, dtype=torch.bool)
    if masked:  # ragged trials
        mask[1, 5:] = False
        mask[3, 2:] = False
    return data, mask


@pytest.mark.parametrize("observation", ["gaussian", "poisson"])
@pytest.mark.parametrize("masked", [False, True])
def test_closed_form_gradient_matches_autograd(observation, masked):
    data, mask = _data(observation, masked)
    weights = mask.to(data.dtype)
    objective = ChunkObjective(observation, data, weights if masked else None, 57.0, 0.02)
    g = torch.Generator().manual_seed(1)
    activity = torch.tanh(torch.randn(N_TRIALS, 3, N_UNITS, generator=g, dtype=torch.float64))
    params = [torch.randn(N_UNITS, generator=g, dtype=torch.float64) for _ in range(3)]
    leaves = [activity.clone().requires_grad_()] + [p.clone().requires_grad_() for p in params]
    value = objective(leaves[0], 4, 7, *leaves[1:])
    expected = torch.autograd.grad(value, leaves, allow_unused=True)
    grad_activity, grad_params = objective.gradient(activity, 4, 7, *params)
    torch.testing.assert_close(grad_activity, expected[0], rtol=1e-12, atol=1e-14)
    for got, want in zip(grad_params, expected[1:], strict=True):
        if want is None:  # Poisson has no noise scale
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("observation", ["gaussian", "poisson", "calcium"])
@pytest.mark.parametrize("masked", [False, True])
def test_batch_loss_equals_the_masked_mean_likelihood(observation, masked):
    data, mask = _data(observation, masked)
    model = LowRankRNN(N_UNITS, 2, n_inputs=1, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    inputs = torch.randn(N_TRIALS, N_TIME, 1, generator=g, dtype=torch.float64)
    initial = torch.randn(N_TRIALS, 2, generator=g, dtype=torch.float64, requires_grad=True)
    config = TrainConfig(observation, 0.02, 0.0, 1, 1e-3, None, 1, 0.0, 0.0, False)
    loss = batch_loss(model, initial, Batch(data, mask, inputs), config)
    _, activity = model(initial, N_TIME, inputs=inputs)
    expected = masked_mean(
        observation_nll(
            data,
            expected_observation(model.readout(activity), observation, bin_width=0.02),
            observation,
            noise_std=model.log_noise_std.exp(),
        ),
        mask,
    )
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    leaves = [*model.parameters(), initial]
    got = torch.autograd.grad(loss, leaves, allow_unused=True)
    want = torch.autograd.grad(expected, leaves, allow_unused=True)
    for name, a, b in zip([n for n, _ in model.named_parameters()] + ["initial"], got, want):
        if b is None:
            assert a is None, name
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13, msg=name)


def test_batch_loss_refuses_an_empty_mask():
    model = LowRankRNN(3, 1)
    batch = Batch(torch.zeros(2, 4, 3), torch.zeros(2, 4, dtype=torch.bool), None)
    config = TrainConfig("gaussian", 0.02, 0.0, 1, 1e-3, None, 1, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="mask selects no bin: there is nothing to average"):
        batch_loss(model, torch.zeros(2, 1), batch, config)


@pytest.mark.parametrize("path", ["batch_loss", "backward_batch_loss"])
def test_float32_batch_loss_resolves_a_step_below_float32_rounding_of_the_loss(path):
    # Full-batch L-BFGS on a large recording takes steps that lower the mean loss by less than
    # float32 resolves at its size (ulp(0.5) = 6e-8); the float32 loss must still see them, on
    # both paths that training reads it from (L-BFGS's closure takes backward_batch_loss's).
    g = torch.Generator().manual_seed(0)
    n_trials, n_time, n_units = 40, 30, 60
    model = LowRankRNN(n_units, 2)
    with torch.no_grad():
        model.M.normal_(generator=g)
        model.K.normal_(generator=g)
        model.readout_gain.fill_(20.0)
        model.readout_offset.fill_(10.0)
    data = torch.poisson(torch.full((n_trials, n_time, n_units), 0.2), generator=g)
    mask = torch.ones(n_trials, n_time, dtype=torch.bool)
    initial = torch.randn(n_trials, 2, generator=g)
    config = TrainConfig("poisson", 0.02, 0.0, 1, 1e-3, None, 1, 0.0, 0.0, False)

    def losses(net):  # float32 (on ``path``) and float64 evaluations of the same parameters
        narrow = Batch(data, mask, None)
        if path == "backward_batch_loss":
            low = float(backward_batch_loss(copy.deepcopy(net), initial, narrow, config))
        else:
            with torch.no_grad():
                low = float(batch_loss(net, initial, narrow, config))
        wide = Batch(data.double(), mask, None)
        with torch.no_grad():
            return [
                low,
                float(batch_loss(copy.deepcopy(net).double(), initial.double(), wide, config)),
            ]

    before = losses(model)
    (grad,) = torch.autograd.grad(
        batch_loss(model, initial, Batch(data, mask, None), config), [model.M]
    )
    with torch.no_grad():  # first-order decrease 2e-8, a third of float32's ulp(0.5)
        model.M.sub_(2e-8 / float((grad.double() ** 2).sum()) * grad)
    after = losses(model)
    exact = before[1] - after[1]
    assert 1e-8 < exact < 3e-8
    assert before[0] - after[0] == pytest.approx(exact, rel=0.2)


@pytest.mark.parametrize("observation", ["gaussian", "poisson", "calcium"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_batch_loss_is_batch_loss_backward(monkeypatch, observation, dtype):
    # The gradients of the one-evaluation path are those of batch_loss(...).backward() and its
    # value theirs up to rounding, over several time chunks, with padding, inputs and process
    # noise; the calcium kernel (whose loss is not chunked) takes the plain path.
    monkeypatch.setattr(chunk_loss, "_CHUNK_ELEMENTS", 2 * N_TRIALS * N_UNITS)  # 2-step chunks
    data, mask = _data(observation, masked=True)
    model = LowRankRNN(N_UNITS, 2, n_inputs=1, dtype=dtype)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    inputs = torch.randn(N_TRIALS, N_TIME, 1, generator=g, dtype=dtype)
    noise = 0.1 * torch.randn(N_TRIALS, N_TIME - 1, 2, generator=g, dtype=dtype)
    batch = Batch(data.to(dtype), mask, inputs)
    decay = 0.5 if observation == "calcium" else 0.0
    config = TrainConfig(observation, 0.02, decay, 1, 1e-3, None, 1, 0.0, 0.0, False)
    initial = torch.randn(N_TRIALS, 2, generator=g, dtype=dtype)
    grads = []
    for backward in (True, False):
        kappa = initial.clone().requires_grad_()
        model.zero_grad(set_to_none=True)
        if backward:
            value = backward_batch_loss(model, kappa, batch, config, noise=noise)
        else:
            loss = batch_loss(model, kappa, batch, config, noise=noise)
            loss.backward()
            # the backward recomputes the activity: its rounding may differ from the forward's
            rtol = 1e-6 if dtype == torch.float32 else 1e-14
            torch.testing.assert_close(value, loss.detach(), rtol=rtol, atol=0)
            assert value.dtype == torch.float64 and not value.requires_grad
        grads.append([p.grad for p in model.parameters()] + [kappa.grad])
    for name, got, want in zip([n for n, _ in model.named_parameters()] + ["κ"], *grads):
        assert (got is None and want is None) or torch.equal(got, want), name
