# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 5. Reading results: with plain pynwb, and with nwb_lrconn
#
# Results are stored through the `ndx-lrconn` extension, whose schema is cached inside every
# file. A collaborator without `nwb_lrconn` can therefore open the file with pynwb alone and see
# every value; with `nwb_lrconn` installed, `read_results` returns the same plain dataclasses the
# pipeline produced.

# %%
import os
import subprocess
import sys
import textwrap

from nwb_lrconn.config import FitConfig, PosteriorConfig, ReadConfig, RunConfig
from nwb_lrconn.extension import list_results, read_results
from nwb_lrconn.io import write_units_nwb
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
from nwb_lrconn.model.simulate import simulate_spikes
from nwb_lrconn.pipeline import run_file
from nwb_lrconn.plotting import plot_summary, save_figure

FAST = os.environ.get("NWB_LRCONN_TUTORIAL_FAST") == "1"

# %% [markdown]
# ## Make a small results file
# Two fits of the same recording (rank 1 and rank 2) go into one output file: the first run
# writes a copy of the recording plus its fit (`mode="copy"`), the second adds its fit to that
# copy (`mode="in-place"`). By default `run_file` writes a small *derived* file instead, holding
# only the results (see tutorial 7).

# %%
session = simulate_spikes(
    sample_network("limit_cycle", 30 if FAST else 100, random_state=2),
    initial=grid_initial_conditions(5 if FAST else 6),
    n_time=40 if FAST else 100,
    random_state=2,
)
write_units_nwb("cycle.nwb", session.spike_times, trials=session.trials, overwrite=True)
base = RunConfig(
    read=ReadConfig(bin_width=0.02, trials="trials"),
    fit=FitConfig(max_epochs=10 if FAST else 200),
    posterior=PosteriorConfig(enabled=True),
)
base = base.with_overrides(**{"distribution.enabled": False})
if os.path.exists("cycle_lrconn.nwb"):
    os.remove("cycle_lrconn.nwb")  # start afresh: the in-place fit below must not exist yet
run_file(
    "cycle.nwb",
    "cycle_lrconn.nwb",
    base.with_overrides(rank=1, name="rank1"),
    mode="copy",
    progress=False,
)
run_file("cycle_lrconn.nwb", None, base.with_overrides(rank=2, name="rank2"), mode="in-place")
print(list_results("cycle_lrconn.nwb"))

# %% [markdown]
# ## Without nwb_lrconn: plain pynwb in a fresh process
# The child process blocks the import of `nwb_lrconn` and opens the file with pynwb, which loads
# the cached `ndx-lrconn` schema and generates the classes on the fly.

# %%
child = textwrap.dedent(
    """
    import sys
    sys.modules["nwb_lrconn"] = None  # make sure nothing from nwb_lrconn is used
    from pynwb import NWBHDF5IO

    with NWBHDF5IO("cycle_lrconn.nwb", "r") as io:
        nwbfile = io.read()
        module = nwbfile.processing["lrconn"]
        for name, fit in sorted(module.data_interfaces.items()):
            print(name, type(fit).__name__)
            for key, value in sorted(fit.fields.items()):
                shape = getattr(value, "shape", None)
                what = f"array {tuple(shape)}" if shape is not None else type(value).__name__
                print(f"    {key}: {what}")
    """
)
out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
print(out.stdout)

# %% [markdown]
# ## With nwb_lrconn
# `read_results` returns a `Results` dataclass: the fit (M, K, latents, metrics...), the
# posterior, the degeneracy report and provenance, including the exact configuration.

# %%
for name in list_results("cycle_lrconn.nwb"):
    results = read_results("cycle_lrconn.nwb", name)
    fit = results.fit
    print(name, "rank", fit.rank, "held-out", {k: round(v, 4) for k, v in fit.metrics.items()})
    if results.degeneracy is not None:
        deg = results.degeneracy
        print(f"    {deg.n_constrained} constrained / {deg.n_degenerate} degenerate directions")
    print("    config:", RunConfig.from_json(results.provenance.config_json).fit.rank)
    save_figure(plot_summary(results), f"cycle_{name}_summary")

# %% [markdown]
# ## One row per unit
# Each fit carries a per-unit table (`UnitLoadings`): loadings m and k, bias, readout, held-out
# quality and identifiability, with `source_row` pointing at the unit's row of the source Units
# table. `read_unit_table` returns it as a DataFrame; `join_source=True` adds the source table's
# own columns.

# %%
from nwb_lrconn.extension import read_unit_table  # noqa: E402

table = read_unit_table("cycle_lrconn.nwb", "rank2", join_source=True)
print(table[["unit_id", "m", "k", "quality", "identifiability"]].head())
