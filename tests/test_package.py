"""The package root: light to import, and the verbs a user needs one attribute away."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import nwb_lrconn


def test_import_is_light_and_verbs_resolve_on_use():
    code = (
        "import sys, nwb_lrconn\n"
        "heavy = [m for m in ('torch', 'pynwb', 'matplotlib', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert callable(nwb_lrconn.run_file)\n"
        "assert 'torch' not in sys.modules, 'run_file must not pull torch in'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_export_resolves():
    for name in nwb_lrconn.__all__:
        assert getattr(nwb_lrconn, name) is not None, name
    assert set(nwb_lrconn.__all__) <= set(dir(nwb_lrconn))
    from nwb_lrconn.pipeline import run_file

    assert nwb_lrconn.run_file is run_file


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="module 'nwb_lrconn' has no attribute 'fit'"):
        nwb_lrconn.fit  # noqa: B018


def test_package_parses_as_python_3_10():
    # requires-python >= 3.10: later syntax fails here even without a 3.10 interpreter.
    root = Path(nwb_lrconn.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 50
    for path in files:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))
