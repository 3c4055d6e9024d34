"""The committed YAML is what the spec builder generates, and it ships in the wheel."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from nwb_lrconn.extension import NAMESPACE, spec_path
from nwb_lrconn.extension.spec_builder import REPO_SPEC_DIR, SPEC_VERSION, build_spec, main

REPO = Path(__file__).resolve().parents[2]
SPEC_FILES = (f"{NAMESPACE}.namespace.yaml", f"{NAMESPACE}.extensions.yaml")


def test_committed_spec_matches_the_builder(tmp_path):
    written = build_spec(tmp_path)
    assert [p.name for p in written] == list(SPEC_FILES)
    for name in SPEC_FILES:
        assert (tmp_path / name).read_text() == (REPO / "spec" / name).read_text(), (
            f"spec/{name} is stale: run `python -m nwb_lrconn.extension.spec_builder`"
        )
    assert REPO_SPEC_DIR == REPO / "spec"


def test_builder_command_line(tmp_path, capsys):
    assert main(["--output-dir", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / name) for name in SPEC_FILES]


# Each schema version is pinned to the SHA-256 of its YAML. Changing the YAML without moving
# SPEC_VERSION fails here; a new version adds its line (older lines stay as the record).
SCHEMA_HASHES = {
    "0.2.0": "0ee7f11ff3e489890983d40be531fbc26387290aaeb6fa3e9552cb2d4c8a0153",
    "0.3.0": "e390b7ca404d834bd687f37119ddbf3ec5d0645ae5ff47c962d640a4065d288d",
}


def _yaml_digest() -> str:
    digest = hashlib.sha256()
    for name in SPEC_FILES:
        digest.update((REPO / "spec" / name).read_bytes())
    return digest.hexdigest()


def test_schema_version_moves_only_with_the_yaml():
    text = (REPO / "spec" / SPEC_FILES[0]).read_text()
    namespace = YAML(typ="safe").load(text)["namespaces"][0]
    assert namespace["name"] == "ndx-lrconn"
    assert namespace["version"] == SPEC_VERSION
    assert SPEC_VERSION in SCHEMA_HASHES, f"add SCHEMA_HASHES[{SPEC_VERSION!r}]"
    assert SCHEMA_HASHES[SPEC_VERSION] == _yaml_digest(), (
        f"the ndx-lrconn YAML changed but its version is still {SPEC_VERSION}: bump SPEC_VERSION "
        f"in spec_builder.py, regenerate, and pin the new hash {_yaml_digest()}"
    )
    assert len(set(SCHEMA_HASHES.values())) == len(SCHEMA_HASHES), "two versions, one YAML"
    assert spec_path() == REPO / "spec" / SPEC_FILES[0]  # editable install: repo fallback


def test_top_package_stays_light_and_extension_loads_the_namespace():
    code = (
        "import sys, nwb_lrconn\n"
        "assert 'pynwb' not in sys.modules and 'hdmf' not in sys.modules\n"
        "import nwb_lrconn.extension\n"
        "from pynwb import available_namespaces\n"
        "assert 'ndx-lrconn' in available_namespaces()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_wheel_ships_the_spec_and_loads_it(tmp_path):
    pytest.importorskip("build")
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-isolation"]
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", *isolation, "-o", str(dist), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in SPEC_FILES:
            packaged = archive.read(f"nwb_lrconn/spec/{name}").decode()
            assert packaged == (REPO / "spec" / name).read_text()
        assert not [n for n in archive.namelist() if n.startswith("spec/")]
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
         str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    code = (
        "import json, nwb_lrconn, nwb_lrconn.extension as ext\n"
        "from pynwb import available_namespaces\n"
        "print(json.dumps({'package': nwb_lrconn.__file__, 'spec': str(ext.spec_path()),\n"
        "                  'loaded': 'ndx-lrconn' in available_namespaces()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "PYNWB_NO_CACHE_DIR": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["package"] == str(site / "nwb_lrconn" / "__init__.py")
    assert found["spec"] == str(site / "nwb_lrconn" / "spec" / SPEC_FILES[0])
    assert found["loaded"]
