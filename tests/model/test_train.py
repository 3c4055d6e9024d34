"""Training helpers (nwb_lrconn.model._train)."""

import pytest
import torch

from nwb_lrconn.model._train import weight_penalty
from nwb_lrconn.model.lowrank import LowRankRNN


def test_weight_penalty_covers_the_network_and_not_the_readout():
    torch.manual_seed(0)
    model = LowRankRNN(6, 2, n_inputs=1, dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    loadings = (model.M, model.K, model.B, model.d)
    expected = 0.5 * 0.3 * sum(float((p.detach() ** 2).sum()) for p in loadings)
    assert float(weight_penalty(model, 0.3).detach()) == pytest.approx(expected, rel=1e-12)
    with torch.no_grad():
        model.readout_gain.mul_(10.0)
        model.readout_offset.add_(5.0)
    assert float(weight_penalty(model, 0.3).detach()) == pytest.approx(expected, rel=1e-12)
