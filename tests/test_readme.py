"""The README's front door works as written: its commands exist and its Python runs."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_first_lines_give_the_demo_and_the_test_commands():
    first = _blocks("bash")[0].splitlines()
    assert "nwb-lrconn demo" in first[0] and "pytest" in first[1]


def test_python_quickstart_runs_as_written(tmp_path, monkeypatch):
    (code,) = _blocks("python")
    script = tmp_path / "quickstart.py"
    script.write_text(code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert any(p.name.endswith("_ecephys.nwb") for p in tmp_path.iterdir())


def test_the_readme_stays_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 120
