"""Per-stage time of one whole fit against the size of the data, today's distribution vs new.

Run: ``python tests/benchmarks/bench_stages.py [--full] [--threads 2] [--network quadstable]``.
Needs the published networks (``$NWB_LRCONN_DATA``).

Data: Poisson spikes (2–30 Hz, 20 ms bins) of N units drawn at random from a published 1000-unit
network, whose latents are simulated with all 1000 units, in windows of 10 bins starting from
initial latents drawn uniformly over [−2.4, 2.4]². For each size (units × windows) the stages
run as in ``nwb_lrconn.pipeline.run`` with the default configuration, one after the other, each
timed (wall and CPU seconds):

* ``fit``: stage 1, ``LowRankRNNEstimator`` with the configuration's defaults (rank 2);
* ``posterior`` and ``degeneracy``: ``laplace_posterior`` and ``compute_degeneracy``;
* ``dist new``: ``fit_distribution`` with the default ``DistributionConfig`` (the model chosen
  for N is printed);
* ``dist today``: the Connector flows with the defaults before the distribution was sized to
  the data (128-wide velocity MLPs, 3000 flow-A and 1000 flow-B steps run to the end, one
  ridge solve per flow-B step), whatever N;
* ``write``: ``write_results`` of the results (new distribution) into a fresh temporary file.

The default grid is units 10, 50, 200 × windows 100, 1000; ``--full`` adds 1000 units.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from nwb_lrconn import __version__
from nwb_lrconn.config import RunConfig
from nwb_lrconn.data import Provenance, Recording, Results
from nwb_lrconn.extension import write_results
from nwb_lrconn.inference.connector import ConnectorEstimator
from nwb_lrconn.inference.degeneracy import compute_degeneracy
from nwb_lrconn.inference.distribution import fit_distribution
from nwb_lrconn.inference.laplace import laplace_posterior
from nwb_lrconn.model.networks import load_published_network
from nwb_lrconn.model.simulate import simulate_spikes
from nwb_lrconn.pipeline import fit_lowrank

# The distribution defaults before they followed the number of units.
TODAY = {
    "hidden_features": 128,
    "n_steps_a": 3000,
    "n_steps_b": 1000,
    "n_target_sets": None,
    "validation_every": 100,
    "patience": 10**6,
}
STAGES = ("fit", "posterior", "degeneracy", "dist new", "dist today", "write")


def recording(network: str, n_units: int, n_windows: int, seed: int = 0) -> Recording:
    """N units of the published network, ``n_windows`` windows of 10 bins of Poisson spikes."""
    net = load_published_network(network)
    rng = np.random.default_rng(seed)
    session = simulate_spikes(
        net,
        initial=rng.uniform(-2.4, 2.4, (n_windows, 2)),
        n_time=10,
        rate_range=(2.0, 30.0),
        inter_trial_interval=0.0,
        random_state=seed,
    )
    units = np.sort(rng.permutation(net.n_units)[:n_units])
    full = session.to_recording()
    return Recording(
        data=np.ascontiguousarray(full.data[:, :, units]),
        mask=full.mask,
        bin_width=full.bin_width,
        kind="spikes",
        unit_ids=units,
        unit_rows=np.arange(n_units),
        trial_start_times=full.trial_start_times,
    )


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, (time.perf_counter() - wall, time.process_time() - cpu)


def run_case(network: str, n_units: int, n_windows: int, config: RunConfig) -> dict:
    """Every stage on one size; returns seconds per stage and the distribution models."""
    rec = recording(network, n_units, n_windows)
    times: dict[str, tuple[float, float]] = {}
    fit, times["fit"] = _timed(lambda: fit_lowrank(config, rec, progress=False))
    post, times["posterior"] = _timed(
        lambda: laplace_posterior(fit, rec, **config.posterior.posterior_kwargs())
    )
    deg, times["degeneracy"] = _timed(lambda: compute_degeneracy(fit, rec, post))
    dist_cfg = config.distribution
    dist, times["dist new"] = _timed(
        lambda: fit_distribution(
            fit,
            model=dist_cfg.model,
            n_samples=dist_cfg.n_samples,
            sigma=dist_cfg.sigma,
            flow_params=dist_cfg.estimator_kwargs(),
            mixture_params=dist_cfg.mixture_kwargs(),
            random_state=config.seed,
        )
    )
    today = {**dist_cfg.estimator_kwargs(), **TODAY}
    _, times["dist today"] = _timed(
        lambda: (
            ConnectorEstimator(**today, random_state=config.seed)
            .fit(fit)
            .to_distribution(dist_cfg.n_samples, dist_cfg.sigma, random_state=config.seed)
        )
    )
    results = Results(
        name="bench",
        fit=fit,
        provenance=Provenance(
            software_version=__version__,
            config_json=config.to_json(),
            random_seed=config.seed,
            source=rec.source,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ),
        posterior=post,
        degeneracy=deg,
        distribution=dist,
    )
    with tempfile.TemporaryDirectory() as tmp:
        _, times["write"] = _timed(lambda: write_results(results, None, Path(tmp) / "out.nwb"))
    return {"times": times, "model": dist.model}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="add 1000 units to the grid")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--network", default="quadstable")
    parser.add_argument("--units", type=int, nargs="+", help="units to try instead of the grid")
    parser.add_argument("--windows", type=int, nargs="+", default=[100, 1000])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    units = args.units or [10, 50, 200] + ([1000] if args.full else [])
    config = RunConfig()
    print(
        f"{args.network}, torch threads {args.threads}; wall seconds (CPU seconds) per stage; "
        "'total new' is the whole fit with the new distribution, 'total today' with today's"
    )
    header = f"{'units':>5s} {'windows':>7s} {'model':>8s} " + " ".join(
        f"{s:>15s}" for s in (*STAGES, "total new", "total today")
    )
    print(header, flush=True)
    for n_units in units:
        for n_windows in args.windows:
            r = run_case(args.network, n_units, n_windows, config)
            t = r["times"]
            base = sum(t[s][0] for s in ("fit", "posterior", "degeneracy", "write"))
            cpu = sum(t[s][1] for s in ("fit", "posterior", "degeneracy", "write"))
            cells = [f"{w:7.1f} ({c:5.1f})" for w, c in (t[s] for s in STAGES)]
            cells.append(f"{base + t['dist new'][0]:7.1f} ({cpu + t['dist new'][1]:5.1f})")
            cells.append(f"{base + t['dist today'][0]:7.1f} ({cpu + t['dist today'][1]:5.1f})")
            print(f"{n_units:5d} {n_windows:7d} {r['model']:>8s} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
