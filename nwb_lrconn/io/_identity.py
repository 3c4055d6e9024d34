"""The identity of a recorded session (subject, session ids and times), read from its NWB file.

Derived files written from a recording carry this identity, so it is captured while the source
is open and travels in :attr:`nwb_lrconn.data.SourceInfo.session`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SUBJECT_FIELDS", "session_identity", "plain_value"]

SUBJECT_FIELDS = (
    "subject_id",
    "species",
    "sex",
    "age",
    "age__reference",
    "date_of_birth",
    "description",
    "genotype",
    "strain",
    "weight",
)
"""Fields of ``pynwb.file.Subject`` copied into derived files (when set)."""


def plain_value(value: Any) -> Any:
    """Return a JSON-friendly value: text for bytes, ISO 8601 for datetimes, lists for arrays."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "shape") and not isinstance(value, np.ndarray):  # lazy h5py dataset
        value = value[()]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (np.ndarray, list, tuple)):
        return [plain_value(v) for v in np.asarray(value, dtype=object).ravel().tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def session_identity(nwbfile: Any) -> dict[str, Any]:
    """Return the identity of the session held by ``nwbfile`` as a JSON-serialisable dict.

    Parameters
    ----------
    nwbfile : pynwb.NWBFile
        An open file.

    Returns
    -------
    dict
        ``session_id``, ``session_start_time`` (ISO 8601), ``session_description``,
        ``nwb_version``, ``experimenter``, ``lab``, ``institution``,
        ``experiment_description``, ``keywords`` (each only when set) and
        ``subject``: the set fields of :data:`SUBJECT_FIELDS` (empty when the file has no
        Subject).
    """
    out: dict[str, Any] = {}
    for key in (
        "session_id",
        "session_start_time",
        "session_description",
        "experimenter",
        "lab",
        "institution",
        "experiment_description",
        "keywords",
    ):
        value = getattr(nwbfile, key, None)
        if value is not None and not (isinstance(value, (tuple, list)) and not value):
            out[key] = plain_value(value)
    version = getattr(nwbfile, "nwb_version", None)
    if version is None:
        io = nwbfile.get_read_io() if hasattr(nwbfile, "get_read_io") else None
        handle = getattr(io, "_file", None)
        version = handle.attrs.get("nwb_version") if handle is not None else None
    if version is not None:
        out["nwb_version"] = plain_value(version)
    subject = getattr(nwbfile, "subject", None)
    fields: dict[str, Any] = {}
    if subject is not None:
        for key in SUBJECT_FIELDS:
            value = getattr(subject, key, None)
            if value is not None:
                fields[key] = plain_value(value)
    out["subject"] = fields
    return out
