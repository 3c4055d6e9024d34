"""Open an NWB file read-only and lazily, from wherever it is: the one entry point of every reader.

A source is a local path, an ``http(s)://`` or ``s3://`` URL, a DANDI reference (see
:mod:`nwb_lrconn.io.dandi`), a resolved :class:`~nwb_lrconn.io.dandi.DandiAsset`, or a
``pynwb.NWBFile`` that is already open (used as is, never closed here).

Remote bytes are streamed with HTTP Range requests. With a cache folder (``cache_dir=`` or the
environment variable ``NWB_LRCONN_CACHE_DIR``) every byte range fetched is kept on disk, so
reading the same asset again (a rerun, another batch task) fetches nothing it already has.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

__all__ = [
    "open_nwb",
    "open_source",
    "NWBSource",
    "is_url",
    "is_remote",
    "cache_dir_from_env",
    "STREAM_BACKENDS",
    "CACHE_ENV",
]

STREAM_BACKENDS = ("auto", "remfile", "fsspec")
CACHE_ENV = "NWB_LRCONN_CACHE_DIR"
"""Environment variable giving the default cache folder for streamed bytes."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_STREAMED = ("http://", "https://", "s3://")
_TIMEOUT = 30.0  # seconds to connect to / hear from a server before giving up


def is_url(source: Any) -> TypeGuard[str]:
    """Whether ``source`` is a URL (``scheme://...``, any scheme) rather than a local path.

    ``http(s)://`` and ``s3://`` URLs are streamed; ``dandi://`` URLs are DANDI references.
    A path never holds ``://``, so every other string is taken for a local path. Use
    :func:`is_remote` to ask whether a source lives elsewhere than on this disk.
    """
    return isinstance(source, str) and bool(_URL.match(source))


def is_remote(source: Any) -> bool:
    """Whether ``source`` is read over the network: a URL, a DANDI reference or asset.

    False for local paths and for open ``NWBFile`` objects. This is the test for "cannot be
    checked with ``Path.is_file``, cannot be written in place, has no folder for a default
    output".
    """
    from .dandi import is_dandi_reference

    return is_url(source) or is_dandi_reference(source)


def cache_dir_from_env(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cache folder to use: ``cache_dir`` when given, else ``$NWB_LRCONN_CACHE_DIR``."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or None
    return None if chosen is None else Path(chosen).expanduser()


@dataclass(frozen=True)
class NWBSource:
    """An open NWB file and the description of where its bytes come from.

    Attributes
    ----------
    nwbfile : pynwb.NWBFile
        The file, read lazily; usable only inside the ``with`` block of :func:`open_source`.
    path : str
        Local path or streamed URL (what ``SourceInfo.path`` records); for an ``NWBFile``
        given open, the file it was read from ("" when unknown).
    label : str
        How messages name the source: the path, URL or DANDI reference as the user gave it.
    origin : dict
        ``SourceInfo.origin``: ``kind`` ("local", "url", "dandi", "nwbfile") and what is known
        of the bytes (``url``, ``size``, DANDI ids, ``sha256``).
    """

    nwbfile: Any
    path: str
    label: str
    origin: dict[str, Any] = field(default_factory=dict)


# -- the disk cache --------------------------------------------------------------------------
class _ChunkCache:
    """Disk cache of one remote file's byte ranges, in remfile's ``get``/``set`` protocol.

    remfile asks for keys ``"<url>|<chunk size>|<chunk index>"``. The URL part is ignored:
    the folder is chosen by the content key (a digest for DANDI assets), so the same bytes
    reached through another URL are found again. Each chunk is one file written atomically
    (temporary file + rename), so concurrent readers never see half a chunk, and a chunk of
    the wrong length is ignored.
    """

    def __init__(self, root: Path, key: str, url: str, size: int) -> None:
        self.folder = self.folder_for(root, key)
        self.size = size
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "source.json"
        if not info.exists():
            self._write(info, json.dumps({"key": key, "url": url, "size": size}).encode())

    @staticmethod
    def folder_for(root: Path, key: str) -> Path:
        return root / hashlib.sha256(key.encode()).hexdigest()[:40]

    @classmethod
    def holds(cls, root: Path, key: str) -> bool:
        """Whether ``root`` already caches bytes of the content ``key``."""
        return (cls.folder_for(root, key) / "source.json").is_file()

    def __bool__(self) -> bool:  # remfile tests ``if self._disk_cache``
        return True

    def _locate(self, key: str) -> tuple[Path, int]:
        _, chunk, index = key.rsplit("|", 2)
        start = int(chunk) * int(index)
        return self.folder / f"{chunk}-{index}", max(0, min(int(chunk), self.size - start))

    def get(self, key: str) -> bytes | None:
        path, expected = self._locate(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return data if len(data) == expected else None

    def set(self, key: str, value: bytes) -> None:
        path, expected = self._locate(key)
        if len(value) == expected and not path.exists():
            self._write(path, value)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:  # a full or read-only cache must not break the read
            tmp.unlink(missing_ok=True)


# -- remote access ---------------------------------------------------------------------------
def _s3_to_https(url: str) -> str:
    """Map ``s3://bucket/key`` to the public ``https://bucket.s3.amazonaws.com/key`` form."""
    bucket, _, key = url[len("s3://") :].partition("/")
    return f"https://{bucket}.s3.amazonaws.com/{key}"


def _network_reason(err: Exception) -> str:
    """A short human reason for a ``requests`` failure to reach a server."""
    text = str(err)
    if "timed out" in text or "Timeout" in type(err).__name__:
        return "no answer (timed out)"
    if any(s in text for s in ("NameResolution", "Name or service not known", "getaddrinfo")):
        return "the host name does not resolve (offline, or a misspelled host)"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "connection refused (no server listening there)"
    return type(err).__name__


def _remote_size(url: str, label: str) -> int:
    """Size in bytes of the file at ``url``, from a one-byte Range request.

    This first request also turns every way of failing to reach the file into one clear line.
    """
    try:
        import requests
    except ImportError:
        raise ImportError(
            f"Streaming {label} needs requests and remfile: pip install nwb-lrconn[stream]"
        ) from None
    try:
        response = requests.get(url, headers={"Range": "bytes=0-0"}, stream=True, timeout=_TIMEOUT)
    except requests.RequestException as err:
        raise ConnectionError(
            f"Cannot reach {url}: {_network_reason(err)}; check the address and the network."
        ) from None
    with response:
        status = response.status_code
        if status == 404:
            raise FileNotFoundError(
                f"No NWB file at {label}: the server answered HTTP 404 (not found); check the URL."
            )
        if status in (401, 403):
            raise PermissionError(
                f"{label}: the server refused access (HTTP {status}); the file is private or the "
                "link has expired: get a fresh link, or download the file and read it locally."
            )
        if status == 200:
            raise ValueError(
                f"{label}: the server ignores HTTP Range requests, so the file cannot be "
                "streamed; download it and read the local file."
            )
        if status != 206:
            raise ConnectionError(
                f"{label}: the server answered HTTP {status} {response.reason}; try again later."
            )
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        if not total.isdigit():
            raise ValueError(f"{label}: the server did not give the file size (Content-Range).")
        return int(total)


def _uses_remfile(backend: str, label: str) -> bool:
    """Whether ``backend`` streams through remfile (``"auto"``: when installed) or fsspec.

    Checked before any request, so a missing package is reported as such.
    """
    if backend != "fsspec":
        try:
            import remfile  # noqa: F401

            return True
        except ImportError:
            if backend == "remfile":
                raise ImportError(
                    "backend='remfile' needs the remfile package: pip install nwb-lrconn[stream]"
                ) from None
    try:
        import fsspec  # noqa: F401
    except ImportError:
        raise ImportError(
            f"Streaming {label} needs remfile or fsspec: pip install nwb-lrconn[stream]"
        ) from None
    return False


def _stream(
    url: str, size: int, use_remfile: bool, cache: _ChunkCache | None, stack: ExitStack
) -> Any:
    """A seekable binary file object over ``url`` (HTTP Range requests)."""
    if use_remfile:
        import remfile

        handle = remfile.File(url, disk_cache=cache, _size=size)
    else:
        import fsspec

        handle = fsspec.filesystem("http").open(url, "rb", size=size)
    stack.callback(handle.close)
    return handle


def _check_nwb_root(h5file: Any, source: str) -> None:
    attrs = h5file.attrs
    if "nwb_version" not in attrs and attrs.get("neurodata_type") != "NWBFile":
        raise ValueError(
            f"{source} is an HDF5 file but not an NWB file: expected a root group with an "
            f"'nwb_version' attribute; found root attributes {sorted(attrs.keys())} and groups "
            f"{sorted(h5file.keys())}."
        )


def _h5_over(handle: Any, label: str) -> Any:
    """``h5py.File`` over a streamed file object; server failures become one-line errors."""
    import h5py

    try:
        return h5py.File(handle, "r")
    except Exception as err:  # remfile, fsspec and h5py raise different types
        text = str(err)
        if "404" in text:
            raise FileNotFoundError(
                f"No NWB file at {label}: the server answered {text}."
            ) from None
        if "403" in text or "401" in text:
            raise PermissionError(f"{label}: the server refused access ({text}).") from None
        raise ValueError(
            f"{label} could not be opened as an HDF5 file (expected an NWB/HDF5 file): {err!r}"
        ) from None


def _open_h5_local(path: Path) -> Any:
    import h5py

    if not path.is_file():
        raise FileNotFoundError(f"No NWB file at {path}: the path does not exist.")
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path} is not an HDF5 file (expected an NWB/HDF5 file; the first bytes carry no "
            "HDF5 signature)."
        )
    return h5py.File(path, "r")


def _nwbfile_source(nwbfile: Any) -> NWBSource:
    io = nwbfile.get_read_io()
    if io is None:
        raise ValueError(
            "The NWBFile was built in memory, not read from a file; write it (NWBHDF5IO.write) "
            "and pass the path, or pass the NWBFile returned by NWBHDF5IO.read()."
        )
    # Files opened on a file object (streams) carry a repr here, not a path.
    source = getattr(nwbfile, "container_source", None)
    path = source if isinstance(source, str) and os.path.isfile(source) else ""
    label = path or f"the open NWBFile {nwbfile.identifier!r}"
    origin: dict[str, Any] = {"kind": "nwbfile"}
    if path:
        origin["path"] = path
    return NWBSource(nwbfile=nwbfile, path=path, label=label, origin=origin)


@contextmanager
def open_source(
    source: Any,
    *,
    backend: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> Iterator[NWBSource]:
    """Open an NWB file read-only and lazily, yielding it with the description of its origin.

    Parameters
    ----------
    source : str, path-like, DandiAsset or pynwb.NWBFile
        See :func:`open_nwb`.
    backend : {"auto", "remfile", "fsspec"}, default: "auto"
        See :func:`open_nwb`.
    cache_dir : str or path-like, optional
        See :func:`open_nwb`.

    Yields
    ------
    NWBSource
        The file (``.nwbfile``), ``.path`` and ``.origin`` for ``SourceInfo``, ``.label``
        for messages.
    """
    from pynwb import NWBHDF5IO, NWBFile

    from .dandi import DandiAsset, is_dandi_reference, resolve_dandi

    if backend not in STREAM_BACKENDS:
        raise ValueError(f"backend must be one of {list(STREAM_BACKENDS)}; got {backend!r}.")
    if isinstance(source, NWBFile):
        yield _nwbfile_source(source)
        return
    if not isinstance(source, (str, os.PathLike, DandiAsset)):
        raise TypeError(
            "source must be a local path, a URL, a DANDI reference or asset, or an open "
            f"pynwb.NWBFile; got {type(source).__name__}."
        )
    if backend == "fsspec" and cache_dir is not None:
        raise ValueError(
            "cache_dir works with the remfile backend; use backend='remfile' or 'auto'."
        )
    with ExitStack() as stack:
        if isinstance(source, DandiAsset) or is_dandi_reference(source):
            asset = source if isinstance(source, DandiAsset) else resolve_dandi(os.fspath(source))
            label = asset.reference if isinstance(source, DandiAsset) else os.fspath(source)
            h5file = _open_streamed(asset.url, label, backend, cache_dir, asset, stack)
            path, origin = asset.url, asset.origin()
        elif is_url(source) and source.startswith(_STREAMED):
            url = _s3_to_https(source) if source.startswith("s3://") else source
            h5file = _open_streamed(url, source, backend, cache_dir, None, stack)
            path = label = source
            origin = {"kind": "url", "url": url, "size": h5file.id.get_filesize()}
        elif is_url(source):
            raise ValueError(
                f"Cannot read {source}: expected a local path, an http(s):// or s3:// URL, or a "
                "DANDI reference (dandi://..., DANDI:...)."
            )
        else:
            local = Path(source)
            h5file = _open_h5_local(local)
            path = label = os.fspath(source)
            origin = {"kind": "local", "size": local.stat().st_size}
        stack.callback(h5file.close)
        _check_nwb_root(h5file, label)
        io = NWBHDF5IO(file=h5file, mode="r", load_namespaces=True)
        stack.callback(io.close)
        with quiet_orientation_warnings():
            nwbfile = io.read()
        yield NWBSource(nwbfile=nwbfile, path=path, label=label, origin=origin)


@contextmanager
def quiet_orientation_warnings() -> Iterator[None]:
    """Silence pynwb's warnings about series stored (ROIs, frames) while a file is read.

    pynwb repeats them on every read of such a file (and of a derived file linking to it); the
    ophys reader detects the orientation itself and says so once, in its own words.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Your data may be transposed")
        warnings.filterwarnings("ignore", message=".*Data is oriented incorrectly")
        yield


def _open_streamed(
    url: str,
    label: str,
    backend: str,
    cache_dir: str | os.PathLike | None,
    asset: Any,
    stack: ExitStack,
) -> Any:
    """``h5py.File`` over a remote file, through the disk cache when one is set.

    The server is asked for the size first (one byte), which turns every way of failing to
    reach it into one clear line, except for a DANDI asset whose bytes are already cached: its
    size is known and a warm read touches no server.
    """
    use_remfile = _uses_remfile(backend, label)
    folder = cache_dir_from_env(cache_dir) if use_remfile else None
    if asset is not None:
        size, key = asset.size, asset.content_key
        if folder is None or not _ChunkCache.holds(folder, key):
            _remote_size(url, label)
    else:
        size = _remote_size(url, label)
        key = f"{url}|{size}"
    cache = None if folder is None else _ChunkCache(folder, key, url, size)
    return _h5_over(_stream(url, size, use_remfile, cache, stack), label)


@contextmanager
def open_nwb(
    source: Any,
    *,
    backend: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> Iterator[Any]:
    """Open an NWB file read-only and lazily, yielding the ``pynwb.NWBFile``.

    Datasets stay on disk (or on the server) until sliced, so read what you need inside the
    ``with`` block; nothing may be used after it closes. The file is never modified.

    Parameters
    ----------
    source : str, path-like, DandiAsset or pynwb.NWBFile
        A local path; an ``http(s)://`` or ``s3://`` URL (``s3://`` URLs are read through
        their public ``https://<bucket>.s3.amazonaws.com/`` form); a DANDI reference such as
        ``"DANDI:000207/sub-4/sub-4_ses-4_ecephys+image.nwb"`` or a dandiarchive.org page
        (see :func:`~nwb_lrconn.io.dandi.resolve_dandi`, which also says how to choose the
        DANDI instance); a resolved :class:`~nwb_lrconn.io.dandi.DandiAsset`; or an open
        ``pynwb.NWBFile`` (yielded as is and left open).
    backend : {"auto", "remfile", "fsspec"}, default: "auto"
        How remote bytes are streamed: remfile (HTTP Range requests) when installed,
        otherwise fsspec. Ignored for local paths.
    cache_dir : str or path-like, optional
        Folder keeping every streamed byte range (remfile backend): a second read of the same
        remote file fetches only what it did not read before. DANDI assets are keyed by their
        content digest (any spelling or version of the same bytes shares the cache); plain
        URLs by URL and size. Default: the environment variable ``NWB_LRCONN_CACHE_DIR``;
        unset, nothing is kept. The folder is never pruned: delete it to reclaim the space.

    Yields
    ------
    pynwb.NWBFile
        The file, read lazily.

    Raises
    ------
    FileNotFoundError
        When a local path does not exist, or a server answers 404.
    ValueError
        When the file is not HDF5, or is HDF5 but not NWB, or ``backend`` is unknown.
    ConnectionError
        When a server cannot be reached (one line naming the URL and the reason).
    PermissionError
        When a server refuses access (HTTP 401/403).
    ImportError
        When streaming needs a package that is missing (remfile/fsspec: the ``[stream]``
        extra; DANDI references: the ``[dandi]`` extra).
    """
    with open_source(source, backend=backend, cache_dir=cache_dir) as opened:
        yield opened.nwbfile
