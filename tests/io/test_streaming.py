"""open_nwb: local read-only access, bad files, streaming over HTTP Range requests, the disk
cache for streamed bytes, open NWBFile objects, and one-line network errors."""

from __future__ import annotations

import os
import re
import threading
import time
import warnings
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from nwb_lrconn.io import (
    inspect_nwb,
    is_remote,
    is_url,
    list_roi_response_series,
    open_nwb,
    read_ophys,
    read_timeseries,
    read_units,
    resolve_dandi,
)

PATH = "sub-4/sub-4_ses-4_ecephys+image.nwb"
REAL = "dandi-000207-zheng2022-human-mtl/sub-4_ses-4_ecephys+image.nwb"


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
    """A plain static file server (not DANDI) serving the synthetic units file."""
    handler = partial(_RangeHandler, directory=str(units_file.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{units_file.name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _same_recording(a, b) -> None:
    """Everything equal but where the bytes came from (``source.path`` / ``source.origin``)."""
    for name in ("data", "mask", "unit_ids", "unit_rows", "trial_start_times"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.bin_width, a.kind, a.input_names) == (b.bin_width, b.kind, b.input_names)
    assert (a.inputs is None) == (b.inputs is None)
    if a.inputs is not None:
        np.testing.assert_array_equal(a.inputs, b.inputs)
    for name in ("identifier", "object_path", "table_path", "selection", "session"):
        assert getattr(a.source, name) == getattr(b.source, name), name


UNITS = {
    "bin_width": 0.5,
    "trials": "trials",
    "unit_ids": [10, 12],
    "inputs": ["acquisition/speed"],
}


# -- plain URLs ------------------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["remfile", "fsspec"])
def test_streamed_read_equals_local_read(units_file, http_url, backend):
    local = read_units(units_file, **UNITS)
    with open_nwb(http_url, backend=backend) as nwbfile:
        remote = read_units(nwbfile, **UNITS)
    _same_recording(remote, local)
    streamed = read_units(http_url, **UNITS)
    _same_recording(streamed, local)
    assert streamed.source.path == http_url
    assert streamed.source.origin == {
        "kind": "url",
        "url": http_url,
        "size": units_file.stat().st_size,
    }
    assert local.source.origin == {"kind": "local", "size": units_file.stat().st_size}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["remfile", "fsspec"])
def test_missing_url_is_reported(http_url, backend):
    with pytest.raises(
        FileNotFoundError, match=r"No NWB file at http://127.0.0.1:\d+/absent.*404"
    ):
        with open_nwb(http_url.replace("units.nwb", "absent.nwb"), backend=backend):
            pass


@pytest.mark.timeout(60)
def test_server_without_range_requests(units_file):
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=units_file.parent))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{units_file.name}"
    try:
        with pytest.raises(
            ValueError, match=r"ignores HTTP Range requests, so the file cannot be"
        ):
            read_units(url, bin_width=1.0)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
def test_url_that_is_not_hdf5(http_url, units_file):
    (units_file.parent / "notes.txt").write_text("plain text, not HDF5")
    with pytest.raises(ValueError, match="could not be opened as an HDF5 file"):
        with open_nwb(http_url.replace("units.nwb", "notes.txt")):
            pass


def test_is_url_and_is_remote(tmp_path):
    assert is_url("https://dandiarchive.org/x.nwb") and is_url("s3://bucket/key.nwb")
    assert is_url("dandi://dandi/000207/x.nwb")
    assert not is_url("/data/x.nwb") and not is_url("DANDI:000207/x.nwb") and not is_url(tmp_path)
    assert is_remote("DANDI:000207/x.nwb") and is_remote("https://host/x.nwb")
    assert not is_remote("/data/x.nwb") and not is_remote(tmp_path / "x.nwb")


# -- local files -----------------------------------------------------------------------------
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


@pytest.mark.parametrize(
    "source, error, match",
    [
        ("ftp://host/x.nwb", ValueError, r"Cannot read ftp://host/x.nwb: expected a local path"),
        (42, TypeError, r"source must be a local path, a URL, .* got int"),
    ],
)
def test_unreadable_sources(source, error, match):
    with pytest.raises(error, match=match):
        with open_nwb(source):
            pass


# -- open NWBFile objects --------------------------------------------------------------------
def test_open_nwbfile_in_every_reader(units_file, ophys_file):
    units = read_units(units_file, **UNITS)
    with open_nwb(units_file) as nwbfile:
        given = read_units(nwbfile, **UNITS)
        speed = read_timeseries(nwbfile, "acquisition/speed", given)
        summary = inspect_nwb(nwbfile)
        assert nwbfile.units is not None and len(nwbfile.units.id[:]) == 6, "left open"
    _same_recording(given, units)
    assert given.source.path == str(units_file)
    assert given.source.origin == {"kind": "nwbfile", "path": str(units_file)}
    np.testing.assert_array_equal(speed, read_timeseries(units_file, "acquisition/speed", units))
    expected = inspect_nwb(units_file)
    assert summary.units == expected.units and summary.timeseries == expected.timeseries
    assert summary.origin["kind"] == "nwbfile"
    calcium = read_ophys(ophys_file, series_path="processing/ophys/Fluorescence/A")
    with open_nwb(ophys_file) as nwbfile:
        assert list_roi_response_series(nwbfile) == list_roi_response_series(ophys_file)
        _same_recording(
            read_ophys(nwbfile, series_path="processing/ophys/Fluorescence/A"), calcium
        )


def test_open_nwbfile_from_pynwb(units_file):
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(units_file), "r") as io:
        recording = read_units(io.read(), bin_width=1.0, unit_ids=[10, 12])
    assert recording.source.path == str(units_file)


def test_in_memory_nwbfile_is_refused():
    from datetime import datetime, timezone

    from pynwb import NWBFile

    nwbfile = NWBFile("x", "y", datetime(2020, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(ValueError, match=r"built in memory, not read from a file; write it"):
        read_units(nwbfile, bin_width=1.0)


# -- DANDI and the disk cache ----------------------------------------------------------------
@pytest.mark.timeout(60)
def test_dandi_reference_in_every_reader(mock_dandi, units_file, monkeypatch):
    server = mock_dandi({PATH: units_file})
    monkeypatch.setenv("NWB_LRCONN_DANDI_INSTANCE", server.api_url)
    reference = f"DANDI:000207/{PATH}"
    local = read_units(units_file, **UNITS)
    remote = read_units(reference, **UNITS)
    _same_recording(remote, local)
    assert remote.source.path == server.blob_url(PATH)
    assert remote.source.origin["kind"] == "dandi"
    assert remote.source.origin["asset_path"] == PATH
    assert inspect_nwb(reference).units == inspect_nwb(units_file).units
    speed = read_timeseries(resolve_dandi(reference), "acquisition/speed", local)
    np.testing.assert_array_equal(speed, read_timeseries(units_file, "acquisition/speed", local))


@pytest.mark.timeout(60)
def test_second_read_through_the_cache_fetches_nothing(
    mock_dandi, units_file, tmp_path, monkeypatch
):
    server = mock_dandi({PATH: units_file})
    monkeypatch.setenv("NWB_LRCONN_DANDI_INSTANCE", server.api_url)
    local = read_units(units_file, **UNITS)
    reads = [
        f"DANDI:000207/{PATH}",
        f"dandi://dandi/000207@draft/{PATH}",  # another version, same bytes: same cache
        resolve_dandi(f"DANDI:000207/{PATH}"),
    ]
    fetched = []
    for source in reads:
        server.reset_log()
        _same_recording(read_units(source, cache_dir=tmp_path, **UNITS), local)
        fetched.append(server.blob_bytes())
    assert fetched[0] > 0
    assert fetched[1:] == [0, 0]
    blobs = [r for r in server.requests if r.path.startswith("/blobs/")]
    assert blobs == [], "a warm read does not touch the blob server at all"


@pytest.mark.timeout(60)
def test_cache_for_plain_urls_and_from_the_environment(
    mock_dandi, units_file, tmp_path, monkeypatch
):
    server = mock_dandi({PATH: units_file})
    url = server.blob_url(PATH)
    monkeypatch.setenv("NWB_LRCONN_CACHE_DIR", str(tmp_path / "env-cache"))
    read_units(url, **UNITS)
    server.reset_log()
    read_units(url, **UNITS)
    assert server.blob_bytes() == 1, "only the one-byte size probe"
    assert len(list((tmp_path / "env-cache").iterdir())) == 1


@pytest.mark.timeout(60)
def test_damaged_cache_chunks_are_fetched_again(mock_dandi, units_file, tmp_path):
    server = mock_dandi({PATH: units_file})
    asset = resolve_dandi(f"DANDI:000207/{PATH}", instance=server.api_url)
    local = read_units(units_file, **UNITS)
    read_units(asset, cache_dir=tmp_path, **UNITS)
    chunks = sorted(p for p in tmp_path.glob("*/*") if p.name != "source.json")
    chunks[0].write_bytes(chunks[0].read_bytes()[:10])  # truncated, e.g. by a full disk
    server.reset_log()
    _same_recording(read_units(asset, cache_dir=tmp_path, **UNITS), local)
    assert 0 < server.blob_bytes() < units_file.stat().st_size


def test_fsspec_backend_has_no_disk_cache(units_file, tmp_path):
    with pytest.raises(ValueError, match=r"cache_dir works with the remfile backend"):
        with open_nwb(units_file, backend="fsspec", cache_dir=tmp_path):
            pass


# -- network errors: one line each -----------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "status, error, match",
    [
        (403, PermissionError, r"refused access \(HTTP 403\); the file is private or the link"),
        (503, ConnectionError, r"answered HTTP 503 Service Unavailable; try again later"),
    ],
)
def test_server_refusals(mock_dandi, units_file, status, error, match):
    server = mock_dandi({PATH: units_file}, blob_status=status)
    for source in (
        server.blob_url(PATH),
        resolve_dandi(f"DANDI:000207/{PATH}", instance=server.api_url),
    ):
        with pytest.raises(error, match=match) as caught:
            read_units(source, bin_width=1.0)
        assert "\n" not in str(caught.value)


@pytest.mark.timeout(60)
def test_unreachable_servers(mock_dandi, units_file):
    server = mock_dandi({PATH: units_file})
    url = server.blob_url(PATH)
    server.stop()
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=rf"Cannot reach {url}: connection refused"):
        read_units(url, bin_width=1.0)
    assert time.perf_counter() - start < 10
    with pytest.raises(ConnectionError, match=r"nwb-lrconn-test\.invalid/x\.nwb: the host name"):
        read_units("https://nwb-lrconn-test.invalid/x.nwb", bin_width=1.0)


@pytest.mark.timeout(60)
def test_a_server_that_is_not_dandi(http_url):
    root = http_url.rsplit("/", 1)[0]
    with pytest.raises(ConnectionError, match=r"does not answer like a DANDI server"):
        resolve_dandi(f"{root}/api/dandisets/000207/versions/draft/assets/?path=x.nwb")


# -- the shared DANDI file through the mock archive ------------------------------------------
@pytest.mark.timeout(120)
def test_shared_dandi_file_streams_like_a_local_read(data_file, mock_dandi, tmp_path):
    path = data_file(REAL)
    server = mock_dandi({PATH: path})
    reference = f"https://dandiarchive.org/dandiset/000207/draft/files?location={PATH}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="OpticalSeries", category=UserWarning)
        local = read_units(path, bin_width=1.0)
        asset = resolve_dandi(reference, instance=server.api_url)
        cold = read_units(asset, bin_width=1.0, cache_dir=tmp_path)
        cold_bytes = server.blob_bytes()
        server.reset_log()
        warm = read_units(asset, bin_width=1.0, cache_dir=tmp_path)
    _same_recording(cold, local)
    _same_recording(warm, local)
    assert local.n_units == 35
    assert asset.sha256 == "1f6d811347d83d9693ce824bded9d73f5c88d8542e78069211da52381153f046"
    assert 0 < cold_bytes and server.blob_bytes() == 0
    assert (
        warm.source.origin["dandiset_id"] == "000207" and warm.source.origin["version"] == "draft"
    )
