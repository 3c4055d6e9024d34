"""Locate and load the ``ndx-lrconn`` namespace YAML."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pynwb import available_namespaces, load_namespaces

from .spec_builder import NAMESPACE, SPEC_VERSION

__all__ = ["NAMESPACE", "SPEC_VERSION", "spec_path", "load_namespace"]


def spec_path() -> Path:
    """Return the path of ``ndx-lrconn.namespace.yaml``.

    The installed wheel holds it in ``nwb_lrconn/spec``; a source checkout (editable install)
    holds it in the repository's ``spec/``.

    Raises
    ------
    FileNotFoundError
        When neither location has the file.
    """
    name = f"{NAMESPACE}.namespace.yaml"
    packaged = Path(str(files("nwb_lrconn") / "spec" / name))
    if packaged.is_file():
        return packaged
    repo = Path(__file__).resolve().parents[2] / "spec" / name
    if repo.is_file():
        return repo
    raise FileNotFoundError(
        f"The {NAMESPACE} namespace file was found neither at {packaged} nor at {repo}; "
        "regenerate it with `python nwb_lrconn/extension/spec_builder.py`."
    )


def load_namespace() -> Path:
    """Load the ``ndx-lrconn`` namespace into pynwb's type map (once) and return its path."""
    path = spec_path()
    if NAMESPACE not in available_namespaces():
        load_namespaces(str(path))
    return path
