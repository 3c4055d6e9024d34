"""Small synthetic NWB files for the io tests (written once per session with our writers)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nwb_lrconn.io import write_ophys_nwb, write_units_nwb

N_UNITS = 6
DURATION = 20.0  # seconds
TRIALS = np.array([[1.0, 4.0], [5.0, 9.5], [10.0, 12.25], [13.0, 19.0]])
CLICKS = [np.array([1.5, 2.5, 3.5]), np.array([6.0]), np.array([]), np.array([14.0, 14.05])]
EVENT = np.array([2.0, 7.0, np.nan, 15.0])


def sha256(path: Path) -> str:
    """Hash of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def truth() -> SimpleNamespace:
    """The constants the synthetic files were written with, and a file-hash helper."""
    return SimpleNamespace(trials=TRIALS, clicks=CLICKS, event=EVENT, sha256=sha256)


@pytest.fixture(scope="session")
def spike_trains() -> list[np.ndarray]:
    """Ground-truth spike times: unit 5 is silent; unit 4 fires only before 1 s."""
    rng = np.random.default_rng(0)
    rates = [5.0, 10.0, 20.0, 2.0]
    trains = [np.sort(rng.uniform(0.0, DURATION, rng.poisson(r * DURATION))) for r in rates]
    trains.append(np.array([0.1, 0.5, 0.9]))
    trains.append(np.array([]))
    return trains


@pytest.fixture(scope="session")
def units_file(tmp_path_factory: pytest.TempPathFactory, spike_trains) -> Path:
    """Units NWB file with trials (event + ragged click column), labelled epochs, a quality
    column and a running-speed TimeSeries."""
    from pynwb import NWBHDF5IO, TimeSeries

    path = tmp_path_factory.mktemp("units") / "units.nwb"
    write_units_nwb(
        path,
        spike_trains,
        unit_ids=[10, 11, 12, 13, 14, 15],
        trials={
            "start_time": TRIALS[:, 0],
            "stop_time": TRIALS[:, 1],
            "cue_time": EVENT,
            "clicks": CLICKS,
        },
        epochs={
            "start_time": [0.0, 8.0, 15.0],
            "stop_time": [8.0, 15.0, 20.0],
            "label": ["wake", "sleep", "wake"],
        },
        columns={
            "quality": ["good", "good", "mua", "good", "good", "noise"],
            "snr": [5.0, 2.0, 7.0, 1.0, 3.0, 0.5],
            "is_ok": [True, False, True, True, True, False],
        },
        identifier="synthetic-units",
    )
    with NWBHDF5IO(str(path), "a") as io:
        nwbfile = io.read()
        nwbfile.add_acquisition(
            TimeSeries(
                name="speed",
                data=np.arange(200, dtype=float),
                unit="m/s",
                starting_time=0.0,
                rate=10.0,
                description="ramp: value = 10 * time",
            )
        )
        io.write(nwbfile)
    return path


@pytest.fixture(scope="session")
def ophys_traces() -> dict[str, np.ndarray]:
    """Two series of 100 frames x 4 ROIs at 10 Hz; frame 7 of "A" is NaN."""
    rng = np.random.default_rng(1)
    a = 10.0 + rng.normal(size=(100, 4))
    a[7] = np.nan
    b = 5.0 + rng.normal(size=(100, 3))
    return {"A": a, "B": b}


@pytest.fixture(scope="session")
def ophys_file(tmp_path_factory: pytest.TempPathFactory, ophys_traces) -> Path:
    """Ophys NWB file with two RoiResponseSeries at 10 Hz and two trials."""
    path = tmp_path_factory.mktemp("ophys") / "ophys.nwb"
    return write_ophys_nwb(
        path, ophys_traces, rate=10.0, trials=np.array([[0.0, 4.0], [5.0, 9.95]])
    )
