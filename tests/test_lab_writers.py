"""End to end on files laid out as other labs' writers lay them out: suite2p, CNMF-E, neurosuite.

Each file carries simulated low-rank dynamics (so a fit beats the constant-rate baseline) in the
layout of a real converter: suite2p's two-column ``iscell`` and (ROIs, frames) traces, CNMF-E's
explicit 30 Hz timestamps, neurosuite's Units ``location`` column, sleep/wake epochs and head
angle in ``processing/behavior/CompassDirection``; and a Units table of only three units. Every
fit runs through ``main([...])`` with the default settings (the calcium fits with ``--max-epochs``
for runtime) and prints its wall time.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from nwb_lrconn.cli import main
from nwb_lrconn.extension import read_results

# The calcium fits run on to the default 500 epochs (~15 s for suite2p on one thread); the spike
# fits stop early by themselves and keep the default.
MAX_EPOCHS = ["--max-epochs", "100"]
BIN = 0.02  # s; simulation step of the spiking networks


def _fit(argv, capsys, label):
    """Run ``nwb-lrconn fit ARGV``, print its wall time; return exit code, log, warnings."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["fit", *argv])
    seconds = time.perf_counter() - start
    out, err = capsys.readouterr()
    with capsys.disabled():
        print(f"\n[{label}] nwb-lrconn fit: exit {code} in {seconds:.1f} s")
    assert seconds < 120
    assert "Traceback" not in out + err
    return code, out + err, [str(w.message) for w in caught]


def _calcium(n_units, bin_width, seed):
    from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
    from nwb_lrconn.model.simulate import simulate_calcium

    session = simulate_calcium(
        sample_network("ring", n_units, random_state=seed),
        initial=grid_initial_conditions(4),
        n_time=round(1.0 / bin_width),  # one-second trials, back to back
        bin_width=bin_width,
        random_state=seed,
    )
    return session.continuous_traces()


@pytest.fixture(scope="module")
def suite2p(tmp_path_factory):
    """16 cells and 3 non-cells (two constant), stored (ROIs, frames) at 50 Hz."""
    from nwb_lrconn.io import write_ophys_nwb

    cells = _calcium(16, BIN, seed=0)
    n_frames = cells.shape[0]
    noise = np.random.default_rng(0).standard_normal(n_frames)
    non_cells = np.stack([np.full(n_frames, 3.0), noise, np.full(n_frames, 1.0)], axis=1)
    traces = np.concatenate([cells[:, :8], non_cells[:, :2], cells[:, 8:], non_cells[:, 2:]], 1)
    iscell = np.array([[1, 0.9]] * 8 + [[0, 0.1], [0, 0.2]] + [[1, 0.8]] * 8 + [[0, 0.05]])
    path = tmp_path_factory.mktemp("suite2p") / "suite2p.nwb"
    with warnings.catch_warnings():  # pynwb's own complaint about the orientation
        warnings.simplefilter("ignore", UserWarning)
        write_ophys_nwb(
            path,
            traces,
            rate=1 / BIN,
            data_orientation="rois_first",
            roi_columns={"iscell": iscell},
        )
    return path


@pytest.fixture(scope="module")
def cnmfe(tmp_path_factory):
    """10 ROIs with explicit timestamps at 30 Hz (no ``rate``), as CNMF-E converters write."""
    from nwb_lrconn.io import write_ophys_nwb

    traces = _calcium(10, 1 / 30, seed=1)
    timestamps = 5.0 + np.arange(traces.shape[0]) / 30.0
    path = tmp_path_factory.mktemp("cnmfe") / "cnmfe.nwb"
    return write_ophys_nwb(path, traces, timestamps=timestamps)


@pytest.fixture(scope="module")
def neurosuite(tmp_path_factory):
    """12 ADn units of a ring attractor and 4 CA1 units, wake/sleep epochs, head angle."""
    from pynwb import NWBHDF5IO
    from pynwb.behavior import CompassDirection

    from nwb_lrconn.io import write_units_nwb
    from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
    from nwb_lrconn.model.simulate import simulate_spikes

    session = simulate_spikes(
        sample_network("ring", 12, random_state=2),
        initial=grid_initial_conditions(4),
        n_time=50,
        bin_width=BIN,
        rate_range=(2.0, 60.0),
        inter_trial_interval=0.0,
        random_state=2,
    )
    # 16 one-second trials: the first 8 in wake [0, 8) s, the last 8 in wake [12, 20) s
    rng = np.random.default_rng(2)
    sleep = [np.sort(rng.uniform(8.0, 12.0, rng.poisson(20))) for _ in range(12)]
    adn = [
        np.sort(np.concatenate([np.where(t >= 8.0, t + 4.0, t), s]))
        for t, s in zip(session.spike_times, sleep)
    ]
    ca1 = [np.sort(rng.uniform(0.0, 20.0, rng.poisson(100))) for _ in range(4)]
    path = tmp_path_factory.mktemp("neurosuite") / "neurosuite.nwb"
    write_units_nwb(
        path,
        adn + ca1,
        epochs={
            "start_time": [0.0, 8.0, 12.0],
            "stop_time": [8.0, 12.0, 20.0],
            "label": ["wake", "sleep", "wake"],
        },
        columns={"location": ["ADn"] * 12 + ["CA1"] * 4},
    )
    # head angle: the ring's latent angle during wake, a random walk during sleep
    angle = np.arctan2(session.latents[..., 1], session.latents[..., 0]).reshape(-1)
    times = BIN * np.arange(angle.size)
    times = np.where(times >= 8.0, times + 4.0, times)
    sleep_times = np.arange(8.0, 12.0, BIN)
    sleep_angle = np.cumsum(rng.normal(0, 0.1, sleep_times.size))
    order = np.argsort(np.concatenate([times, sleep_times]))
    heading = np.angle(np.exp(1j * np.concatenate([angle, sleep_angle])))[order]
    with NWBHDF5IO(str(path), "a") as io:
        nwbfile = io.read()
        behaviour = nwbfile.create_processing_module("behavior", "behaviour")
        compass = CompassDirection()
        compass.create_spatial_series(
            name="head_direction",
            data=heading,
            timestamps=np.concatenate([times, sleep_times])[order],
            reference_frame="room, 0 rad = east",
            unit="radians",
        )
        behaviour.add(compass)
        io.write(nwbfile)
    return path


def test_suite2p_keeps_the_classified_cells(suite2p, capsys):
    out_path = suite2p.parent / "fit.nwb"
    code, log, caught = _fit(
        [str(suite2p), "--ophys", "--window", "1", "--out", str(out_path), *MAX_EPOCHS],
        capsys,
        "suite2p",
    )
    assert code == 0, log
    assert "kept the 16 of 19 ROIs that the iscell column" in log
    assert log.count("stores its data as (ROIs, frames)") == 1  # said once, in its own words
    assert not [w for w in caught if "oriented incorrectly" in w]  # pynwb's, on every read
    fit = read_results(out_path).fit
    cells = [*range(8), *range(10, 18)]
    np.testing.assert_array_equal(fit.unit_ids, cells)
    assert fit.metrics["r2"] > 0.5


def test_cnmfe_timestamps_without_rate_fit(cnmfe, capsys):
    out_path = cnmfe.parent / "fit.nwb"
    argv = [str(cnmfe), "--ophys", "--window", "1", "--out", str(out_path), *MAX_EPOCHS]
    code, log, _ = _fit(argv, capsys, "CNMF-E")
    assert code == 0, log
    fit = read_results(out_path).fit
    np.testing.assert_array_equal(fit.unit_ids, np.arange(10))
    assert fit.bin_width == pytest.approx(1 / 30)
    assert fit.metrics["r2"] > 0.5


def test_neurosuite_where_epochs_and_head_direction(neurosuite, capsys):
    out_path = neurosuite.parent / "fit.nwb"
    argv = [str(neurosuite), "--window", "1", "--bin-width", str(BIN)]
    argv += ["--epochs", "epochs:wake", "--where", "location==ADn", "--out", str(out_path)]
    code, log, _ = _fit(argv, capsys, "neurosuite")
    assert code == 0, log
    fit = read_results(out_path).fit
    np.testing.assert_array_equal(fit.unit_ids, np.arange(12))  # no CA1 unit
    starts = fit.trial_start_times
    assert starts.size == 16 and not np.any((starts >= 8.0) & (starts < 12.0))  # no sleep
    series = "processing/behavior/CompassDirection/head_direction"
    assert main(["report", str(out_path), "--behaviour", series]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert f"behaviour: {series} (angle; held-out circular R²" in out
    assert "verdict: the latent angle reaches" in out


def test_three_units_are_not_identifiable(tmp_path, capsys):
    from nwb_lrconn.io import write_units_nwb
    from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
    from nwb_lrconn.model.simulate import simulate_spikes

    session = simulate_spikes(
        sample_network("ring", 4, random_state=3),
        initial=grid_initial_conditions(4),
        n_time=50,
        rate_range=(2.0, 60.0),
        random_state=3,
    )
    source = write_units_nwb(
        tmp_path / "three.nwb", session.spike_times[:3], trials=session.trials
    )
    out_path = tmp_path / "fit.nwb"
    argv = [str(source), "--bin-width", str(BIN), "--trials", "trials", "--rank", "2"]
    code, log, _ = _fit([*argv, "--out", str(out_path)], capsys, "3 units")
    assert code == 0, log
    verdict = read_results(out_path).degeneracy.verdict
    assert verdict.startswith("Not identifiable: too few units (3)")
