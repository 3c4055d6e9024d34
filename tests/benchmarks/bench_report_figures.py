"""Benchmark: how long ``nwb-lrconn report --figures`` takes, end to end and per figure.

Run: ``python tests/benchmarks/bench_report_figures.py [RESULTS.nwb [SERIES]]``. Without
arguments a 15-unit ring-attractor session with a head-direction series is simulated and fitted
(tiny settings, about a minute) in a temporary folder.

Printed:

- the whole command (``report --figures``, plus ``--behaviour SERIES`` when given), run
  ``REPEATS`` times as a fresh one-thread process: wall time and CPU time (imports, reading
  the results, re-reading the recording, drawing and saving PNG + PDF);
- in this process, after the imports: the CPU time of building every figure and of saving each
  one as PNG and as PDF.

CPU time is printed beside wall time because the machine may be shared.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPEATS = 3
HD = "processing/behavior/CompassDirection/head_direction"
TOML = """
seed = 1
name = "ring15"
[read]
bin_width = 0.02
trials = "trials"
[fit]
rank = 2
max_epochs = 12
batch_size = 16
[distribution]
n_steps_a = 10
n_steps_b = 4
n_virtual_units = 16
hidden_features = 8
n_layers = 2
n_samples = 1000
pool_size = 2000
validation_every = 5
"""


def make_fit(folder: Path) -> Path:
    """Simulate a 15-unit ring session with its latent angle as head direction, and fit it."""
    from pynwb import NWBHDF5IO
    from pynwb.behavior import CompassDirection, SpatialSeries

    from nwb_lrconn.cli import main
    from nwb_lrconn.io import write_units_nwb
    from nwb_lrconn.model.networks import sample_network
    from nwb_lrconn.model.simulate import simulate_spikes

    rng = np.random.default_rng(0)
    angles = rng.uniform(-np.pi, np.pi, 40)
    session = simulate_spikes(
        sample_network("ring", 15, random_state=0),
        initial=1.5 * np.c_[np.cos(angles), np.sin(angles)],
        n_time=25,
        rate_range=(2.0, 40.0),
        process_noise=0.05,
        random_state=0,
    )
    source = folder / "ring15.nwb"
    write_units_nwb(source, session.spike_times, trials=session.trials)
    times = session.trial_start_times[:, None] + session.bin_width * (np.arange(25) + 0.5)
    angle = np.arctan2(session.latents[..., 1], session.latents[..., 0])
    with NWBHDF5IO(str(source), "a") as nwb_io:
        nwbfile = nwb_io.read()
        module = nwbfile.create_processing_module("behavior", "simulated behaviour")
        series = SpatialSeries(
            name="head_direction",
            data=angle.ravel(),
            timestamps=times.ravel(),
            reference_frame="latent plane",
            unit="radians",
        )
        module.add(CompassDirection(spatial_series=series))
        nwb_io.write(nwbfile)
    (folder / "run.toml").write_text(TOML)
    out = folder / "ring15_lrconn.nwb"
    args = ["fit", str(source), "--config", str(folder / "run.toml"), "--out", str(out)]
    if main([*args, "--quiet"]) != 0:
        raise SystemExit("the fit failed")
    return out


def whole_command(results: Path, series: str | None, folder: Path) -> None:
    command = [sys.executable, "-m", "nwb_lrconn.cli", "report", str(results)]
    command += ["--figures", str(folder / "figures")]
    if series:
        command += ["--behaviour", series]
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    for _ in range(REPEATS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"report --figures{' --behaviour' if series else ''}: wall {wall:5.1f} s, "
              f"CPU {cpu:5.1f} s")  # fmt: skip


def per_figure(results_path: Path, series: str | None, folder: Path) -> None:
    import matplotlib.figure  # noqa: F401  (imports are not what is timed here)
    import sklearn.cluster  # noqa: F401
    import sklearn.mixture  # noqa: F401

    from nwb_lrconn import plotting
    from nwb_lrconn.extension import read_results
    from nwb_lrconn.report import load_recording, relate_results_to_behaviour, write_figures

    results = read_results(results_path)
    loaded = load_recording(results, results_path)
    behaviour = None
    if series:
        behaviour = relate_results_to_behaviour(results, series, loaded=loaded)
    drawn = {}
    save = plotting.save_figure
    plotting.save_figure = lambda fig, stem, **_: drawn.__setitem__(Path(stem).name, fig) or []
    try:
        start = time.process_time()
        write_figures(results, folder, behaviour=behaviour, loaded=loaded)
        print(f"building every figure: CPU {time.process_time() - start:.2f} s")
    finally:
        plotting.save_figure = save
    total = {"png": 0.0, "pdf": 0.0}
    for name, fig in drawn.items():
        row = []
        for fmt in ("png", "pdf"):
            start = time.process_time()
            save(fig, folder / name, formats=(fmt,))
            row.append(time.process_time() - start)
            total[fmt] += row[-1]
        print(f"  {name:32s} save PNG {row[0]:.2f} s, PDF {row[1]:.2f} s (CPU)")
    print(f"saving: PNG {total['png']:.2f} s, PDF {total['pdf']:.2f} s (CPU)")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if len(sys.argv) > 1:
            results, series = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else None)
        else:
            results, series = make_fit(folder), HD
        whole_command(results, series, folder)
        per_figure(results, series, folder / "per_figure")


if __name__ == "__main__":
    main()
