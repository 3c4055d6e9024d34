"""Benchmark: 8 fits on 2 Dask worker processes against the same 8 fits run serially.

Run with ``python tests/benchmarks/bench_batch.py [--n-files 8] [--epochs 100]``. Each fit is the
real pipeline (read NWB → fit → posterior → write NWB) on a small synthetic spike session. The
serial baseline runs the same task function in this process with one torch thread; the batch runs
on an embedded LocalCluster of 2 single-threaded workers, timed end to end (cluster start and the
workers' imports of torch, pynwb and the stages included) and again on an already started cluster
whose workers have imported them, like this process before its serial run. Note the load average
printed first: on a shared machine other processes compete for the same cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def write_session(path: Path, seed: int, n_units: int, n_trials: int) -> Path:
    from nwb_lrconn.io import write_units_nwb
    from nwb_lrconn.model.networks import sample_network
    from nwb_lrconn.model.simulate import simulate_spikes

    rng = np.random.default_rng(seed)
    network = sample_network("ring", n_units, random_state=seed)
    session = simulate_spikes(
        network, initial=rng.uniform(-2, 2, (n_trials, 2)), n_time=50, random_state=seed
    )
    return write_units_nwb(path, session.spike_times, trials=session.trials)


def warm_imports() -> None:
    """Import everything a task uses (torch, pynwb, the stages), outside the timed regions."""
    import nwb_lrconn.extension  # noqa: F401
    import nwb_lrconn.inference.degeneracy  # noqa: F401
    import nwb_lrconn.inference.laplace  # noqa: F401
    import nwb_lrconn.io  # noqa: F401
    import nwb_lrconn.model.estimator  # noqa: F401
    import nwb_lrconn.pipeline  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-files", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--n-units", type=int, default=40)
    parser.add_argument("--n-trials", type=int, default=40)
    parser.add_argument("--no-posterior", action="store_true", help="skip the Laplace stage")
    args = parser.parse_args()

    import torch
    from distributed import Client

    from nwb_lrconn.batch import local_cluster, plan_batch, run_batch, run_task
    from nwb_lrconn.config import RunConfig

    torch.set_num_threads(1)
    warm_imports()
    config = RunConfig().with_overrides(
        trials="trials",
        **{
            "fit.max_epochs": args.epochs,
            "fit.patience": args.epochs,
            "posterior.enabled": not args.no_posterior,
            "distribution.enabled": False,
        },
    )
    print(f"load average before: {os.getloadavg()}, cpu count: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = [
            write_session(tmp / f"s{i}.nwb", i, args.n_units, args.n_trials)
            for i in range(args.n_files)
        ]
        common = {"ranks": [2], "seeds": [0], "config": config}

        tasks = plan_batch(files, output_dir=tmp / "serial", **common)
        (tmp / "serial").mkdir()
        start = time.perf_counter()
        for task in tasks:
            run_task(task)
        serial = time.perf_counter() - start

        start = time.perf_counter()
        table = run_batch(files, output_dir=tmp / "batch", n_workers=2, progress=False, **common)
        batch_cold = time.perf_counter() - start
        assert set(table["status"]) == {"done"}, table

        with local_cluster(n_workers=2) as cluster, Client(cluster) as client:
            client.run(warm_imports)  # as in this process before the serial run
            start = time.perf_counter()
            table = run_batch(
                files, output_dir=tmp / "warm", scheduler=client, progress=False, **common
            )
            batch_warm = time.perf_counter() - start
        assert set(table["status"]) == {"done"}, table

        start = time.perf_counter()
        again = run_batch(files, output_dir=tmp / "batch", progress=False, **common)
        rerun = time.perf_counter() - start
        assert set(again["status"]) == {"skipped"}

    n = len(files)
    print(f"{n} fits, serial in this process (1 thread):  {serial:7.1f} s")
    print(f"{n} fits, 2 workers, cluster start included:  {batch_cold:7.1f} s")
    print(f"{n} fits, 2 workers, cluster already running: {batch_warm:7.1f} s")
    print(f"rerun of the finished batch (all skipped):    {rerun:7.1f} s")
    print(f"speed-up (serial / 2 workers, end to end):    {serial / batch_cold:7.2f}x")
    print(f"speed-up (serial / 2 workers, warm cluster):  {serial / batch_warm:7.2f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
