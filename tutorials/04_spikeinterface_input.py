# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 4. Spike sorting output as input (spikeinterface)
#
# Any spikeinterface `BaseSorting` can be fitted directly: a `NumpySorting` built in memory, the
# output of a sorter, or a sorting read back from NWB with `read_nwb_sorting`. The time base is
# explicit: spike frames are divided by the sampling frequency (plus an optional offset in
# seconds), so the bins line up with the session clock.
#
# Needs the optional extra: `pip install nwb-lrconn[spikeinterface]`.

# %%
import os

import numpy as np
from spikeinterface.core import NumpySorting

from nwb_lrconn.config import DistributionConfig, FitConfig, ReadConfig, RunConfig
from nwb_lrconn.extension import read_results, write_results
from nwb_lrconn.io import read_sorting, read_units, write_units_nwb
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
from nwb_lrconn.model.simulate import simulate_spikes
from nwb_lrconn.pipeline import run
from nwb_lrconn.plotting import plot_latent_dynamics, save_figure

FAST = os.environ.get("NWB_LRCONN_TUTORIAL_FAST") == "1"
N_UNITS = 30 if FAST else 150

# %% [markdown]
# ## A sorting in memory
# Spikes from a bistable network, turned into sample indices at 30 kHz as a sorter would report
# them.

# %%
session = simulate_spikes(
    sample_network("bistable", N_UNITS, random_state=1),
    initial=grid_initial_conditions(5 if FAST else 8),
    n_time=40 if FAST else 100,
    inter_trial_interval=0.0,
    random_state=1,
)
fs = 30_000.0
# A sorter reports sample indices: spike times are quantised to 1/fs.
spike_times = [np.round(t * fs) / fs for t in session.spike_times]
times = np.concatenate(spike_times)
labels = np.concatenate([np.full(t.size, i) for i, t in enumerate(spike_times)])
order = np.argsort(times, kind="stable")
sorting = NumpySorting.from_samples_and_labels(
    [np.round(times[order] * fs).astype(np.int64)], [labels[order]], fs
)
print(sorting)

# %% [markdown]
# ## Bin it and fit it
# With `source="sorting"` the pipeline calls `read_sorting`. A sorting has no trials table, so
# the continuous spike trains are cut into windows (`window_length`, seconds).

# %%
span = (0.0, float(session.trial_stop_times[-1]))
config = RunConfig(
    read=ReadConfig(source="sorting", bin_width=0.02, window_length=0.8, time_range=span),
    fit=FitConfig(rank=2, max_epochs=20 if FAST else 300),
    distribution=DistributionConfig(enabled=not FAST, n_steps_a=2000, n_steps_b=400),
    name="from_sorting",
)
recording = read_sorting(sorting, bin_width=0.02, window_length=0.8, time_range=span)
print(f"{recording.n_units} units, {recording.n_trials} windows of {recording.n_time} bins")
results = run(config, sorting, progress=not FAST)
print(results.fit.metrics)

# %% [markdown]
# ## Write the results
# There is no source NWB file here, so `write_results(..., source=None, output=...)` writes a
# fresh NWB file holding only the results.

# %%
out = write_results(results, None, "sorting_lrconn.nwb", overwrite=True)
print(read_results(out).fit.M.shape)
save_figure(plot_latent_dynamics(results.fit), "sorting_latents")

# %% [markdown]
# ## The same spikes through NWB
# Writing the same spike times to a Units table and reading them back with `read_units` over the
# same time range gives exactly the counts of `read_sorting`: both readers share one binning path.

# %%
write_units_nwb("sorting_units.nwb", spike_times, overwrite=True)
from_nwb = read_units("sorting_units.nwb", bin_width=0.02, window_length=0.8, time_range=span)
identical = np.array_equal(from_nwb.data, recording.data)
print("identical counts:", identical)
if not identical:
    raise RuntimeError("read_units and read_sorting disagree on the same spikes")
