"""Shared fixtures: the real-data folder (env var NWB_LRCONN_DATA, default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    env = os.environ.get("NWB_LRCONN_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data")


@pytest.fixture(autouse=True)
def _quiet_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNWB_NO_CACHE_DIR", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder of shared real data; tests using it skip with a reason when it is absent."""
    path = _data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder not found at {path} (set NWB_LRCONN_DATA)")
    return path


@pytest.fixture(scope="session")
def data_file(data_dir: Path):
    """Return a function mapping a path relative to the data folder to a path, or skip."""

    def get(relative: str) -> Path:
        path = data_dir / relative
        if not path.exists():
            pytest.skip(f"real data file not found: {path}")
        return path

    return get
