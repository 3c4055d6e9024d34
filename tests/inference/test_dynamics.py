"""Flow fields, fixed points and limit cycles of the published networks (model.networks)."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_lrconn.inference.dynamics import (
    find_fixed_points,
    find_limit_cycle,
    flow_field,
    flow_field_rmse,
)
from nwb_lrconn.model.networks import load_published_network


def _stable(net):
    return np.array([f.location for f in find_fixed_points(net.M, net.K) if f.stable])


def test_quadstable_has_four_stable_points(data_dir):
    pts = _stable(load_published_network("quadstable", data_dir))
    truth = np.array([[-1.86, 0], [0, 1.81], [0, -1.81], [1.86, 0]])
    assert len(pts) == 4
    dist = np.linalg.norm(pts[:, None] - truth[None], axis=-1).min(axis=1)
    assert np.all(dist < 0.1)


def test_bistable_points(data_dir):
    pts = _stable(load_published_network("bistable", data_dir))
    np.testing.assert_allclose(np.sort(np.abs(pts), axis=0), [[0.83, 0.52]] * 2, atol=0.03)


def test_limit_cycle_radius(data_dir):
    net = load_published_network("limit_cycle", data_dir)
    assert len(_stable(net)) == 0
    cycle = find_limit_cycle(net.M, net.K)
    assert cycle is not None
    assert cycle.radius == pytest.approx(0.97, abs=0.05)


def test_fixed_point_has_no_cycle(data_dir):
    assert find_limit_cycle(*_mk(load_published_network("bistable", data_dir))) is None


def _mk(net):
    return net.M, net.K


def test_flow_field_rmse_zero_for_same_network(data_dir):
    net = load_published_network("ring", data_dir)
    pts, vel = flow_field(net.M, net.K)
    assert pts.shape == vel.shape == (30, 30, 2)
    assert flow_field_rmse(vel, vel) == 0.0
    # Replacing K by g(m) keeps the flow field (the degeneracy of
    # tutorials/model.md, "What the data determine").
    _, vel_g = flow_field(net.M, 1.6 * net.M)
    assert flow_field_rmse(vel, vel_g) < 0.05
