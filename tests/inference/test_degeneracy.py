"""Degeneracy report: gauge, constrained/degenerate counts, richness, per-unit scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from nwb_lrconn.data import LowRankFit, Recording
from nwb_lrconn.inference.degeneracy import (
    THRESHOLD_RULE,
    assess_richness,
    classify_directions,
    compute_degeneracy,
    effective_rank,
    state_richness,
)
from nwb_lrconn.inference.laplace import laplace_posterior
from nwb_lrconn.model.networks import (
    grid_initial_conditions,
    load_published_network,
    phi,
    simulate_latents,
)


def make_case(n_units=8, rank=2, n_trials=6, n_time=25, nonlinearity="tanh", d=None, seed=0):
    """Ground-truth Gaussian-observation "fit" of a random low-rank network."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n_units, rank))
    K = 1.6 * M + rng.normal(size=(n_units, rank))
    d = 0.3 * rng.normal(size=n_units) if d is None else np.asarray(d, dtype=float)
    latents = simulate_latents(
        M, K, rng.uniform(-2, 2, (n_trials, rank)), n_time, nonlinearity=nonlinearity, d=d
    )
    eta = phi(latents @ M.T + d, nonlinearity)
    mask = np.ones((n_trials, n_time), bool)
    kw = dict(unit_ids=np.arange(n_units), trial_start_times=np.arange(n_trials, dtype=float))
    recording = Recording(
        data=eta, mask=mask, bin_width=0.01, kind="rates", unit_rows=np.arange(n_units), **kw
    )
    fit = LowRankFit(
        M=M,
        K=K,
        B=np.zeros((n_units, 0)),
        d=d,
        readout_gain=np.ones(n_units),
        readout_offset=np.zeros(n_units),
        noise_std=np.full(n_units, 0.5),
        rank=rank,
        nonlinearity=nonlinearity,
        alpha=0.1,
        bin_width=0.01,
        observation="gaussian",
        latents=latents,
        latent_mask=mask,
        loss_history=np.zeros((0, 2)),
        metrics={},
        unit_quality=np.zeros(n_units),
        train_trials=np.arange(n_trials),
        test_trials=np.arange(0),
        **kw,
    )
    return fit, recording


@pytest.mark.parametrize("rank", [2, 3])
def test_dense_report_counts_and_gauge(rank):
    fit, recording = make_case(rank=rank)
    lam = 0.1
    post = laplace_posterior(fit, recording, prior_precision=lam)
    report = compute_degeneracy(fit, recording, post)
    P = post.n_params
    assert report.n_gauge == rank**2
    assert report.n_total == P
    assert report.n_constrained + report.n_degenerate + report.n_gauge == P
    G = report.gauge_basis
    np.testing.assert_allclose(G.T @ G, np.eye(rank**2), atol=1e-12)
    F = (post.eigenvectors * post.eigenvalues) @ post.eigenvectors.T
    assert np.abs(F @ G).max() < 1e-10 * np.abs(F).max()  # zero data precision
    # The spectrum is that of F on the gauge complement, and the counts follow the λ rule.
    comp = linalg.null_space(G.T)
    np.testing.assert_allclose(
        report.spectrum, np.linalg.eigvalsh(comp.T @ F @ comp)[::-1], atol=1e-9 * F.max()
    )
    assert report.n_constrained == np.sum(report.spectrum > lam)
    assert report.threshold == lam and report.threshold_rule == THRESHOLD_RULE
    assert report.unit_scores.shape == (fit.n_units,)
    assert np.all((report.unit_scores >= 0) & (report.unit_scores <= 1))


def test_silent_unit_has_zero_score():
    """A relu unit that never fires has an output loading the data say nothing about."""
    d = np.full(8, 0.5)
    d[3] = -50.0
    fit, recording = make_case(nonlinearity="relu", d=d)
    report = compute_degeneracy(fit, recording, prior_precision=1.0)
    assert report.unit_scores[3] == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.delete(report.unit_scores, 3) > 0.01)


def test_prior_precision_moves_the_threshold():
    fit, recording = make_case()
    weak = compute_degeneracy(fit, recording, prior_precision=1e-6)
    strong = compute_degeneracy(fit, recording, prior_precision=1e3)
    assert weak.n_constrained > strong.n_constrained
    assert weak.n_gauge == strong.n_gauge == 4


def test_blocks_report_matches_dense():
    fit, recording = make_case(n_units=12)
    dense = compute_degeneracy(fit, recording, prior_precision=0.3, structure="dense")
    post = laplace_posterior(
        fit, recording, prior_precision=0.3, structure="blocks", n_eigenpairs=5,
        coupling_tol=1e-12,
    )  # fmt: skip
    report = compute_degeneracy(fit, recording, post)
    assert report.n_constrained + report.n_degenerate + report.n_gauge == post.n_params
    np.testing.assert_array_equal(report.spectrum, post.eigenvalues)
    np.testing.assert_allclose(report.spectrum, dense.spectrum[:5], rtol=1e-5)
    assert report.n_constrained == dense.n_constrained
    np.testing.assert_allclose(report.unit_scores, dense.unit_scores, rtol=1e-6)


def test_classify_and_effective_rank():
    assert classify_directions(np.array([5.0, 1.0, 0.5, 0.0]), 1.0) == (1, 3)
    assert effective_rank(np.array([10.0, 1.0, 1e-3, 1e-9]), rtol=1e-3) == 2
    assert effective_rank(np.zeros(3)) == 0


def test_published_grid_is_identifiable(data_dir):
    net = load_published_network("bistable", data_dir)
    latents = simulate_latents(net.M, net.K, grid_initial_conditions(20, 2.4), 100)
    mask = np.ones(latents.shape[:2], bool)
    result = assess_richness(latents, mask, net.M, max_states=5000)
    assert result.identifiable
    assert result.phi_effective_rank > 3
    assert "rich enough" in result.verdict
    assert result.n_states == 40000


def test_fixed_point_is_not_identifiable(data_dir):
    """Trajectories that sit at one stable fixed point do not identify the conditional mean."""
    net = load_published_network("bistable", data_dir)
    start = simulate_latents(net.M, net.K, np.array([[0.8, 0.5]]), 2000)[0, -1]
    latents = simulate_latents(net.M, net.K, np.repeat(start[None], 50, axis=0), 100)
    mask = np.ones(latents.shape[:2], bool)
    result = assess_richness(latents, mask, net.M)
    assert not result.identifiable
    assert result.spread < 1e-3
    assert result.verdict.startswith("Not identifiable: the trajectories do not explore")
    assert state_richness(latents, mask) == result.spread


def test_too_few_units_names_the_units_not_the_trials(data_dir):
    """Three units at rank 2: rich trials, yet Φ has three columns; the verdict says so."""
    net = load_published_network("bistable", data_dir)
    latents = simulate_latents(net.M, net.K, grid_initial_conditions(20, 2.4), 100)
    mask = np.ones(latents.shape[:2], bool)
    rich = assess_richness(latents, mask, net.M, max_states=5000)
    few = assess_richness(latents, mask, net.M[:3], max_states=5000)
    assert rich.identifiable and not few.identifiable
    assert few.phi_effective_rank == 3
    assert few.verdict.startswith("Not identifiable: too few units (3)")
    assert "More trials will not help" in few.verdict
    assert "more varied trials" not in few.verdict


def test_validation_messages():
    fit, recording = make_case()
    other_fit, other_rec = make_case(n_units=5)
    post = laplace_posterior(other_fit, other_rec)
    with pytest.raises(ValueError, match="posterior has 25 parameters but the fit has 40"):
        compute_degeneracy(fit, recording, post)
    with pytest.raises(ValueError, match="max_states must be >= 1"):
        compute_degeneracy(fit, recording, max_states=0)
    with pytest.raises(ValueError, match="rtol must be finite and > 0"):
        effective_rank(np.ones(3), rtol=0.0)
    with pytest.raises(ValueError, match="prior_precision must be finite and > 0"):
        classify_directions(np.ones(3), 0.0)
