# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 6. Many sessions × ranks × seeds on Dask
#
# `run_batch` fits every input file at every rank with every seed, each task writing its own
# output NWB file, on an embedded Dask `LocalCluster` (or any scheduler address). It is
# resumable: a rerun recognises finished outputs by their provenance and skips them. The summary
# table has one row per task, and `select_ranks` picks a rank per file by held-out likelihood.
#
# The same from the shell: `nwb-lrconn batch sessions/*.nwb --ranks 1 2 --seeds 0 1 -o fits/`.

# %%
import os

from nwb_lrconn.batch import run_batch, select_ranks
from nwb_lrconn.config import FitConfig, ReadConfig, RunConfig
from nwb_lrconn.io import write_units_nwb
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
from nwb_lrconn.model.simulate import simulate_spikes
from nwb_lrconn.plotting import plot_gmm_curves, save_figure

FAST = os.environ.get("NWB_LRCONN_TUTORIAL_FAST") == "1"

# %% [markdown]
# ## Three synthetic sessions: ring, bistable and limit-cycle networks

# %%
files = []
for seed, name in enumerate(("ring", "bistable", "limit_cycle")):
    session = simulate_spikes(
        sample_network(name, 24 if FAST else 100, random_state=seed),
        initial=grid_initial_conditions(3 if FAST else 6),
        n_time=25 if FAST else 100,
        random_state=seed,
    )
    files.append(
        write_units_nwb(f"{name}.nwb", session.spike_times, trials=session.trials, overwrite=True)
    )

# %% [markdown]
# ## Run the batch
# Posterior and distribution are switched off here to keep the example short; a real run keeps
# them (the summary then also lists the constrained and degenerate counts).
#
# With `scheduler=None` the batch starts its own `LocalCluster` of worker *processes*; in a plain
# script that needs the usual `if __name__ == "__main__":` guard. Here we pass a client of our
# own instead (thread workers in this process), which is also how an existing cluster is used:
# `scheduler="tcp://host:8786"` or a `distributed.Client`.

# %%
from distributed import Client  # noqa: E402

client = Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None)
config = RunConfig(
    read=ReadConfig(bin_width=0.02, trials="trials"),
    fit=FitConfig(max_epochs=5 if FAST else 300, patience=3 if FAST else 30),
).with_overrides(**{"posterior.enabled": False, "distribution.enabled": False})
table = run_batch(
    files,
    ranks=(1, 2),
    seeds=(0,) if FAST else (0, 1),
    config=config,
    output_dir="fits",
    scheduler=client,
    progress=False,
)
print(table[["file", "rank", "seed", "status", "log_likelihood"]].to_string(index=False))

# %% [markdown]
# ## A rerun does no work, and one rank per file

# %%
again = run_batch(
    files,
    ranks=(1, 2),
    seeds=(0,) if FAST else (0, 1),
    config=config,
    output_dir="fits",
    scheduler=client,
    progress=False,
)
print(again["status"].value_counts().to_dict())
chosen = select_ranks(table)
print(chosen[["file", "rank", "log_likelihood"]].to_string(index=False))

# %% [markdown]
# ## Held-out log-likelihood against rank, per file

# %%
curves = {}
for file, rows in table[table["status"] == "done"].groupby("file", sort=False):
    per_rank = rows.groupby("rank")["log_likelihood"].mean()
    curves[os.path.basename(file)] = (per_rank.index.to_numpy(), per_rank.to_numpy())
ax = plot_gmm_curves(curves)
ax.set_xlabel("rank")
ax.set_ylabel("held-out log-likelihood per value (nats)")
ax.set_title("rank selection")
save_figure(ax, "batch_rank_curves")

# %%
client.close()
