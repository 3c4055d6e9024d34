"""Write :class:`~nwb_lrconn.data.Results` into NWB files, atomically.

Every write goes to a hidden temporary file beside the target (``.<name>.<pid>-<hex>.lrconn-tmp``),
is flushed to disk and read back, and only then renamed over the target with ``os.replace``. A
crash or ``kill -9`` at any moment therefore leaves the target either as it was or complete; the
next write beside it removes temporary files whose writer process has died.
"""

from __future__ import annotations

import shutil
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
from hdmf.common import DynamicTable, DynamicTableRegion
from pynwb import NWBHDF5IO, NWBFile, TimeSeries

from .. import __version__, data
from ._build import build_fit
from ._files import (
    check_nwb_file,
    check_writable_file,
    check_writable_folder,
    fsync_file,
    fsync_folder,
    remove_stale_temps,
    temp_path,
)
from ._namespace import NAMESPACE
from .read import read_results

__all__ = ["write_results", "check_namespace"]


def check_namespace(io: NWBHDF5IO, path: Path) -> None:
    """Refuse an IO whose type map lacks ``ndx-lrconn`` (it would silently drop our data).

    Raises
    ------
    RuntimeError
        When the namespace is not in ``io.manager.namespace_catalog``.
    """
    if NAMESPACE not in io.manager.namespace_catalog.namespaces:
        raise RuntimeError(
            f"The {NAMESPACE} namespace is not loaded in the NWBHDF5IO writing {path}: import "
            "nwb_lrconn.extension before opening the file, or the results would be lost."
        )


def _open(tmp: Path, mode: str) -> NWBHDF5IO:
    """Open the temporary file (whose name deliberately does not end in '.nwb')."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The file path provided", category=UserWarning)
        return NWBHDF5IO(str(tmp), mode)


def _object_paths(nwbfile, manager) -> dict[str, object]:
    paths = {}
    for obj in nwbfile.objects.values():
        builder = manager.get_builder(obj)  # None for objects not read from the file
        if builder is not None:
            paths[builder.path.split("/", 1)[-1]] = obj
    return paths


def _source_objects(nwbfile, manager, results: data.Results, path: Path, unit_rows):
    source = results.provenance.source
    if source.identifier and source.identifier != nwbfile.identifier:
        raise ValueError(
            f"Results {results.name!r} were fitted on the NWB file with identifier "
            f"{source.identifier!r}, but {path} has identifier {nwbfile.identifier!r}."
        )
    paths = _object_paths(nwbfile, manager)
    region = None
    if source.table_path:
        table = paths.get(source.table_path.strip("/"))
        if not isinstance(table, DynamicTable):
            found = sorted(p for p, obj in paths.items() if isinstance(obj, DynamicTable))
            raise KeyError(
                f"No table at {source.table_path!r} in {path} (SourceInfo.table_path); "
                f"found {found}."
            )
        rows = _unit_rows(table, results.fit.unit_ids, unit_rows, path, source.table_path)
        region = DynamicTableRegion(
            name="units",
            data=rows,
            table=table,
            description=f"Rows of {source.table_path} that are the rows of M and K.",
        )
    series = paths.get(source.object_path.strip("/")) if source.object_path else None
    return region, series if isinstance(series, TimeSeries) else None


def _unit_rows(table, unit_ids, unit_rows, path: Path, table_path: str) -> np.ndarray:
    n_rows = len(table)
    if unit_rows is None:
        ids = np.asarray(table.id[:])
        position = {value: row for row, value in enumerate(ids.tolist())}
        missing = [u for u in np.asarray(unit_ids).tolist() if u not in position]
        if missing:
            raise ValueError(
                f"Unit ids {missing[:10]} of the fit are not ids of {table_path} in {path} "
                f"(its {n_rows} ids run from {ids.min() if n_rows else None} to "
                f"{ids.max() if n_rows else None}); pass unit_rows=... explicitly."
            )
        return np.array([position[u] for u in np.asarray(unit_ids).tolist()], dtype=np.int64)
    rows = np.asarray(unit_rows)
    if rows.shape != (len(unit_ids),) or rows.dtype.kind not in "iu":
        raise ValueError(
            f"unit_rows must be integers of shape ({len(unit_ids)},) (one per fitted unit); "
            f"got {rows.dtype} of shape {rows.shape}."
        )
    bad = rows[(rows < 0) | (rows >= n_rows)]
    if bad.size:
        raise IndexError(
            f"unit_rows {bad[:10].tolist()} are out of range for {table_path} in {path}, which "
            f"has {n_rows} rows."
        )
    return rows.astype(np.int64)


def _add_results(nwbfile, manager, results, path, *, module_name: str, unit_rows) -> None:
    """Add the fit to ``processing[module_name]``; ``manager=None``: no links to the source."""
    if module_name in nwbfile.processing:
        module = nwbfile.processing[module_name]
    else:
        module = nwbfile.create_processing_module(
            name=module_name,
            description="Low-rank RNN connectivity fits (nwb_lrconn, ndx-lrconn extension).",
        )
    region = series = None
    if manager is not None:
        region, series = _source_objects(nwbfile, manager, results, path, unit_rows)
    module.add(build_fit(results, units=region, source_series=series))


def _fit_exists(path: Path, module_name: str, name: str) -> bool:
    with h5py.File(path, "r") as handle:
        return f"processing/{module_name}/{name}" in handle


def _fresh_nwbfile(results: data.Results) -> NWBFile:
    try:
        start = datetime.fromisoformat(results.provenance.created)
    except ValueError:
        start = datetime.now(timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return NWBFile(
        session_description=f"nwb_lrconn results {results.name!r} (no source recording file).",
        identifier=str(uuid.uuid4()),
        session_start_time=start,
        was_generated_by=[["nwb_lrconn", __version__]],
    )


def _write_fresh(tmp: Path, results, *, module_name: str) -> None:
    nwbfile = _fresh_nwbfile(results)
    with _open(tmp, "w") as io:
        check_namespace(io, tmp)
        _add_results(nwbfile, None, results, tmp, module_name=module_name, unit_rows=None)
        io.write(nwbfile)


def _append(source: Path, tmp: Path, results, *, module_name: str, unit_rows) -> None:
    shutil.copyfile(source, tmp)
    with _open(tmp, "a") as io:
        check_namespace(io, tmp)
        nwbfile = io.read()
        _add_results(
            nwbfile, io.manager, results, source, module_name=module_name, unit_rows=unit_rows
        )
        io.write(nwbfile)


def _export_replacing(source: Path, tmp: Path, results, *, module_name: str, unit_rows) -> None:
    with NWBHDF5IO(str(source), "r") as src_io:
        nwbfile = src_io.read()
        nwbfile.processing[module_name].data_interfaces.pop(results.name)
        _add_results(
            nwbfile, src_io.manager, results, source, module_name=module_name, unit_rows=unit_rows
        )
        with _open(tmp, "w") as out_io:
            check_namespace(out_io, tmp)
            out_io.export(src_io=src_io, nwbfile=nwbfile)


def _verify(tmp: Path, results: data.Results, module_name: str) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The file path provided", category=UserWarning)
        back = read_results(tmp, results.name, module_name=module_name)
    fit, mask = results.fit, results.fit.latent_mask
    same = (
        np.array_equal(back.fit.M, fit.M, equal_nan=True)
        and np.array_equal(back.fit.K, fit.K, equal_nan=True)
        and np.array_equal(back.fit.latent_mask, mask)
        and np.array_equal(back.fit.latents[mask], fit.latents[mask], equal_nan=True)
    )
    with h5py.File(tmp, "r") as handle:
        cached = f"specifications/{NAMESPACE}" in handle
    if not (same and cached):
        raise RuntimeError(
            f"Read-back check of {tmp} failed (values equal: {same}, {NAMESPACE} spec cached: "
            f"{cached}); the target was left untouched."
        )


def write_results(
    results: data.Results,
    source: str | Path | None,
    output: str | Path | None = None,
    *,
    in_place: bool = False,
    overwrite: bool = False,
    module_name: str = "lrconn",
    unit_rows: np.ndarray | None = None,
) -> Path:
    """Write ``results`` as one ``LowRankRNNFit`` group into an NWB file.

    The fit goes to ``processing[module_name][results.name]``, with a ``DynamicTableRegion`` into
    the source table (``results.provenance.source.table_path``) and a link to the fitted series
    when ``source.object_path`` is a TimeSeries (e.g. a RoiResponseSeries).

    Parameters
    ----------
    results : Results
        What to write.
    source : str, Path or None
        The recording the results were fitted on. ``None`` writes a fresh NWB file holding only
        the results (no links; for tests and demos: DANDI would also require a Subject).
    output : str, Path, optional
        The new file. Defaults to ``<source stem>_lrconn.nwb`` beside the source. Must differ
        from ``source`` unless ``in_place=True``.
    in_place : bool, default: False
        Add the results to ``source`` itself (atomically: temporary copy, fsync, rename).
    overwrite : bool, default: False
        Replace a fit of the same name (the file is rewritten without the old group), or an
        existing ``output`` file.
    module_name : str, default: "lrconn"
        Processing module holding the fits.
    unit_rows : ndarray of shape (n_units,), int, optional
        Rows of the source table that are the rows of M and K (``Recording.unit_rows``). By
        default they are found by matching ``results.fit.unit_ids`` to the table's ids.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    FileNotFoundError
        Missing source file or output folder.
    ValueError
        Source not HDF5, truncated, or not NWB; output equal to source without ``in_place``;
        fit name already present without ``overwrite``; source identifier mismatch; unit ids
        not in the source table.
    PermissionError
        Read-only source with ``in_place=True``; unwritable output folder.
    FileExistsError
        ``output`` exists and ``overwrite`` is False.
    KeyError
        ``SourceInfo.table_path`` not found in the source.
    IndexError
        ``unit_rows`` out of range for the source table.
    """
    if not isinstance(results, data.Results):
        raise TypeError(
            f"results must be a nwb_lrconn.data.Results; got {type(results).__name__}."
        )
    if source is None:
        if in_place or output is None:
            raise ValueError(
                "With source=None, pass output=... (a new file) and leave in_place=False; got "
                f"output={output!r}, in_place={in_place}."
            )
        target = Path(output)
    else:
        source = Path(source)
        check_nwb_file(source)
        if in_place:
            if output is not None and Path(output).resolve() != source.resolve():
                raise ValueError(
                    f"in_place=True writes into the source {source}; do not also pass a "
                    f"different output ({output})."
                )
            target = source
            check_writable_file(source)
        else:
            target = (
                Path(output)
                if output is not None
                else source.with_name(f"{source.stem}_lrconn.nwb")
            )
            if target.resolve() == source.resolve():
                raise ValueError(
                    f"output {target} is the source file; pass in_place=True to add the results "
                    "to it, or choose another output."
                )
    check_writable_folder(target.parent.resolve())
    if target != source and target.exists() and not overwrite:
        raise FileExistsError(f"Output file already exists: {target} (pass overwrite=True).")
    replacing = source is not None and _fit_exists(source, module_name, results.name)
    if replacing and not overwrite:
        raise ValueError(
            f"{source} already holds a fit named {results.name!r} in module {module_name!r}; "
            "pass overwrite=True to replace it or choose another Results.name."
        )

    final = target.resolve()
    remove_stale_temps(final)
    tmp = temp_path(final)
    try:
        if source is None:
            _write_fresh(tmp, results, module_name=module_name)
        elif replacing:
            _export_replacing(source, tmp, results, module_name=module_name, unit_rows=unit_rows)
        else:
            _append(source, tmp, results, module_name=module_name, unit_rows=unit_rows)
        fsync_file(tmp)
        _verify(tmp, results, module_name)
        if final.exists():
            shutil.copymode(final, tmp)
        tmp.replace(final)
        fsync_folder(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
