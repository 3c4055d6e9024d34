"""Add one results group to an existing NWB file without touching anything else in it.

pynwb's append mode rewrites what it read (it migrates ``nwb_version``, retypes tables of older
schema versions and re-encodes strings), so results are never appended through it. Instead the
results are written by pynwb into a small *donor* file, and its fit group is copied into the
target with h5py: only ``processing/<module>/<fit>`` (and the module group and our cached spec
when they are missing) are created. Object references into the target (the unit table's region
column) and links to its objects (the fitted series, the source table) are set afterwards, since
HDF5 cannot copy references across files.
"""

from __future__ import annotations

import h5py

from ._namespace import NAMESPACE

__all__ = ["graft_fit", "FitExistsError"]

_SPEC_LOCATION = ".specloc"


class FitExistsError(ValueError):
    """The target already holds a fit of that name (and replacing was not asked for)."""


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _check_module(target: h5py.File, module_path: str, path: str) -> None:
    module = target[module_path]
    kind = _text(module.attrs.get("neurodata_type", ""))
    if not isinstance(module, h5py.Group) or kind != "ProcessingModule":
        raise ValueError(
            f"{path} has an object at /{module_path} that is not a ProcessingModule "
            f"({kind or type(module).__name__}); choose another module name (--module)."
        )


def _spec_group(handle: h5py.File) -> h5py.Group | None:
    if _SPEC_LOCATION in handle.attrs:
        return handle[handle.attrs[_SPEC_LOCATION]]
    return handle.get("specifications")


def _copy_spec(target: h5py.File, donor: h5py.File) -> None:
    """Cache our namespace in ``target`` unless this version is cached there already."""
    donor_specs = _spec_group(donor)
    if donor_specs is None:  # the results file is written with cache_spec=True
        raise RuntimeError(f"{donor.filename} caches no specifications to copy.")
    ours = donor_specs[NAMESPACE]
    specs = _spec_group(target)
    if specs is None:  # a source written without cached specs: create the standard location
        specs = target.create_group("specifications")
        target.attrs[_SPEC_LOCATION] = specs.ref
    if NAMESPACE not in specs:
        target.copy(ours, specs, name=NAMESPACE)
        return
    for version in ours:
        if version not in specs[NAMESPACE]:
            target.copy(ours[version], specs[NAMESPACE], name=version)


def _set_references(group: h5py.Group, table: h5py.Group | None) -> int:
    """Point every DynamicTableRegion under ``group`` at ``table``; return how many."""
    regions = []

    def visit(_, obj) -> None:
        if isinstance(obj, h5py.Dataset) and (
            _text(obj.attrs.get("neurodata_type", "")) == "DynamicTableRegion"
        ):
            regions.append(obj)

    group.visititems(visit)
    if not regions:
        return 0
    if table is None:
        raise ValueError("The results hold a region column but no source table was given.")
    for dataset in regions:
        dataset.attrs["table"] = table.ref
    return len(regions)


def graft_fit(
    target: h5py.File,
    donor: h5py.File,
    *,
    module_name: str,
    fit_name: str,
    table_path: str | None,
    series_path: str | None,
    replace: bool,
    path: str,
) -> None:
    """Copy ``processing/<module_name>/<fit_name>`` from ``donor`` into ``target``.

    Parameters
    ----------
    target : h5py.File
        The file receiving the fit, open for writing.
    donor : h5py.File
        A file written by pynwb holding the fit (and our cached spec).
    module_name, fit_name : str
        Where the fit lives in both files.
    table_path : str, optional
        Path in ``target`` of the source table the fit's region columns index.
    series_path : str, optional
        Path in ``target`` of the fitted series (linked as ``source_series``).
    replace : bool
        Remove an existing fit of that name first (only that group).
    path : str
        The target's name for messages.

    Raises
    ------
    FitExistsError
        ``target`` holds the fit already and ``replace`` is False.
    ValueError
        The module path holds something that is not a ProcessingModule, or the source table
        or series is missing.
    """
    module_path = f"processing/{module_name}"
    fit_path = f"{module_path}/{fit_name}"
    table = None
    if table_path:
        table = target.get(table_path.strip("/"))
        if not isinstance(table, h5py.Group):
            raise ValueError(f"{path} has no table at /{table_path.strip('/')} to link to.")
    if series_path and series_path.strip("/") not in target:
        raise ValueError(f"{path} has no series at /{series_path.strip('/')} to link to.")
    if "processing" not in target:
        target.create_group("processing")
    if module_path in target:
        _check_module(target, module_path, path)
        if fit_name in target[module_path]:
            if not replace:
                raise FitExistsError(
                    f"{path} already holds a fit named {fit_name!r} in module "
                    f"{module_name!r}; pass --overwrite (overwrite=True) to replace it or choose "
                    "another name (--name)."
                )
            del target[fit_path]
        target.copy(donor[fit_path], target[module_path], name=fit_name)
    else:
        target.copy(donor[module_path], target["processing"], name=module_name)
    fit = target[fit_path]
    _set_references(fit, table)
    if series_path:
        fit["source_series"] = h5py.SoftLink("/" + series_path.strip("/"))
    if table_path and "unit_table" in fit:
        fit["unit_table"]["source_table"] = h5py.SoftLink("/" + table_path.strip("/"))
    _copy_spec(target, donor)
