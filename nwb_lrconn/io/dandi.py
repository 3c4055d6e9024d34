"""Find a DANDI Archive asset from any of its usual spellings, and the URL to stream it from.

Accepted spellings (``<version>`` is ``draft`` or a published ``0.YYMMDD.HHMM``; when it is
left out, the dandiset's most recent published version is used, or its draft when it has none):

- ``dandi://<instance>/<dandiset>[@<version>]/<asset path>`` (``<instance>`` a registered
  name such as ``DANDI`` or ``dandi-sandbox``);
- ``<INSTANCE>:<dandiset>[/<version>]/<asset path>``, e.g. ``DANDI:000207/sub-4/x.nwb``;
- ``<dandiset>[@<version>][/<asset path>]``, e.g. ``000207/sub-4/x.nwb``;
- web (landing) pages: ``https://dandiarchive.org/dandiset/<dandiset>[/<version>]
  [/files?location=<asset path or folder>]`` (also the older ``/#/dandiset/...`` form);
- API URLs: ``<api>/dandisets/<dandiset>/versions/<version>/assets/<asset id>/[download/]``,
  ``<api>/assets/<asset id>/[download/]``,
  ``<api>/dandisets/<dandiset>/versions/<version>/assets/?path=<asset path>``,
  ``<api>/dandisets/<dandiset>/[versions/<version>/]``;
- keywords: ``dandiset=``, ``asset=`` (path or asset id), ``version=``, ``instance=``.

A reference that names a dandiset or folder rather than one file resolves when exactly one NWB
asset lies under it; otherwise the error lists (some of) them.

The REST calls go through the ``dandi`` client (``pip install nwb-lrconn[dandi]``), imported
only when a reference is resolved; parsing needs nothing beyond the standard library.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .streaming import _network_reason

__all__ = [
    "DandiAsset",
    "resolve_dandi",
    "is_dandi_reference",
    "parse_dandi_reference",
    "DandiReference",
    "INSTANCE_ENV",
]

INSTANCE_ENV = "NWB_LRCONN_DANDI_INSTANCE"
"""Environment variable overriding the DANDI instance of every reference (name or API URL)."""

_TIMEOUT = 20.0  # seconds for the reachability probe of an instance
_LISTED = 5  # NWB assets named in an "ambiguous reference" message

_ID = r"(?P<dandiset>\d{6})"
_VERSION = r"(?P<version>draft|\d+\.\d+\.\d+)"
_ASSET_ID = (
    r"(?P<asset_id>[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})"
)
_URI = re.compile(rf"dandi://(?P<instance>[^/@]+)/{_ID}(?:@{_VERSION})?(?:/(?P<path>.*))?")
_COMPACT = re.compile(
    rf"(?P<instance>[A-Za-z][-A-Za-z0-9]*):{_ID}(?:/{_VERSION})?(?:/(?P<path>.*))?"
)
_BARE = re.compile(rf"{_ID}(?:@{_VERSION})?(?:/(?P<path>.*))?")
_LANDING = re.compile(rf"/dandiset/{_ID}(?:/{_VERSION})?(?:/files)?/?")
_API = [
    re.compile(
        rf"(?P<base>.*)/dandisets/{_ID}/versions/{_VERSION}/assets/{_ASSET_ID}(?:/download|/info)?/?"
    ),
    re.compile(rf"(?P<base>.*)/assets/{_ASSET_ID}(?:/download|/info)?/?"),
    re.compile(rf"(?P<base>.*)/dandisets/{_ID}/versions/{_VERSION}/assets/?"),
    re.compile(rf"(?P<base>.*)/dandisets/{_ID}(?:/versions(?:/{_VERSION})?)?/?"),
]
_SPELLINGS = (
    "dandi://<instance>/<dandiset>[@<version>]/<asset path>, DANDI:<dandiset>[/<version>]/"
    "<asset path>, <dandiset>[/<asset path>], a dandiarchive.org/dandiset/... page or a DANDI "
    "API URL"
)


@dataclass(frozen=True)
class DandiReference:
    """What a reference names, before any request (see :func:`parse_dandi_reference`).

    Attributes
    ----------
    instance : str or None
        Instance name (``"dandi"``), web or API root URL; None when the text names none.
    dandiset_id, version, asset_path, asset_id : str or None
        What the text says (the asset path may be a folder, ending with ``/``).
    """

    instance: str | None = None
    dandiset_id: str | None = None
    version: str | None = None
    asset_path: str | None = None
    asset_id: str | None = None


@dataclass(frozen=True)
class DandiAsset:
    """A DANDI asset resolved through the archive's API: what to stream and where it came from.

    Attributes
    ----------
    url : str
        URL of the asset's bytes (the blob; HTTP Range requests), what is streamed.
    api_url : str
        API root of the instance, e.g. ``"https://api.dandiarchive.org/api"``.
    instance : str
        Instance name (``"dandi"``, ``"dandi-sandbox"``, or ``host[:port]`` of another server).
    dandiset_id : str or None
        Six-digit dandiset identifier (None when the reference named only an asset id).
    version : str or None
        ``"draft"`` or a published version (None when ``dandiset_id`` is).
    asset_path : str
        Path of the asset inside the dandiset.
    asset_id : str
        The asset's UUID.
    size : int
        Size in bytes.
    sha256 : str or None
        Hex SHA-256 of the content, when the archive's metadata gives it.
    etag : str or None
        The archive's ``dandi-etag`` digest, when given.
    """

    url: str
    api_url: str
    instance: str
    dandiset_id: str | None
    version: str | None
    asset_path: str
    asset_id: str
    size: int
    sha256: str | None = None
    etag: str | None = None

    @property
    def reference(self) -> str:
        """An API URL naming this asset by id: it resolves to the same bytes while they exist."""
        if self.dandiset_id is None:
            return f"{self.api_url}/assets/{self.asset_id}/"
        return (
            f"{self.api_url}/dandisets/{self.dandiset_id}/versions/{self.version}/assets/"
            f"{self.asset_id}/"
        )

    @property
    def content_key(self) -> str:
        """Identity of the bytes (digest when known, else the URL): keys the disk cache."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.etag:
            return f"dandi-etag:{self.etag}"
        return self.url

    def origin(self) -> dict[str, Any]:
        """The ``SourceInfo.origin`` of a recording read from this asset (instance: API URL)."""
        return {
            "kind": "dandi",
            "url": self.url,
            "instance": self.api_url,
            "dandiset_id": self.dandiset_id,
            "version": self.version,
            "asset_path": self.asset_path,
            "asset_id": self.asset_id,
            "sha256": self.sha256,
            "size": self.size,
        }


def _dandi_shaped_url(text: str) -> DandiReference | None:
    """Parse a DANDI web page or API URL; None when ``text`` is no such URL."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    root = f"{parts.scheme}://{parts.netloc}"
    path, query = parts.path, parts.query
    if parts.fragment.startswith("/"):  # old web UI: https://dandiarchive.org/#/dandiset/...
        path, _, query = parts.fragment.partition("?")
    # A literal "+" stays a "+": DANDI paths hold it (ecephys+image), spaces are rare.
    params = parse_qs(query.replace("+", "%2B"))
    location = params.get("location", [None])[0]
    match = _LANDING.fullmatch(path)
    if match:
        return DandiReference(
            instance=root,
            dandiset_id=match["dandiset"],
            version=match["version"],
            asset_path=location.lstrip("/") if location else None,
        )
    for pattern in _API:
        match = pattern.fullmatch(path)
        if match:
            groups = match.groupdict()
            asset_path = params.get("path", [None])[0]
            return DandiReference(
                instance=root + match["base"],
                dandiset_id=groups.get("dandiset"),
                version=groups.get("version"),
                asset_path=asset_path.lstrip("/") if asset_path else None,
                asset_id=groups.get("asset_id"),
            )
    return None


def parse_dandi_reference(text: str) -> DandiReference | None:
    """Split a DANDI reference into what it names, without any request.

    Parameters
    ----------
    text : str
        Any spelling listed in :mod:`nwb_lrconn.io.dandi`.

    Returns
    -------
    DandiReference or None
        None when ``text`` is not a DANDI reference (a local path, or a URL of another shape).
    """
    text = str(text).strip()
    for pattern in (_URI, _COMPACT, _BARE):
        match = pattern.fullmatch(text)
        if match:
            groups = match.groupdict()
            return DandiReference(
                instance=groups.get("instance"),
                dandiset_id=match["dandiset"],
                version=match["version"],
                asset_path=unquote(match["path"]) if match["path"] else None,
            )
    return _dandi_shaped_url(text)


def is_dandi_reference(source: Any) -> bool:
    """Whether ``source`` names a DANDI asset or dandiset rather than a local file or plain URL.

    True for a :class:`DandiAsset` and for strings in the spellings listed in
    :mod:`nwb_lrconn.io.dandi`, except that a bare ``<dandiset>[/<path>]`` counts only when no
    local path of that name exists (a local folder ``000207/`` wins). ``Path`` objects are
    always local.
    """
    if isinstance(source, DandiAsset):
        return True
    if not isinstance(source, str) or parse_dandi_reference(source) is None:
        return False
    return not (_BARE.fullmatch(source.strip()) and os.path.exists(source))


# -- resolution ------------------------------------------------------------------------------
def _import_dandi() -> Any:
    try:
        import dandi.dandiapi as dandiapi
    except ImportError:
        raise ImportError(
            "Reading from the DANDI Archive needs the dandi client: pip install nwb-lrconn[dandi]"
        ) from None
    return dandiapi


def _known_instance(spec: str) -> Any | None:
    """The registered ``DandiInstance`` named by ``spec`` (name, web or API root), or None."""
    from dandi.consts import known_instances, known_instances_rev

    name = spec.lower()
    if name in known_instances:
        return known_instances[name]
    name = known_instances_rev.get(spec.rstrip("/"))
    return known_instances[name] if name else None


def _reach(url: str) -> None:
    """Fail in one line, fast, when nothing answers at ``url`` (the client retries for ~1 min)."""
    import requests

    try:
        requests.head(url, timeout=_TIMEOUT, allow_redirects=False).close()
    except requests.RequestException as err:
        raise ConnectionError(
            f"Cannot reach the DANDI instance at {url}: {_network_reason(err)}; check the "
            f"network, or the instance (instance= / {INSTANCE_ENV})."
        ) from None


def _client(spec: str) -> Any:
    """An unauthenticated ``DandiAPIClient`` for an instance name or URL, known to answer."""
    dandiapi = _import_dandi()
    from dandi.utils import get_instance

    instance = _known_instance(spec)
    if instance is None:
        if not spec.startswith(("http://", "https://")):
            from dandi.consts import known_instances

            raise ValueError(
                f"Unknown DANDI instance {spec!r}: expected one of {sorted(known_instances)} or "
                "the API URL of a DANDI server (e.g. https://api.dandiarchive.org/api)."
            )
        _reach(spec)
        try:
            instance = get_instance(spec.rstrip("/"))
        except RuntimeError:
            raise ConnectionError(
                f"{spec} does not answer like a DANDI server (no /server-info or /api/info/); "
                "give the instance's API URL."
            ) from None
    else:
        _reach(instance.api)
    return dandiapi.DandiAPIClient(dandi_instance=instance)


def _choose_instance(named: str | None, instance: str | None) -> str:
    return (
        instance
        or os.environ.get(INSTANCE_ENV)
        or named
        or os.environ.get("DANDI_INSTANCE")
        or "dandi"
    )


def _nwb_assets_under(dandiset: Any, prefix: str) -> list[Any]:
    """Up to ``_LISTED + 1`` NWB assets whose path starts with ``prefix``."""
    found = []
    for asset in dandiset.get_assets_with_path_prefix(prefix, order="path"):
        if asset.path.lower().endswith(".nwb"):
            found.append(asset)
            if len(found) > _LISTED:
                break
    return found


def _one_nwb_asset(dandiset: Any, prefix: str, where: str) -> Any:
    found = _nwb_assets_under(dandiset, prefix)
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"{where} holds no NWB asset; name an .nwb asset path.")
    names = [a.path for a in found[:_LISTED]]
    more = ", ..." if len(found) > _LISTED else ""
    raise ValueError(
        f"{where} holds several NWB assets; name one (asset=PATH or .../<asset path>): "
        f"{', '.join(names)}{more}."
    )


def _find_asset(client: Any, ref: DandiReference) -> tuple[Any, str | None, str | None]:
    """Return ``(remote asset, dandiset id, version)`` for a parsed reference."""
    from dandi.exceptions import NotFoundError

    if ref.dandiset_id is None:
        return client.get_asset(ref.asset_id), None, None
    dandiset = client.get_dandiset(ref.dandiset_id, ref.version, lazy=False)
    version = dandiset.version_id
    where = f"DANDI:{ref.dandiset_id}/{version}"
    if ref.asset_id is not None:
        return dandiset.get_asset(ref.asset_id), ref.dandiset_id, version
    path = (ref.asset_path or "").lstrip("/")
    if path and not path.endswith("/"):
        try:
            return dandiset.get_asset_by_path(path), ref.dandiset_id, version
        except NotFoundError:
            if not _nwb_assets_under(dandiset, path + "/"):  # not a folder either
                raise FileNotFoundError(
                    f"No asset {path!r} in {where}; check the path (it is case-sensitive)."
                ) from None
            path += "/"
    return _one_nwb_asset(dandiset, path, f"{where}/{path}"), ref.dandiset_id, version


def _content_url(asset: Any, metadata: dict[str, Any], api_url: str) -> str:
    """The blob URL among ``contentUrl`` (as the dandi client picks it), else the API download."""
    for url in metadata.get("contentUrl", []):
        if not url.lower().startswith(api_url.lower()):
            return url
    return asset.base_download_url


def _asset_fields(asset: str | None) -> tuple[str | None, str | None]:
    """``(asset_path, asset_id)`` for an ``asset=`` value (a UUID is an asset id)."""
    if asset is None:
        return None, None
    asset = str(asset).strip()
    if re.fullmatch(_ASSET_ID, asset):
        return None, asset
    return asset.lstrip("/"), None


def _keyword_reference(
    dandiset: str | int, asset: str | None, version: str | None
) -> DandiReference:
    text = str(dandiset).strip()
    if not re.fullmatch(r"\d{1,6}", text):
        raise ValueError(
            f"dandiset must be a DANDI identifier such as '000207'; got {dandiset!r}."
        )
    asset_path, asset_id = _asset_fields(asset)
    return DandiReference(None, text.zfill(6), version, asset_path, asset_id)


def _merge(
    ref: DandiReference, asset: str | None, version: str | None, text: str
) -> DandiReference:
    """Complete ``ref`` with ``asset=`` and ``version=``; they may not contradict it."""
    if version is not None and ref.version not in (None, version):
        raise ValueError(f"{text} names version {ref.version}; version={version!r} disagrees.")
    asset_path, asset_id = _asset_fields(asset)
    if asset is not None:
        folder = ref.asset_path if ref.asset_path and ref.asset_path.endswith("/") else None
        named = ref.asset_id or (None if folder else ref.asset_path)
        if named is not None and named not in (asset_path, asset_id):
            raise ValueError(
                f"{text} already names the asset {named!r}; asset={asset!r} disagrees."
            )
        if folder and asset_path is not None and not asset_path.startswith(folder):
            raise ValueError(f"asset={asset!r} is not inside the folder {folder!r} of {text}.")
    return DandiReference(
        ref.instance,
        ref.dandiset_id,
        ref.version or version,
        asset_path or ref.asset_path,
        asset_id or ref.asset_id,
    )


def resolve_dandi(
    reference: str | DandiAsset | None = None,
    *,
    dandiset: str | int | None = None,
    asset: str | None = None,
    version: str | None = None,
    instance: str | None = None,
) -> DandiAsset:
    """Find a DANDI asset through the archive's API and the URL its bytes stream from.

    Parameters
    ----------
    reference : str or DandiAsset, optional
        A :class:`DandiAsset` (returned as is), or any spelling listed in
        :mod:`nwb_lrconn.io.dandi`, e.g.
        ``"DANDI:000207/sub-4/sub-4_ses-4_ecephys+image.nwb"``,
        ``"dandi://dandi/000207@draft/sub-4/sub-4_ses-4_ecephys+image.nwb"`` or a
        ``https://dandiarchive.org/dandiset/...`` page.
    dandiset : str or int, optional
        Dandiset identifier (instead of ``reference``), e.g. ``"000207"`` or ``207``.
    asset : str, optional
        Asset path (or asset UUID) within the dandiset; completes a reference naming only a
        dandiset or folder.
    version : str, optional
        ``"draft"`` or a published version; default: the most recent published version, or the
        draft when none is published.
    instance : str, optional
        The DANDI instance to ask, overriding the one named in the reference: a registered name
        (``"dandi"``, ``"dandi-sandbox"``, ``"linc"``, ...) or the API URL of any DANDI server,
        e.g. a private instance or a local test server ``"http://127.0.0.1:8000/api"`` (its
        ``/server-info`` or ``/api/info/`` must answer). Default: the environment variable
        ``NWB_LRCONN_DANDI_INSTANCE``, else the instance the reference names, else the dandi
        client's ``DANDI_INSTANCE``, else ``"dandi"``.

    Returns
    -------
    DandiAsset
        The asset, its blob URL (streamed with HTTP Range requests), size and digests.

    Raises
    ------
    ImportError
        When the ``dandi`` client is not installed (``pip install nwb-lrconn[dandi]``).
    ValueError
        When the text is no DANDI reference, the keywords contradict it, the instance is
        unknown, or a dandiset / folder holds several NWB assets (some are listed).
    FileNotFoundError
        When the dandiset, version or asset does not exist, or no NWB asset is there.
    ConnectionError
        When the instance cannot be reached (one line: host, reason, what to check).
    PermissionError
        When the archive refuses access (embargoed dandisets need credentials).
    """
    if isinstance(reference, DandiAsset) and dandiset is None:
        return reference
    if (reference is None) == (dandiset is None):
        raise ValueError(
            "Give a DANDI reference or dandiset= (with asset=), not both and not neither; "
            f"accepted references: {_SPELLINGS}."
        )
    if reference is not None:
        text = str(reference)
        parsed = parse_dandi_reference(text)
        if parsed is None:
            raise ValueError(f"{text!r} is not a DANDI reference; expected {_SPELLINGS}.")
        ref = _merge(parsed, asset, version, text)
    elif dandiset is not None:  # exactly one of the two was given (checked above)
        text = f"dandiset {dandiset}"
        ref = _keyword_reference(dandiset, asset, version)
    spec = _choose_instance(ref.instance, instance)
    client = _client(spec)
    return _resolve_with(client, ref, text)


@contextmanager
def _quiet_dandi_log() -> Iterator[None]:
    """Silence the dandi client's own error log: its failures are re-raised here in one line."""
    logger = logging.getLogger("dandi")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _resolve_with(client: Any, ref: DandiReference, text: str) -> DandiAsset:
    import requests
    from dandi.exceptions import NotFoundError

    api_url = client.api_url.rstrip("/")
    try:
        with client, _quiet_dandi_log():
            remote, dandiset_id, version = _find_asset(client, ref)
            metadata = remote.get_raw_metadata()
    except NotFoundError as err:
        raise FileNotFoundError(f"{text} on {api_url}: {str(err).split('. ')[0]}.") from None
    except requests.HTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise PermissionError(
                f"{api_url} refused access to {text} (HTTP {status}); embargoed dandisets need "
                "credentials, which nwb_lrconn does not handle: download the asset with "
                "`dandi download` and read the local file."
            ) from None
        raise ConnectionError(
            f"{api_url} answered HTTP {status} for {text}; try again later."
        ) from None
    except requests.ConnectionError as err:
        raise ConnectionError(
            f"Lost the DANDI instance at {api_url}: {_network_reason(err)}."
        ) from None
    if getattr(remote, "blob", None) is None:
        raise ValueError(
            f"{remote.path} in {text} is a Zarr asset; nwb_lrconn reads NWB/HDF5 assets only."
        )
    digest = metadata.get("digest") or {}
    return DandiAsset(
        url=_content_url(remote, metadata, api_url),
        api_url=api_url,
        instance=client.dandi_instance.name,
        dandiset_id=dandiset_id,
        version=version,
        asset_path=remote.path,
        asset_id=remote.identifier,
        size=int(remote.size),
        sha256=digest.get("dandi:sha2-256"),
        etag=digest.get("dandi:dandi-etag"),
    )
