"""Benchmark of the lrRNN core (not collected by pytest).

    python tests/benchmarks/bench_model.py            # epoch time, latent form vs dense J
    python tests/benchmarks/bench_model.py --fits     # + wall time to a converged fit per network

1. Time of one training epoch (forward + backward over 400 trials × 100 steps, N = 1000, R = 2,
   Gaussian loss, minibatches of 64 trials as the estimator uses by default) in the latent form
   used by the package, against a naive
   implementation that forms the dense N×N matrix J = M Kᵀ/N at every step and iterates the
   N-dimensional potentials. Both run here, in one process, with the same threads; the ratio is
   printed.
2. With ``--fits``: wall time of ``LowRankRNNEstimator().fit`` on each published network
   (noiseless rates, paper setting), with its held-out R².
"""

from __future__ import annotations

import argparse
import time

import torch

from nwb_lrconn.model.lowrank import LowRankRNN
from nwb_lrconn.model.networks import (
    NETWORK_NAMES,
    default_data_dir,
    grid_initial_conditions,
    load_published_network,
    sample_network,
)


def _naive_epoch(M, K, initial, target, alpha):
    n_units = M.shape[0]
    x = initial @ M.T
    loss = 0.0
    for t in range(target.shape[1]):
        loss = loss + ((torch.tanh(x) - target[:, t]) ** 2).mean()
        J = M @ K.T / n_units  # the dense connectivity, formed every step
        x = (1 - alpha) * x + alpha * torch.tanh(x) @ J.T
    loss.backward()


def _latent_epoch(model, initial, target):
    _, activity = model(initial, target.shape[1])
    ((activity - target) ** 2).mean().backward()


def _minibatches(step, initial, target, batch_size):
    for start in range(0, initial.shape[0], batch_size):
        step(initial[start : start + batch_size], target[start : start + batch_size])


def _best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_epoch(n_units=1000, rank=2, n_per_side=20, n_time=100, batch_size=64, repeats=3):
    net = sample_network("ring", n_units, random_state=0)
    initial = torch.as_tensor(grid_initial_conditions(n_per_side), dtype=torch.float32)
    target = torch.zeros(initial.shape[0], n_time, n_units)
    model = LowRankRNN(n_units, rank)
    with torch.no_grad():
        model.M.copy_(torch.as_tensor(net.M))
        model.K.copy_(torch.as_tensor(net.K))
    M = torch.as_tensor(net.M, dtype=torch.float32).requires_grad_()
    K = torch.as_tensor(net.K, dtype=torch.float32).requires_grad_()
    latent = _best_of(
        lambda: _minibatches(lambda i, y: _latent_epoch(model, i, y), initial, target, batch_size),
        repeats,
    )
    naive = _best_of(
        lambda: _minibatches(
            lambda i, y: _naive_epoch(M, K, i, y, 0.1), initial, target, batch_size
        ),
        repeats,
    )
    print(
        f"epoch (fwd+bwd, {initial.shape[0]} trials × {n_time} steps in minibatches of "
        f"{batch_size}, N={n_units}, R={rank}, {torch.get_num_threads()} threads): latent "
        f"{latent:.3f} s, dense-J {naive:.3f} s, speed-up ×{naive / latent:.1f}"
    )


def bench_fits():
    from nwb_lrconn.model.estimator import LowRankRNNEstimator
    from nwb_lrconn.model.simulate import simulate_rates

    for name in NETWORK_NAMES:
        net = load_published_network(name, default_data_dir())
        rec = simulate_rates(net).to_recording()
        start = time.perf_counter()
        est = LowRankRNNEstimator(rank=2, max_epochs=300, random_state=0).fit(rec)
        wall = time.perf_counter() - start
        print(
            f"fit {name}: {wall:.1f} s, {len(est.loss_history_) - 1} epochs/rounds, "
            f"held-out R² {est.metrics_['r2']:.5f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", action="store_true", help="also time full fits")
    args = parser.parse_args()
    bench_epoch()
    if args.fits:
        bench_fits()
