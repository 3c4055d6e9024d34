"""Benchmark: read the shared DANDI file (000207, sub-4) locally vs streamed through a local mock
DANDI archive, without cache, with a cold cache and with a warm cache, in one run.

Run: ``python tests/benchmarks/bench_stream.py [--latency 0 0.02] [--fit]``.

The mock (``tests/io/mock_dandi.py``) answers the DANDI REST API on 127.0.0.1 and serves the
file's bytes with HTTP Range requests; ``--latency`` adds that many seconds to every request
(a distant server); one table per latency. Every streamed read starts from the DANDI
reference, so it includes resolving it through the API. Each row is the best of
``--repeats`` runs (a cold cache is a fresh folder each time); bytes and requests are those
of the last run. With ``--fit`` a short low-rank fit (rank 2, after a warm-up fit) follows
the local and the streamed read of the last table, showing what streaming adds to a whole
run. The data folder is ``$NWB_LRCONN_DATA`` (default ``../shared/data``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RELATIVE = "dandi-000207-zheng2022-human-mtl/sub-4_ses-4_ecephys+image.nwb"
ASSET = "sub-4/sub-4_ses-4_ecephys+image.nwb"
READ = {"bin_width": 0.5, "window_length": 30.0}


def load_mock():
    spec = importlib.util.spec_from_file_location("mock_dandi", REPO / "tests/io/mock_dandi.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mock_dandi"] = module
    spec.loader.exec_module(module)
    return module


def timed(fn, repeats: int):
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--latency",
        type=float,
        nargs="+",
        default=[0.0, 0.02],
        help="seconds added to every request",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit", action="store_true", help="also time a short fit")
    args = parser.parse_args()
    data = Path(os.environ.get("NWB_LRCONN_DATA", REPO.parent / "shared" / "data"))
    path = data / RELATIVE
    if not path.is_file():
        sys.exit(f"shared DANDI file not found at {path} (set NWB_LRCONN_DATA)")
    os.environ["DANDI_NO_ET"] = "1"  # offline: no online version check of the dandi client
    import torch

    torch.set_num_threads(1)
    from nwb_lrconn.io import read_units

    warnings.filterwarnings("ignore")
    read_units(path, **READ)  # warm-up: imports, namespaces
    for latency in args.latency:
        local, local_s, streamed, rows = measure(path, latency, args.repeats)
        print(
            f"DANDI 000207 sub-4 ({path.stat().st_size / 1e6:.2f} MB, {local.n_units} units, "
            f"{local.n_trials} windows of {READ['window_length']:g} s at {READ['bin_width']:g} "
            f"s); mock latency {latency * 1000:.0f} ms per request; best of {args.repeats}"
        )
        header = ("seconds", "x local", "blob MB", "blob req", "API req")
        print(f"{'read':22s} " + " ".join(f"{h:>8s}" for h in header))
        for name, seconds, nbytes, nblob, napi in rows:
            print(
                f"{name:22s} {seconds:8.3f} {seconds / local_s:8.2f} {nbytes / 1e6:8.2f} "
                f"{nblob:8d} {napi:8d}"
            )
        print()
    if args.fit:
        from nwb_lrconn.model.estimator import LowRankRNNEstimator

        def fit(recording):
            est = LowRankRNNEstimator(rank=2, max_epochs=20, lbfgs_rounds=2, random_state=0)
            return est.fit(recording)

        fit(local)  # warm-up: torch kernels
        fit_local, est_local = timed(lambda: fit(local), 1)
        fit_stream, est_stream = timed(lambda: fit(streamed), 1)
        same = np.array_equal(est_local.M_, est_stream.M_)
        print(
            f"short fit (rank 2, 20 epochs): {fit_local:.2f} s on the local read, "
            f"{fit_stream:.2f} s on the streamed one (same loadings: {same}); read + fit: "
            f"local {local_s + fit_local:.2f} s, streamed without cache "
            f"{rows[1][1] + fit_stream:.2f} s, warm cache {rows[3][1] + fit_stream:.2f} s"
        )


def measure(path: Path, latency: float, repeats: int):
    """Time the local read and the three streamed reads through a fresh mock archive."""
    from nwb_lrconn.io import read_units

    rows = []
    mock = load_mock().MockDandi({ASSET: path}, latency=latency)
    with mock, tempfile.TemporaryDirectory() as tmp:
        os.environ["NWB_LRCONN_DANDI_INSTANCE"] = mock.api_url
        reference = f"DANDI:000207/{ASSET}"
        local_s, local = timed(lambda: read_units(path, **READ), repeats)
        rows.append(("local file", local_s, 0, 0, 0))
        caches = iter(range(10**6))

        def stream(cache):
            mock.reset_log()
            return read_units(reference, cache_dir=cache, **READ)

        def log_row(name, seconds, recording):
            assert np.array_equal(recording.data, local.data), name
            blobs = [r for r in mock.requests if r.path.startswith("/blobs/")]
            rows.append((name, seconds, mock.blob_bytes(), len(blobs), len(mock.api_requests())))

        seconds, rec = timed(lambda: stream(None), repeats)
        log_row("stream, no cache", seconds, rec)
        seconds, rec = timed(lambda: stream(Path(tmp) / f"c{next(caches)}"), repeats)
        log_row("stream, cold cache", seconds, rec)
        warm = Path(tmp) / "warm"
        stream(warm)
        seconds, rec = timed(lambda: stream(warm), repeats)
        log_row("stream, warm cache", seconds, rec)
    return local, local_s, rec, rows


if __name__ == "__main__":
    main()
