"""No write ever loses or alters a user's data: one test per case seen in files of other tools.

The HDF5 tree outside the results (every group, dataset value, attribute, dtype and link) is
compared byte for byte before and after each write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import signal
import stat
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from nwb_lrconn.data import SourceInfo
from nwb_lrconn.extension import list_results, mock_results, read_results, write_results
from nwb_lrconn.extension._graft import FitExistsError
from nwb_lrconn.io import open_nwb
from nwb_lrconn.io._identity import session_identity

DANDI_FILE = (
    Path(os.environ.get("NWB_LRCONN_DATA", Path(__file__).parents[3] / "shared" / "data"))
    / "dandi-000207-zheng2022-human-mtl"
    / "sub-4_ses-4_ecephys+image.nwb"
)
needs_dandi_file = pytest.mark.skipif(
    not DANDI_FILE.is_file(), reason=f"shared DANDI file not found at {DANDI_FILE}"
)


def _value(handle: h5py.File, value):
    """A comparable form of an attribute or dataset value (references by target name)."""
    if isinstance(value, h5py.Reference):
        return ("ref", handle[value].name if value else None)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return ("objects", str(value.dtype), [_value(handle, v) for v in value.ravel()])
        return (
            "array",
            str(value.dtype),
            value.shape,
            hashlib.sha256(value.tobytes()).hexdigest(),
        )
    return (type(value).__name__, repr(value))


def tree(path: Path, exclude: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Everything in an HDF5 file but the paths under ``exclude``, as comparable values."""
    out: dict[str, tuple] = {}
    with h5py.File(path, "r") as handle:

        def visit(name: str, group: h5py.Group) -> None:
            for key in group:
                full = f"{name}/{key}".lstrip("/")
                if any(full == e or full.startswith(e + "/") for e in exclude):
                    continue
                link = group.get(key, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    out[full] = ("link", type(link).__name__, getattr(link, "path", None))
                    continue
                obj = group[key]
                attrs = {k: _value(handle, obj.attrs[k]) for k in sorted(obj.attrs)}
                if isinstance(obj, h5py.Group):
                    out[full] = ("group", attrs)
                    visit(full, obj)
                else:
                    data = obj[()]
                    out[full] = ("dataset", str(obj.dtype), obj.shape, attrs, _value(handle, data))

        root = {k: _value(handle, handle.attrs[k]) for k in sorted(handle.attrs)}
        out["/"] = ("root", root)
        visit("", handle)
    return out


RESULTS = ("processing/lrconn", "specifications/ndx-lrconn")


def _results_for(path: Path, *, name: str = "fit", table="units", n_units=8, ids=None):
    with open_nwb(path) as nwbfile:
        identity = session_identity(nwbfile)
        identifier = str(nwbfile.identifier)
        table_ids = np.asarray(nwbfile.units.id[:])
    source = SourceInfo(
        identifier=identifier,
        path=str(path),
        object_path=table,
        table_path=table,
        session=identity,
    )
    results = mock_results(n_units=n_units, name=name, source=source)
    ids = table_ids[:n_units] if ids is None else ids
    fit = dataclasses.replace(results.fit, unit_ids=ids, unit_rows=np.arange(n_units))
    return dataclasses.replace(results, fit=fit)


@pytest.fixture
def custom_source(units_source: Path) -> Path:
    """A file with what other tools write: custom groups, attributes, empty groups, text."""
    with h5py.File(units_source, "r+") as handle:
        lab = handle.create_group("lab_custom")
        lab.attrs["protocol"] = "rig 3, do not change"
        lab["calibration"] = np.linspace(0, 1, 7)
        lab.create_group("empty_subgroup")
        handle.attrs["lab_note"] = "written by the lab's own tool"
        handle.create_group("general/optogenetics")
        handle.require_group("scratch")
        handle["general/related_publications"] = np.array([b"Some paper, 2024"], dtype=object)
    return units_source


def test_in_place_overwrite_replaces_only_the_fit(custom_source):
    results = _results_for(custom_source)
    before = tree(custom_source)
    write_results(results, custom_source, mode="in-place")
    write_results(results, custom_source, mode="in-place", overwrite=True)
    after = tree(custom_source, exclude=RESULTS)
    assert after == {k: v for k, v in before.items() if not k.startswith(RESULTS)}
    with h5py.File(custom_source, "r") as handle:
        assert handle["general/related_publications"][0] == b"Some paper, 2024"
        assert handle.attrs["lab_note"] == "written by the lab's own tool"
        assert "empty_subgroup" in handle["lab_custom"] and "scratch" in handle
    assert list_results(custom_source) == ["fit"]


@needs_dandi_file
@pytest.mark.parametrize("overwrite", [False, True])
def test_dandi_nwb_2_4_file_is_not_migrated(tmp_path, overwrite):
    source = tmp_path / DANDI_FILE.name
    shutil.copyfile(DANDI_FILE, source)
    results = _results_for(source, n_units=6)
    before = tree(source)
    write_results(results, source, mode="in-place")
    if overwrite:
        write_results(results, source, mode="in-place", overwrite=True)
    assert tree(source, exclude=RESULTS) == before
    with h5py.File(source, "r") as handle:
        assert handle.attrs["nwb_version"] == "2.4.0"
        electrodes = handle["general/extracellular_ephys/electrodes"]
        assert electrodes.attrs["neurodata_type"] == "DynamicTable"
        assert handle["general/related_publications"][0].startswith(b"Cognitive boundary")
    back = read_results(source)
    np.testing.assert_array_equal(back.fit.M, results.fit.M)


@needs_dandi_file
def test_copy_of_the_dandi_file_keeps_every_byte_outside_the_results(tmp_path):
    out = tmp_path / "copy.nwb"
    write_results(_results_for(DANDI_FILE, n_units=6), DANDI_FILE, out, mode="copy")
    assert tree(out, exclude=RESULTS) == tree(DANDI_FILE)


def _fork(function, *, patch=None) -> int:
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 0
        try:
            if patch is not None:
                patch()
            function()
        except FitExistsError:
            code = 4
        except FileExistsError:
            code = 5
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    return pid


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _slow_publish(seconds: float):
    """In a child: hold the written temporary file for a while before publishing it."""

    def patch() -> None:
        import nwb_lrconn.extension.write as module

        original = module.publish

        def slow(*args, **kwargs):
            time.sleep(seconds)
            return original(*args, **kwargs)

        module.publish = slow

    return patch


def test_concurrent_in_place_writers_both_survive(units_source):
    first, second = _results_for(units_source, name="first"), _results_for(units_source, name="b")
    slow = _fork(
        lambda: write_results(first, units_source, mode="in-place"), patch=_slow_publish(1.0)
    )
    time.sleep(0.3)  # the second writer starts while the first holds its copy
    fast = _fork(lambda: write_results(second, units_source, mode="in-place"))
    assert (_wait(slow), _wait(fast)) == (0, 0)
    assert list_results(units_source) == ["b", "first"]
    assert sorted(p.name for p in units_source.parent.iterdir()) == ["units.nwb"]


def test_concurrent_in_place_writers_of_one_name_fail_clearly(units_source):
    results = _results_for(units_source)
    slow = _fork(
        lambda: write_results(results, units_source, mode="in-place"), patch=_slow_publish(1.0)
    )
    time.sleep(0.3)
    late = _fork(lambda: write_results(results, units_source, mode="in-place"))
    assert sorted([_wait(slow), _wait(late)]) == [0, 4]  # one wrote, one was refused
    assert list_results(units_source) == ["fit"]


def test_concurrent_writers_of_one_new_output_never_replace_each_other(tmp_path, units_source):
    out = tmp_path / "out.nwb"
    one = _results_for(units_source, name="one")
    two = _results_for(units_source, name="two")
    slow = _fork(lambda: write_results(one, units_source, out), patch=_slow_publish(1.0))
    time.sleep(0.3)
    fast = _fork(lambda: write_results(two, units_source, out))
    codes = sorted([_wait(slow), _wait(fast)])
    assert codes == [0, 5], codes  # the second finds the name taken: FileExistsError
    assert len(list_results(out)) == 1


def test_publication_fails_if_the_output_appeared_meanwhile(tmp_path, units_source, monkeypatch):
    import nwb_lrconn.extension.write as module

    out = tmp_path / "out.nwb"
    original = module.publish

    def intruder(tmp, final, *, replace):
        final.write_bytes(b"someone else's file")
        return original(tmp, final, replace=replace)

    monkeypatch.setattr(module, "publish", intruder)
    with pytest.raises(FileExistsError, match="appeared while the results were being written"):
        write_results(_results_for(units_source), units_source, out)
    assert out.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nwb", "units.nwb"]


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_overwrite_never_replaces_special_files(tmp_path, units_source, kind):
    special = tmp_path / "special.nwb"
    if kind == "fifo":
        os.mkfifo(special)
    else:
        target = tmp_path / "target.nwb"
        target.write_bytes(b"linked")
        special.symlink_to(target)
    with pytest.raises(FileExistsError, match=r"special.nwb exists and is .*never replaced"):
        write_results(_results_for(units_source), units_source, special, overwrite=True)
    mode = os.lstat(special).st_mode
    assert stat.S_ISFIFO(mode) if kind == "fifo" else stat.S_ISLNK(mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_in_place_keeps_owner_group_and_mode(units_source):
    os.chown(units_source, 65534, 65534)
    units_source.chmod(0o640)
    write_results(_results_for(units_source), units_source, mode="in-place")
    st = units_source.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)


def test_in_place_keeps_the_mode(units_source):
    units_source.chmod(0o604)
    write_results(_results_for(units_source), units_source, mode="in-place")
    assert stat.S_IMODE(units_source.stat().st_mode) == 0o604


def test_in_place_warns_that_hard_links_keep_the_old_content(units_source, caplog):
    other = units_source.with_name("other_name.nwb")
    os.link(units_source, other)
    before = other.read_bytes()
    with caplog.at_level(logging.WARNING, logger="nwb_lrconn"):
        write_results(_results_for(units_source), units_source, mode="in-place")
    assert "has 2 hard links" in caplog.text
    assert other.read_bytes() == before and list_results(units_source) == ["fit"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_terminated_during_the_write_cleans_up(tmp_path, units_source, sig):
    """SIGTERM is handled like Ctrl-C: exit 143 (130), no partial or temporary file left."""
    from nwb_lrconn import cli

    out = tmp_path / "out.nwb"
    results = _results_for(units_source)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import nwb_lrconn.extension.write as module

            def stalled(*args, **kwargs):
                os.kill(os.getppid(), signal.SIGUSR1)
                time.sleep(30)

            module.publish = stalled
            # A shell starts background jobs with SIGINT ignored; Ctrl-C is what is tested here.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            cli._handle_sigterm()
            try:
                write_results(results, units_source, out)
            except cli._Terminated:
                code = 143
            except KeyboardInterrupt:
                code = 130
        finally:
            os._exit(code)
    ready = []
    previous = signal.signal(signal.SIGUSR1, lambda *a: ready.append(1))
    try:
        deadline = time.monotonic() + 60
        while not ready and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(pid, sig)
        code = _wait(pid)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert code == (143 if sig == signal.SIGTERM else 130)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units.nwb"]
