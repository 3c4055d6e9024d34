# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 3. The fly compass: calcium imaging of EPG neurons
#
# Two-colour two-photon imaging of the *Drosophila* ellipsoid body in darkness
# (Turner-Evans et al. 2017): 16 EPG wedges (the compass neurons, jRGECO1a) and 16 PEN1 wedges
# (GCaMP6f), at ≈ 11 volumes per second, with the fly's heading on the ball.
#
# The file holds **two** RoiResponseSeries, so the reader never guesses: without `series_path`
# it raises an error listing both. We fit the EPG traces with a calcium observation model and
# check that the latent phase follows the bump phase of the EPG population.

# %%
import os

import numpy as np

from nwb_lrconn.config import FitConfig, ReadConfig, RunConfig
from nwb_lrconn.extension import read_results
from nwb_lrconn.io import list_roi_response_series, read_ophys, read_timeseries
from nwb_lrconn.model.networks import default_data_dir
from nwb_lrconn.pipeline import run_file
from nwb_lrconn.plotting import (
    plot_fitted_activity,
    plot_latent_dynamics,
    plot_summary,
    save_figure,
)
from nwb_lrconn.plotting._common import new_figure

FAST = os.environ.get("NWB_LRCONN_TUTORIAL_FAST") == "1"
FOLDER = default_data_dir() / "turner-evans2017-fly-central-complex" / "derived_nwb"
PATH = FOLDER / "EB_Fly1_9day_6fx37F06_jRGC1ax60D05_Dark_00001_DERIVED.nwb"
if not PATH.is_file():
    print(f"data not found at {PATH}; set NWB_LRCONN_DATA to the shared data folder.")
    raise SystemExit(0)

# %% [markdown]
# ## Choose the series explicitly

# %%
print(list_roi_response_series(PATH))
try:
    read_ophys(PATH, window_length=4.0)
except ValueError as error:
    print("without series_path:", error)
EPG = "processing/ophys/Fluorescence/EPG"

# %% [markdown]
# ## Fit the EPG traces
# The 64-s trial is cut into 4-s windows at the native frame rate; traces are z-scored per ROI.
# The calcium observation model reads out g·φ(x) + c per ROI (an exponential indicator kernel is
# available with `calcium_decay`, but the Laplace posterior currently needs it at 0).

# %%
config = RunConfig(
    read=ReadConfig(
        source="ophys", series_path=EPG, bin_width=None, window_length=4.0, normalize="zscore"
    ),
    fit=FitConfig(rank=2, max_epochs=20 if FAST else 500, patience=5 if FAST else 50),
    seed=0,
    name="epg_rank2",
)
config = config.with_overrides(**{"distribution.enabled": False})
output = run_file(PATH, "epg_lrconn.nwb", config, overwrite=True, progress=not FAST)
results = read_results(output)
fit = results.fit
print({k: round(v, 4) for k, v in fit.metrics.items()})

# %% [markdown]
# ## Latent phase against the bump phase
# The bump phase is the angle of the EPG population vector, Σⱼ Fⱼ exp(2πi j/16), computed from
# the same z-scored traces. The latent phase atan2(κ₂, κ₁) is defined up to rotation and
# reflection, so both signs are tried. The heading on the ball is shown for comparison (it drifts
# against the bump in darkness).

# %%
recording = read_ophys(PATH, series_path=EPG, window_length=4.0, normalize="zscore")
traces = recording.data
wedges = np.exp(2j * np.pi * np.arange(traces.shape[2]) / traces.shape[2])
bump = np.angle(traces @ wedges)
heading = read_timeseries(
    PATH, "processing/behavior/CompassDirection/heading", recording, reduce="circmean"
)[..., 0]
latent = np.arctan2(fit.latents[..., 1], fit.latents[..., 0])


def agreement(a, b):
    return max(abs(np.mean(np.exp(1j * (a - b)))), abs(np.mean(np.exp(1j * (a + b)))))


for name, trials in (("training", fit.train_trials), ("held-out", fit.test_trials)):
    mask = fit.latent_mask[trials]
    print(
        f"{name}: latent vs bump phase {agreement(latent[trials][mask], bump[trials][mask]):.2f}, "
        f"bump vs heading {agreement(bump[trials][mask], heading[trials][mask]):.2f}"
    )

fig = new_figure(figsize=(6, 3))
ax = fig.add_subplot()
t0 = 0
for trial in range(recording.n_trials):
    m = recording.mask[trial]
    time = recording.trial_start_times[trial] + recording.bin_width * np.arange(m.sum())
    ax.plot(
        time, np.degrees(bump[trial, m]), color="C0", lw=1, label="bump" if trial == t0 else None
    )
    ax.plot(
        time,
        np.degrees(latent[trial, m]),
        color="C3",
        lw=1,
        label="latent" if trial == t0 else None,
    )
ax.set_xlabel("time (s)")
ax.set_ylabel("phase (deg)")
ax.legend(frameon=False)
save_figure(fig, "epg_phase")

# %% [markdown]
# ## Figures

# %%
save_figure(plot_summary(results), "epg_summary")
save_figure(plot_latent_dynamics(fit), "epg_latents")
save_figure(plot_fitted_activity(fit, recording, n_units=4), "epg_activity")
