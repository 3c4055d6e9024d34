"""DANDI references: parsing every spelling, resolving them through a local mock archive, and
the errors a user sees (offline: the mock answers the REST endpoints the dandi client calls)."""

from __future__ import annotations

import sys
import time
from urllib.parse import quote

import pytest

from nwb_lrconn.io import DandiAsset, is_dandi_reference, resolve_dandi
from nwb_lrconn.io.dandi import DandiReference, parse_dandi_reference

PATH = "sub-4/sub-4_ses-4_ecephys+image.nwb"
PUBLISHED = "0.220216.0323"
UUID = "0b9e0c4e-5a9c-4d3e-9f1a-2c7d8e6f5a4b"  # no asset of the mock has it


@pytest.fixture
def archive(mock_dandi, units_file):
    """A mock archive whose dandiset 000207 holds one NWB asset (and a non-NWB file)."""
    return mock_dandi({PATH: units_file, "README.txt": units_file})


def _public_spellings() -> list[tuple[str, str | None]]:
    """Spellings naming the public archive, with the version each names (None: default)."""
    encoded = quote(PATH, safe="")
    return [
        (f"dandi://DANDI/000207/{PATH}", None),
        (f"dandi://dandi/000207@draft/{PATH}", "draft"),
        (f"dandi://dandi/000207@{PUBLISHED}/{PATH}", PUBLISHED),
        (f"DANDI:000207/{PATH}", None),
        (f"DANDI:000207/draft/{PATH}", "draft"),
        (f"000207/{PATH}", None),
        (f"000207@draft/{PATH}", "draft"),
        (f"https://dandiarchive.org/dandiset/000207/draft/files?location={encoded}", "draft"),
        (f"https://dandiarchive.org/dandiset/000207/files?location={PATH}", None),
        ("https://dandiarchive.org/#/dandiset/000207/draft/files?location=sub-4/", "draft"),
        ("https://dandiarchive.org/dandiset/000207", None),
        ("DANDI:000207", None),
    ]


def _server_spellings(server) -> list[tuple[str, str | None]]:
    """Spellings naming the mock itself (its web root or API): no instance override needed."""
    api, aid = server.api_url, server.asset(PATH).asset_id
    return [
        (f"{server.root_url}/dandiset/000207/draft/files?location={PATH}", "draft"),
        (f"{api}/dandisets/000207/versions/draft/assets/{aid}/", "draft"),
        (f"{api}/dandisets/000207/versions/{PUBLISHED}/assets/{aid}/download/", PUBLISHED),
        (f"{api}/dandisets/000207/versions/draft/assets/?path={quote(PATH)}", "draft"),
        (f"{api}/dandisets/000207/", None),
    ]


def _same_asset(found: DandiAsset, server) -> None:
    expected = server.asset(PATH)
    assert found.asset_id == expected.asset_id
    assert found.asset_path == PATH
    assert found.url == server.blob_url(PATH)
    assert found.size == expected.size
    assert found.sha256 == expected.sha256
    assert found.api_url == server.api_url


# -- parsing (no request) --------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        (f"dandi://DANDI/000207@draft/{PATH}", DandiReference("DANDI", "000207", "draft", PATH)),
        (f"DANDI:000207/{PUBLISHED}/{PATH}", DandiReference("DANDI", "000207", PUBLISHED, PATH)),
        (f"dandi-sandbox:000123/{PATH}", DandiReference("dandi-sandbox", "000123", None, PATH)),
        ("000207@draft", DandiReference(None, "000207", "draft", None)),
        (
            "https://dandiarchive.org/dandiset/000207/draft/files?location=sub-4%2Fa%2Bb.nwb",
            DandiReference("https://dandiarchive.org", "000207", "draft", "sub-4/a+b.nwb"),
        ),
        (
            "https://dandiarchive.org/dandiset/000207/files?location=sub-4/a+b.nwb",
            DandiReference("https://dandiarchive.org", "000207", None, "sub-4/a+b.nwb"),
        ),
        (
            f"https://api.dandiarchive.org/api/assets/{UUID}/download/",
            DandiReference("https://api.dandiarchive.org/api", asset_id=UUID),
        ),
        (
            f"http://127.0.0.1:8000/api/dandisets/000207/versions/draft/assets/{UUID}/",
            DandiReference("http://127.0.0.1:8000/api", "000207", "draft", asset_id=UUID),
        ),
        (
            "https://api.dandiarchive.org/api/dandisets/000207/versions/draft/assets/?path=a%2Bb",
            DandiReference("https://api.dandiarchive.org/api", "000207", "draft", "a+b"),
        ),
    ],
)
def test_parse_spellings(text, expected):
    assert parse_dandi_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "/data/x.nwb",
        "x.nwb",
        "https://example.org/x.nwb",
        "https://dandiarchive.s3.amazonaws.com/blobs/abc/def",
        "s3://bucket/x.nwb",
        "C:\\data\\x.nwb",
        "00207/x.nwb",
        "DANDI:207/x.nwb",
    ],
)
def test_not_dandi_references(text):
    assert parse_dandi_reference(text) is None
    assert not is_dandi_reference(text)


def test_is_dandi_reference(tmp_path, monkeypatch):
    for text, _ in _public_spellings():
        assert is_dandi_reference(text), text
    asset = DandiAsset("u", "a", "dandi", "000207", "draft", PATH, UUID, 1)
    assert is_dandi_reference(asset) and not is_dandi_reference(42)
    monkeypatch.chdir(tmp_path)
    assert is_dandi_reference("000207/x.nwb")
    assert not is_dandi_reference(tmp_path / "000207" / "x.nwb"), "a Path is always local"
    (tmp_path / "000207").mkdir()
    (tmp_path / "000207" / "x.nwb").write_bytes(b"")
    assert not is_dandi_reference("000207/x.nwb"), "an existing local path wins"


# -- resolution through the mock -------------------------------------------------------------
def test_every_spelling_resolves_to_the_same_asset(archive):
    for text, version in _public_spellings():
        found = resolve_dandi(text, instance=archive.api_url)
        _same_asset(found, archive)
        assert found.dandiset_id == "000207"
        assert found.version == (version or PUBLISHED), text
    for text, version in _server_spellings(archive):
        found = resolve_dandi(text)
        _same_asset(found, archive)
        assert found.version == (version or PUBLISHED), text


def test_asset_id_urls_without_dandiset(archive):
    aid = archive.asset(PATH).asset_id
    for text in (
        f"{archive.api_url}/assets/{aid}/",
        f"{archive.api_url}/assets/{aid}/download/",
        f"https://api.dandiarchive.org/api/assets/{aid}/download/",
    ):
        found = resolve_dandi(text, instance=archive.api_url)
        _same_asset(found, archive)
        assert found.dandiset_id is None and found.version is None


def test_keyword_form(archive):
    api = archive.api_url
    by_path = resolve_dandi(dandiset="000207", asset=PATH, instance=api)
    _same_asset(by_path, archive)
    assert by_path.version == PUBLISHED
    by_number = resolve_dandi(dandiset=207, asset=PATH, version="draft", instance=api)
    assert by_number.version == "draft" and by_number.asset_id == by_path.asset_id
    by_id = resolve_dandi(dandiset="000207", asset=by_path.asset_id, instance=api)
    assert by_id.asset_path == PATH
    only_nwb = resolve_dandi(dandiset="000207", instance=api)
    assert only_nwb.asset_path == PATH
    completed = resolve_dandi("DANDI:000207", asset=PATH, version="draft", instance=api)
    assert completed.version == "draft" and completed.asset_path == PATH


def test_instance_from_environment(archive, monkeypatch):
    monkeypatch.setenv("NWB_LRCONN_DANDI_INSTANCE", archive.api_url)
    _same_asset(resolve_dandi(f"DANDI:000207/{PATH}"), archive)


def test_reference_round_trip_and_origin(archive):
    found = resolve_dandi(f"DANDI:000207/draft/{PATH}", instance=archive.api_url)
    assert resolve_dandi(found.reference) == found
    origin = found.origin()
    assert origin["kind"] == "dandi" and origin["instance"] == archive.api_url
    assert (origin["dandiset_id"], origin["version"], origin["asset_path"]) == (
        "000207",
        "draft",
        PATH,
    )
    assert origin["sha256"] == archive.asset(PATH).sha256
    assert found.content_key == f"sha256:{found.sha256}"


def test_missing_digest_falls_back_to_the_etag(mock_dandi, units_file):
    server = mock_dandi({PATH: units_file}, sha256=False)
    found = resolve_dandi(f"DANDI:000207/{PATH}", instance=server.api_url)
    assert found.sha256 is None and found.content_key.startswith("dandi-etag:")


def test_folder_with_one_nwb_asset(mock_dandi, units_file):
    server = mock_dandi({"sub-1/a.nwb": units_file, "sub-2/b.nwb": units_file})
    assert resolve_dandi("DANDI:000207/sub-2", instance=server.api_url).asset_path == (
        "sub-2/b.nwb"
    )


# -- errors ----------------------------------------------------------------------------------
def test_several_nwb_assets_are_listed(mock_dandi, units_file):
    assets = {f"sub-{i}/sub-{i}.nwb": units_file for i in range(7)}
    server = mock_dandi(assets)
    with pytest.raises(ValueError, match=r"holds several NWB assets; name one .*sub-0/sub-0\.nwb"):
        resolve_dandi("DANDI:000207", instance=server.api_url)
    with pytest.raises(ValueError, match=r"sub-4/sub-4\.nwb, \.\.\.\.$"):
        resolve_dandi("https://dandiarchive.org/dandiset/000207", instance=server.api_url)


@pytest.mark.parametrize(
    "text, error, match",
    [
        (
            "DANDI:000207/sub-9/x.nwb",
            FileNotFoundError,
            r"No asset 'sub-9/x.nwb' in DANDI:000207/",
        ),
        ("DANDI:000208/x.nwb", FileNotFoundError, r"No such Dandiset: '000208'"),
        (f"DANDI:000207/0.1.2/{PATH}", FileNotFoundError, r"No such version: '0.1.2'"),
        ("DANDI:000207/README.txt/", FileNotFoundError, r"holds no NWB asset"),
        (
            f"http://127.0.0.1:1/api/assets/{UUID}/",
            FileNotFoundError,
            r"No such asset: '" + UUID,
        ),
    ],
)
def test_missing_things(archive, text, error, match):
    with pytest.raises(error, match=match):
        resolve_dandi(text, instance=archive.api_url)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"reference": "https://example.org/x.nwb"},
            r"is not a DANDI reference; expected dandi://",
        ),
        ({}, r"Give a DANDI reference or dandiset="),
        ({"reference": "DANDI:000207/x.nwb", "dandiset": "000207"}, r"not both"),
        ({"dandiset": "abc"}, r"dandiset must be a DANDI identifier such as '000207'; got 'abc'"),
        (
            {"reference": f"DANDI:000207/draft/{PATH}", "version": PUBLISHED},
            r"names version draft; version='0.220216.0323' disagrees",
        ),
        (
            {"reference": f"DANDI:000207/{PATH}", "asset": "sub-4/other.nwb"},
            r"already names the asset .*; asset='sub-4/other.nwb' disagrees",
        ),
        (
            {"reference": "DANDI:000207/sub-4/", "asset": "sub-5/x.nwb"},
            r"asset='sub-5/x.nwb' is not inside the folder 'sub-4/'",
        ),
        (
            {"reference": "dandi://nowhere/000207/x.nwb"},
            r"Unknown DANDI instance 'nowhere': expected one of \[.*'dandi'",
        ),
    ],
)
def test_bad_references(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resolve_dandi(**kwargs)


def test_missing_dandi_client_names_the_extra(monkeypatch):
    from nwb_lrconn.io import read_units

    monkeypatch.setitem(sys.modules, "dandi.dandiapi", None)
    message = r"needs the dandi client: pip install nwb-lrconn\[dandi\]$"
    with pytest.raises(ImportError, match=message):
        resolve_dandi(f"DANDI:000207/{PATH}")
    with pytest.raises(ImportError, match=message):
        read_units(f"DANDI:000207/{PATH}", bin_width=1.0)


def test_unreachable_instance_is_one_fast_line(archive):
    api = archive.api_url
    archive.stop()
    start = time.perf_counter()
    with pytest.raises(ConnectionError) as caught:
        resolve_dandi(f"DANDI:000207/{PATH}", instance=api)
    assert time.perf_counter() - start < 10
    message = str(caught.value)
    assert "\n" not in message
    assert f"Cannot reach the DANDI instance at {api}: connection refused" in message
    assert "NWB_LRCONN_DANDI_INSTANCE" in message


def test_unknown_host_is_one_line():
    with pytest.raises(
        ConnectionError, match=r"nwb-lrconn-test\.invalid/api: the host name does not"
    ):
        resolve_dandi("DANDI:000207/x.nwb", instance="http://nwb-lrconn-test.invalid/api")


def test_embargoed_dandiset(mock_dandi, units_file):
    server = mock_dandi({PATH: units_file}, api_status=401)
    with pytest.raises(PermissionError, match=r"refused access to DANDI:000207/.*\(HTTP 401\)"):
        resolve_dandi(f"DANDI:000207/{PATH}", instance=server.api_url)
