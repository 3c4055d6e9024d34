"""A local stand-in for a DANDI Archive instance, for offline tests, benchmarks and tutorials.

It answers the REST endpoints that the ``dandi`` client and :mod:`nwb_lrconn.io.dandi` call,
and serves the asset bytes as blobs with HTTP Range support, on ``127.0.0.1`` at a free port.
Standard library only. Every request is logged (method, path, status, body bytes sent), so a
test can assert how many bytes a read fetched.

Use it as a context manager::

    with MockDandi({"sub-4/sub-4_ses-4_ecephys+image.nwb": path}) as server:
        resolve_dandi("DANDI:000207/sub-4/sub-4_ses-4_ecephys+image.nwb",
                      instance=server.api_url)

or from the command line (serves until interrupted)::

    python tests/io/mock_dandi.py FILE.nwb --asset sub-1/sub-1.nwb [--dandiset 000207]

Other test modules load it by path (the tests folder is not a package), see
``tests/conftest.py``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

__all__ = ["MockDandi", "MockAsset", "LoggedRequest", "PUBLISHED_VERSION"]

PUBLISHED_VERSION = "0.220216.0323"
"""The published version every mock dandiset has besides ``draft``."""

_CREATED = "2022-02-16T03:23:00.000000Z"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class MockAsset:
    """One asset of the mock dandiset.

    Attributes
    ----------
    path : str
        Asset path inside the dandiset, e.g. ``"sub-4/sub-4_ses-4_ecephys+image.nwb"``.
    file : Path
        Local file whose bytes the asset serves.
    asset_id : str
        UUID (derived from the dandiset id and the path, so stable across runs).
    blob_id : str
        Blob UUID (derived from the content hash).
    size : int
        File size in bytes.
    sha256 : str
        Hex SHA-256 of the content.
    """

    path: str
    file: Path
    asset_id: str
    blob_id: str
    size: int
    sha256: str


@dataclass(frozen=True)
class LoggedRequest:
    """One request the server answered: method, path with query, status, body bytes sent."""

    method: str
    path: str
    status: int
    bytes_sent: int
    range: str | None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MockDandi:
    """A local DANDI API serving local files as the assets of one dandiset.

    Parameters
    ----------
    assets : mapping of str to path
        ``{asset path: local file}``.
    dandiset_id : str, default: "000207"
        The dandiset's identifier.
    versions : sequence of str, default: ("draft", PUBLISHED_VERSION)
        Versions holding every asset (the first published one is the "most recent").
    latency : float, default: 0.0
        Seconds added to every request (simulates a distant server).
    sha256 : bool, default: True
        Whether asset metadata carries a ``dandi:sha2-256`` digest (drafts may lack it).
    blob_status : int, optional
        When set, every blob request is answered with this HTTP status and no body (e.g. 403
        for an expired link, 503 for an overloaded server).
    api_status : int, optional
        When set, every dandiset and asset request of the API is answered with this status
        (e.g. 401 for an embargoed dandiset); ``/api/info/`` still answers.

    Attributes
    ----------
    requests : list of LoggedRequest
        Every request answered since start (or the last :meth:`reset_log`).
    """

    def __init__(
        self,
        assets: Mapping[str, str | Path],
        *,
        dandiset_id: str = "000207",
        versions: tuple[str, ...] = ("draft", PUBLISHED_VERSION),
        latency: float = 0.0,
        sha256: bool = True,
        blob_status: int | None = None,
        api_status: int | None = None,
    ) -> None:
        self.dandiset_id = dandiset_id
        self.versions = tuple(versions)
        self.latency = float(latency)
        self.with_sha256 = sha256
        self.blob_status = blob_status
        self.api_status = api_status
        self.assets: dict[str, MockAsset] = {}
        for path, file in assets.items():
            file = Path(file)
            digest = _sha256(file)
            self.assets[path] = MockAsset(
                path=path,
                file=file,
                asset_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{dandiset_id}/{path}")),
                blob_id=str(uuid.uuid5(uuid.NAMESPACE_OID, digest)),
                size=file.stat().st_size,
                sha256=digest,
            )
        self.requests: list[LoggedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> MockDandi:
        """Bind to a free port on 127.0.0.1 and serve in a daemon thread."""
        if self._server is not None:
            return self
        _pause_gc()
        handler = type("Handler", (_Handler,), {"mock": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None
        _resume_gc()

    def __enter__(self) -> MockDandi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the mock DANDI server is not running; call start() first.")
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        """The web-UI root, e.g. ``http://127.0.0.1:PORT`` (landing pages live under it)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The API root, e.g. ``http://127.0.0.1:PORT/api`` (what ``instance=`` takes)."""
        return f"{self.root_url}/api"

    def asset(self, path: str | None = None) -> MockAsset:
        """The asset at ``path`` (default: the only one)."""
        if path is None:
            if len(self.assets) != 1:
                raise ValueError(f"several assets; name one of {sorted(self.assets)}")
            return next(iter(self.assets.values()))
        return self.assets[path]

    def blob_url(self, path: str | None = None) -> str:
        """Where the bytes of an asset are served (the asset's S3-like ``contentUrl``)."""
        return f"{self.root_url}/blobs/{self.asset(path).blob_id}"

    # -- request log -----------------------------------------------------------------------
    def reset_log(self) -> None:
        """Forget the requests answered so far."""
        self.requests = []

    def blob_bytes(self) -> int:
        """Body bytes sent from blob URLs (the asset content) since the last reset."""
        return sum(r.bytes_sent for r in self.requests if r.path.startswith("/blobs/"))

    def api_requests(self) -> list[LoggedRequest]:
        """Requests to the REST API since the last reset."""
        return [r for r in self.requests if r.path.startswith("/api/")]

    # -- JSON documents --------------------------------------------------------------------
    def _version_doc(self, version: str) -> dict:
        return {
            "version": version,
            "name": "Mock dandiset",
            "asset_count": len(self.assets),
            "size": sum(a.size for a in self.assets.values()),
            "status": "Published" if version != "draft" else "Valid",
            "created": _CREATED,
            "modified": _CREATED,
            "dandiset": {"identifier": self.dandiset_id},
        }

    def _dandiset_doc(self) -> dict:
        published = [v for v in self.versions if v != "draft"]
        return {
            "identifier": self.dandiset_id,
            "created": _CREATED,
            "modified": _CREATED,
            "contact_person": "Mock, Person",
            "embargo_status": "OPEN",
            "draft_version": self._version_doc("draft"),
            "most_recent_published_version": (
                self._version_doc(published[-1]) if published else None
            ),
        }

    def _asset_doc(self, asset: MockAsset) -> dict:
        return {
            "asset_id": asset.asset_id,
            "blob": asset.blob_id,
            "zarr": None,
            "path": asset.path,
            "size": asset.size,
            "created": _CREATED,
            "modified": _CREATED,
        }

    def _metadata_doc(self, asset: MockAsset) -> dict:
        digest = {"dandi:dandi-etag": hashlib.md5(asset.sha256.encode()).hexdigest() + "-1"}
        if self.with_sha256:
            digest["dandi:sha2-256"] = asset.sha256
        return {
            "id": f"dandiasset:{asset.asset_id}",
            "identifier": asset.asset_id,
            "path": asset.path,
            "contentSize": asset.size,
            "encodingFormat": "application/x-nwb",
            "digest": digest,
            "contentUrl": [
                f"{self.api_url}/assets/{asset.asset_id}/download/",
                self.blob_url(asset.path),
            ],
            "blobDateModified": _CREATED,
            "schemaKey": "Asset",
        }

    def _server_info(self) -> dict:
        return {
            "version": "0.0.0-mock",
            "services": {"api": {"url": self.api_url}, "webui": {"url": self.root_url}},
            "cli-minimal-version": "0.0.0",
            "cli-bad-versions": [],
        }

    def _by_id(self, asset_id: str) -> MockAsset | None:
        return next((a for a in self.assets.values() if a.asset_id == asset_id), None)


_VERSION = r"(?P<version>draft|\d+\.\d+\.\d+)"


# While a server runs in this process, the cyclic garbage collector is paused. The client reads
# through h5py, which holds its global lock while it waits for a byte range from a server thread;
# a collection that starts in that thread (any allocation can start one) may finalise a pynwb or
# hdmf IO object, whose finaliser takes the same lock: both threads then wait for ever. Only
# cycles wait for collection meanwhile; they are collected when the last server stops.
_gc_pauses = 0
_gc_lock = threading.Lock()


def _pause_gc() -> None:
    global _gc_pauses
    with _gc_lock:
        if _gc_pauses == 0:
            gc.disable()
        _gc_pauses += 1


def _resume_gc() -> None:
    global _gc_pauses
    with _gc_lock:
        _gc_pauses -= 1
        if _gc_pauses == 0:
            gc.enable()
            gc.collect()


class _Server(ThreadingHTTPServer):
    """Quiet about clients that hang up early (remfile and fsspec close streams mid-body)."""

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Routes one request of :class:`MockDandi` (``mock`` is set on a per-server subclass)."""

    mock: MockDandi
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    # -- responses -------------------------------------------------------------------------
    def _log(self, status: int, sent: int) -> None:
        self.mock.requests.append(
            LoggedRequest(self.command, self.path, status, sent, self.headers.get("Range"))
        )

    def _json(self, doc: object, status: int = 200) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not self._head:
            self.wfile.write(body)
        self._log(status, 0 if self._head else len(body))

    def _not_found(self) -> None:
        self._json({"detail": "Not found."}, status=404)

    def _redirect(self, url: str) -> None:
        self.send_response(302)
        self.send_header("Location", url)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self._log(302, 0)

    def _blob(self, asset: MockAsset) -> None:
        if self.mock.blob_status is not None:
            return self._json({"detail": "mock failure"}, status=self.mock.blob_status)
        size = asset.size
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._log(416, 0)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        length = end - start + 1
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        sent = 0
        if not self._head:
            with open(asset.file, "rb") as handle:
                handle.seek(start)
                try:
                    while sent < length:
                        chunk = handle.read(min(_CHUNK, length - sent))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
        self._log(206 if match else 200, sent)

    # -- routing ---------------------------------------------------------------------------
    def _route(self, *, head: bool) -> None:
        self._head = head
        mock = self.mock
        if mock.latency:
            time.sleep(mock.latency)
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/server-info" or path == "/api/info/":
            return self._json(mock._server_info())
        if path.startswith("/blobs/"):
            blob = path[len("/blobs/") :]
            asset = next((a for a in mock.assets.values() if a.blob_id == blob), None)
            return self._blob(asset) if asset else self._not_found()
        if mock.api_status is not None and path.startswith("/api/"):
            return self._json({"detail": "mock failure"}, status=mock.api_status)
        match = re.fullmatch(r"/api/assets/(?P<id>[^/]+)/(?P<tail>info/|download/)?", path)
        if match:
            return self._asset(mock._by_id(match["id"]), match["tail"])
        match = re.fullmatch(r"/api/dandisets/(?P<did>\d{6})/(?P<rest>.*)", path)
        if not match or match["did"] != mock.dandiset_id:
            return self._not_found()
        rest = match["rest"]
        if rest == "":
            return self._json(mock._dandiset_doc())
        if rest == "versions/":
            docs = [mock._version_doc(v) for v in mock.versions]
            return self._json(
                {"count": len(docs), "next": None, "previous": None, "results": docs}
            )
        match = re.fullmatch(r"versions/" + _VERSION + r"/(?P<tail>.*)", rest)
        if not match or match["version"] not in mock.versions:
            return self._not_found()
        version, tail = match["version"], match["tail"]
        if tail == "":
            return self._json({"name": "Mock dandiset", "identifier": mock.dandiset_id})
        if tail == "info/":
            doc = mock._version_doc(version)
            doc.update(asset_validation_errors=[], version_validation_errors=[])
            return self._json(doc)
        if tail == "assets/":
            prefix = query.get("path", [""])[0]
            docs = [
                mock._asset_doc(a) for p, a in sorted(mock.assets.items()) if p.startswith(prefix)
            ]
            return self._json(
                {"count": len(docs), "next": None, "previous": None, "results": docs}
            )
        match = re.fullmatch(r"assets/(?P<id>[^/]+)/(?P<tail>info/|download/)?", tail)
        if match:
            return self._asset(mock._by_id(match["id"]), match["tail"])
        return self._not_found()

    def _asset(self, asset: MockAsset | None, tail: str | None) -> None:
        if asset is None:
            return self._not_found()
        if tail == "download/":
            return self._redirect(self.mock.blob_url(asset.path))
        if tail == "info/":
            doc = self.mock._asset_doc(asset)
            doc["metadata"] = self.mock._metadata_doc(asset)
            return self._json(doc)
        return self._json(self.mock._metadata_doc(asset))


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve NWB files as assets of a mock DANDI.")
    parser.add_argument("file", type=Path, help="local NWB file")
    parser.add_argument("--asset", required=True, help="asset path, e.g. sub-1/sub-1.nwb")
    parser.add_argument("--dandiset", default="000207")
    args = parser.parse_args()
    with MockDandi({args.asset: args.file}, dandiset_id=args.dandiset) as server:
        print(f"DANDI API at {server.api_url} (dandiset {args.dandiset}); Ctrl-C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
