"""Find NWB objects by their path in the file, e.g. ``"processing/ophys/Fluorescence/EPG"``."""

from __future__ import annotations

from typing import Any

__all__ = ["object_paths", "get_object", "path_of", "file_identifier"]


def object_paths(nwbfile: Any) -> dict[str, Any]:
    """Return ``{path: container}`` for every object of a file opened by :func:`open_nwb`.

    Paths are HDF5 paths without the leading ``/``, e.g. ``"units"``, ``"intervals/trials"``,
    ``"processing/behavior/CompassDirection/head_direction"``; table columns appear as
    ``"<table path>/<column>"``.
    """
    manager = nwbfile.get_read_io().manager
    out: dict[str, Any] = {}
    for container in nwbfile.objects.values():
        builder = manager.get_builder(container)
        if builder is None:
            continue
        path = builder.path
        path = path[len("root/") :] if path.startswith("root/") else path
        out[path.lstrip("/")] = container
    return out


def path_of(nwbfile: Any, container: Any) -> str:
    """Return the path of ``container`` inside ``nwbfile``."""
    builder = nwbfile.get_read_io().manager.get_builder(container)
    path = builder.path
    return path[len("root/") :] if path.startswith("root/") else path


def get_object(
    nwbfile: Any, path: str, types: type | tuple[type, ...], what: str, source: str
) -> Any:
    """Return the object at ``path`` after checking its type.

    Raises
    ------
    KeyError
        When nothing of the requested type lives at ``path``; the message lists the paths of the
        objects of that type that do exist.
    """
    objects = object_paths(nwbfile)
    key = path.strip("/")
    obj = objects.get(key)
    if obj is None or not isinstance(obj, types):
        found = sorted(p for p, o in objects.items() if isinstance(o, types))
        got = "nothing" if obj is None else f"a {type(obj).__name__}"
        raise KeyError(f"No {what} at {path!r} in {source} ({got} there); found {found}.")
    return obj


def file_identifier(nwbfile: Any) -> str:
    """Return the file identifier as a plain string."""
    ident = nwbfile.identifier
    return ident.decode() if isinstance(ident, bytes) else str(ident)
