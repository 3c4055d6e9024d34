"""How many units a connectivity distribution needs: flows against a Gaussian and a small mixture.

Run: ``python tests/benchmarks/study_distribution_size.py [--sizes 10 20 50 100 200 500]
[--seeds 3] [--networks ...] [--jobs 2]``. Needs the published networks (``$NWB_LRCONN_DATA``).

For each published 1000-unit network (and a heavy-tailed one drawn from its law, whose m is
neither Gaussian nor a small mixture), N units are drawn at random (one draw per seed) and the
distribution is learned from them and from the network's true latents (stage 1 skipped: 400
trials from the 20×20 grid of initial conditions, 30 steps, simulated with all 1000 units, so the
N units are a sample of a larger network, as in a recording). Three models, all with their
defaults: the Connector flows (:class:`ConnectorEstimator`), the Gaussian with the units'
moments and k | z around the ridge conditional mean g*(z) (:class:`MixtureConnectorEstimator`
with one full-covariance component), the mixture with its cross-validated number and kind of
components ("gmm", what runs below :data:`MIN_UNITS_FOR_FLOWS`), and
("linear") the same Gaussian with k linear in (z, 1), the least-squares projection of g* (what a
linear-Gaussian conditional fitted to the ridge targets gives). Each is scored on the 1000 − N
held-out units of the same network:

* ``nll(z)``: negative log-likelihood of their z = m (nats per unit; lower is better);
* ``|k-g|²``: median over them of ‖k_core(m) − g(m)‖², with g the network's true E[k | m] — the
  part of k the dynamics determine (a likelihood of k would mostly score the unidentifiable
  spread of k about g, which the distribution leaves to σ). The median, because a z-model
  fitted to a few units puts some held-out m far in its tails, where k_core extrapolates;
* ``FF``: flow-field RMSE of 1000 units sampled from the model (σ = 0) against the network's.

The table gives means over seeds (± standard deviation); the summary, per network and metric,
the smallest N from which the flows beat the Gaussian at that N and every larger one.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from multiprocessing import get_context

import numpy as np
import torch

from nwb_lrconn.inference.connector import ConnectorData, ConnectorEstimator
from nwb_lrconn.inference.distribution import MIN_UNITS_FOR_FLOWS
from nwb_lrconn.inference.dynamics import flow_field, flow_field_rmse
from nwb_lrconn.inference.mixture import MixtureConnectorEstimator
from nwb_lrconn.model.networks import (
    NETWORK_NAMES,
    conditional_mean,
    grid_initial_conditions,
    load_published_network,
    sample_heavy_tailed_network,
    simulate_latents,
)

MODELS = ("flows", "gaussian", "gmm", "linear")
METRICS = ("nll(z)", "|k-g|²", "FF")


def _network(name: str):
    if name == "heavy_tailed":
        return sample_heavy_tailed_network(1000, random_state=0)
    return load_published_network(name)


class LinearConditional:
    """A fitted Gaussian over z with k | z linear in (z, 1): the least-squares projection of g*."""

    def __init__(self, gaussian: MixtureConnectorEstimator) -> None:
        self.gaussian = gaussian
        z, k = gaussian.sample(20_000, quasi_random=False, random_state=0)
        self.coef = np.linalg.lstsq(self._design(z), k, rcond=None)[0]

    def _design(self, z):
        return np.c_[z[:, self.gaussian.z_free_], np.ones(z.shape[0])]

    def log_prob_z(self, z):
        return self.gaussian.log_prob_z(z)

    def core_k(self, z):
        return self._design(z) @ self.coef

    def sample(self, n, *, random_state):
        z, _ = self.gaussian.sample(n, random_state=random_state)
        return z, self.core_k(z)


def _fit(model: str, seed: int, data: ConnectorData, fitted: dict):
    if model == "flows":
        return ConnectorEstimator(random_state=seed).fit(data)
    if model == "linear":
        return LinearConditional(fitted["gaussian"])
    if model == "gaussian":
        return MixtureConnectorEstimator(
            n_components=1, covariance_type="full", random_state=seed
        ).fit(data)
    return MixtureConnectorEstimator(random_state=seed).fit(data)


def run_one(task: tuple[str, int, int]) -> dict:
    """Fit the three models on one subsample and score them on the held-out units."""
    torch.set_num_threads(1)
    name, n_units, seed = task
    net = _network(name)
    lat = simulate_latents(net.M, net.K, grid_initial_conditions(), 30)
    rng = np.random.default_rng(seed)
    order = rng.permutation(net.n_units)
    train, held = order[:n_units], order[n_units:]
    data = ConnectorData.from_loadings(net.M[train], lat, alpha=0.1)
    z_held = np.c_[net.M[held], np.zeros(held.size)]
    g = conditional_mean(name, net.M[held])
    _, v_true = flow_field(net.M, net.K)
    out = {"name": name, "n": n_units, "seed": seed}
    fitted: dict = {}
    for model in MODELS:
        start = time.process_time()
        est = fitted[model] = _fit(model, seed, data, fitted)
        cpu = time.process_time() - start
        z, k = est.sample(1000, random_state=seed)
        out[model] = {
            "nll(z)": -float(est.log_prob_z(z_held).mean()),
            "|k-g|²": float(np.median(((est.core_k(z_held) - g) ** 2).sum(1))),
            "FF": flow_field_rmse(v_true, flow_field(z[:, :2], k)[1]),
            "cpu": cpu,
        }
    return out


def _crossover(sizes: list[int], wins: list[bool]) -> str:
    """Smallest size from which every larger size is a win ('never' / the first size)."""
    for i, size in enumerate(sizes):
        if all(wins[i:]):
            return str(size)
    return "never"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 100, 200, 500])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--networks", nargs="+", default=["quadstable", "heavy_tailed", *NETWORK_NAMES[1:]]
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--log", help="append one JSON line per fit to this file")
    args = parser.parse_args(argv)
    tasks = [(n, s, seed) for n in args.networks for s in args.sizes for seed in range(args.seeds)]
    print(
        f"{len(tasks)} subsamples × {len(MODELS)} models, {args.jobs} process(es) of 1 thread; "
        f"current MIN_UNITS_FOR_FLOWS = {MIN_UNITS_FOR_FLOWS}",
        flush=True,
    )
    start = time.perf_counter()
    results = []
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        for r in pool.map(run_one, tasks):
            results.append(r)
            if args.log:  # one JSON line per fit, kept even if the run is cut short
                with open(args.log, "a") as f:
                    f.write(json.dumps(r) + "\n")
    print(f"wall {time.perf_counter() - start:.0f} s\n")

    def stat(name, size, model, metric):
        vals = [r[model][metric] for r in results if r["name"] == name and r["n"] == size]
        return float(np.mean(vals)), float(np.std(vals))

    cell = partial("{:8.3f}±{:<6.3f}".format)
    header = f"{'network':12s} {'N':>4s} {'metric':7s}" + "".join(f"{m:>16s}" for m in MODELS)
    print(header)
    summary = []
    for name in args.networks:
        for size in args.sizes:
            for metric in (*METRICS, "cpu"):
                row = "".join(cell(*stat(name, size, m, metric)) for m in MODELS)
                print(f"{name:12s} {size:4d} {metric:7s} {row}")
        for metric in METRICS:
            wins = [
                stat(name, s, "flows", metric)[0] < stat(name, s, "gaussian", metric)[0]
                for s in args.sizes
            ]
            wins_gmm = [
                stat(name, s, "flows", metric)[0] < stat(name, s, "gmm", metric)[0]
                for s in args.sizes
            ]
            summary.append(
                f"{name:12s} {metric:7s} flows beat the Gaussian from N = "
                f"{_crossover(args.sizes, wins):>5s}, the mixture from N = "
                f"{_crossover(args.sizes, wins_gmm):>5s}"
            )
        print()
    print("crossovers (means over seeds; 'never' = not at the largest N either):")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
