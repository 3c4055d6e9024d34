"""Every user-facing error of the writer and the reader, with its message."""

from __future__ import annotations

import dataclasses
import stat
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from nwb_lrconn.extension import list_results, mock_results, read_results, write_results
from nwb_lrconn.extension._build import build_fit
from nwb_lrconn.extension.containers import NamedArrays
from nwb_lrconn.extension.write import FitExistsError, check_namespace


@pytest.fixture
def bad_files(tmp_path, units_source):
    text = tmp_path / "notes.nwb"
    text.write_text("not hdf5 at all\n")
    truncated = tmp_path / "truncated.nwb"
    truncated.write_bytes(units_source.read_bytes()[: units_source.stat().st_size // 2])
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as handle:
        handle["x"] = np.arange(3)
    return {
        "missing": (tmp_path / "missing.nwb", FileNotFoundError, "NWB file not found: "),
        "folder": (tmp_path, IsADirectoryError, "Expected an NWB file, found a folder: "),
        "text": (text, ValueError, "is not an HDF5 file"),
        "truncated": (truncated, ValueError, "is a damaged or truncated HDF5 file"),
        "plain-hdf5": (plain, ValueError, "is an HDF5 file but not an NWB file"),
    }


@pytest.mark.parametrize("kind", ["missing", "folder", "text", "truncated", "plain-hdf5"])
@pytest.mark.parametrize("operation", ["write", "write-copy", "write-in-place", "read", "list"])
def test_bad_source_files(tmp_path, bad_files, units_results, kind, operation):
    path, error, message = bad_files[kind]
    calls = {
        "write": lambda: write_results(units_results, path, tmp_path / "out.nwb"),
        "write-copy": lambda: write_results(
            units_results, path, tmp_path / "out.nwb", mode="copy"
        ),
        "write-in-place": lambda: write_results(units_results, path, mode="in-place"),
        "read": lambda: read_results(path),
        "list": lambda: list_results(path),
    }
    with pytest.raises(error, match=message + ".*" if kind != "folder" else message) as info:
        calls[operation]()
    assert str(path) in str(info.value)
    assert not (tmp_path / "out.nwb").exists()


@pytest.fixture
def read_only(units_source):
    units_source.chmod(stat.S_IRUSR | stat.S_IRGRP)
    yield units_source
    units_source.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_read_only_source_in_place(read_only, units_results):
    before = read_only.read_bytes()
    with pytest.raises(PermissionError, match="source file is read-only.*") as info:
        write_results(units_results, read_only, mode="in-place")
    assert str(read_only) in str(info.value)
    assert read_only.read_bytes() == before


@pytest.mark.parametrize("mode", ["derived", "copy"])
def test_read_only_source_can_still_be_copied(tmp_path, read_only, units_results, mode):
    out = write_results(units_results, read_only, tmp_path / "copy.nwb", mode=mode)
    assert list_results(out) == ["fit"]


def test_unwritable_and_missing_output_folder(tmp_path, units_source, units_results):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(
            PermissionError, match=f"The output folder {locked} is not writable; choose another"
        ):
            write_results(units_results, units_source, locked / "out.nwb")
    finally:
        locked.chmod(stat.S_IRWXU)
    with pytest.raises(FileNotFoundError, match="The output folder .*nowhere does not exist"):
        write_results(units_results, units_source, tmp_path / "nowhere" / "out.nwb")
    with pytest.raises(IsADirectoryError, match=f"The output {tmp_path} is a folder; give a"):
        write_results(units_results, units_source, tmp_path)


def test_output_equal_to_source(units_source, units_results):
    with pytest.raises(ValueError, match=f"The output {units_source} is the input file; use"):
        write_results(units_results, units_source, units_source)
    with pytest.raises(ValueError, match="mode='in-place' writes into the source"):
        write_results(
            units_results, units_source, units_source.with_name("x.nwb"), mode="in-place"
        )


def test_existing_output_file(tmp_path, units_source, units_results):
    out = write_results(units_results, units_source, tmp_path / "out.nwb")
    with pytest.raises(FileExistsError, match=f"The output file {out} already exists; pass"):
        write_results(units_results, units_source, out)
    write_results(units_results, units_source, out, overwrite=True)
    assert list_results(out) == ["fit"]


def test_same_fit_name_twice(units_source, units_results):
    write_results(units_results, units_source, mode="in-place")
    with pytest.raises(
        FitExistsError,
        match=f"{units_source} already holds a fit named 'fit' in module 'lrconn'; pass",
    ):
        write_results(units_results, units_source, mode="in-place")


def test_region_rows_out_of_range(tmp_path, units_source, units_results):
    with pytest.raises(IndexError, match=r"unit_rows \[8, 9\] are out of range for units in "):
        write_results(
            units_results,
            units_source,
            tmp_path / "out.nwb",
            unit_rows=np.array([0, 1, 2, 3, 4, 5, 8, 9]),
        )
    with pytest.raises(ValueError, match=r"unit_rows must be integers of shape \(8,\)"):
        write_results(units_results, units_source, tmp_path / "out.nwb", unit_rows=[0.5] * 8)
    unknown = dataclasses.replace(
        units_results, fit=dataclasses.replace(units_results.fit, unit_ids=np.arange(3, 11))
    )
    with pytest.raises(ValueError, match=r"The fitted unit ids \[3, 4, 5, .* are not the ids at"):
        write_results(unknown, units_source, tmp_path / "out.nwb")
    assert not (tmp_path / "out.nwb").exists()
    assert [p.name for p in tmp_path.iterdir() if "lrconn-tmp" in p.name] == []


def test_source_mismatch(tmp_path, units_source, units_results):
    wrong_id = dataclasses.replace(
        units_results.provenance,
        source=dataclasses.replace(units_results.provenance.source, identifier="other"),
    )
    with pytest.raises(ValueError, match="fitted on the NWB file with identifier 'other'"):
        write_results(
            dataclasses.replace(units_results, provenance=wrong_id),
            units_source,
            tmp_path / "o.nwb",
        )
    wrong_table = dataclasses.replace(
        units_results.provenance,
        source=dataclasses.replace(units_results.provenance.source, table_path="processing/x"),
    )
    with pytest.raises(
        KeyError, match=r"No table at 'processing/x' in .*; found \['intervals/trials', 'units'\]"
    ):
        write_results(
            dataclasses.replace(units_results, provenance=wrong_table),
            units_source,
            tmp_path / "o.nwb",
        )


def test_argument_errors(tmp_path, units_results):
    with pytest.raises(ValueError, match="Give an output file for results of a remote or"):
        write_results(units_results, None)
    with pytest.raises(ValueError, match="mode='in-place' needs a local source file"):
        write_results(units_results, None, tmp_path / "o.nwb", mode="in-place")
    with pytest.raises(ValueError, match="mode='copy' needs a local source file"):
        write_results(units_results, "https://example.org/a.nwb", tmp_path / "o.nwb", mode="copy")
    with pytest.raises(ValueError, match=r"mode must be one of \['derived', 'copy', 'in-place'\]"):
        write_results(units_results, None, tmp_path / "o.nwb", mode="append")
    with pytest.raises(ValueError, match="module_name must be a non-empty name without '/'"):
        write_results(units_results, None, tmp_path / "o.nwb", module_name="a/b")
    with pytest.raises(TypeError, match="results must be a nwb_lrconn.data.Results; got dict"):
        write_results({}, None, tmp_path / "o.nwb")


def test_bad_array_names():
    with pytest.raises(
        ValueError, match="flow: array names must be non-empty strings without '/'"
    ):
        NamedArrays.from_dict("flow", {"a/b": np.zeros(2)})
    results = mock_results()
    bad = dataclasses.replace(results.distribution, flow_a_parameters={"": np.zeros(2)})
    with pytest.raises(ValueError, match="flow_a_parameters: array names must be non-empty"):
        build_fit(dataclasses.replace(results, distribution=bad), unit_rows=np.arange(8))


def test_namespace_guard(tmp_path):
    fake = SimpleNamespace(
        manager=SimpleNamespace(namespace_catalog=SimpleNamespace(namespaces=("core",)))
    )
    with pytest.raises(
        RuntimeError, match=f"namespace is not loaded in the NWBHDF5IO writing {tmp_path}"
    ):
        check_namespace(fake, tmp_path)


def test_mock_argument_errors():
    with pytest.raises(ValueError, match=r"structure must be one of \['dense', 'blocks'\]"):
        mock_results(structure="sparse")
    with pytest.raises(ValueError, match="n_time must be >= 4; got 2"):
        mock_results(n_time=2)


def test_failed_read_back_leaves_the_target_untouched(monkeypatch, units_source, units_results):
    import nwb_lrconn.extension.write as write_module

    def corrupted_read(path, name, *, module_name):
        back = read_results(path, name, module_name=module_name)
        return dataclasses.replace(back, fit=dataclasses.replace(back.fit, M=back.fit.M + 1))

    before = units_source.read_bytes()
    monkeypatch.setattr(write_module, "read_results", corrupted_read)
    with pytest.raises(
        RuntimeError, match=r"Read-back check of .*lrconn-tmp failed \(values equal"
    ):
        write_results(units_results, units_source, mode="in-place")
    assert units_source.read_bytes() == before
    assert sorted(p.name for p in units_source.parent.iterdir()) == ["units.nwb"]


@pytest.mark.parametrize("mode", ["derived", "copy"])
def test_full_disk_is_reported_in_plain_words(tmp_path, units_source, units_results, mode):
    import errno
    from unittest import mock

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = "shutil.copyfile" if mode == "copy" else "pynwb.NWBHDF5IO.write"
    with mock.patch(target, full), pytest.raises(OSError) as info:
        write_results(units_results, units_source, tmp_path / "out.nwb", mode=mode)
    assert info.value.errno == errno.ENOSPC
    assert info.value.strerror.startswith(f"The disk holding {tmp_path / 'out.nwb'} is full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units.nwb"]


def test_copy_checks_free_space_first(tmp_path, units_source, units_results, monkeypatch):
    import os
    from types import SimpleNamespace

    monkeypatch.setattr(os, "statvfs", lambda _: SimpleNamespace(f_bavail=10, f_frsize=1024))
    with pytest.raises(OSError, match=r"Not enough free disk space in .* for a copy of"):
        write_results(units_results, units_source, tmp_path / "out.nwb", mode="copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units.nwb"]
