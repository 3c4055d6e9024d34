"""Flow-matching core: path, loss, midpoint sampler and exact log-densities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nwb_lrconn.inference.flows import (
    VelocityMLP,
    condot_path,
    flow_log_prob,
    flow_matching_loss,
    integrate_flow,
)


class _Linear(nn.Module):
    """v(x, t) = a x: the flow maps x0 to e^a x0, so p_1 = N(0, e^{2a} I)."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))

    def forward(self, x, t, context=None):
        return self.a * x


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_velocity_mlp_shapes_and_reproducible_init():
    net = VelocityMLP(2, 3, hidden_features=16, n_layers=4)
    n_linear = sum(isinstance(m, nn.Linear) for m in net.net)
    assert n_linear == 5  # 4 hidden layers + output
    x, c = torch.zeros(7, 2), torch.zeros(7, 3)
    assert net(x, torch.rand(7), c).shape == (7, 2)
    assert net(x, torch.tensor(0.5), c).shape == (7, 2)  # scalar time broadcasts
    a = VelocityMLP(2, 3, hidden_features=16).reset_parameters(_gen(1))
    b = VelocityMLP(2, 3, hidden_features=16).reset_parameters(_gen(1))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    bound = 1 / math.sqrt(2 + 3 + 1)
    assert a.net[0].weight.abs().max() <= bound


def test_condot_path_endpoints():
    x0, x1 = torch.randn(5, 3), torch.randn(5, 3)
    xt, v = condot_path(x0, x1, torch.zeros(5))
    torch.testing.assert_close(xt, x0)
    torch.testing.assert_close(v, x1 - x0)
    xt, _ = condot_path(x0, x1, torch.ones(5))
    torch.testing.assert_close(xt, x1)


@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_loss_gradients_reach_every_parameter(coupling):
    net = VelocityMLP(2, hidden_features=8).reset_parameters(_gen())
    loss = flow_matching_loss(net, torch.randn(16, 2), generator=_gen(2), coupling=coupling)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_ot_coupling_lowers_the_loss_of_the_straight_map():
    # For x1 = x0-like data the OT pairing makes the regression target smaller on average.
    net = _Linear(0.0)
    x1 = torch.randn(256, 2, generator=_gen(3), dtype=torch.float64)
    ind = flow_matching_loss(net, x1, generator=_gen(4))
    ot = flow_matching_loss(net, x1, generator=_gen(4), coupling="ot")
    assert ot < 0.5 * ind


def test_bad_coupling_is_rejected():
    with pytest.raises(ValueError, match="coupling must be 'independent' or 'ot'; got 'sinkhorn'"):
        flow_matching_loss(_Linear(0.0), torch.zeros(2, 1), coupling="sinkhorn")


def test_midpoint_sampler_matches_the_exact_linear_flow():
    x0 = torch.randn(100, 2, dtype=torch.float64, generator=_gen())
    x1 = integrate_flow(_Linear(0.7), x0, step=0.05)
    torch.testing.assert_close(x1, math.exp(0.7) * x0, rtol=5e-4, atol=1e-6)  # O(h²)


def test_log_prob_of_the_linear_flow_is_the_analytic_gaussian():
    a = 0.7
    x = torch.randn(50, 2, dtype=torch.float64, generator=_gen(5))
    lp = flow_log_prob(_Linear(a), x, step=0.05)
    var = math.exp(2 * a)
    expected = -0.5 * (x**2).sum(1) / var - math.log(2 * math.pi * var)
    torch.testing.assert_close(lp, expected, rtol=0, atol=1e-3)


def test_bad_step_is_rejected():
    with pytest.raises(ValueError, match=r"step must be in \(0, 1\]; got 0"):
        integrate_flow(_Linear(0.0), torch.zeros(1, 1), step=0)


@pytest.mark.slow
def test_trained_flow_learns_a_gaussian_and_its_density():
    g = _gen(0)
    net = VelocityMLP(1, hidden_features=32, n_layers=2).reset_parameters(g)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(400):
        x1 = 2.0 + 0.5 * torch.randn(256, 1, generator=g)
        loss = flow_matching_loss(net, x1, generator=g, coupling="ot")
        opt.zero_grad()
        loss.backward()
        opt.step()
    samples = integrate_flow(net, torch.randn(4000, 1, generator=g)).numpy().ravel()
    assert samples.mean() == pytest.approx(2.0, abs=0.05)
    assert samples.std() == pytest.approx(0.5, abs=0.05)
    grid = torch.linspace(-1.0, 5.0, 601)[:, None]
    density = np.exp(flow_log_prob(net, grid).numpy())
    assert density.sum() * 0.01 == pytest.approx(1.0, abs=0.02)  # normalised
    mean = (grid.numpy().ravel() * density).sum() * 0.01
    assert mean == pytest.approx(2.0, abs=0.05)
