# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 8. Several sessions of one circuit, fitted as one network
#
# The same brain area is often recorded on several days, each time through a different set of
# neurons. In a low-rank network those sessions share one latent dynamics and differ only in
# which units they see; every unit of every session is a draw from the same loading
# distribution. Fitted alone, each session gets its own latent gauge and its own small sample
# of units. Fitted jointly, the sessions give one network over the union of their units, in
# one shared gauge, so their loadings can be pooled and compared.
#
# `run_joint_files` reads every session with the same settings, checks before fitting that
# they can be fitted together (same kind of data, bin width and inputs; enough units and trials
# for the rank; outputs writable), fits the joint model, checks per session that the joint fit
# predicts its held-out trials as well as the session's own fit does, and writes one derived
# NWB file per session (read by `read_results` like any other fit), each with a `joint` group.
#
# The same from the shell:
# `nwb-lrconn fit day0.nwb day1.nwb day2.nwb --joint --rank 2 -o fits/`, or for a whole
# folder `nwb-lrconn batch days/*.nwb --joint --ranks 2 -o fits/`.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from nwb_lrconn.config import DistributionConfig, FitConfig, ReadConfig, RunConfig
from nwb_lrconn.extension import read_results
from nwb_lrconn.io import write_units_nwb
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
from nwb_lrconn.model.simulate import simulate_spikes
from nwb_lrconn.pipeline_joint import run_joint_files
from nwb_lrconn.plotting import save_figure

FAST = os.environ.get("NWB_LRCONN_TUTORIAL_FAST") == "1"

# %% [markdown]
# ## One ring network, recorded on separate days through disjoint units
# Each day records its own units and its own trials; nothing is shared but the network.

# %%
n_sessions, n_units = (2, 24) if FAST else (3, 300)
network = sample_network("ring", n_units, random_state=0)
groups = np.sort(np.random.default_rng(1).permutation(n_units).reshape(n_sessions, -1), axis=1)
files = []
for day, units in enumerate(groups):
    recording = simulate_spikes(
        network,
        initial=grid_initial_conditions(4 if FAST else 6),
        n_time=40 if FAST else 100,
        rate_range=(1.0, 60.0),
        random_state=10 + day,
    )
    files.append(
        write_units_nwb(
            f"day{day}.nwb",
            [recording.spike_times[u] for u in units],
            unit_ids=units.tolist(),
            trials=recording.trials,
            metadata={"session_id": f"day{day}"},
            overwrite=True,
        )
    )

# %% [markdown]
# ## Fit them as one network
# A joint fit takes one rank (choose it on one session with `--rank auto` first). The Laplace
# posterior and the degeneracy analysis are single-network analyses and are not run for joint
# fits (each file says so). The connectivity distribution is learned on every session's units
# together, in the shared gauge (the pooled distribution), and on each session's own units, so
# that the sessions' laws can be compared; with a few dozen units it is a maximum-entropy
# Gaussian (mixture), not a flow.

# %%
config = RunConfig(
    read=ReadConfig(bin_width=0.02, trials="trials"),
    fit=FitConfig(
        rank=2, alpha=0.5, max_epochs=10 if FAST else 300, lbfgs_rounds=2 if FAST else 30
    ),
    distribution=DistributionConfig(model="gaussian", n_samples=200),
    seed=3,
    name="joint",
)
outputs = run_joint_files(files, config, output_dir="fits", overwrite=True, progress=not FAST)
for path in outputs:
    print(path)

# %% [markdown]
# ## Is pooling warranted?
# Every file holds the whole check: per session, the held-out log-likelihood per value under
# the joint fit and under the session's own fit (the same held-out trials), their difference
# and its standard error. A session whose dynamics disagree with the others' is flagged
# (`worse`), never silently averaged in. A likelihood check cannot see a session recorded from
# a different circuit whose dynamics happen to be part of the others' (two of four
# attractors); the units' laws can: each session's distribution is compared with the others'
# by the dissimilarity D, against a floor measured between two halves of its own units, and a
# session far from every other is flagged too (`flagged`). `verdict` words both checks.

# %%
sessions = [read_results(path) for path in outputs]
joint = sessions[0].joint
for s in range(joint.n_sessions):
    print(
        f"day{s}: {joint.n_units[s]} units, joint {joint.joint_log_likelihood[s]:.4f} vs own "
        f"{joint.separate_log_likelihood[s]:.4f} ({joint.difference[s]:+.4f} ± "
        f"{joint.stderr[s]:.4f}); D to the others "
        f"{np.delete(joint.dissimilarity[s], s).round(3)} vs floor {joint.floor[s]:.3f}: "
        f"{joint.verdict(s)}"
    )
print("pooled distribution:", joint.pooled_reason)

# %% [markdown]
# ## One latent space for every day
# Each file's latents are in the shared gauge, so the days' states can be drawn in one plane
# (the short toy run of the test suite, `NWB_LRCONN_TUTORIAL_FAST=1`, fits only roughly). The
# session's `M` and `K` rows are its units' loadings in that gauge, but its `K` is only its
# units' share of the mean-field sum: the dynamics are the whole network's (every day's units),
# in `joint.network_M`, `joint.network_K`, or as a fit to draw or analyse the flow with,
# `joint.network_fit(results.fit)` (the report's figures use it).
#
# The limit to keep in mind: with no unit recorded twice, the gauge is pinned only by the
# dynamics. Where the flow has a symmetry (a rotation of the ring, the four attractors of a
# square), each day can be turned by it independently at no cost in likelihood: the joint flow
# is still determined, but the days' latents, and the loadings that link units of different
# days, are shared only up to that symmetry.

# %%
fig, (ax_latents, ax_check) = plt.subplots(1, 2, figsize=(10, 4.2))
for s, results in enumerate(sessions):
    fit = results.fit
    states = fit.latents[fit.latent_mask]
    ax_latents.plot(*states.T[:2], ".", ms=2, alpha=0.4, label=f"day{s} ({fit.n_units} units)")
ax_latents.set(xlabel="κ₁", ylabel="κ₂", title="latent states, shared gauge", aspect="equal")
ax_latents.legend(markerscale=5, fontsize=8)
days = np.arange(joint.n_sessions)
ax_check.errorbar(days, joint.difference, yerr=2 * joint.stderr, fmt="o", capsize=4)
ax_check.axhline(0.0, color="0.5", lw=1)
ax_check.set(
    xticks=days,
    xticklabels=[f"day{s}" for s in days],
    ylabel="joint − own held-out log-lik. (nats/value)",
    title="is pooling warranted? (± 2 SE)",
    xlim=(-0.5, joint.n_sessions - 0.5),
)
fig.tight_layout()
save_figure(fig, "joint_sessions", formats=("png",))
