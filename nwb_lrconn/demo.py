"""``nwb-lrconn demo``: a synthetic ring attractor end to end, on built-in data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .config import FitConfig, ReadConfig, RunConfig
from .report import format_report, write_figures

__all__ = ["run_demo"]


def run_demo(
    out_dir: str | os.PathLike,
    *,
    quick: bool = False,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Synthetic ring attractor end to end: simulate → NWB → fit → posterior → distribution →
    write → report and figures.

    Parameters
    ----------
    out_dir : path
        Folder for the simulated NWB file, the results file, ``report.txt`` and ``figures/``.
    quick : bool, default: False
        Tiny sizes (a few seconds; for tests).
    seed : int, default: 0
        Seed of the network, the spikes and every stage.
    device : str, default: "cpu"
        Torch device of the fit and the flows.
    progress : bool, default: True
        Progress bars. Each step is logged (logger ``nwb_lrconn``).

    Returns
    -------
    Path
        The results NWB file.
    """
    import numpy as np

    from .extension import read_results
    from .io import write_units_nwb
    from .model.gauge import align_latents
    from .model.networks import grid_initial_conditions, sample_network
    from .model.simulate import simulate_spikes
    from .pipeline import run_file

    log = logging.getLogger(__name__).info
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_units, grid, n_time = (40, 5, 40) if quick else (100, 8, 75)
    log(f"simulating a ring attractor: {n_units} units, {grid * grid} trials x {n_time} bins")
    network = sample_network("ring", n_units, random_state=seed)
    session = simulate_spikes(
        network,
        initial=grid_initial_conditions(grid),
        n_time=n_time,
        bin_width=0.02,
        rate_range=(2.0, 30.0),
        random_state=seed,
    )
    if session.spike_times is None:  # simulate_spikes always records them
        raise RuntimeError("simulate_spikes returned no spike times.")
    source = write_units_nwb(  # simulated spikes are placed at random within their bin
        out / "ring_demo.nwb",
        session.spike_times,
        trials=session.trials,
        resolution=0.02,
        overwrite=True,
    )
    config = RunConfig(
        read=ReadConfig(bin_width=0.02, trials="trials"),
        # The stages size themselves to the data (stopping on held-out progress, the posterior's
        # form by cost, the distribution's model by the number of units); --quick only caps
        # stage 1 for the tests.
        fit=FitConfig(rank=2, max_epochs=30, patience=10) if quick else FitConfig(rank=2),
        seed=seed,
        device=device,
        name="ring_demo",
    )
    output = out / "ring_demo_lrconn.nwb"
    run_file(source, output, config, overwrite=True, progress=progress)
    results = read_results(output, config.name)
    A, c = align_latents(results.fit.latents, session.latents, results.fit.latent_mask)
    aligned = results.fit.latents @ A.T + c
    r2 = 1 - np.sum((aligned - session.latents) ** 2) / np.sum(
        (session.latents - session.latents.mean(axis=(0, 1))) ** 2
    )
    text = format_report(results) + f"\n  ground truth: latent alignment R² {r2:.3f}\n"
    (out / "report.txt").write_text(text, encoding="utf-8")
    log("writing figures")
    write_figures(results, out / "figures", nwb_path=output, formats=("png",))
    return output
