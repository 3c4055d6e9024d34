"""Derived results files: a new, small NWB file carrying the source session's identity.

A derived file holds only the results, plus what makes it a proper member of the source's
dandiset: the source's Subject, session id and session start time (so latent timestamps stay on
the source clock), a fresh identifier (the source's is kept in the provenance), the versions of
the software that made it, and external links to the source objects it describes.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from pynwb import NWBFile
from pynwb.file import Subject

from .. import __version__, data

__all__ = [
    "DEFAULT_NAME",
    "derived_nwbfile",
    "derived_file_name",
    "software_versions",
    "modality_of",
    "relative_link_target",
]

DEFAULT_NAME = "lrconn_fit"
"""Default name of a fit group; left out of derived file names."""

_T = TypeVar("_T")
_VERSIONED = ("pynwb", "hdmf", "h5py", "numpy", "scipy", "scikit-learn", "torch")


def software_versions() -> dict[str, str]:
    """Return ``{package: version}`` for nwb_lrconn and the packages its results depend on.

    Versions come from the installed distributions' metadata (nothing is imported).
    """
    out = {"nwb_lrconn": __version__}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _when(text: Any, fallback: _T) -> datetime | _T:
    if isinstance(text, datetime):
        value = text
    else:
        try:
            value = datetime.fromisoformat(str(text))
        except (TypeError, ValueError):
            return fallback
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _subject(fields: dict[str, Any]) -> Subject | None:
    if not fields:
        return None
    kwargs = dict(fields)
    if "date_of_birth" in kwargs:
        kwargs["date_of_birth"] = _when(kwargs["date_of_birth"], None)
        if kwargs["date_of_birth"] is None:
            kwargs.pop("date_of_birth")
    if isinstance(kwargs.get("weight"), (int, float)):
        kwargs["weight"] = float(kwargs["weight"])
    return Subject(**kwargs)


def derived_nwbfile(results: data.Results) -> NWBFile:
    """Return a new NWBFile carrying the identity of the session ``results`` were fitted on.

    Parameters
    ----------
    results : Results
        Uses ``results.provenance.source`` (``session``, ``identifier``, ``path``).

    Returns
    -------
    NWBFile
        With the source's Subject, ``session_id``, ``session_start_time``, experimenter, lab,
        institution, experiment description and keywords when known; a new identifier;
        ``was_generated_by`` listing the software versions. Without a known source session,
        the start time is the creation time.
    """
    source = results.provenance.source
    session = source.session or {}
    created = _when(results.provenance.created, datetime.now(timezone.utc))
    what = f"NWB file {source.identifier!r}" if source.identifier else "an in-memory recording"
    described = session.get("session_description")
    description = (
        f"Low-rank RNN connectivity (nwb_lrconn fit {results.name!r}) derived from {what}"
        + (f": {described}" if described else ".")
    )
    kwargs: dict[str, Any] = {}
    for key in ("session_id", "lab", "institution", "experiment_description"):
        if session.get(key):
            kwargs[key] = str(session[key])
    for key in ("experimenter", "keywords"):
        value = session.get(key)
        if value:
            kwargs[key] = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    subject = _subject(session.get("subject") or {})
    if subject is not None:
        kwargs["subject"] = subject
    versions = software_versions()
    return NWBFile(
        session_description=description,
        identifier=str(uuid.uuid4()),
        session_start_time=_when(session.get("session_start_time"), created),
        file_create_date=created,
        was_generated_by=[[name, version] for name, version in versions.items()],
        source_script=f"nwb_lrconn {__version__}",
        source_script_file_name="nwb_lrconn",
        **kwargs,
    )


def _entity(value: Any) -> str:
    """A DANDI/BIDS entity value: letters, digits and '+' only."""
    return re.sub(r"[^A-Za-z0-9+]", "", str(value))


def modality_of(source: data.SourceInfo) -> str:
    """Return "ophys" for calcium sources (a RoiResponseSeries), else "ecephys"."""
    kind = str(source.selection.get("series_path") or "")
    return "ophys" if kind or "ophys" in source.object_path else "ecephys"


def derived_file_name(source: data.SourceInfo, name: str = DEFAULT_NAME) -> Path:
    """Return the DANDI-layout relative path of the derived file for ``source``.

    ``sub-<subject>/sub-<subject>_ses-<session>_desc-lrconn[-<name>]_<modality>.nwb`` when the
    source has subject and session ids (the name part is left out for the default fit name);
    ``sub-<subject>/sub-<subject>_desc-lrconn...`` with a subject only; otherwise
    ``<source stem>_desc-lrconn[-<name>].nwb``. The same source and name always give the same
    path.
    """
    session = source.session or {}
    subject = _entity((session.get("subject") or {}).get("subject_id") or "")
    session_id = _entity(session.get("session_id") or "")
    desc = "lrconn" if name == DEFAULT_NAME else f"lrconn-{_entity(name)}"
    if subject:
        parts = [f"sub-{subject}"] + ([f"ses-{session_id}"] if session_id else [])
        stem = "_".join(parts + [f"desc-{desc}", modality_of(source)])
        return Path(f"sub-{subject}") / f"{stem}.nwb"
    origin = source.origin or {}
    base = origin.get("asset_path") or source.path or "results"
    stem = _entity(Path(str(base).split("?", 1)[0]).stem) or "results"
    return Path(f"{stem}_desc-{desc}.nwb")


def relative_link_target(
    source: data.SourceInfo, output: Path, local_source: Path | None = None
) -> str | None:
    """Return the file name an external link from ``output`` to the source should use.

    A local source (``local_source``) gives its path relative to the output's folder. A DANDI
    asset gives its path relative to the output's place in the dandiset layout, so the link
    resolves once both files sit in one copy of the dandiset. Other URLs give None (HDF5
    cannot follow them).
    """
    if local_source is not None:
        try:
            return os.path.relpath(Path(local_source).resolve(), output.resolve().parent)
        except ValueError:  # another drive on Windows
            return str(Path(local_source).resolve())
    origin = source.origin or {}
    if origin.get("kind") == "dandi" and origin.get("asset_path"):
        derived = derived_file_name(source)
        return os.path.relpath(str(origin["asset_path"]), str(derived.parent or "."))
    return None
