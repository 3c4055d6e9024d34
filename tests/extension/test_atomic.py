"""A write killed with SIGKILL at any moment never damages the source or leaves a fake output.

Each scenario forks the test process (so the child needs no fresh imports), lets the child
write, and kills it either at a named stage (by patching the call that starts the next stage)
or after a delay.
"""

from __future__ import annotations

import os
import signal
import time

import h5py
import pytest

from nwb_lrconn.extension import list_results, write_results
from nwb_lrconn.extension._files import TEMP_SUFFIX, check_nwb_file

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def _die_after(function):
    def wrapped(*args, **kwargs):
        function(*args, **kwargs)
        _die()

    return wrapped


def _patch_stage(stage: str) -> None:
    """In the child: make ``stage`` the moment the process dies."""
    import shutil

    from hdmf.backends.hdf5.h5tools import HDF5IO

    if stage == "after-copy":
        shutil.copyfile = _die_after(shutil.copyfile)
    elif stage == "mid-write":  # builders written, HDF5 file neither flushed nor closed
        HDF5IO.write_builder = _die_after(HDF5IO.write_builder)
    elif stage == "before-fsync":
        os.fsync = _die
    elif stage == "before-replace":  # in place: os.replace; a new file: link-or-fail
        os.replace = _die
        os.link = _die


def _fork_write(write, *, stage: str | None = None, delay: float | None = None) -> int:
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            if stage is not None:
                _patch_stage(stage)
            write()
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    deadline = time.monotonic() + (delay if delay is not None else float("inf"))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)


def _nwb_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".nwb"))


STAGES = ["after-copy", "mid-write", "before-fsync", "before-replace"]


@pytest.mark.parametrize("stage", STAGES)
def test_in_place_killed_at_stage(units_source, units_results, stage):
    before = units_source.read_bytes()
    code = _fork_write(
        lambda: write_results(units_results, units_source, mode="in-place"), stage=stage
    )
    assert code == -signal.SIGKILL
    assert units_source.read_bytes() == before
    check_nwb_file(units_source)
    assert _nwb_files(units_source.parent) == ["units.nwb"]
    # the dead writer's hidden temporary file stays until the next write beside it removes it
    assert [p for p in units_source.parent.iterdir() if p.name.endswith(TEMP_SUFFIX)]
    write_results(units_results, units_source, mode="in-place")
    assert sorted(p.name for p in units_source.parent.iterdir()) == ["units.nwb"]
    assert list_results(units_source) == ["fit"]


@pytest.mark.parametrize("stage", ["mid-write", "before-replace"])
def test_new_output_killed_at_stage(units_source, units_results, stage):
    before = units_source.read_bytes()
    out = units_source.with_name("out.nwb")
    code = _fork_write(lambda: write_results(units_results, units_source, out), stage=stage)
    assert code == -signal.SIGKILL
    assert not out.exists()
    assert units_source.read_bytes() == before
    assert _nwb_files(units_source.parent) == ["units.nwb"]


@pytest.mark.parametrize(
    "delay",
    [
        0.0,
        0.05,
        0.15,
        0.3,
        0.6,
        1.0,
        2.0,
        20.0,
    ],
)
def test_in_place_killed_after_delay(units_source, units_results, delay):
    """Killed at an arbitrary moment: the source is unchanged, or complete with the new fit."""
    before = units_source.read_bytes()
    code = _fork_write(
        lambda: write_results(units_results, units_source, mode="in-place"), delay=delay
    )
    assert code in (0, -signal.SIGKILL)
    assert _nwb_files(units_source.parent) == ["units.nwb"]
    check_nwb_file(units_source)
    if units_source.read_bytes() != before:
        with h5py.File(units_source, "r") as handle:
            assert "processing/lrconn/fit/M" in handle
        assert list_results(units_source) == ["fit"]
    if delay >= 20.0:
        assert code == 0, "20 s is ample for the write to finish"
        assert list_results(units_source) == ["fit"]


def test_only_temporary_files_of_dead_writers_are_removed(tmp_path):
    from nwb_lrconn.extension._files import _HOST, remove_stale_temps, temp_path

    target = tmp_path / "out.nwb"
    live = temp_path(target)  # carries this (living) process's id
    dead = tmp_path / f".out.nwb.{_HOST}-99999999-0123abcd{TEMP_SUFFIX}"  # above any pid_max
    remote = tmp_path / f".out.nwb.otherhost-99999999-0123abcd{TEMP_SUFFIX}"  # not ours to judge
    other = tmp_path / f".other.nwb.{_HOST}-99999999-0123abcd{TEMP_SUFFIX}"
    for path in (live, dead, remote, other):
        path.write_bytes(b"partial")
    assert not live.name.endswith(".nwb") and live.name.startswith(".out.nwb.")
    assert remove_stale_temps(target) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, remote.name, other.name]
    )
