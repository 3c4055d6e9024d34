"""Per-unit refit on fixed latents and the ridge output loadings (model._engine.unit_refit)."""

import numpy as np
import pytest
import torch

from nwb_lrconn.model._engine.loop import _refit_phase
from nwb_lrconn.model._engine.objective import Batch, TrainConfig, batch_loss
from nwb_lrconn.model._engine.unit_refit import _unit_terms, refit_output_loadings, refit_units
from nwb_lrconn.model.lowrank import LowRankRNN


def _unit_problem(observation, n_bins=20000, n_units=12, n_inputs=1, seed=0):
    """Latents, inputs, true θ = (m, b, d, g, c) and observations drawn from them."""
    rng = np.random.default_rng(seed)
    kappa = rng.standard_normal((n_bins, 2))
    inputs = rng.standard_normal((n_bins, n_inputs))
    m = rng.normal(0, 0.8, (n_units, 2))
    b = rng.normal(0, 0.3, (n_units, n_inputs))
    d = rng.normal(0, 0.2, n_units)
    g = rng.uniform(4, 12, n_units)
    c = rng.uniform(0, 8, n_units)
    r = g * np.tanh(kappa @ m.T + inputs @ b.T + d) + c
    if observation == "poisson":
        y = rng.poisson(0.02 * np.logaddexp(0, r)).astype(float)
    else:
        y = r + 0.1 * rng.standard_normal(r.shape)
    theta = np.c_[m, b, d, g, c]
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return as_t(kappa), as_t(inputs), as_t(theta), as_t(y)


@pytest.mark.parametrize("observation", ["poisson", "gaussian"])
def test_refit_recovers_each_units_parameters_from_a_distorted_start(observation):
    kappa, inputs, truth, y = _unit_problem(observation)
    start = truth.clone()
    start[:, :3] *= 2.0  # loadings twice too large ...
    start[:, 4] /= 2.0  # ... and the gain half: the trade-off gradient steps leave unresolved
    common = {"observation": observation, "nonlinearity": "tanh", "bin_width": 0.02}
    out = refit_units(kappa, y, inputs, start, **common)
    if observation == "gaussian":  # well determined: close to the truth everywhere
        assert (out - truth).abs().max() < 0.01
    else:  # spikes pin some units loosely; typical errors stay small
        err = (out - truth).abs().median(0).values
        assert torch.all(err < torch.tensor([0.15, 0.15, 0.1, 0.1, 1.0, 0.5])), err

    # Converged: every unit ends at a loss below the truth's (the maximum-likelihood point).
    def unit_loss(theta):
        inv_var = torch.ones(theta.shape[0], dtype=torch.float64)
        return _unit_terms(theta, kappa, inputs, y, full=False, inv_var=inv_var, **common)[0]

    assert torch.all(unit_loss(out) <= unit_loss(truth) + 1e-6)
    assert torch.all(unit_loss(out) < unit_loss(start))


def test_refit_output_loadings_recover_the_dynamics_that_made_the_latents():
    rng = np.random.default_rng(1)
    n_units, alpha = 40, 0.1
    activity = torch.as_tensor(np.tanh(rng.standard_normal((500, n_units))))
    K = torch.as_tensor(rng.standard_normal((n_units, 2)))
    now = torch.as_tensor(rng.standard_normal((500, 2)))
    following = (1 - alpha) * now + alpha / n_units * activity @ K
    out = refit_output_loadings(now, following, activity, alpha=alpha, ridge=1e-10)
    torch.testing.assert_close(out, K, rtol=1e-5, atol=1e-5)


def _spiking_model_and_batch():
    torch.manual_seed(0)
    model = LowRankRNN(30, 2, alpha=0.1, dtype=torch.float32)
    with torch.no_grad():
        model.M.normal_()
        model.K.normal_(std=3.0)
        model.readout_gain.uniform_(2.0, 6.0)
        model.readout_offset.uniform_(1.0, 3.0)
        initial = torch.randn(24, 2)
        _, activity = model(initial, 40)
        rate = 0.05 * torch.nn.functional.softplus(model.readout(activity))
    data = torch.poisson(rate, generator=torch.Generator().manual_seed(1))
    batch = Batch(data, torch.ones(24, 40, dtype=torch.bool), None)
    config = TrainConfig("poisson", 0.05, 0.0, 0, 1e-2, None, 5, 0.0, 0.0, False)
    return model, initial, batch, config


def test_refit_phase_keeps_the_refit_only_when_the_held_out_loss_drops():
    model, initial, batch, config = _spiking_model_and_batch()
    with torch.no_grad():
        model.M.mul_(1.5)  # a distorted network the refit can improve
        model.readout_gain.div_(1.5)
    train, test = batch.take(torch.arange(16)), batch.take(torch.arange(16, 24))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # An unreachable target: the model is left exactly as it was.
    assert _refit_phase(model, initial[:16], initial[16:], train, test, config, -np.inf) is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    # A reachable one: kept, with a lower training loss.
    with torch.no_grad():
        start = float(batch_loss(model, initial[:16], train, config))
    out = _refit_phase(model, initial[:16], initial[16:], train, test, config, np.inf)
    assert out is not None
    (train_loss, _), k_train, k_test = out
    assert train_loss < start and k_test.shape == (8, 2) and k_train.shape == (16, 2)
    assert not torch.equal(model.M, before["M"])
