"""Full-size acceptance fits on the published networks (slow; run with ``-m slow -s``).

Set ``NWB_LRCONN_TEST_DEVICE=cuda`` to run them on a GPU (they then use full-batch Adam).
Each test prints the numbers it measures.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from nwb_lrconn.inference.dynamics import (
    find_fixed_points,
    find_limit_cycle,
    flow_field,
    flow_field_rmse,
    latent_velocity,
)
from nwb_lrconn.model.estimator import LowRankRNNEstimator, metrics_from_expected
from nwb_lrconn.model.gauge import align_latents, apply_gauge
from nwb_lrconn.model.networks import NETWORK_NAMES, load_published_network, sample_network
from nwb_lrconn.model.simulate import simulate_rates, simulate_spikes

pytestmark = pytest.mark.slow
DEVICE = os.environ.get("NWB_LRCONN_TEST_DEVICE", "cpu")
BATCH = None if DEVICE.startswith("cuda") else 64


def _r2(fitted, truth):
    return 1 - np.sum((fitted - truth) ** 2) / np.sum((truth - truth.mean(0)) ** 2)


def _aligned(est, net, truth_latents, mask):
    A, c = align_latents(est.latents_, truth_latents, mask)
    points, true_flow = flow_field(net.M, net.K)
    fitted = latent_velocity((points - c) @ np.linalg.inv(A).T, est.M_, est.K_, d=est.d_) @ A.T
    M, K, _, d, lat = apply_gauge(est.M_, est.K_, est.B_, est.d_, est.latents_, A, c)
    return {
        "flow_rmse": flow_field_rmse(true_flow, fitted),
        "flow_rms": float(np.sqrt(np.mean(np.sum(true_flow**2, -1)))),
        "latent_r2": _r2(lat[mask], truth_latents[mask]),
        "A": A,
        "c": c,
        "M": M,
        "K": K,
        "d": d,
    }


def _stable_points_in_truth_frame(est, A, c):
    return [A @ fp.location + c for fp in find_fixed_points(est.M_, est.K_, d=est.d_) if fp.stable]


def _match(found, truth):
    return [min(np.linalg.norm(f - t) for f in found) for t in truth] if found else [np.inf]


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_published_network_rates(name, data_dir):
    net = load_published_network(name, data_dir)
    session = simulate_rates(net)  # 400 trials on the 20×20 grid, 100 steps, noiseless
    start = time.perf_counter()
    est = LowRankRNNEstimator(
        rank=2, max_epochs=300, batch_size=BATCH, random_state=0, device=DEVICE
    ).fit(session.to_recording())
    wall = time.perf_counter() - start
    out = _aligned(est, net, session.latents, np.ones(session.latents.shape[:2], bool))
    print(
        f"\n[rates {name}] wall {wall:.1f} s on {DEVICE}, epochs {len(est.loss_history_) - 1}, "
        f"held-out R² {est.metrics_['r2']:.5f}, flow RMSE {out['flow_rmse']:.4f} "
        f"(|F|rms {out['flow_rms']:.3f}), latent R² {out['latent_r2']:.5f}, "
        f"M R² {_r2(out['M'], net.M):.4f}"
    )
    assert est.metrics_["r2"] > 0.99
    assert out["flow_rmse"] < 0.05
    true_stable = [fp.location for fp in find_fixed_points(net.M, net.K) if fp.stable]
    found = _stable_points_in_truth_frame(est, out["A"], out["c"])
    print(f"[rates {name}] stable points fitted {len(found)}, true {len(true_stable)}")
    if name in ("quadstable", "bistable"):
        assert len(found) == len(true_stable)
        assert max(_match(found, true_stable)) < 0.15
    if name == "limit_cycle":
        cycle = find_limit_cycle(out["M"], out["K"], d=out["d"])
        print(f"[rates {name}] limit cycle radius {cycle.radius:.3f}")
        assert cycle is not None and abs(cycle.radius - 0.97) < 0.05


@pytest.mark.parametrize("name", ["quadstable", "ring"])
def test_poisson_spikes_through_nwb(name, tmp_path):
    from nwb_lrconn.io import read_units, write_units_nwb

    net = sample_network(name, 500, random_state=0)
    session = simulate_spikes(net, bin_width=0.02, random_state=1)  # 400 trials × 2 s
    path = write_units_nwb(tmp_path / "spikes.nwb", session.spike_times, trials=session.trials)
    rec = read_units(path, bin_width=0.02, trials="trials")
    n_time = min(rec.n_time, session.data.shape[1])
    np.testing.assert_array_equal(rec.data[:, :n_time], session.data[:, :n_time])
    start = time.perf_counter()
    est = LowRankRNNEstimator(rank=2, batch_size=BATCH, random_state=0, device=DEVICE).fit(rec)
    wall = time.perf_counter() - start
    truth = session.latents[:, : rec.n_time]
    out = _aligned(est, net, truth, rec.mask)
    sign = np.sign(session.readout_gain)[:, None]
    m_r2 = _r2(out["M"], net.M * sign)
    # M on its own against the truth, under the best gauge map for M alone.
    best_map = np.linalg.lstsq(est.M_, net.M * sign, rcond=None)[0]
    m_r2_own = _r2(est.M_ @ best_map, net.M * sign)
    test = est.test_trials_
    true_rate = np.logaddexp(
        0, session.readout_gain * session.activity[test] + session.readout_offset
    )
    oracle = metrics_from_expected(
        rec.data[test], 0.02 * true_rate[:, : rec.n_time], rec.mask[test], "poisson"
    )[0]
    print(
        f"\n[spikes {name}] wall {wall:.1f} s on {DEVICE}, mean rate "
        f"{rec.data.mean() / 0.02:.1f} Hz, held-out bits/spike "
        f"{est.metrics_['bits_per_spike']:.4f}"
        f" (true model {oracle['bits_per_spike']:.4f}), latent R² {out['latent_r2']:.4f}, "
        f"M R² (latent gauge, sign-aligned) {m_r2:.4f} (M's own best gauge {m_r2_own:.4f}), "
        f"flow RMSE {out['flow_rmse']:.4f}, {len(est.loss_history_) - 1} epochs/rounds"
    )
    assert m_r2 > 0.9
    assert est.metrics_["bits_per_spike"] > 0.5 * oracle["bits_per_spike"]
    assert out["latent_r2"] > 0.9
    if name == "quadstable":
        true_stable = [fp.location for fp in find_fixed_points(net.M, net.K) if fp.stable]
        found = _stable_points_in_truth_frame(est, out["A"], out["c"])
        dist = _match(found, true_stable)
        print(
            f"[spikes {name}] stable points {len(found)}, distances to truth {np.round(dist, 3)}"
        )
        assert len(found) == 4
        assert max(dist) < 0.15
    else:
        # A finite ring network keeps a few stable points on its (slow) ring.
        true_radius = np.mean(
            [np.linalg.norm(fp.location) for fp in find_fixed_points(net.M, net.K) if fp.stable]
        )
        found = _stable_points_in_truth_frame(est, out["A"], out["c"])
        radii = [float(np.linalg.norm(p)) for p in found]
        print(f"[spikes {name}] stable radii {np.round(radii, 3)}, true {true_radius:.3f}")
        assert radii and all(abs(r - true_radius) < 0.15 for r in radii)
