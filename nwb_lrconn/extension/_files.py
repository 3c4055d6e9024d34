"""File checks and the atomic-replace helpers used by the writer and the reader."""

from __future__ import annotations

import glob
import os
import stat
import uuid
from pathlib import Path

import h5py

__all__ = [
    "TEMP_SUFFIX",
    "check_nwb_file",
    "check_writable_file",
    "check_writable_folder",
    "temp_path",
    "remove_stale_temps",
    "fsync_file",
    "fsync_folder",
]

TEMP_SUFFIX = ".lrconn-tmp"
"""Suffix of the writer's temporary files (hidden, never ending in ``.nwb``)."""


def check_nwb_file(path: Path) -> None:
    """Check that ``path`` is a readable, complete NWB (HDF5) file.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When it is a folder, not HDF5, a truncated or unreadable HDF5 file, or HDF5 without the
        NWB root attributes.
    """
    if not path.exists():
        raise FileNotFoundError(f"NWB file not found: {path}")
    if not path.is_file():
        raise ValueError(f"Expected an NWB file, found a folder: {path}")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file (NWB files are HDF5).")
    try:
        with h5py.File(path, "r") as handle:
            is_nwb = "nwb_version" in handle.attrs and "identifier" in handle
    except OSError as err:
        raise ValueError(f"{path} is a truncated or unreadable HDF5 file ({err}).") from err
    if not is_nwb:
        raise ValueError(
            f"{path} is an HDF5 file but not an NWB file (no nwb_version/identifier)."
        )


def _has_write_bit(path: Path) -> bool:
    return bool(stat.S_IMODE(path.stat().st_mode) & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def check_writable_file(path: Path) -> None:
    """Raise PermissionError when ``path`` is read-only (mode bits or access rights)."""
    if not (_has_write_bit(path) and os.access(path, os.W_OK)):
        raise PermissionError(
            f"The source file is read-only, so it cannot be updated in place: {path}"
        )


def check_writable_folder(folder: Path) -> None:
    """Raise FileNotFoundError / PermissionError when files cannot be created in ``folder``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"Output folder does not exist: {folder}")
    if not (_has_write_bit(folder) and os.access(folder, os.W_OK | os.X_OK)):
        raise PermissionError(f"Output folder is not writable: {folder}")


def temp_path(target: Path) -> Path:
    """Return a fresh hidden temporary path beside ``target`` (never ending in ``.nwb``)."""
    return target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete temporary files for ``target`` left by writers that died (e.g. ``kill -9``).

    Only files whose writer process no longer exists are removed.

    Returns
    -------
    list of Path
        The removed files.
    """
    removed = []
    prefix = f".{target.name}."
    for candidate in target.parent.glob(f"{glob.escape(prefix)}*{TEMP_SUFFIX}"):
        pid = candidate.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def fsync_file(path: Path) -> None:
    """Flush ``path``'s content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(folder: Path) -> None:
    """Flush a folder entry (after a rename) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
