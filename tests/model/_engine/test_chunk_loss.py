"""The fused rollout-and-loss of a network (model._engine.chunk_loss).

The chunked evaluation itself is checked against autograd in ``tests/model/test_rollout.py``.
"""

from __future__ import annotations

import pytest
import torch

from nwb_lrconn.model._engine.chunk_loss import network_rollout_loss, rollout_loss
from nwb_lrconn.model.lowrank import LowRankRNN


def _network(n_inputs: int) -> LowRankRNN:
    torch.manual_seed(0)
    model = LowRankRNN(9, 2, n_inputs=n_inputs, alpha=0.2, nonlinearity="softplus")
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


@pytest.mark.parametrize("n_inputs", [0, 2])
def test_network_rollout_loss_is_the_loss_of_the_forward_activity(n_inputs):
    model = _network(n_inputs)
    initial = torch.randn(3, 2)
    inputs = torch.randn(3, 6, n_inputs) if n_inputs else None
    target = torch.randn(3, 6, 9)

    def loss_fn(activity, start, stop):
        return ((activity - target[:, start:stop]) ** 2).sum()

    fused = network_rollout_loss(model, initial, 6, loss_fn, inputs=inputs)
    _, activity = model(initial, 6, inputs=inputs)
    torch.testing.assert_close(fused, loss_fn(activity, 0, 6))
    got = torch.autograd.grad(fused, [model.M, model.K, model.d])
    want = torch.autograd.grad(loss_fn(activity, 0, 6), [model.M, model.K, model.d])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_network_rollout_loss_needs_the_inputs_of_a_network_with_inputs():
    with pytest.raises(ValueError, match=r"has 2 input channel\(s\); pass inputs of shape"):
        network_rollout_loss(_network(2), torch.zeros(1, 2), 4, lambda y, a, b: y.sum())


@pytest.mark.parametrize("observation", ["poisson", "gaussian"])
def test_gradients_computed_in_the_forward_are_those_of_the_recomputing_backward(observation):
    # With a closed-form gradient the forward evaluates the loss's terms once and keeps their
    # products; without it the backward recomputes the activity and differentiates the loss.
    from nwb_lrconn.model._engine.objective import ChunkObjective

    model = _network(0).double()
    g = torch.Generator().manual_seed(1)
    data = torch.poisson(2 * torch.rand(3, 6, 9, generator=g, dtype=torch.float64))
    objective = ChunkObjective(observation, data, None, 3 * 6 * 9, 0.05)
    params = (model.readout_gain, model.readout_offset, model.log_noise_std)
    leaves = [model.M, model.K, model.d, *params[: 3 if observation == "gaussian" else 2]]
    initial = torch.randn(3, 2, dtype=torch.float64, generator=g)
    args = (model.M, model.K, None, model.d, initial, 6, objective, params)
    kwargs = {"alpha": model.alpha, "nonlinearity": model.nonlinearity, "chunk_size": 4}
    eager = rollout_loss(*args, loss_grad=objective.gradient, **kwargs)
    plain = rollout_loss(*args, **kwargs)
    torch.testing.assert_close(eager, plain, rtol=1e-14, atol=0)
    want = torch.autograd.grad(2.0 * plain, leaves)
    first = torch.autograd.grad(2.0 * eager, leaves, retain_graph=True)
    again = torch.autograd.grad(2.0 * eager, leaves)  # the kept products are left intact
    for a, b, c in zip(first, again, want, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(b, c, rtol=1e-10, atol=1e-12)
