"""Every tutorial runs at toy size (NWB_LRCONN_TUTORIAL_FAST=1) and writes its figures."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
SCRIPTS = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
# Tutorials on shared real data: (folder under the data directory) they need.
NEEDS_DATA = {
    "02_head_direction_cells": "peyrache2015-adn-hd-19cells",
    "03_fly_compass_calcium": "turner-evans2017-fly-central-complex",
    "07_dandi_to_derived_file": "dandi-000207-zheng2022-human-mtl",
}
# Tutorials that stream from DANDI: served by a local mock archive (asset path: data file).
MOCK_DANDI = {
    "07_dandi_to_derived_file": {
        "sub-4/sub-4_ses-4_ecephys+image.nwb": (
            "dandi-000207-zheng2022-human-mtl/sub-4_ses-4_ecephys+image.nwb"
        )
    }
}


def test_there_are_tutorials():
    assert len(SCRIPTS) >= 7


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_tutorial_runs_and_writes_figures(script: Path, tmp_path, monkeypatch, request):
    if script.stem in NEEDS_DATA:
        request.getfixturevalue("data_file")(NEEDS_DATA[script.stem])
        data_dir = request.getfixturevalue("data_dir")
        monkeypatch.setenv("NWB_LRCONN_DATA", str(data_dir))
    if script.stem in MOCK_DANDI:
        data_dir = request.getfixturevalue("data_dir")
        assets = {path: data_dir / file for path, file in MOCK_DANDI[script.stem].items()}
        server = request.getfixturevalue("mock_dandi")(assets)
        monkeypatch.setenv("NWB_LRCONN_DANDI_INSTANCE", server.api_url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NWB_LRCONN_TUTORIAL_FAST", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    runpy.run_path(str(script), run_name="__main__")
    pngs = sorted(tmp_path.glob("*.png"))
    assert pngs, f"{script.name} wrote no figure"
    for png in pngs:
        assert png.stat().st_size > 5_000, f"{png.name} looks empty"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
