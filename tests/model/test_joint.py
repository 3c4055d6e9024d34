"""JointLowRankRNN: one network from sessions that record disjoint units (ground truth, errors)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nwb_lrconn.inference.dynamics import flow_field, flow_field_rmse, latent_velocity
from nwb_lrconn.model.estimator import LowRankRNNEstimator
from nwb_lrconn.model.gauge import align_latents
from nwb_lrconn.model.joint import JointLowRankRNN

N_SESSIONS, PER_SESSION = 3, 20  # as in the ``joint_sessions`` fixture (tests/conftest.py)


def _flow_rmse(net, latents, truth, mask, M, K, d):
    """Flow-field RMSE against the truth, the gauge aligned on ``latents``."""
    A, c = align_latents(latents, truth, mask)
    points, true_flow = flow_field(net.M, net.K)
    fitted = latent_velocity((points - c) @ np.linalg.inv(A).T, M, K, d=d) @ A.T
    return flow_field_rmse(true_flow, fitted)


def test_joint_flow_beats_every_separate_fit(joint_sessions, joint_fit):
    net, _, truths = joint_sessions
    M, K, d = (getattr(joint_fit.model_, n).detach().double().numpy() for n in ("M", "K", "d"))
    alone, together = [], []
    for s, (view, one) in enumerate(zip(joint_fit.sessions_, joint_fit.separate_)):
        train = view.train_trials
        mask = view.latent_mask[train]
        alone.append(_flow_rmse(net, one.latents_, truths[s][train], mask, one.M_, one.K_, one.d_))
        # The joint flow, its gauge read off this session's latents (see the module docstring
        # on symmetries: each session's own alignment is the fair one).
        together.append(_flow_rmse(net, view.latents, truths[s], view.latent_mask, M, K, d))
    # 20 units a session and a short training: one session's ratio depends on the seed (it
    # ranged 0.3-1.1 over random_state 0-4), the sessions' total does not (0.45-0.74).
    assert sum(together) < 0.8 * sum(alone), (together, alone)
    assert max(together) < 0.4, together  # |F|_rms ≈ 0.67


def test_session_views_partition_the_network_in_one_canonical_gauge(joint_sessions, joint_fit):
    _, recordings, _ = joint_sessions
    model = joint_fit.model_
    assert model.n_units == N_SESSIONS * PER_SESSION
    units = np.concatenate([view.units for view in joint_fit.sessions_])
    np.testing.assert_array_equal(units, np.arange(model.n_units))
    np.testing.assert_array_equal(joint_fit.unit_session_, np.repeat(np.arange(3), PER_SESSION))
    M = model.M.detach().double().numpy()
    visited = []
    for rec, view in zip(recordings, joint_fit.sessions_):
        np.testing.assert_array_equal(view.unit_ids, rec.unit_ids)
        np.testing.assert_allclose(view.M, M[view.units], rtol=1e-6)
        assert view.latents.shape == (rec.n_trials, rec.n_time, 2)
        assert set(view.train_trials) | set(view.test_trials) == set(range(rec.n_trials))
        assert not set(view.train_trials) & set(view.test_trials)
        assert view.metrics["r2"] > 0.95
        assert np.all(view.readout_gain > 0)
        visited.append(view.latents[view.latent_mask])
    points = np.concatenate(visited)
    np.testing.assert_allclose(points.T @ points / len(points), np.eye(2), atol=1e-3)
    gram = M.T @ M
    assert abs(gram[0, 1]) < 1e-3 * gram[0, 0] and gram[0, 0] >= gram[1, 1]


def test_compare_to_separate_reports_each_session(joint_sessions, joint_fit):
    _, recordings, _ = joint_sessions
    rows = joint_fit.compare_to_separate(recordings)
    assert len(rows) == N_SESSIONS
    for row, view in zip(rows, joint_fit.sessions_):
        assert row["difference"] == pytest.approx(row["joint"] - row["separate"], abs=1e-9)
        assert row["joint"] == pytest.approx(view.metrics["log_likelihood"], rel=1e-4)
        assert row["stderr"] > 0
        assert not row["worse"]  # the clean case: pooling costs no session its likelihood


def _recording(rng, n_units=4, **changes):
    from nwb_lrconn.data import Recording

    fields = dict(
        data=rng.standard_normal((3, 10, n_units)),
        mask=np.ones((3, 10), bool),
        bin_width=0.01,
        kind="rates",
        unit_ids=np.arange(n_units),
        unit_rows=np.arange(n_units),
        trial_start_times=np.arange(3.0),
    )
    fields.update(changes)
    return Recording(**fields)


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ({"kind": "spikes", "data": np.ones((3, 10, 4))}, "share their kind: recording 0 has"),
        ({"bin_width": 0.02}, "share their bin_width: recording 0 has 0.01, recording 1 has"),
        (
            {"inputs": np.zeros((3, 10, 1))},
            "share their number of input channels: recording 0 has 0, recording 1 has 1",
        ),
    ],
)
def test_recordings_that_differ_are_refused(second, message):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=message):
        JointLowRankRNN().fit([_recording(rng), _recording(rng, **second)])


def test_bad_recordings_arguments_are_refused():
    rng = np.random.default_rng(0)
    rec = _recording(rng)
    with pytest.raises(TypeError, match="recordings must be a list of nwb_lrconn.data.Recording"):
        JointLowRankRNN().fit(rec)
    with pytest.raises(TypeError, match=r"recordings\[1\] must be a nwb_lrconn.data.Recording"):
        JointLowRankRNN().fit([rec, rec.data])
    with pytest.raises(ValueError, match="a joint fit needs at least 2 recordings; got 1"):
        JointLowRankRNN().fit([rec])
    with pytest.raises(ValueError, match=r"reference must be the index of one of the 2 .* got 2"):
        JointLowRankRNN(reference=2).fit([rec, rec])
    small = _recording(rng, n_units=1)
    with pytest.raises(ValueError, match="rank must be <= n_units; got rank=2 for 1 unit"):
        JointLowRankRNN(LowRankRNNEstimator(rank=2)).fit([rec, small])


def test_unobserved_values_do_not_matter(joint_sessions):
    """Padding of shorter sessions and other sessions' units never reach the fit."""
    from nwb_lrconn.model.joint import _joint_batch

    _, recordings, _ = joint_sessions
    short = dataclasses.replace(
        recordings[1],
        data=recordings[1].data[:, :40],
        mask=recordings[1].mask[:, :40],
    )
    import torch

    from nwb_lrconn.model._engine.objective import TrainConfig

    config = TrainConfig("gaussian", 0.01, 0.0, 1, 1e-3, None, 1, 0.0, 0.0, False)
    parts = [slice(0, 20), slice(20, 40)]
    batch = _joint_batch(60, [recordings[0], short], parts, config, "cpu")
    assert batch.data.shape == (30, 60, 60)
    assert not batch.mask[15:, 40:].any() and batch.mask[:15].all()
    assert torch.equal(batch.units[:15, :20], torch.ones(15, 20, dtype=torch.bool))
    assert not batch.units[:, 40:].any()
    assert float(batch.value_counts().sum()) == 15 * 60 * 20 + 15 * 40 * 20


def test_paired_gain_is_the_ratio_and_its_standard_error():
    from nwb_lrconn.model.joint import _paired_gain

    counts = np.array([100.0, 80.0, 120.0, 100.0])
    own = np.array([150.0, 120.0, 180.0, 150.0])
    mean, stderr = _paired_gain(own - 0.01 * counts, own, counts)  # the joint fit 0.01 better
    assert mean == pytest.approx(0.01) and stderr == pytest.approx(0.0, abs=1e-15)
    rng = np.random.default_rng(0)
    joint = own + 0.02 * counts + rng.normal(0, 0.5, 4)  # clearly worse than the noise
    mean, stderr = _paired_gain(joint, own, counts)
    gain = own - joint
    # The jackknife standard error of the ratio, another route to about the same number.
    leave = np.array([(gain.sum() - g) / (counts.sum() - c) for g, c in zip(gain, counts)])
    jackknife = np.sqrt(3 / 4 * ((leave - leave.mean()) ** 2).sum())
    assert mean == pytest.approx(gain.sum() / counts.sum())
    assert stderr == pytest.approx(jackknife, rel=0.3) and mean < -2 * stderr
    assert _paired_gain(joint[:1], own[:1], counts[:1])[1] == 0.0


def test_session_fit_is_the_sessions_view(joint_sessions, joint_fit):
    _, recordings, _ = joint_sessions
    for s, (rec, view) in enumerate(zip(recordings, joint_fit.sessions_)):
        fit = joint_fit.session_fit(s, rec)
        np.testing.assert_array_equal(fit.M, view.M)
        np.testing.assert_array_equal(fit.K, view.K)
        np.testing.assert_array_equal(fit.latents, view.latents)
        np.testing.assert_array_equal(fit.unit_ids, rec.unit_ids)
        np.testing.assert_array_equal(fit.test_trials, view.test_trials)
        assert fit.metrics == view.metrics and fit.observation == joint_fit.observation_
        assert len(fit.loss_history) == len(joint_fit.loss_history_)
