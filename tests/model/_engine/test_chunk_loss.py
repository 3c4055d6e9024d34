"""The fused rollout-and-loss of a network (model._engine.chunk_loss).

The chunked evaluation itself is checked against autograd in ``tests/model/test_rollout.py``.
"""

from __future__ import annotations

import pytest
import torch

from nwb_lrconn.model._engine.chunk_loss import network_rollout_loss
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
    assert fused.dtype == torch.float64  # the chunks are summed in double precision
    torch.testing.assert_close(fused.float(), loss_fn(activity, 0, 6))
    got = torch.autograd.grad(fused, [model.M, model.K, model.d])
    want = torch.autograd.grad(loss_fn(activity, 0, 6), [model.M, model.K, model.d])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_network_rollout_loss_needs_the_inputs_of_a_network_with_inputs():
    with pytest.raises(ValueError, match=r"has 2 input channel\(s\); pass inputs of shape"):
        network_rollout_loss(_network(2), torch.zeros(1, 2), 4, lambda y, a, b: y.sum())


def test_a_value_from_the_backward_needs_the_closed_form_gradient():
    model = _network(0)

    def loss_fn(activity, start, stop):
        return activity.sum()

    with pytest.raises(ValueError, match="value_out needs loss_grad"):
        network_rollout_loss(model, torch.randn(3, 2), 6, loss_fn, value_out=torch.zeros(()))
