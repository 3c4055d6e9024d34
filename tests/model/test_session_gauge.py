"""match_gauge: the map between two fits of one circuit is recovered from their dynamics."""

from __future__ import annotations

import copy

import numpy as np
import torch

from nwb_lrconn.model.gauge import apply_gauge
from nwb_lrconn.model.session_gauge import match_gauge


def _mapped(fit, A, c):
    """A copy of the fitted estimator ``fit`` in the gauge κ → A κ + c."""
    M, K, B, d, latents = apply_gauge(fit.M_, fit.K_, fit.B_, fit.d_, fit.latents_, A, c)
    out = copy.deepcopy(fit)
    with torch.no_grad():
        for name, value in (("M", M), ("K", K), ("B", B), ("d", d)):
            param = getattr(out.model_, name)
            param.copy_(torch.as_tensor(value, dtype=param.dtype))
    out.latents_ = latents
    return out


def test_a_known_map_between_two_copies_of_one_fit_is_found_first(joint_sessions, joint_fit):
    _, recordings, _ = joint_sessions
    single = joint_fit.separate_[0]
    rec = recordings[0].select_trials(joint_fit.sessions_[0].train_trials)
    angle = 1.1  # not one of the starting rotations
    A = 1.3 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    A = A @ np.diag([1.0, -1.0])  # with a reflection
    c = np.zeros(2)  # an offset is not a symmetry of the dynamics (κ(t+1) gains α c)
    reference = _mapped(single, A, c)
    candidates = match_gauge(reference, single, rec, rec, np.random.default_rng(0))
    assert 1 <= len(candidates) <= 3
    found_A, found_c = candidates[0]
    np.testing.assert_allclose(found_A, A, atol=2e-3)
    np.testing.assert_allclose(found_c, c, atol=2e-3)
