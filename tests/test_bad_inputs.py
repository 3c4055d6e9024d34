"""The bad-input catalogue: every input that cannot work fails in one line, before any fit.

Each case runs the CLI in-process with the fit replaced by a tripwire: a problem that can be
known up front must be reported without reaching the fit. Every case must exit 1 with a single
line that names the offending path or object, leave the source byte-identical, and leave no
stray file behind.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb_lrconn.cli import main

N_UNITS = 6

TOML = """
seed = 1
[read]
bin_width = 0.02
trials = "trials"
[fit]
rank = 2
max_epochs = 2
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _empty_units_file(path: Path) -> None:
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile
    from pynwb.misc import Units

    nwbfile = NWBFile(
        session_description="empty Units table",
        identifier="empty-units",
        session_start_time=datetime(2020, 1, 1, tzinfo=timezone.utc),
    )
    nwbfile.units = Units(name="units", description="no units")
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A folder of good and bad inputs."""
    from nwb_lrconn.io import write_ophys_nwb, write_units_nwb

    folder = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    trains = [np.sort(rng.uniform(0, 20, 150)) for _ in range(N_UNITS)]
    trials = np.column_stack([np.arange(0, 20, 2.0), np.arange(0, 20, 2.0) + 1.5])
    good = write_units_nwb(
        folder / "good.nwb",
        trains,
        trials=trials,
        epochs={"start_time": [0.0, 10.0], "stop_time": [10.0, 20.0], "tags": [["a"], ["b"]]},
        columns={"location": ["CA1"] * N_UNITS},
    )
    _empty_units_file(folder / "empty_units.nwb")
    write_units_nwb(folder / "one_unit.nwb", trains[:1], trials=trials)
    for name in ("nan_spikes", "bad_trials", "unsorted_spikes", "negative_spikes"):
        shutil.copyfile(good, folder / f"{name}.nwb")
    with h5py.File(folder / "nan_spikes.nwb", "r+") as handle:
        handle["units/spike_times"][3] = np.nan
    with h5py.File(folder / "bad_trials.nwb", "r+") as handle:
        handle["intervals/trials/stop_time"][2] = handle["intervals/trials/start_time"][2] - 1
    with h5py.File(folder / "unsorted_spikes.nwb", "r+") as handle:
        first = handle["units/spike_times"][:5]
        handle["units/spike_times"][:5] = first[::-1]
    with h5py.File(folder / "negative_spikes.nwb", "r+") as handle:
        handle["units/spike_times"][0] = -5.0
    traces = rng.standard_normal((600, 5))
    write_ophys_nwb(folder / "calcium.nwb", traces, rate=30.0)
    write_ophys_nwb(folder / "single_frame.nwb", traces[:1], rate=30.0)
    write_ophys_nwb(folder / "all_nan.nwb", np.full((600, 5), np.nan), rate=30.0)
    write_ophys_nwb(folder / "all_constant.nwb", np.ones((600, 5)), rate=30.0)
    (folder / "empty.nwb").write_bytes(b"")
    (folder / "text.nwb").write_text("not an NWB file\n")
    raw = good.read_bytes()
    (folder / "truncated.nwb").write_bytes(raw[: len(raw) // 3])
    superblock = bytearray(raw)
    superblock[8:40] = bytes(32)  # the signature stays, the superblock after it is zeroed
    (folder / "bad_superblock.nwb").write_bytes(bytes(superblock))
    with h5py.File(folder / "plain.h5", "w") as handle:
        handle["x"] = np.arange(3)
    with h5py.File(folder / "nwb_version_only.nwb", "w") as handle:
        handle.attrs["nwb_version"] = "2.7.0"
    (folder / "a_folder.nwb").mkdir()
    (folder / "run.toml").write_text(TOML)
    (folder / "malformed.toml").write_text("[fit\nrank = 2\n")
    (folder / "unknown_key.toml").write_text("[fit]\nrnak = 2\n")
    (folder / "unknown_section.toml").write_text("[fitting]\nrank = 2\n")
    (folder / "wrong_type.toml").write_text('[fit]\nrank = "two"\n')
    (folder / "huge_seed.toml").write_text("seed = 100000000000000000000\n")
    (folder / "float_seed.toml").write_text("seed = 1e20\n")
    (folder / "malformed.json").write_text('{"fit": {"rank": 2,}}')
    (folder / "existing.nwb").write_bytes(b"keep me")
    readonly = folder / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    os.mkfifo(folder / "fifo.nwb")
    return folder


G = "{lab}/good.nwb"
C = "{lab}/calcium.nwb"
CFG = ["--config", "{lab}/run.toml"]

# (name, argv, text the one-line message must contain)
CASES = [
    # the input file
    ("missing file", ["fit", "{lab}/missing.nwb"], "missing.nwb"),
    ("folder as input", ["fit", "{lab}/a_folder.nwb"], "found a folder: "),
    ("empty file", ["fit", "{lab}/empty.nwb"], "empty.nwb is not an HDF5 file"),
    ("text file", ["fit", "{lab}/text.nwb"], "text.nwb is not an HDF5 file"),
    ("truncated HDF5", ["fit", "{lab}/truncated.nwb"], "truncated.nwb is a damaged or"),
    ("bad superblock", ["fit", "{lab}/bad_superblock.nwb"], "bad_superblock.nwb"),
    ("plain HDF5", ["fit", "{lab}/plain.h5"], "plain.h5 is an HDF5 file but not an NWB"),
    ("nwb_version only", ["fit", "{lab}/nwb_version_only.nwb"], "has an nwb_version attr"),
    ("inspect missing", ["inspect", "{lab}/missing.nwb"], "missing.nwb"),
    ("inspect truncated", ["inspect", "{lab}/truncated.nwb"], "truncated.nwb is a damaged"),
    ("inspect not NWB", ["inspect", "{lab}/nwb_version_only.nwb"], "nwb_version_only.nwb"),
    ("report folder", ["report", "{lab}/a_folder.nwb"], "found a folder: "),
    ("report truncated", ["report", "{lab}/truncated.nwb"], "truncated.nwb is a damaged"),
    ("report no fits", ["report", G], "holds no fits in processing module 'lrconn'"),
    # the data in it
    ("empty Units table", ["fit", "{lab}/empty_units.nwb", *CFG], "is empty (0 units)"),
    ("NaN spike times", ["fit", "{lab}/nan_spikes.nwb", *CFG], "must be finite"),
    ("unsorted spike times", ["fit", "{lab}/unsorted_spikes.nwb", *CFG], "not sorted"),
    ("negative spike times", ["fit", "{lab}/negative_spikes.nwb", *CFG], "negative"),
    ("trial stop < start", ["fit", "{lab}/bad_trials.nwb", *CFG], "stop_time"),
    ("one unit", ["fit", "{lab}/one_unit.nwb", *CFG, "--rank", "1"], "at least 2 units"),
    ("rank above units", ["fit", G, *CFG, "--rank", "9"], "rank 9 is larger than the 6 units"),
    ("single-frame calcium", ["fit", "{lab}/single_frame.nwb", "--ophys"], "single_frame.nwb"),
    ("all-NaN calcium", ["fit", "{lab}/all_nan.nwb", "--ophys", "--window", "1"], "all_nan.nwb"),
    ("constant calcium", ["fit", "{lab}/all_constant.nwb", "--ophys", "--window", "1"], "const"),
    ("one bin per trial", ["fit", G, *CFG, "--bin-width", "1.5"], "at least 2 bins"),
    ("unknown Units path", ["fit", G, *CFG, "--units", "processing/x"], "processing/x"),
    ("unknown trials table", ["fit", G, *CFG, "--trials", "nope"], "nope"),
    ("unknown unit ids", ["fit", G, *CFG, "--unit-ids", "1,99"], "99"),
    ("unknown epoch label", ["fit", G, "--bin-width", "0.1", "--epochs", "epochs:zzz"], "zzz"),
    ("unknown series", ["fit", C, "--ophys", "processing/ophys/nope"], "processing/ophys/nope"),
    ("normalize on spikes", ["fit", G, *CFG, "--normalize", "zscore"], "normalize"),
    # parameters
    ("zero bin width", ["fit", G, *CFG, "--bin-width", "0"], "bin_width"),
    ("negative bin width", ["fit", G, *CFG, "--bin-width", "-1"], "bin_width"),
    ("tiny bin width", ["fit", G, *CFG, "--bin-width", "1e-9"], "bins"),
    ("zero rank", ["fit", G, *CFG, "--rank", "0"], "rank"),
    ("negative seed", ["fit", G, *CFG, "--seed", "-1"], "seed"),
    ("negative window", ["fit", G, "--bin-width", "0.1", "--window", "-2"], "window"),
    ("zero max epochs", ["fit", G, *CFG, "--max-epochs", "0"], "max_epochs"),
    ("bad device", ["fit", G, *CFG, "--device", "tpu"], "device"),
    # configuration files
    ("missing config", ["fit", G, "--config", "{lab}/nope.toml"], "nope.toml"),
    ("malformed TOML", ["fit", G, "--config", "{lab}/malformed.toml"], "malformed.toml"),
    ("unknown key", ["fit", G, "--config", "{lab}/unknown_key.toml"], "rnak"),
    ("unknown section", ["fit", G, "--config", "{lab}/unknown_section.toml"], "fitting"),
    ("wrong type", ["fit", G, "--config", "{lab}/wrong_type.toml"], "rank"),
    ("huge seed", ["fit", G, "--config", "{lab}/huge_seed.toml"], "seed"),
    ("float seed", ["fit", G, "--config", "{lab}/float_seed.toml"], "seed"),
    ("malformed JSON", ["fit", G, "--config", "{lab}/malformed.json"], "malformed.json"),
    # the output
    ("output is a folder", ["fit", G, *CFG, "--out", "{lab}/readonly"], "is a folder"),
    ("output folder missing", ["fit", G, *CFG, "--out", "{lab}/no/out.nwb"], "does not exist"),
    ("output exists", ["fit", G, *CFG, "--out", "{lab}/existing.nwb"], "already exists"),
    ("output is the input", ["fit", G, *CFG, "--out", G], "is the input file"),
    ("read-only folder", ["fit", G, *CFG, "--out", "{lab}/readonly/o.nwb"], "not writable"),
    ("FIFO output", ["fit", G, *CFG, "--out", "{lab}/fifo.nwb", "--overwrite"], "fifo.nwb"),
    ("output dir is a file", ["fit", G, *CFG, "--output-dir", "{lab}/existing.nwb"], "file"),
    ("in place and copy", ["fit", G, *CFG, "--in-place", "--copy-source"], "--copy-source"),
    ("in place remote", ["fit", "https://127.0.0.1:9/x.nwb", "--in-place"], "127.0.0.1:9"),
    ("sorting without out", ["fit", "{lab}/a_folder.nwb", "--sorting"], "--out"),
    ("no input", ["fit", *CFG], "required: IN (or --dandiset/--asset)"),
    ("asset without dandiset", ["fit", "--asset", "sub-1/x.nwb"], "--asset PATH needs --dandiset"),
]


USAGE_ERRORS = {"no input", "asset without dandiset"}


def _tripwire(*args, **kwargs):
    raise AssertionError("TRIPWIRE: the fit ran although the problem was knowable up front")


@pytest.mark.parametrize(("name", "argv", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(lab, capsys, monkeypatch, name, argv, needle):
    monkeypatch.setattr("nwb_lrconn.pipeline.fit_lowrank", _tripwire)
    monkeypatch.chdir(lab)
    argv = [a.replace("{lab}", str(lab)) for a in argv]
    before = {p.name: _sha(p) for p in lab.iterdir() if p.is_file() and p.suffix == ".nwb"}
    listing = sorted(os.listdir(lab))
    code = main(argv)
    stderr = capsys.readouterr().err.strip()
    # Usage errors (what argparse itself checks) exit 2, like every command-line tool's.
    assert code == (2 if name in USAGE_ERRORS else 1), (code, stderr)
    assert "Traceback" not in stderr and "TRIPWIRE" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and stderr.splitlines()[-1] == errors[0], stderr  # progress aside
    err = errors[0]
    assert needle in err, err
    assert err.startswith(f"nwb-lrconn {argv[0]}: error: "), err
    after = {p.name: _sha(p) for p in lab.iterdir() if p.is_file() and p.suffix == ".nwb"}
    assert after == before
    assert sorted(os.listdir(lab)) == listing, "no stray files"


def test_the_catalogue_is_long_enough():
    assert len(CASES) >= 40


def _hold_open_for_writing(path: str, ready, release) -> None:
    with h5py.File(path, "a"):
        ready.set()
        release.wait(30)


def test_file_locked_by_another_writer(lab, capsys, tmp_path):
    source = tmp_path / "locked.nwb"
    shutil.copyfile(lab / "good.nwb", source)
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_open_for_writing, args=(str(source), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        assert main(["inspect", str(source)]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{source} is locked by another program" in err, err
    finally:
        release.set()
        holder.join(30)
