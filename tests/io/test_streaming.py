"""open_nwb: local read-only access, bad files, and streaming over HTTP Range requests."""

from __future__ import annotations

import os
import re
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from nwb_lrconn.io import open_nwb, read_units
from nwb_lrconn.io.streaming import is_url


class _RangeHandler(SimpleHTTPRequestHandler):
    """Static files with single-range ``Range: bytes=a-b`` support (what remfile/fsspec need)."""

    remaining: int | None = None

    def send_head(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return None
        size = os.path.getsize(path)
        handle = open(path, "rb")  # noqa: SIM115 - closed by the base class after copyfile
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            handle.seek(start)
            self.remaining = end - start + 1
        else:
            self.send_response(200)
            self.remaining = size
        self.send_header("Content-Length", str(self.remaining))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        return handle

    def copyfile(self, source, outputfile):
        while self.remaining:
            chunk = source.read(min(1 << 16, self.remaining))
            if not chunk:
                break
            outputfile.write(chunk)
            self.remaining -= len(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_url(units_file):
    handler = partial(_RangeHandler, directory=str(units_file.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{units_file.name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["remfile", "fsspec"])
def test_streamed_read_equals_local_read(units_file, http_url, backend, monkeypatch):
    import nwb_lrconn.io.streaming as streaming

    local = read_units(units_file, bin_width=0.5, trials="trials", unit_ids=[10, 12])
    original = streaming.open_nwb
    monkeypatch.setattr("nwb_lrconn.io.nwb_units.open_nwb", lambda p: original(p, backend=backend))
    start = time.perf_counter()
    remote = read_units(http_url, bin_width=0.5, trials="trials", unit_ids=[10, 12])
    assert time.perf_counter() - start < 30
    np.testing.assert_array_equal(remote.data, local.data)
    assert remote.source.path == http_url
    assert remote.source.identifier == local.source.identifier


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["remfile", "fsspec"])
def test_missing_url_is_reported(http_url, backend):
    with pytest.raises(FileNotFoundError, match=r"No NWB file at http://127.0.0.1:\d+/absent"):
        with open_nwb(http_url.replace("units.nwb", "absent.nwb"), backend=backend):
            pass


@pytest.mark.timeout(60)
def test_url_that_is_not_hdf5(http_url, units_file):
    (units_file.parent / "notes.txt").write_text("plain text, not HDF5")
    with pytest.raises(ValueError, match="could not be opened as an HDF5 file"):
        with open_nwb(http_url.replace("units.nwb", "notes.txt")):
            pass


def test_is_url():
    assert is_url("https://dandiarchive.org/x.nwb") and is_url("s3://bucket/key.nwb")
    assert not is_url("/data/x.nwb")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No NWB file at .*nope.nwb: the path does not"):
        with open_nwb(tmp_path / "nope.nwb"):
            pass


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.nwb"
    path.write_text("not an hdf5 file")
    with pytest.raises(ValueError, match="is not an HDF5 file \\(expected an NWB/HDF5 file"):
        read_units(path, bin_width=0.1)


def test_hdf5_without_nwb(tmp_path):
    import h5py

    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ValueError, match=r"is an HDF5 file but not an NWB file.*groups \['x'\]"):
        with open_nwb(path):
            pass


def test_unknown_backend(units_file):
    with pytest.raises(ValueError, match="backend must be one of"):
        with open_nwb(units_file, backend="ros3"):
            pass


def test_file_is_read_only(units_file):
    with open_nwb(units_file) as nwbfile:
        assert nwbfile.get_read_io()._file.mode == "r"
