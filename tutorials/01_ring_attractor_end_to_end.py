# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 1. A synthetic ring attractor, end to end
#
# We simulate spikes from a rank-2 **ring attractor** network whose connectivity we know, write
# them into an NWB file exactly as a real recording would be stored, and run the whole
# `nwb_lrconn` pipeline on that file:
#
# 1. read the Units table and the trials, bin the spikes;
# 2. fit a low-rank RNN (stage 1);
# 3. compute the Laplace posterior and the degeneracy report: which directions of the
#    connectivity the data determine;
# 4. learn the maximum-entropy connectivity distribution (stage 3);
# 5. write everything back into NWB, read it again, and draw the figures.
#
# Set `NWB_LRCONN_TUTORIAL_FAST=1` to run it at toy size in a few seconds. Figures are written to
# the current folder.

# %%
import os
from pathlib import Path

import numpy as np

from nwb_lrconn.config import (
    DistributionConfig,
    FitConfig,
    PosteriorConfig,
    ReadConfig,
    RunConfig,
)
from nwb_lrconn.extension import list_results, read_results
from nwb_lrconn.inference.dynamics import find_fixed_points
from nwb_lrconn.io import write_units_nwb
from nwb_lrconn.model.gauge import align_latents
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
from nwb_lrconn.model.simulate import simulate_spikes
from nwb_lrconn.pipeline import run_file
from nwb_lrconn.plotting import (
    plot_degeneracy_spectrum,
    plot_fitted_activity,
    plot_latent_dynamics,
    plot_loadings,
    plot_summary,
    save_figure,
)

FAST = os.environ.get("NWB_LRCONN_TUTORIAL_FAST") == "1"
N_UNITS, GRID, N_TIME = (40, 4, 40) if FAST else (100, 8, 100)

# %% [markdown]
# ## Simulate and write an NWB file
# The ring network: loadings (m, k) jointly Gaussian with Cov(m_r, k_r) = 1.6. Its latent
# dynamics have a slow ring of radius ≈ 0.92. Trials start from a grid of initial latents; rates
# between 2 and 30 spikes/s; 20 ms bins.

# %%
network = sample_network("ring", N_UNITS, random_state=0)
session = simulate_spikes(
    network,
    initial=grid_initial_conditions(GRID),
    n_time=N_TIME,
    bin_width=0.02,
    rate_range=(2.0, 30.0),
    random_state=0,
)
source = write_units_nwb("ring.nwb", session.spike_times, trials=session.trials, overwrite=True)
print(f"wrote {source}: {N_UNITS} units, {len(session.trials)} trials")

# %% [markdown]
# ## Configure and run
# A `RunConfig` holds one section per stage. The same configuration is stored as JSON in the
# output file, so every fit can be reproduced from the file alone. The posterior is stored as
# per-unit blocks plus the leading eigenpairs (`structure="blocks"`), which is much faster than
# the dense covariance for long recordings.

# %%
config = RunConfig(
    read=ReadConfig(bin_width=0.02, trials="trials"),
    fit=FitConfig(rank=2, max_epochs=30 if FAST else 300, patience=10 if FAST else 30),
    posterior=PosteriorConfig(structure="blocks"),
    distribution=DistributionConfig(
        n_steps_a=200 if FAST else 3000,
        n_steps_b=50 if FAST else 600,
        n_virtual_units=100 if FAST else 500,
        hidden_features=32 if FAST else 128,
        pool_size=2000 if FAST else 50000,
        validation_every=25 if FAST else 100,
    ),
    seed=0,
    name="ring_rank2",
)
output = run_file(source, "ring_lrconn.nwb", config, overwrite=True, progress=not FAST)
results = read_results(output)
print(results.fit.metrics)

# %% [markdown]
# ## Read the results back from NWB
# The output is a small derived NWB file: the source's subject and session identity, a link to
# the source Units table, and a processing module `lrconn` with one group per fit.

# %%
print(list_results("ring_lrconn.nwb"))
stored = read_results("ring_lrconn.nwb", "ring_rank2")
np.testing.assert_allclose(stored.fit.M, results.fit.M)

# %% [markdown]
# ## Compare with the ground truth
# Latents are identifiable only up to an invertible linear map (the gauge). Aligning the fitted
# latents to the true ones by affine least squares measures how well the dynamics were found.

# %%
fit = stored.fit
A, c = align_latents(fit.latents, session.latents, fit.latent_mask)
aligned = fit.latents @ A.T + c
r2 = 1 - np.sum((aligned - session.latents) ** 2) / np.sum(
    (session.latents - session.latents.mean(axis=(0, 1))) ** 2
)
print(f"latent alignment R² = {r2:.3f}")
fixed_points = find_fixed_points(fit.M, fit.K, d=fit.d)
print(f"{len(fixed_points)} fixed points; stable: {sum(fp.stable for fp in fixed_points)}")

# %% [markdown]
# ## What the data determine
# The degeneracy report counts directions of θ = (M, K, B, d) that the recording constrains and
# those it leaves to the prior; most degenerate directions live in K (the output loadings).

# %%
if stored.degeneracy is not None:
    deg = stored.degeneracy
    print(
        f"{deg.n_constrained} constrained, {deg.n_degenerate} degenerate, {deg.n_gauge} gauge "
        f"of {deg.n_total}; {deg.verdict}"
    )

# %% [markdown]
# ## Figures

# %%
from nwb_lrconn.pipeline import read_recording  # noqa: E402

recording = read_recording(config, source)
save_figure(plot_summary(stored), "ring_summary")
save_figure(plot_latent_dynamics(fit, fixed_points=fixed_points), "ring_latents")
save_figure(plot_loadings(fit, stored.distribution), "ring_loadings")
save_figure(plot_fitted_activity(fit, recording), "ring_activity")
if stored.degeneracy is not None:
    save_figure(plot_degeneracy_spectrum(stored.degeneracy), "ring_degeneracy")
print(sorted(str(p) for p in Path(".").glob("ring_*.png")))
