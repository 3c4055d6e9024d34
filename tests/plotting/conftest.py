"""A small, exactly known Results object for the figure tests (bistable network, perfect fit)."""

from __future__ import annotations

import numpy as np
import pytest

from nwb_lrconn.data import (
    ConnectivityDistribution,
    DegeneracyReport,
    LowRankFit,
    Provenance,
    Recording,
    Results,
    SourceInfo,
)
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network, simulate_latents

N_UNITS, N_TIME, BIN = 60, 30, 0.02


@pytest.fixture(scope="module")
def truth():
    net = sample_network("bistable", N_UNITS, random_state=1)
    latents = simulate_latents(net.M, net.K, grid_initial_conditions(4), N_TIME, alpha=0.1)
    return net, latents


@pytest.fixture(scope="module")
def recording(truth) -> Recording:
    net, latents = truth
    n_trials = latents.shape[0]
    return Recording(
        data=np.tanh(latents @ net.M.T),
        mask=np.ones((n_trials, N_TIME), bool),
        bin_width=BIN,
        kind="rates",
        unit_ids=np.arange(N_UNITS) + 100,
        unit_rows=np.arange(N_UNITS),
        trial_start_times=np.arange(n_trials) * 1.0,
    )


def make_fit(net, latents, rank: int = 2) -> LowRankFit:
    n_trials = latents.shape[0]
    epochs = np.arange(1, 41)
    history = np.stack([1.0 / epochs, 1.2 / epochs + 0.002 * (epochs - 25) ** 2 / 25], axis=1)
    return LowRankFit(
        M=net.M[:, :rank],
        K=net.K[:, :rank],
        B=np.zeros((N_UNITS, 0)),
        d=np.zeros(N_UNITS),
        readout_gain=np.ones(N_UNITS),
        readout_offset=np.zeros(N_UNITS),
        noise_std=np.full(N_UNITS, 0.1),
        rank=rank,
        nonlinearity="tanh",
        alpha=0.1,
        bin_width=BIN,
        observation="gaussian",
        latents=latents[..., :rank],
        latent_mask=np.ones((n_trials, N_TIME), bool),
        trial_start_times=np.arange(n_trials) * 1.0,
        loss_history=history,
        metrics={"r2": 0.99, "log_likelihood": -0.5},
        unit_quality=np.linspace(0.5, 0.99, N_UNITS),
        train_trials=np.arange(12),
        test_trials=np.arange(12, n_trials),
        unit_ids=np.arange(N_UNITS) + 100,
    )


def make_degeneracy(threshold: float = 1.0) -> DegeneracyReport:
    spectrum = np.logspace(3, -4, 50)
    n_constrained = int((spectrum > threshold).sum())
    return DegeneracyReport(
        spectrum=spectrum,
        gauge_basis=np.zeros((10, 4)),
        n_constrained=n_constrained,
        n_degenerate=50 - n_constrained + 6,
        n_gauge=4,
        n_total=60,
        threshold=threshold,
        threshold_rule="data precision > prior precision",
        phi_singular_values=np.logspace(1, -3, 10),
        phi_effective_rank=6,
        identifiable=True,
        verdict="the visited states are rich enough",
        unit_scores=np.linspace(0, 1, N_UNITS),
    )


def make_distribution(net, sigma: float = 1.0) -> ConnectivityDistribution:
    rng = np.random.default_rng(1)
    return ConnectivityDistribution(
        flow_a_parameters={"w": np.zeros(3)},
        flow_b_parameters={"w": np.zeros(3)},
        architecture={"dim_z": 3},
        sigma=sigma,
        ridge_lambda=1e-4,
        n_virtual_units=100,
        training_curves={
            "flow_a_loss": np.linspace(2, 1, 50),
            "flow_b_loss": np.linspace(3, 1, 50),
            "flow_b_val": np.array([[10, 2.0], [20, 1.5], [30, 1.2]]),
        },
        samples_z=np.hstack([net.M, np.zeros((N_UNITS, 1))]) + 0.05 * rng.normal(size=(60, 3)),
        samples_k=net.K + sigma * rng.normal(size=(N_UNITS, 2)),
        validation_metrics={"sinkhorn_m": 0.01},
    )


@pytest.fixture(scope="module")
def results(truth) -> Results:
    net, latents = truth
    return Results(
        name="bistable_fit",
        fit=make_fit(net, latents),
        provenance=Provenance(
            software_version="0.1.0",
            config_json="{}",
            random_seed=0,
            source=SourceInfo(),
            created="2026-01-01T00:00:00+00:00",
        ),
        degeneracy=make_degeneracy(),
        distribution=make_distribution(net),
    )


@pytest.fixture(scope="module")
def fit_factory():
    """``make_fit(net, latents, rank=2)``: a LowRankFit holding the true loadings."""
    return make_fit


@pytest.fixture(scope="module")
def degeneracy_factory():
    """``make_degeneracy(threshold=1.0)``: a DegeneracyReport with a known spectrum."""
    return make_degeneracy
