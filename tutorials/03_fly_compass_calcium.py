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
# ask whether the latent phase follows the bump phase of the EPG population on held-out
# windows, against principal components of the same traces.

# %%
import os

import numpy as np

from nwb_lrconn.config import FitConfig, ReadConfig, RunConfig
from nwb_lrconn.extension import read_results
from nwb_lrconn.inference.behaviour import relate_to_behaviour
from nwb_lrconn.io import list_roi_response_series, read_ophys, read_timeseries
from nwb_lrconn.model.networks import default_data_dir
from nwb_lrconn.pipeline import run_file
from nwb_lrconn.plotting import (
    plot_fitted_activity,
    plot_latent_behaviour,
    plot_latent_dynamics,
    plot_summary,
    save_figure,
)

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
# ## Latent phase against the bump phase and the heading
# The bump phase is the angle of the EPG population vector, Σⱼ Fⱼ exp(2πi j/16), computed from
# the same z-scored traces. `relate_to_behaviour` decodes an angle from the latents with an
# affine map fitted on the training windows (so the gauge, a rotation, reflection or scaling of
# the latent plane, does not matter) and scores it on the held-out windows by circular R², beside
# the same decoder on the two leading principal components of the z-scored traces. The bump
# phase is a function of the traces themselves, so principal components are a strong baseline
# for it; the heading on the ball drifts against the bump in darkness.

# %%
recording = read_ophys(PATH, series_path=EPG, window_length=4.0, normalize="zscore")
wedges = np.exp(2j * np.pi * np.arange(recording.n_units) / recording.n_units)
bump = np.angle(recording.data @ wedges)
heading = read_timeseries(
    PATH, "processing/behavior/CompassDirection/heading", recording, reduce="circmean"
)
for name, values in (("bump phase", bump), ("heading", heading)):
    report = relate_to_behaviour(fit, recording, values, variable=name, kind="angle")
    print("\n".join(report.summary_lines()))
    if name == "bump phase":
        save_figure(plot_latent_behaviour(fit, report), "epg_phase")


# %% [markdown]
# ## Figures

# %%
save_figure(plot_summary(results), "epg_summary")
save_figure(plot_latent_dynamics(fit), "epg_latents")
save_figure(plot_fitted_activity(fit, recording, n_units=4), "epg_activity")
