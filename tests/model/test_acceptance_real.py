"""Acceptance fits on real data (slow; run with ``-m slow -s``): head-direction cells, fly compass.

Each test prints the numbers it measures. Angles are compared through the circular correlation
(Jammalamadaka) and the resultant length of the angle difference, maximised over a reflection
(the latent plane has no preferred orientation: the gauge includes reflections).
"""

from __future__ import annotations

import numpy as np
import pytest

from nwb_lrconn.data import Recording
from nwb_lrconn.model._engine.initialise import smooth_counts
from nwb_lrconn.model.estimator import LowRankRNNEstimator

pytestmark = pytest.mark.slow

HD_FILE = "peyrache2015-adn-hd-19cells/Mouse12-120806_ADn19_wake_DERIVED.nwb"
FLY_DIR = "turner-evans2017-fly-central-complex/derived_nwb"


def _angle(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return np.arctan2(centred[:, 1], centred[:, 0])


def _circular_agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(|circular correlation|, resultant length of a ∓ b, best over a reflection)."""
    am, bm = np.angle(np.mean(np.exp(1j * a))), np.angle(np.mean(np.exp(1j * b)))
    sa, sb = np.sin(a - am), np.sin(b - bm)
    corr = abs(np.sum(sa * sb) / np.sqrt(np.sum(sa**2) * np.sum(sb**2)))
    resultant = max(abs(np.mean(np.exp(1j * (a - b)))), abs(np.mean(np.exp(1j * (a + b)))))
    return float(corr), float(resultant)


def _pca_points(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    mean, std = train.mean(0), train.std(0) + 1e-9
    _, _, vt = np.linalg.svd((train - mean) / std, full_matrices=False)
    return ((test - mean) / std) @ vt[:2].T


def test_head_direction_cells(data_file):
    from nwb_lrconn.io import read_timeseries, read_units

    path = data_file(HD_FILE)
    bin_width, tau = 0.02, 0.1
    rec = read_units(path, bin_width=bin_width, epochs="epochs", window_length=1.0)
    angle = read_timeseries(
        path, "processing/behavior/CompassDirection/head_direction", rec, reduce="circmean"
    )[..., 0]
    full = np.flatnonzero(rec.mask.all(axis=1))
    rec, angle = rec.select_trials(full), angle[full]
    est = LowRankRNNEstimator(rank=2, tau=tau, max_epochs=60, lbfgs_rounds=10, random_state=0)
    est.fit(rec)
    test, train = est.test_trials_, est.train_trials_
    mask = rec.mask[test]
    fit = _circular_agreement(_angle(est.latents_[test][mask]), angle[test][mask])
    smooth = smooth_counts(rec.data, rec.mask, 0.5 * tau / bin_width)
    pca = _circular_agreement(
        _angle(_pca_points(smooth[train][rec.mask[train]], smooth[test][mask])),
        angle[test][mask],
    )
    print(
        f"\n[head direction] {rec.n_trials} windows of 1 s, {rec.n_units} cells; held-out "
        f"bits/spike {est.metrics_['bits_per_spike']:.3f}; latent angle vs head direction: "
        f"circ. corr {fit[0]:.3f}, resultant {fit[1]:.3f}; PCA of smoothed counts: "
        f"circ. corr {pca[0]:.3f}, resultant {pca[1]:.3f}"
    )
    assert est.metrics_["bits_per_spike"] > 0
    assert fit[0] > 0.6 and fit[0] > pca[0] + 0.2
    assert fit[1] > pca[1]


def test_fly_compass_calcium(data_dir):
    from nwb_lrconn.io import read_ophys

    files = sorted((data_dir / FLY_DIR).glob("EB_*Dark*_DERIVED.nwb"))
    if not files:
        pytest.skip(f"no EB dark-trial files in {data_dir / FLY_DIR}")
    parts = []
    for path in files:
        rec = read_ophys(
            path,
            series_path="processing/ophys/Fluorescence/EPG",
            window_length=1.0,
            normalize="zscore",
        )
        parts.append(rec.select_trials(np.flatnonzero(rec.mask.all(axis=1))))
    n_time = min(p.n_time for p in parts)
    data = np.concatenate([p.data[:, :n_time] for p in parts])
    rec = Recording(
        data=data,
        mask=np.ones(data.shape[:2], bool),
        bin_width=parts[0].bin_width,
        kind="calcium",
        unit_ids=parts[0].unit_ids,
        unit_rows=parts[0].unit_rows,
        trial_start_times=np.concatenate([p.trial_start_times for p in parts]),
    )
    est = LowRankRNNEstimator(rank=2, tau=0.5, max_epochs=80, batch_size=32, random_state=0)
    est.fit(rec)
    test, train = est.test_trials_, est.train_trials_
    wedges = np.exp(2j * np.pi * np.arange(rec.n_units) / rec.n_units)
    bump = np.angle(rec.data[test][rec.mask[test]] @ wedges)  # population-vector phase
    fit = _circular_agreement(_angle(est.latents_[test][rec.mask[test]]), bump)
    pca = _circular_agreement(
        _angle(
            _pca_points(rec.data[train].reshape(-1, rec.n_units), rec.data[test][rec.mask[test]])
        ),
        bump,
    )
    print(
        f"\n[fly EPG] {rec.n_trials} windows of 1 s from {len(files)} dark trials, "
        f"{rec.n_units} wedges; held-out R² {est.metrics_['r2']:.3f}; latent phase vs bump "
        f"phase: circ. corr {fit[0]:.3f}, resultant {fit[1]:.3f}; PCA: circ. corr "
        f"{pca[0]:.3f}, resultant {pca[1]:.3f}"
    )
    assert est.metrics_["r2"] > 0.3
    assert fit[1] > 0.7
