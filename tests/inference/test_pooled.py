"""pooled_distribution: stage 3 of a joint fit (ground truth on sessions of one network, a
session of another network, the gauge symmetry of an odd flow, invariants, errors)."""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nwb_lrconn.config import DistributionConfig
from nwb_lrconn.inference.dynamics import latent_velocity
from nwb_lrconn.inference.pooled import (
    FLAG_RATIO,
    SYMMETRY_TOLERANCE,
    candidate_symmetries,
    flag_sessions,
    flow_asymmetry,
    pooled_distribution,
    session_symmetries,
)
from nwb_lrconn.model.joint import JointLowRankRNN

FAST = {"max_components": 2, "n_folds": 3}  # the mixtures' search, cut for speed


@pytest.fixture(scope="module")
def pooled(joint_sessions, joint_fit):
    return pooled_distribution(
        joint_fit, joint_sessions[1], n_samples=300, mixture_params=FAST, random_state=0
    )


def test_one_network_gives_symmetric_distances_near_the_floor(joint_fit, pooled):
    D = pooled.dissimilarity
    assert D.shape == (3, 3) and np.all(np.isfinite(D))
    np.testing.assert_array_equal(D, D.T)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    assert np.all(D[~np.eye(3, dtype=bool)] > 0)
    assert pooled.floor.shape == (3,) and np.all(pooled.floor > 0)
    assert pooled.flagged == ()  # every session records the same network
    assert pooled.reference == joint_fit.seed_session_
    for S, error in zip(pooled.symmetry, pooled.asymmetry):
        np.testing.assert_allclose(S @ S.T, np.eye(2), atol=1e-12)
        assert error <= SYMMETRY_TOLERANCE
    np.testing.assert_array_equal(pooled.symmetry[pooled.reference], np.eye(2))


def test_pooled_distribution_holds_every_unit_in_the_shared_gauge(joint_fit, pooled):
    assert pooled.pooled.model in ("gmm", "gaussian")
    assert pooled.reason.startswith("60 units < 500") and "pooled over 3 sessions" in pooled.reason
    assert [d.model for d in pooled.sessions] == [pooled.sessions[0].model] * 3
    # The pooled z = (m, b, d) are the sessions' units together, each turned by its symmetry.
    z = np.concatenate(
        [
            np.c_[view.M @ S.T, view.B, view.d]
            for view, S in zip(joint_fit.sessions_, pooled.symmetry)
        ]
    )
    assert z.shape[0] == joint_fit.model_.n_units
    np.testing.assert_allclose(pooled.pooled.architecture["z_mean"], z.mean(0), atol=1e-12)
    for dist, view, S in zip(pooled.sessions, joint_fit.sessions_, pooled.symmetry):
        np.testing.assert_allclose(dist.architecture["z_mean"], (view.M @ S.T).mean(0).tolist()
                                   + [view.d.mean()], atol=1e-12)  # fmt: skip
        assert dist.samples_z.shape == (300, 3) and dist.samples_k.shape == (300, 2)
    # Three sessions' states under one ridge sum: λ three times each session's, so that the
    # pooled objective is the mean of the sessions' (equal regularisation).
    lam = DistributionConfig.ridge_lambda
    assert [d.ridge_lambda for d in pooled.sessions] == [lam] * 3
    assert pooled.pooled.ridge_lambda == pytest.approx(3 * lam, rel=1e-12)


def test_the_pooled_ridge_scales_a_given_lambda_and_leaves_the_sessions_alone(
    joint_sessions, joint_fit
):
    params = {**FAST, "ridge_lambda": 2e-4}
    result = pooled_distribution(
        joint_fit, joint_sessions[1], n_samples=50, mixture_params=params, random_state=1
    )
    assert [d.ridge_lambda for d in result.sessions] == [2e-4] * 3
    assert result.pooled.ridge_lambda == pytest.approx(6e-4, rel=1e-12)
    assert params["ridge_lambda"] == 2e-4  # the caller's dict is not modified


def _odd_network_copy(joint, session: int, *, flip: bool):
    """``joint`` made odd and lopsided, and with ``flip`` one session turned by −I.

    With d = 0 a tanh network is odd, and a unit (m, k, g) and its mirror (−m, −k, −g) drive the
    latents (k φ(m·κ)) and read out (g φ(m·κ)) alike: every unit is first mirrored into the half
    space m₁ > 0 (the network, its flow and its likelihood unchanged; its law no longer −I
    symmetric). With ``flip`` the session's units are then all mirrored and its latents negated:
    an exactly equal fit with the session turned by −I.
    """
    out = copy.deepcopy(joint)
    model = out.model_
    with torch.no_grad():
        model.d.zero_()
        sign = torch.where(model.M[:, 0] < 0, -1.0, 1.0)
        if flip:
            sign[torch.as_tensor(out.sessions_[session].units)] *= -1
        for name in ("M", "K"):
            getattr(model, name).mul_(sign[:, None])
        model.readout_gain.mul_(sign)
    signs = sign.double().numpy()
    views = []
    for s, view in enumerate(out.sessions_):
        unit = signs[view.units]
        views.append(
            dataclasses.replace(
                view,
                M=unit[:, None] * view.M,
                K=unit[:, None] * view.K,
                d=0 * view.d,
                readout_gain=unit * view.readout_gain,
                latents=(-1.0 if flip and s == session else 1.0) * view.latents,
            )
        )
    out.sessions_ = views
    return out


def test_a_session_turned_by_a_symmetry_of_the_flow_is_turned_back(joint_sessions, joint_fit):
    recordings = joint_sessions[1]
    other = next(s for s in range(3) if s != joint_fit.seed_session_)
    plain = _odd_network_copy(joint_fit, other, flip=False)
    turned = _odd_network_copy(joint_fit, other, flip=True)
    # Ground truth of the algebra: turning one session keeps its own block of J = M Kᵀ/N and
    # the flow; only the blocks that link it to other sessions change (what no recording of
    # disjoint units can pin).
    M, K = (getattr(plain.model_, n).detach().double().numpy() for n in "MK")
    M2, K2 = (getattr(turned.model_, n).detach().double().numpy() for n in "MK")
    rows = turned.sessions_[other].units
    np.testing.assert_allclose((M @ K.T)[np.ix_(rows, rows)], (M2 @ K2.T)[np.ix_(rows, rows)])
    cross = np.setdiff1d(np.arange(len(M)), rows)
    np.testing.assert_allclose((M @ K.T)[np.ix_(rows, cross)], -(M2 @ K2.T)[np.ix_(rows, cross)])
    states = plain.sessions_[other].latents[plain.sessions_[other].latent_mask]
    np.testing.assert_allclose(latent_velocity(states, M, K), latent_velocity(states, M2, K2))
    assert flow_asymmetry(-np.eye(2), states, M2, K2, np.zeros(len(M2))) < 1e-12
    S_plain, _ = session_symmetries(plain, recordings, random_state=0)
    S_turned, error = session_symmetries(turned, recordings, random_state=0)
    for S in S_plain:  # every session already in the reference's half space: no turn
        np.testing.assert_array_equal(S, np.eye(2))
    # Turned back into the half space m₁ > 0: by −I, or by the mirror of the first axis, which
    # the law (symmetric in m₂) cannot tell from it and the 60-unit flow nearly shares.
    back = S_turned[other]
    np.testing.assert_array_equal(back[:, 0], [-1.0, 0.0])
    assert np.all(turned.sessions_[other].M @ back.T[:, 0] > 0)
    assert error[other] <= SYMMETRY_TOLERANCE


def test_a_map_that_is_not_a_symmetry_is_measured_as_such(joint_fit):
    M, K, d = (getattr(joint_fit.model_, n).detach().double().numpy() for n in "MKd")
    view = joint_fit.sessions_[0]
    states = view.latents[view.latent_mask]
    assert flow_asymmetry(np.eye(2), states, M, K, d) == 0.0
    # A tanh network without biases is odd; a stretch is no symmetry.
    assert flow_asymmetry(-np.eye(2), states, M, K, 0 * d) < 1e-12
    assert flow_asymmetry(2 * np.eye(2), states, M, K, d) > 0.5


def test_candidate_symmetries_are_the_signed_permutations():
    for rank, count in ((1, 2), (2, 8), (3, 48)):
        maps = candidate_symmetries(rank)
        assert len(maps) == count
        np.testing.assert_array_equal(maps[0], np.eye(rank))
        for S in maps:
            np.testing.assert_array_equal(S @ S.T, np.eye(rank))
        assert len({S.tobytes() for S in maps}) == count
    assert len(candidate_symmetries(5)) == 2**5


def test_flag_rule_needs_the_nearest_session_far_above_both_floors():
    floor = np.array([1.0, 1.0, 1.0])
    near, far = 0.5, 10 * FLAG_RATIO
    D = np.array([[0, near, far], [near, 0, far], [far, far, 0]])
    assert flag_sessions(D, floor) == (2,)
    assert flag_sessions(D, np.array([1.0, 1.0, 20 * FLAG_RATIO])) == ()  # a noisy floor
    D2 = np.array([[0, far], [far, 0]])
    assert flag_sessions(D2, floor[:2]) == (0, 1)  # two sessions: nothing tells which
    assert flag_sessions(D2, np.array([np.nan, 1.0])) == ()


@pytest.mark.slow
@pytest.mark.parametrize("other", ["bistable", "limit_cycle"])
def test_a_session_of_another_network_is_flagged(joint_case, other):
    record_sessions, fit_joint = joint_case
    _, recordings, _ = record_sessions(other, per_session=60)
    joint = fit_joint(recordings)
    result = pooled_distribution(
        joint, recordings, n_samples=300, mixture_params=FAST, random_state=0
    )
    assert result.flagged == (2,)
    assert min(result.dissimilarity[2, :2]) > 10 * result.floor.max()
    if other == "limit_cycle":  # no fixed point of the square's flow makes a cycle
        assert joint.compare_to_separate(recordings)[2]["worse"]
    # The bistable session's likelihood check is not asserted: with this short training its
    # own fit is poor (held-out log-likelihood below the joint fit's), so the joint fit cannot
    # lose against it; with 200 units and full training it is flagged
    # (tests/benchmarks/bench_joint.py --distribution). Its units' law gives it away here too.


def test_bad_arguments_are_refused(joint_sessions, joint_fit):
    recordings = joint_sessions[1]
    with pytest.raises(TypeError, match="joint must be a fitted JointLowRankRNN; got list"):
        pooled_distribution(recordings, recordings)
    with pytest.raises(Exception, match="This JointLowRankRNN is not fitted yet"):
        pooled_distribution(JointLowRankRNN(), recordings)
    with pytest.raises(TypeError, match="recordings must be the list of 3 Recordings given"):
        pooled_distribution(joint_fit, recordings[0])
    with pytest.raises(ValueError, match="recordings must be the 3 recordings given to the joint"):
        pooled_distribution(joint_fit, recordings[:2])
    with pytest.raises(TypeError, match=r"recordings\[1\] must be a Recording; got ndarray"):
        pooled_distribution(joint_fit, [recordings[0], recordings[1].data, recordings[2]])
    swapped = [recordings[1], recordings[0], recordings[2]]
    with pytest.raises(ValueError, match=r"recordings\[0\] is not session 0 of the joint fit"):
        pooled_distribution(joint_fit, swapped)
    with pytest.raises(ValueError, match="n_samples"):
        pooled_distribution(joint_fit, recordings, n_samples=0)
    with pytest.raises(TypeError, match="joint must be a fitted JointLowRankRNN"):
        session_symmetries(SimpleNamespace(), recordings)
