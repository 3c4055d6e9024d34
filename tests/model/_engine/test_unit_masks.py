"""Per-trial unit masks (``Batch.units``): every likelihood term of the engine honours them."""

import pytest
import torch

from nwb_lrconn.model._engine.initial_latents import _trial_terms, infer_initial
from nwb_lrconn.model._engine.loop import _refit_phase, loss_spread
from nwb_lrconn.model._engine.objective import Batch, ChunkObjective, TrainConfig, batch_loss
from nwb_lrconn.model._engine.unit_refit import refit_units
from nwb_lrconn.model.lowrank import LowRankRNN
from nwb_lrconn.model.observation import expected_observation, observation_nll

N_TRIALS, N_TIME, N_UNITS = 6, 11, 14
OBSERVATIONS = ["gaussian", "poisson", "calcium"]


def _config(observation):
    decay = 0.6 if observation == "calcium" else 0.0
    return TrainConfig(observation, 0.05, decay, 1, 1e-3, None, 1, 0.0, 0.0, False)


def _problem(observation, seed=0):
    """A float64 network, κ(0), and a batch whose trials observe different unit subsets."""
    g = torch.Generator().manual_seed(seed)
    model = LowRankRNN(N_UNITS, 2, n_inputs=1, alpha=0.2, dtype=torch.float64)
    with torch.no_grad():
        for name, scale in (("M", 1.0), ("K", 3.0), ("B", 1.0), ("d", 0.3)):
            getattr(model, name).copy_(
                scale * torch.randn(getattr(model, name).shape, generator=g)
            )
        model.log_noise_std.uniform_(-0.5, 0.5, generator=g)
        model.readout_gain.uniform_(2.0, 6.0, generator=g)
        model.readout_offset.uniform_(1.0, 3.0, generator=g)
    initial = torch.randn(N_TRIALS, 2, generator=g, dtype=torch.float64)
    inputs = torch.randn(N_TRIALS, N_TIME, 1, generator=g, dtype=torch.float64)
    data = 3 * torch.rand(N_TRIALS, N_TIME, N_UNITS, generator=g, dtype=torch.float64)
    if observation == "poisson":
        data = data.round()
    mask = torch.ones(N_TRIALS, N_TIME, dtype=torch.bool)
    mask[1, 7:] = False  # ragged trials
    mask[4, 3:] = False
    units = torch.zeros(N_TRIALS, N_UNITS, dtype=torch.bool)  # three "sessions"
    units[:2, :5] = True
    units[2:4, 5:9] = True
    units[4:, 9:] = True
    units[5, 2] = True  # and one trial that sees a unit of another session
    data = torch.where(mask[..., None] & units[:, None], data, 0.0)
    return model, initial, Batch(data, mask, inputs, units=units)


def _garbage(batch, value=float("nan")):
    """The same batch with ``value`` wherever a value is not observed."""
    observed = batch.observed()
    data = torch.where(observed, batch.data, torch.full_like(batch.data, value))
    return Batch(data, batch.mask, batch.inputs, units=batch.units)


def _all_units(batch):
    units = torch.ones(batch.n_trials, batch.data.shape[2], dtype=torch.bool)
    return Batch(batch.data, batch.mask, batch.inputs, units=units)


def _loss_and_grads(model, initial, batch, config):
    kappa = initial.clone().requires_grad_()
    loss = batch_loss(model, kappa, batch, config)
    leaves = [p for p in model.parameters()] + [kappa]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return loss.detach(), [None if g is None else g.detach() for g in grads]


def _assert_same(a, b, rtol=1e-12, atol=1e-14):
    (la, ga), (lb, gb) = a, b
    torch.testing.assert_close(la, lb, rtol=rtol, atol=atol)
    for x, y in zip(ga, gb, strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.isfinite(x).all()
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


@pytest.mark.parametrize("observation", OBSERVATIONS)
def test_batch_loss_is_the_mean_likelihood_over_observed_values(observation):
    model, initial, batch = _problem(observation)
    config = _config(observation)
    got = _loss_and_grads(model, initial, batch, config)
    # Reference: autograd through the plain rollout, values averaged over observed entries only.
    kappa = initial.clone().requires_grad_()
    _, activity = model(kappa, N_TIME, inputs=batch.inputs)
    expected = expected_observation(
        model.readout(activity), observation, bin_width=0.05, calcium_decay=config.calcium_decay
    )
    nll = observation_nll(batch.data, expected, observation, noise_std=model.log_noise_std.exp())
    observed = batch.observed()
    reference = (nll * observed).sum() / observed.sum()
    leaves = [p for p in model.parameters()] + [kappa]
    want = torch.autograd.grad(reference, leaves, allow_unused=True)
    _assert_same(got, (reference.detach(), want), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("observation", OBSERVATIONS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e6])
def test_values_of_unobserved_units_never_reach_the_loss(observation, value):
    model, initial, batch = _problem(observation)
    config = _config(observation)
    clean = _loss_and_grads(model, initial, batch, config)
    assert torch.isfinite(clean[0])
    _assert_same(_loss_and_grads(model, initial, _garbage(batch, value), config), clean, 0, 0)
    if observation == "poisson":
        torch.testing.assert_close(
            _garbage(batch, value).log_factorial_sums(), batch.log_factorial_sums()
        )
    spread = loss_spread(model, initial, batch, config)
    assert spread > 0
    assert loss_spread(model, initial, _garbage(batch, value), config) == spread


@pytest.mark.parametrize("observation", OBSERVATIONS)
def test_all_true_units_equal_the_unmasked_path(observation):
    model, initial, batch = _problem(observation)
    config = _config(observation)
    plain = Batch(batch.data, batch.mask, batch.inputs)
    _assert_same(
        _loss_and_grads(model, initial, _all_units(plain), config),
        _loss_and_grads(model, initial, plain, config),
    )
    assert loss_spread(model, initial, _all_units(plain), config) == pytest.approx(
        loss_spread(model, initial, plain, config), rel=1e-12
    )
    torch.testing.assert_close(_all_units(plain).value_counts(), plain.value_counts())
    torch.testing.assert_close(_all_units(plain).unit_counts(), plain.unit_counts())


@pytest.mark.parametrize("observation", ["gaussian", "poisson"])
def test_chunk_gradient_with_units_matches_autograd(observation):
    _, _, batch = _problem(observation)
    g = torch.Generator().manual_seed(1)
    weights = batch.mask.to(batch.data.dtype)
    units = batch.units.to(batch.data.dtype)
    objective = ChunkObjective(observation, _garbage(batch).data, weights, 57.0, 0.05, units)
    activity = torch.tanh(torch.randn(N_TRIALS, 4, N_UNITS, generator=g, dtype=torch.float64))
    params = [torch.randn(N_UNITS, generator=g, dtype=torch.float64) for _ in range(3)]
    leaves = [activity.clone().requires_grad_()] + [p.clone().requires_grad_() for p in params]
    value = objective(leaves[0], 3, 7, *leaves[1:])
    assert torch.isfinite(value)
    expected = torch.autograd.grad(value, leaves, allow_unused=True)
    grad_activity, grad_params = objective.gradient(activity, 3, 7, *params)
    torch.testing.assert_close(grad_activity, expected[0], rtol=1e-12, atol=1e-14)
    for got, want in zip(grad_params, expected[1:], strict=True):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("observation", ["gaussian", "poisson"])
def test_trial_terms_with_units_are_each_trials_observed_loss(observation):
    model, initial, batch = _problem(observation)
    config = _config(observation)
    loss, grad, gn = _trial_terms(model, initial, _garbage(batch), config)
    kappa = initial.clone().requires_grad_()
    _, activity = model(kappa, N_TIME, inputs=batch.inputs)
    expected = expected_observation(model.readout(activity), observation, bin_width=0.05)
    nll = observation_nll(batch.data, expected, observation, noise_std=model.log_noise_std.exp())
    per_trial = (nll * batch.observed()).sum((1, 2))
    (want,) = torch.autograd.grad(per_trial.sum(), kappa)
    torch.testing.assert_close(grad, want, rtol=1e-9, atol=1e-10)
    differences = per_trial.detach() - loss  # data-only constants
    if observation == "gaussian":
        torch.testing.assert_close(differences, _gaussian_constants(model, batch))
    assert torch.isfinite(gn).all()
    # All units observed: the unmasked terms.
    plain = Batch(batch.data, batch.mask, batch.inputs)
    for a, b in zip(
        _trial_terms(model, initial, _all_units(plain), config),
        _trial_terms(model, initial, plain, config),
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # and κ(0) inference reads nothing else
    refined = infer_initial(model, initial + 0.3, _garbage(batch), config, n_iter=5)
    torch.testing.assert_close(
        refined, infer_initial(model, initial + 0.3, batch, config, n_iter=5)
    )


def _gaussian_constants(model, batch):
    log_std = model.log_noise_std.detach()
    per_value = log_std + 0.5 * torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
    return (batch.observed() * per_value).sum((1, 2))


@pytest.mark.parametrize("observation", ["gaussian", "poisson"])
def test_refit_units_uses_each_units_observed_bins_only(observation):
    g = torch.Generator().manual_seed(3)
    n_bins = 600
    kappa = torch.randn(n_bins, 2, generator=g, dtype=torch.float64)
    theta = torch.cat(
        [
            torch.randn(6, 2, generator=g, dtype=torch.float64),
            0.2 * torch.randn(6, 1, generator=g, dtype=torch.float64),
            torch.full((6, 1), 4.0, dtype=torch.float64),
            torch.full((6, 1), 2.0, dtype=torch.float64),
        ],
        dim=1,
    )
    r = theta[:, 3] * torch.tanh(kappa @ theta[:, :2].T + theta[:, 2]) + theta[:, 4]
    if observation == "poisson":
        y = torch.poisson(0.05 * torch.nn.functional.softplus(r), generator=g)
    else:
        y = r + 0.2 * torch.randn(r.shape, generator=g, dtype=torch.float64)
    observed = torch.zeros(n_bins, 6, dtype=torch.bool)
    observed[:200, :3] = True  # units 0-2 seen in the first 200 bins, 3-5 in the rest
    observed[200:, 3:] = True
    start = theta * 1.3
    common = {"observation": observation, "nonlinearity": "tanh", "bin_width": 0.05}
    garbage = torch.where(observed, y, torch.full_like(y, float("nan")))
    out = refit_units(kappa, garbage, None, start, observed=observed, loading_var=1.0, **common)
    assert torch.isfinite(out).all()
    first = refit_units(kappa[:200], y[:200, :3], None, start[:3], loading_var=1.0, **common)
    rest = refit_units(kappa[200:], y[200:, 3:], None, start[3:], loading_var=1.0, **common)
    # equal up to where rounding (sums over other numbers of bins) moves a unit's last step
    torch.testing.assert_close(out, torch.cat([first, rest]), rtol=1e-6, atol=1e-9)
    all_seen = torch.ones_like(observed)
    torch.testing.assert_close(
        refit_units(kappa, y, None, start, observed=all_seen, **common),
        refit_units(kappa, y, None, start, **common),
        rtol=1e-12,
        atol=1e-12,
    )


def test_refit_phase_reads_no_unobserved_value():
    model, initial, batch = _problem("gaussian")
    config = _config("gaussian")
    results = []
    for b in (batch, _garbage(batch)):
        fresh = LowRankRNN(N_UNITS, 2, n_inputs=1, alpha=0.2, dtype=torch.float64)
        fresh.load_state_dict(model.state_dict())
        out = _refit_phase(fresh, initial, initial[:2], b, b.take(slice(0, 2)), config, 1e9)
        assert out is not None
        results.append([p.detach().clone() for p in fresh.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=0)
