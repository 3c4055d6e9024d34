# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 7. From a DANDI asset to a small derived file you can share
#
# A dandiset holds recordings; what you add to it is *derived* data. This tutorial streams one
# asset of DANDI:000207 (human hippocampus and amygdala single units, Zheng et al. 2022) without
# downloading it, fits it, and writes a small NWB file that holds only the results. That file
# carries the source's subject and session, so it sits beside the source in the dandiset layout
# (`sub-4/sub-4_ses-4_desc-lrconn_ecephys.nwb`), passes the DANDI validation the source passes,
# and links to the source's Units table.
#
# Needs the `dandi` client: `pip install "nwb-lrconn[dandi]"`. (The tests run this tutorial
# against a local mock of the DANDI API, selected with `NWB_LRCONN_DANDI_INSTANCE`.)

# %%
import os
from pathlib import Path

from nwb_lrconn.config import DistributionConfig, FitConfig, ReadConfig, RunConfig
from nwb_lrconn.extension import read_results, read_unit_table
from nwb_lrconn.io import inspect_nwb, resolve_dandi
from nwb_lrconn.pipeline import run_file
from nwb_lrconn.plotting import plot_summary, save_figure
from nwb_lrconn.report import format_report

FAST = os.environ.get("NWB_LRCONN_TUTORIAL_FAST") == "1"

# %% [markdown]
# ## Name the asset
# Any of these spellings names the same asset: `DANDI:000207/sub-4/...nwb`,
# `dandi://DANDI/000207@draft/sub-4/...nwb`, the asset's page on dandiarchive.org, or its API URL.
# The command-line equivalent is `--dandiset 000207 --asset sub-4/sub-4_ses-4_ecephys+image.nwb`.

# %%
REFERENCE = "DANDI:000207/sub-4/sub-4_ses-4_ecephys+image.nwb"
asset = resolve_dandi(REFERENCE)
print(f"{asset.asset_path}: {asset.size / 1e6:.1f} MB, sha256 {asset.sha256[:12]}…")

# %% [markdown]
# ## What can be fitted
# `inspect_nwb` reads only metadata and index arrays (`nwb-lrconn inspect REFERENCE`). Streamed
# bytes are kept in `cache/` so the fit below, and any rerun, downloads nothing again.

# %%
summary = inspect_nwb(asset, cache_dir="cache")
for units in summary.units:
    print(f"Units {units['path']!r}: {units['n_units']} units, {units['n_spikes']} spikes")

# %% [markdown]
# ## Fit, and write the derived file
# The recording is cut into 4-second windows of 100-ms bins. `output_dir` receives the file in
# the DANDI layout, named from the source's subject and session ids.

# %%
config = RunConfig(
    read=ReadConfig(bin_width=0.1, window_length=4.0),
    fit=FitConfig(rank=2, max_epochs=5 if FAST else 200),
    distribution=DistributionConfig(enabled=False),
)
output = run_file(asset, output_dir="derivatives", config=config, cache_dir="cache")
print(output, f"{output.stat().st_size / 1e6:.2f} MB against {asset.size / 1e6:.1f} MB")

# %% [markdown]
# ## What the derived file holds
# Only the results: the processing module `lrconn` with the fit, its per-unit table, posterior
# and degeneracy analysis; the subject and session of the source; no spike times.

# %%
import h5py  # noqa: E402

with h5py.File(output, "r") as handle:
    print(sorted(handle["general"]), sorted(handle["processing/lrconn/lrconn_fit"]))
    link = handle["processing/lrconn/lrconn_fit/unit_table"].get("source_table", getlink=True)
    print(f"unit_table.source_table -> {link.filename}:{link.path}")

# %% [markdown]
# The link resolves once the source sits beside the derived file (for instance after
# `dandi download`); every value of the results is readable without it.

# %%
results = read_results(output)
print(format_report(results))
print(read_unit_table(output)[["unit_id", "quality", "identifiability"]].head())
save_figure(plot_summary(results), "dandi_summary", formats=("png",))

# %% [markdown]
# ## Sharing it
# Check the file as DANDI will (`nwbinspector derivatives --config dandi`), then upload it
# into the dandiset with `dandi upload`; its name already follows the layout `dandi organize`
# would give it.

# %%
try:
    from nwbinspector import Importance, inspect_nwbfile, load_config
except ImportError:  # optional
    pass
else:
    messages = list(
        inspect_nwbfile(
            nwbfile_path=str(output),
            config=load_config(filepath_or_keyword="dandi"),
            importance_threshold=Importance.BEST_PRACTICE_VIOLATION,
        )
    )
    print(f"{len(messages)} DANDI critical issue(s) or best-practice violation(s)")
    for message in messages:
        print(f"  {message.importance.name} {message.check_function_name}: {message.message}")
print(sorted(str(p) for p in Path("derivatives").rglob("*.nwb")))
