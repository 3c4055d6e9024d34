"""Benchmark: read + bin 2000 units / 2 M spikes with read_units vs a naive per-unit loop.

Run: ``python tests/benchmarks/bench_read_units.py``. Writes one file (fast writer) to a
temporary folder, then times, in the same process:

- ``read_units`` (bulk read of the ragged spike_times column, one vectorised binning pass);
- a naive loop: ``units.get_unit_spike_times(i)`` + ``np.histogram`` per unit on the same bins.

Both produce the same counts (checked). Each is timed as the best of ``REPEATS`` runs.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from nwb_lrconn.io import open_nwb, read_units, write_units_nwb

N_UNITS = 2000
SPIKES_PER_UNIT = 1000
DURATION = 100.0  # seconds (10 Hz per unit)
BIN_WIDTH = 0.05
REPEATS = 3


def naive(path: Path, start: float, n_bins: int) -> np.ndarray:
    from pynwb import NWBHDF5IO

    edges = start + BIN_WIDTH * np.arange(n_bins + 1)
    with NWBHDF5IO(str(path), "r") as io:
        units = io.read().units
        out = np.zeros((n_bins, len(units)))
        for i in range(len(units)):
            t = units.get_unit_spike_times(i)
            out[:, i] = np.histogram(t[t < edges[-1]], bins=edges)[0]
    return out


def open_only(path: Path) -> None:
    with open_nwb(path) as nwbfile:
        nwbfile.units.id.data[:1]


def best_of(fn, repeats: int = REPEATS) -> tuple[float, float, object]:
    """Best wall-clock and best CPU (process) time over ``repeats`` runs, and the result.

    On a shared machine the CPU time is closer to what an idle machine would show.
    """
    wall, cpu, result = np.inf, np.inf, None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - w0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, result


def main() -> None:
    rng = np.random.default_rng(0)
    trains = [np.sort(rng.uniform(0.0, DURATION, SPIKES_PER_UNIT)) for _ in range(N_UNITS)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.nwb"
        t0 = time.perf_counter()
        write_units_nwb(path, trains)
        t_write = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_units(path, bin_width=BIN_WIDTH)  # warm-up: imports, namespace cache
            t_fast, c_fast, rec = best_of(lambda: read_units(path, bin_width=BIN_WIDTH))
            t_naive, c_naive, ref = best_of(
                lambda: naive(path, rec.trial_start_times[0], rec.n_time)
            )
            t_open, c_open, _ = best_of(lambda: open_only(path))
        same = np.array_equal(rec.data[0], ref)
    n_spikes = N_UNITS * SPIKES_PER_UNIT
    print(
        f"file: {N_UNITS} units, {n_spikes:,} spikes, {size_mb:.1f} MB, written in {t_write:.2f} s"
    )
    print(f"bins: {rec.n_time} x {BIN_WIDTH} s; counts identical: {same}")
    print("times: wall-clock s (CPU s), best of", REPEATS)
    print(f"read_units (bulk + vectorised binning): {t_fast:.3f} ({c_fast:.3f})")
    print(f"  of which opening the file (open_nwb + pynwb io.read): {t_open:.3f} ({c_open:.3f})")
    print(
        f"naive loop (get_unit_spike_times + np.histogram per unit): {t_naive:.3f} ({c_naive:.3f})"
    )
    print(
        f"speed-up: {t_naive / t_fast:.1f}x wall ({c_naive / c_fast:.1f}x CPU) overall; "
        f"{(c_naive - c_open) / (c_fast - c_open):.1f}x CPU excluding the common file opening"
    )


if __name__ == "__main__":
    main()
