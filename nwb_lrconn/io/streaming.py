"""Open a local or remote NWB file read-only and lazily: the one entry point of every reader."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

__all__ = ["open_nwb", "is_url", "STREAM_BACKENDS"]

STREAM_BACKENDS = ("auto", "remfile", "fsspec")
_URL_SCHEMES = ("http://", "https://", "s3://")


def is_url(path_or_url: str | os.PathLike) -> bool:
    """Return True when ``path_or_url`` is an ``http(s)://`` or ``s3://`` URL."""
    return str(path_or_url).startswith(_URL_SCHEMES)


def _s3_to_https(url: str) -> str:
    """Map ``s3://bucket/key`` to the public ``https://bucket.s3.amazonaws.com/key`` form."""
    bucket, _, key = url[len("s3://") :].partition("/")
    return f"https://{bucket}.s3.amazonaws.com/{key}"


def _open_remote(url: str, backend: str, stack: ExitStack) -> Any:
    """Return a seekable binary file object over ``url`` (HTTP Range requests)."""
    http_url = _s3_to_https(url) if url.startswith("s3://") else url
    if backend in ("auto", "remfile"):
        try:
            import remfile
        except ImportError:
            if backend == "remfile":
                raise ImportError(
                    "backend='remfile' needs the remfile package: pip install nwb-lrconn[stream]"
                ) from None
        else:
            handle = remfile.File(http_url)
            stack.callback(handle.close)
            return handle
    try:
        import fsspec
    except ImportError:
        raise ImportError(
            f"Streaming {url} needs remfile or fsspec: pip install nwb-lrconn[stream]"
        ) from None
    handle = fsspec.filesystem("http").open(http_url, "rb")
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


@contextmanager
def open_nwb(path_or_url: str | os.PathLike, *, backend: str = "auto") -> Iterator[Any]:
    """Open an NWB file read-only and lazily, yielding the ``pynwb.NWBFile``.

    Datasets stay on disk (or on the server) until sliced, so read what you need inside the
    ``with`` block; nothing may be used after it closes. The file is never modified.

    Parameters
    ----------
    path_or_url : str or path-like
        A local path, or an ``http(s)://`` / ``s3://`` URL (e.g. a DANDI asset URL). ``s3://``
        URLs are read through their public ``https://<bucket>.s3.amazonaws.com/`` form.
    backend : {"auto", "remfile", "fsspec"}, default: "auto"
        How a URL is streamed: remfile (HTTP Range requests) when installed, otherwise fsspec.
        Ignored for local paths.

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
    ImportError
        When a URL is given and neither remfile nor fsspec is installed.
    """
    import h5py
    from pynwb import NWBHDF5IO

    if backend not in STREAM_BACKENDS:
        raise ValueError(f"backend must be one of {list(STREAM_BACKENDS)}; got {backend!r}.")
    source = str(path_or_url)
    with ExitStack() as stack:
        if is_url(source):
            try:
                h5file = h5py.File(_open_remote(source, backend, stack), "r")
            except ImportError:
                raise
            except Exception as err:  # remfile, fsspec and h5py raise different types
                if isinstance(err, FileNotFoundError) or "404" in str(err):
                    raise FileNotFoundError(
                        f"No NWB file at {source}: the server answered {err!r}."
                    ) from None
                raise ValueError(
                    f"{source} could not be opened as an HDF5 file (expected an NWB/HDF5 "
                    f"file): {err!r}"
                ) from None
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"No NWB file at {path}: the path does not exist.")
            if not h5py.is_hdf5(path):
                raise ValueError(
                    f"{path} is not an HDF5 file (expected an NWB/HDF5 file; the first bytes "
                    "carry no HDF5 signature)."
                )
            h5file = h5py.File(path, "r")
        stack.callback(h5file.close)
        _check_nwb_root(h5file, source)
        io = NWBHDF5IO(file=h5file, mode="r", load_namespaces=True)
        stack.callback(io.close)
        yield io.read()
