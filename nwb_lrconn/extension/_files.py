"""File safety for everything that writes: checks, locks, temporary files and atomic publication.

The rules every write follows:

- results are first written to a hidden temporary file beside the target
  (``.<name>.<host>-<pid>-<hex>.lrconn-tmp``), flushed to disk and read back;
- a new file is published with link-or-fail semantics (:func:`publish`), so it can never replace a
  file that appeared meanwhile; an existing file is replaced (``os.replace``) only when it is a
  regular file, keeping its owner, group and mode;
- writers to one target hold an exclusive lock (:func:`target_lock`) from the moment they read
  its current state until the new content is in place, so concurrent writers serialise instead of
  losing an update;
- temporary files left by a writer that died (``kill -9``) are removed by the next writer.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py

__all__ = [
    "TEMP_SUFFIX",
    "LOCK_SUFFIX",
    "check_nwb_file",
    "check_writable_file",
    "check_output_path",
    "check_free_space",
    "temp_path",
    "remove_stale_temps",
    "fsync_file",
    "fsync_folder",
    "target_lock",
    "publish",
    "same_file",
]

TEMP_SUFFIX = ".lrconn-tmp"
"""Suffix of the writer's temporary files (hidden, never ending in ``.nwb``)."""
LOCK_SUFFIX = ".lrconn-lock"
"""Suffix of the lock file a writer holds beside its target while it writes."""

_HOST = socket.gethostname().replace("-", "_").replace(".", "_") or "host"


def _open_error(path: Path, err: OSError) -> ValueError | PermissionError:
    text = str(err)
    if "lock" in text.lower() and ("errno 11" in text.lower() or "unable to lock" in text):
        return PermissionError(
            f"{path} is locked by another program that has it open for writing (HDF5 file "
            "lock); close that program or wait for it to finish, then retry."
        )
    if isinstance(err, PermissionError) or "permission denied" in text.lower():
        return PermissionError(f"{path} cannot be read (permission denied).")
    reason = text.split("(", 1)[-1].rstrip(")") if "(" in text else text
    return ValueError(
        f"{path} is a damaged or truncated HDF5 file ({reason}); expected a complete NWB file: "
        "copy or download it again."
    )


def check_nwb_file(path: str | os.PathLike) -> None:
    """Check that ``path`` is a readable, complete NWB (HDF5) file.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    IsADirectoryError
        When it is a folder.
    ValueError
        When it is not HDF5, a truncated or damaged HDF5 file, or HDF5 without an NWBFile
        root.
    PermissionError
        When it cannot be read, or another program holds it locked for writing.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NWB file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"Expected an NWB file, found a folder: {path}")
    if not path.is_file():
        raise ValueError(f"Expected an NWB file, found a special file (device, pipe): {path}")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path} cannot be read (permission denied).")
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an HDF5 file (NWB files are HDF5; its first bytes carry no HDF5 "
            "signature)."
        )
    try:
        with h5py.File(path, "r") as handle:
            attrs = dict(handle.attrs)
            has_identifier = "identifier" in handle
    except OSError as err:
        raise _open_error(path, err) from None
    data_type = attrs.get("neurodata_type")
    data_type = data_type.decode() if isinstance(data_type, bytes) else data_type
    if data_type != "NWBFile" or not has_identifier:
        found = "an nwb_version attribute but " if "nwb_version" in attrs else ""
        raise ValueError(
            f"{path} is an HDF5 file but not an NWB file: its root has {found}no NWBFile "
            f"(neurodata_type={data_type!r}, identifier "
            f"{'present' if has_identifier else 'absent'})."
        )


def _has_write_bit(path: Path) -> bool:
    return bool(stat.S_IMODE(path.stat().st_mode) & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def check_writable_file(path: Path) -> None:
    """Raise PermissionError when ``path`` (or its folder) cannot be updated in place."""
    folder = path.resolve().parent
    if not (_has_write_bit(path) and os.access(path, os.W_OK)):
        raise PermissionError(
            f"The source file is read-only, so it cannot be updated in place: {path}; write a "
            "derived file instead (leave out --in-place)."
        )
    if not (_has_write_bit(folder) and os.access(folder, os.W_OK | os.X_OK)):
        raise PermissionError(
            f"The folder of {path} is read-only, so the file cannot be replaced in place "
            f"({folder}); write a derived file instead (leave out --in-place)."
        )


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same existing file (symlinks and hard links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_output_path(
    output: str | os.PathLike, *, overwrite: bool, source: str | os.PathLike | None = None
) -> Path:
    """The one output-path policy: check, before any work, that ``output`` can be created.

    Parameters
    ----------
    output : path
        The new file to write.
    overwrite : bool
        Whether an existing regular file may be replaced.
    source : path, optional
        The input file, which the output must not be.

    Returns
    -------
    Path
        ``output`` as a Path.

    Raises
    ------
    IsADirectoryError
        ``output`` is a folder.
    FileExistsError
        ``output`` exists and ``overwrite`` is False, or it is not a regular file (a device,
        pipe, socket or symbolic link is never replaced).
    FileNotFoundError
        Its folder does not exist.
    PermissionError
        Its folder (or the existing file) is not writable.
    ValueError
        ``output`` is the source file.
    """
    output = Path(output)
    if output.is_dir():
        raise IsADirectoryError(
            f"The output {output} is a folder; give a file name such as {output / 'fit.nwb'}."
        )
    if source is not None and output.exists() and same_file(output, source):
        raise ValueError(
            f"The output {output} is the input file; use --in-place (in_place=True) to add the "
            "results to it, or choose another output."
        )
    folder = output.absolute().parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"The output folder {folder} does not exist; create it first or choose another output."
        )
    if not (_has_write_bit(folder) and os.access(folder, os.W_OK | os.X_OK)):
        raise PermissionError(f"The output folder {folder} is not writable; choose another.")
    if os.path.lexists(output):
        mode = os.lstat(output).st_mode
        if not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
            raise FileExistsError(
                f"The output {output} exists and is {kind}; it is never replaced: choose "
                "another output."
            )
        if not overwrite:
            raise FileExistsError(
                f"The output file {output} already exists; pass --overwrite (overwrite=True) "
                "to replace it, or choose another output."
            )
        if not os.access(output, os.W_OK):
            raise PermissionError(f"The output file {output} is read-only; choose another.")
    return output


def check_free_space(folder: Path, needed: int, what: str) -> None:
    """Raise OSError(ENOSPC) when ``folder``'s file system has less than ``needed`` bytes free."""
    try:
        info = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows) or an unreadable folder
        return
    free = info.f_bavail * info.f_frsize
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"Not enough free disk space in {folder} for {what}: {needed / 1e6:.1f} MB needed, "
            f"{free / 1e6:.1f} MB free; free some space or choose another output.",
        )


def temp_path(target: Path) -> Path:
    """Return a fresh hidden temporary path beside ``target`` (never ending in ``.nwb``)."""
    tag = f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return target.parent / f".{target.name}.{tag}{TEMP_SUFFIX}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete temporary files for ``target`` left by writers on this host that died.

    Returns
    -------
    list of Path
        The removed files.
    """
    removed: list[Path] = []
    prefix = f".{target.name}."
    try:
        candidates = list(target.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        name = candidate.name
        if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
            continue
        host, _, rest = name[len(prefix) : -len(TEMP_SUFFIX)].partition("-")
        pid = rest.split("-", 1)[0]
        if host == _HOST and pid.isdigit() and not _alive(int(pid)):
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


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}{LOCK_SUFFIX}"


@contextmanager
def target_lock(target: Path, *, timeout: float = 600.0, poll: float = 0.05) -> Iterator[None]:
    """Hold the exclusive write lock of ``target`` (a ``flock`` on a hidden file beside it).

    Writers that all take this lock serialise: the second waits until the first has put its
    file in place, then sees the new content. The lock file exists only while a writer holds
    it (one left by a killed writer is reused and removed by the next).

    Parameters
    ----------
    target : Path
        The file about to be written or replaced.
    timeout : float, default: 600
        Seconds to wait for another writer before giving up.
    poll : float, default: 0.05
        Seconds between attempts.

    Raises
    ------
    TimeoutError
        When another writer holds the lock for longer than ``timeout``.
    """
    try:
        import fcntl
    except ImportError:  # no flock on this platform: link-or-fail publication still holds
        yield
        return
    path = _lock_path(target)
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"Another nwb_lrconn process has been writing {target} for more "
                            f"than {timeout:.0f} s (lock {path}); wait for it to finish."
                        ) from None
                    time.sleep(poll)
            # the holder before us may have removed the lock file: lock the live one
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def publish(tmp: Path, final: Path, *, replace: bool) -> None:
    """Put the finished ``tmp`` at ``final`` atomically.

    With ``replace=False`` the publication fails if ``final`` exists, even if it appeared a
    moment ago (a hard link is made, which the OS refuses over an existing name). With
    ``replace=True`` an existing regular file is replaced (``os.replace``), keeping its owner,
    group and mode where the OS allows; anything else at ``final`` is refused.

    Raises
    ------
    FileExistsError
        ``final`` exists and ``replace`` is False, or it is not a regular file.
    """
    if os.path.lexists(final):
        st = os.lstat(final)
        if not stat.S_ISREG(st.st_mode):
            raise FileExistsError(
                f"{final} is not a regular file (a device, pipe, socket or link); it is never "
                "replaced."
            )
        if not replace:
            raise FileExistsError(
                f"{final} appeared while the results were being written (another process?); "
                "nothing was replaced: choose another output or pass --overwrite."
            )
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except OSError:
            try:  # not root: keep at least the group when we belong to it
                os.chown(tmp, -1, st.st_gid)
            except OSError:
                pass
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise FileExistsError(
            f"{final} appeared while the results were being written (another process?); "
            "nothing was replaced: choose another output or pass --overwrite."
        ) from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # no hard links on this file system: reserve the name exclusively, then rename onto it
        fd = os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        os.replace(tmp, final)
        return
    tmp.unlink()
