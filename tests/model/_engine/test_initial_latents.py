"""Per-trial κ(0) by damped Gauss–Newton (nwb_lrconn.model._engine.initial_latents)."""

import pytest
import torch

from nwb_lrconn.model._engine.initial_latents import (
    _infer_initial_adam,
    _trial_terms,
    infer_initial,
    initial_prior,
)
from nwb_lrconn.model._engine.objective import Batch, TrainConfig, batch_loss, mean_nll
from nwb_lrconn.model.lowrank import LowRankRNN
from nwb_lrconn.model.observation import expected_observation, observation_nll


def _problem(observation, seed=0, n_trials=7, n_time=25):
    g = torch.Generator().manual_seed(seed)
    model = LowRankRNN(30, 2, n_inputs=1, alpha=0.2, dtype=torch.float64)
    with torch.no_grad():
        for name, scale in (
            ("M", 1.0),
            ("K", 3.0),
            ("B", 1.0),
            ("d", 0.3),
            ("log_noise_std", 0.2),
        ):
            getattr(model, name).copy_(
                scale * torch.randn(getattr(model, name).shape, generator=g)
            )
        model.readout_gain.uniform_(2.0, 6.0, generator=g)
        model.readout_offset.uniform_(1.0, 3.0, generator=g)
        truth = torch.randn(n_trials, 2, generator=g, dtype=torch.float64)
        inputs = torch.randn(n_trials, n_time, 1, generator=g, dtype=torch.float64)
        readout = model.readout(model(truth, n_time, inputs=inputs)[1])
        if observation == "poisson":
            rate = 0.05 * torch.nn.functional.softplus(readout)
            data = torch.poisson(rate, generator=g)
        else:
            data = readout + 0.3 * torch.randn(readout.shape, generator=g, dtype=torch.float64)
    mask = torch.ones(n_trials, n_time, dtype=torch.bool)
    mask[2, 18:] = False  # a ragged trial
    config = TrainConfig(observation, 0.05, 0.0, 1, 1e-3, None, 1, 0.0, 0.0, False)
    start = truth + 0.3 * torch.randn(truth.shape, generator=g, dtype=torch.float64)
    return model, Batch(data, mask, inputs), config, truth, start


@pytest.mark.parametrize("observation", ["poisson", "gaussian"])
def test_trial_terms_are_each_trials_loss_and_its_gradient(observation):
    model, batch, config, _, start = _problem(observation)
    loss, grad, gn = _trial_terms(model, start, batch, config)
    kappa = start.clone().requires_grad_()
    _, activity = model(kappa, batch.data.shape[1], inputs=batch.inputs)
    expected = expected_observation(model.readout(activity), observation, bin_width=0.05)
    nll = observation_nll(batch.data, expected, observation, noise_std=model.log_noise_std.exp())
    per_trial = (nll * batch.mask[..., None]).sum((1, 2))
    (want,) = torch.autograd.grad(per_trial.sum(), kappa)
    torch.testing.assert_close(grad, want, rtol=1e-9, atol=1e-10)
    # Up to the data-only constants, which do not depend on κ(0).
    differences = (per_trial.detach() - loss).numpy()
    other = _trial_terms(model, start + 0.1, batch, config)[0]
    torch.testing.assert_close(
        (observation_nll_at(model, start + 0.1, batch, observation) - other).double(),
        torch.as_tensor(differences),
    )
    assert torch.all(torch.linalg.eigvalsh(gn) >= -1e-9)  # Gauss–Newton: positive semidefinite


@pytest.mark.parametrize("units", [False, True])
@pytest.mark.parametrize("observation", ["poisson", "gaussian"])
def test_trial_terms_do_not_depend_on_the_chunks_and_the_loss_alone_is_the_same(
    observation, units
):
    model, batch, config, _, start = _problem(observation)
    if units:  # each trial observes its own subset of the units
        g = torch.Generator().manual_seed(3)
        seen = torch.rand(batch.data.shape[0], batch.data.shape[2], generator=g) < 0.6
        batch = Batch(batch.data, batch.mask, batch.inputs, units=seen)
    whole = _trial_terms(model, start, batch, config, chunk_size=25)
    for chunk_size in (1, 4, 7):
        parts = _trial_terms(model, start, batch, config, chunk_size=chunk_size)
        for got, want in zip(parts, whole, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    loss, grad, gn = _trial_terms(model, start, batch, config, derivatives=False, chunk_size=4)
    assert grad is None and gn is None
    torch.testing.assert_close(loss, whole[0], rtol=1e-12, atol=1e-12)


def observation_nll_at(model, kappa, batch, observation):
    _, activity = model(kappa, batch.data.shape[1], inputs=batch.inputs)
    expected = expected_observation(model.readout(activity), observation, bin_width=0.05)
    nll = observation_nll(batch.data, expected, observation, noise_std=model.log_noise_std.exp())
    return (nll * batch.mask[..., None]).sum((1, 2)).detach()


@pytest.mark.parametrize("observation", ["poisson", "gaussian"])
def test_gauss_newton_reaches_the_optimum_of_many_first_order_steps(observation):
    model, batch, config, _, start = _problem(observation)
    fast = infer_initial(model, start, batch, config)
    slow = _infer_initial_adam(model, start, batch, config, n_steps=2000)
    with torch.no_grad():
        got, want = (float(batch_loss(model, k, batch, config)) for k in (fast, slow))
        assert got <= want + 1e-6
        assert got < float(batch_loss(model, start, batch, config))


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("observation", ["poisson", "gaussian"])
def test_the_solvers_own_likelihood_is_the_batch_loss_at_its_answer(observation, masked):
    model, batch, config, _, start = _problem(observation)
    if masked:  # each trial observes its own subset of the units, as in a joint fit
        g = torch.Generator().manual_seed(3)
        units = torch.rand(batch.data.shape[0], batch.data.shape[2], generator=g) < 0.6
        batch = Batch(batch.data, batch.mask, batch.inputs, units=units)
    prior = initial_prior(torch.randn(50, 2, generator=torch.Generator().manual_seed(1)))
    kappa, nll = infer_initial(model, start, batch, config, prior=prior, n_iter=3, with_nll=True)
    with torch.no_grad():
        want = float(batch_loss(model, kappa, batch, config))
    assert mean_nll(nll, model, batch, config) == pytest.approx(want, rel=1e-12)


def test_the_solver_stops_each_trial_once_its_steps_gain_nothing_measurable():
    model, batch, config, _, start = _problem("gaussian")
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[1].shape[0])
        return _trial_terms(*args, **kwargs)

    import nwb_lrconn.model._engine.initial_latents as module

    original, module._trial_terms = module._trial_terms, counting
    try:
        kappa = infer_initial(model, start, batch, config, n_iter=50)
        first = len(calls)
        again = infer_initial(model, kappa, batch, config, n_iter=50)
    finally:
        module._trial_terms = original
    assert first < 20  # converged well before the 50 allowed iterations
    assert len(calls) - first == 1  # from the optimum: no step is worth a pass
    torch.testing.assert_close(again, kappa)


def test_the_prior_keeps_a_saturated_trial_from_running_off():
    model, batch, config, _, start = _problem("poisson")
    with torch.no_grad():  # trial 0: the counts of a state far out, where every unit saturates
        far = torch.tensor([[400.0, 200.0]], dtype=torch.float64)
        _, activity = model(far, batch.data.shape[1], inputs=batch.inputs[:1])
        batch.data[0] = 0.05 * torch.nn.functional.softplus(model.readout(activity[0]))
    free = infer_initial(model, start, batch, config, n_iter=50)
    prior = initial_prior(torch.randn(50, 2, generator=torch.Generator().manual_seed(1)))
    held = infer_initial(model, start, batch, config, prior=prior, n_iter=50)
    assert free[0].norm() > 100.0  # maximum likelihood follows the data out
    assert held[0].norm() < 30.0  # within a few prior widths (3) of the training states
    # The other trials move by a fraction of the prior's width (3).
    assert (held[1:] - free[1:]).norm(dim=1).max() < 1.0


def test_initial_prior_is_the_widened_spread_of_the_training_states():
    kappa = torch.randn(400, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([1, 3])
    mean, precision = initial_prior(kappa + torch.tensor([5.0, -1.0]))
    torch.testing.assert_close(mean, torch.tensor([5.0, -1.0]), atol=0.4, rtol=0)
    cov = torch.linalg.inv(precision)
    torch.testing.assert_close(
        cov.diagonal().sqrt(), 3.0 * torch.tensor([1.0, 3.0]), rtol=0.1, atol=0
    )
    assert initial_prior(kappa[:3]) is None  # too few trials for a covariance
