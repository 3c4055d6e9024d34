"""Training helpers (nwb_lrconn.model._engine.loop)."""

import math

import numpy as np
import pytest
import torch

from nwb_lrconn.model._engine.loop import _adam_patience, _Monitor, loss_spread, weight_penalty
from nwb_lrconn.model._engine.objective import Batch, TrainConfig
from nwb_lrconn.model.lowrank import LowRankRNN
from nwb_lrconn.model.observation import expected_observation, observation_nll


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


@pytest.mark.parametrize("observation", ["poisson", "gaussian"])
def test_loss_spread_is_the_standard_error_over_trials(observation):
    torch.manual_seed(0)
    model = LowRankRNN(9, 2, alpha=0.2, dtype=torch.float64)
    with torch.no_grad():
        model.M.normal_()
        model.K.normal_(std=2.0)
        model.readout_gain.uniform_(1.0, 3.0)
        model.log_noise_std.fill_(-1.0)
    initial = torch.randn(30, 2, dtype=torch.float64)
    data = torch.poisson(torch.full((30, 12, 9), 0.7, dtype=torch.float64))
    mask = torch.rand(30, 12) < 0.8  # ragged: trials differ in their number of values
    batch = Batch(data, mask, None)
    config = TrainConfig(observation, 0.1, 0.0, 1, 1e-3, None, 1, 0.0, 0.0, False)
    _, activity = model(initial, 12)
    expected = expected_observation(model.readout(activity), observation, bin_width=0.1)
    nll = observation_nll(data, expected, observation, noise_std=model.log_noise_std.exp())
    per_trial = (nll * mask[..., None]).sum((1, 2)).detach().numpy()
    counts = mask.sum(1).numpy() * 9.0
    # The standard error of Σ S_j / Σ C_j by the jackknife, a different route to the same number.
    n = len(per_trial)
    leave_one = np.array(
        [(per_trial.sum() - s) / (counts.sum() - c) for s, c in zip(per_trial, counts)]
    )
    jackknife = math.sqrt((n - 1) / n * ((leave_one - leave_one.mean()) ** 2).sum())
    assert loss_spread(model, initial, batch, config) == pytest.approx(jackknife, rel=0.05)
    assert loss_spread(model, initial[:1], batch.take(torch.arange(1)), config) == 0.0


def test_monitor_counts_progress_in_units_of_the_spread():
    monitor = _Monitor(10.0, 0, "s0", lambda: 1.0, tol=0.1)
    assert monitor.threshold == pytest.approx(0.1)
    monitor.update(1, 9.95, lambda: "s1")  # a new best, but below the threshold: no progress
    assert (monitor.best, monitor.state, monitor.reference_step) == (9.95, "s1", 0)
    assert not monitor.stalled(1, patience=2)
    monitor.update(2, 9.96, lambda: "s2")
    assert monitor.state == "s1"  # no new best
    assert monitor.stalled(2, patience=2)
    # Progress accumulated over the window counts once the spread is re-measured smaller.
    spreads = iter([1.0, 0.1])
    monitor = _Monitor(10.0, 0, "s0", lambda: next(spreads), 0.1)
    monitor.update(1, 9.95, lambda: "s1")
    monitor.update(2, 9.94, lambda: "s2")
    assert not monitor.stalled(2, patience=2)  # 0.06 > 0.1 × 0.1: progress, counted from here
    assert (monitor.reference, monitor.reference_step) == (9.94, 2)
    # A phase judged on its own course: the first loss always counts as progress.
    monitor = _Monitor(5.0, 7, "best", lambda: 1.0, 0.1, reference=math.inf, since=9)
    monitor.update(10, 6.0, lambda: "worse")
    assert monitor.state == "best" and monitor.reference == 6.0 and monitor.reference_step == 10


def test_monitor_each_step_does_not_add_up_a_tail_of_small_gains():
    gains = [0.06, 0.05, 0.04]  # each below the threshold 0.1, together above it
    for each_step, stalls in ((False, False), (True, True)):
        monitor = _Monitor(10.0, 0, "s0", lambda: 1.0, 0.1, each_step=each_step)
        loss = 10.0
        for step, gain in enumerate(gains, start=1):
            loss -= gain
            monitor.update(step, loss, lambda: "s")
        assert monitor.stalled(3, patience=3) is stalls
    monitor = _Monitor(10.0, 0, "s0", lambda: 1.0, 0.1, each_step=True)
    monitor.update(1, 9.95, lambda: "s1")
    monitor.update(2, 9.8, lambda: "s2")  # 0.15 below the previous best: progress
    assert (monitor.reference, monitor.reference_step) == (9.8, 2)


@pytest.mark.parametrize(
    ("last_progress", "process_noise", "lbfgs_rounds", "expected"),
    [
        (0, 0.0, 30, 5),  # no progress beyond the initial state
        (1, 0.0, 30, 5),  # progress ended in the first epoch: a short plateau hands over
        (12, 0.0, 30, 12),  # no longer than the course of progress before it
        (150, 0.0, 30, 20),  # never more than the configured patience
        (1, 0.05, 30, 20),  # process noise: its slow gains are not in the held-out loss
        (1, 0.0, 0, 20),  # no L-BFGS: each learning-rate cut waits the full patience
    ],
)
def test_adam_hands_over_after_a_plateau_as_long_as_its_progress(
    last_progress, process_noise, lbfgs_rounds, expected
):
    config = TrainConfig(
        "gaussian", 0.1, 0.0, 500, 1e-2, 64, 20, 0.0, process_noise, False, lbfgs_rounds
    )
    monitor = _Monitor(10.0, 0, "s0", lambda: 1.0, 0.1)
    monitor.update(last_progress, 5.0, lambda: "s1")  # progress at that epoch
    assert monitor.reference_step == last_progress
    assert _adam_patience(monitor, config) == expected
