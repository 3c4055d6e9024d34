"""Write :class:`~nwb_lrconn.data.Results` into NWB files, without ever altering a user's data.

Three modes:

- ``"derived"`` (default): a new, small NWB file holding only the results, with the source
  session's identity and external links to the source objects it describes;
- ``"copy"``: a byte-for-byte copy of the source plus the results;
- ``"in-place"``: the results added to the source file itself.

In the last two the results group is copied into the file with h5py (see
:mod:`nwb_lrconn.extension._graft`): nothing outside ``processing/<module>/<fit>`` changes, not
even the file's ``nwb_version``. Every write goes to a hidden temporary file that is flushed and
read back before it is published atomically; writers to one target serialise on a lock (see
:mod:`nwb_lrconn.extension._files`).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import TypeGuard

import h5py
import numpy as np
from pynwb import NWBHDF5IO, NWBFile

from .. import data
from ._build import build_fit
from ._derived import derived_file_name, derived_nwbfile, relative_link_target, software_versions
from ._files import (
    check_free_space,
    check_nwb_file,
    check_output_path,
    check_writable_file,
    fsync_file,
    fsync_folder,
    publish,
    remove_stale_temps,
    same_file,
    target_lock,
    temp_path,
)
from ._graft import FitExistsError, graft_fit
from ._namespace import NAMESPACE
from .read import read_results

__all__ = ["MODES", "write_results", "check_namespace", "default_output", "FitExistsError"]

MODES = ("derived", "copy", "in-place")
"""Write modes of :func:`write_results`."""

log = logging.getLogger(__name__)

_ROOT_KEYS = ("nwb_version", "neurodata_type", "namespace", "object_id")


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
    """Open a temporary file (whose name deliberately does not end in '.nwb')."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The file path provided", category=UserWarning)
        return NWBHDF5IO(str(tmp), mode)


def _is_local(source) -> TypeGuard[str | os.PathLike]:
    from ..io import DandiAsset, is_remote

    if source is None or isinstance(source, DandiAsset) or is_remote(source):
        return False
    return isinstance(source, (str, os.PathLike))


def _local(source: str | os.PathLike | None) -> Path:
    """``source`` as a local path (callers have checked that it is one)."""
    if not _is_local(source):
        raise ValueError(f"{source!r} is not a local file.")
    return Path(source)


def default_output(results: data.Results, source: str | os.PathLike | None, mode: str) -> Path:
    """Where :func:`write_results` writes when no output is given.

    A derived file goes beside a local source, named in the DANDI layout
    (``sub-<subject>_ses-<session>_desc-lrconn[-<name>]_<modality>.nwb``); a copy goes to
    ``<source stem>_lrconn.nwb`` beside the source; in place is the source itself.

    Raises
    ------
    ValueError
        When the source is not a local file (give an output).
    """
    if not _is_local(source):
        raise ValueError(
            f"Give an output file for results of a remote or in-memory source ({source!r})."
        )
    source = Path(source)
    if mode == "in-place":
        return source
    if mode == "copy":
        return source.with_name(f"{source.stem}_lrconn.nwb")
    return source.with_name(derived_file_name(results.provenance.source, results.name).name)


def _given_rows(results: data.Results, unit_rows) -> np.ndarray | None:
    rows = unit_rows if unit_rows is not None else results.fit.unit_rows
    if rows is None:
        return None
    n_units = results.fit.n_units
    rows = np.asarray(rows)
    if rows.shape != (n_units,) or rows.dtype.kind not in "iu":
        raise ValueError(
            f"unit_rows must be integers of shape ({n_units},) (one per fitted unit); got "
            f"{rows.dtype} of shape {rows.shape}."
        )
    return rows.astype(np.int64)


def _table_rows(handle: h5py.File, results: data.Results, rows, path) -> np.ndarray:
    """Rows of the source table for the fitted units (matched by id when not given)."""
    table_path = results.provenance.source.table_path.strip("/")
    table = handle.get(table_path)
    if not isinstance(table, h5py.Group) or "id" not in table:
        found = []
        handle.visititems(
            lambda name, obj: (
                found.append(name)
                if isinstance(obj, h5py.Group) and "id" in obj and "colnames" in obj.attrs
                else None
            )
        )
        raise KeyError(
            f"No table at {table_path!r} in {path} (SourceInfo.table_path); found {found}."
        )
    ids = table["id"][:]
    fitted = np.asarray(results.fit.unit_ids)
    if rows is None:
        position = {value: row for row, value in enumerate(ids.tolist())}
        missing = [u for u in fitted.tolist() if u not in position]
        if missing:
            raise ValueError(
                f"Unit ids {missing[:10]} of the fit are not ids of {table_path} in {path}; "
                "pass unit_rows=... explicitly."
            )
        return np.array([position[u] for u in fitted.tolist()], dtype=np.int64)
    bad = rows[(rows < 0) | (rows >= ids.size)]
    if bad.size:
        raise IndexError(
            f"unit_rows {bad[:10].tolist()} are out of range for {table_path} in {path}, which "
            f"has {ids.size} rows."
        )
    if fitted.dtype.kind in "iuf" and not np.array_equal(ids[rows], fitted):
        raise ValueError(
            f"The fitted unit ids {fitted[:10].tolist()} are not the ids at rows "
            f"{rows[:10].tolist()} of {table_path} in {path} ({ids[rows][:10].tolist()}); "
            "were the results fitted on another file?"
        )
    return rows


def _check_identifier(handle: h5py.File, results: data.Results, path) -> None:
    expected = results.provenance.source.identifier
    found = handle["identifier"][()] if "identifier" in handle else b""
    found = found.decode() if isinstance(found, bytes) else str(found)
    if expected and expected != found:
        raise ValueError(
            f"Results {results.name!r} were fitted on the NWB file with identifier "
            f"{expected!r}, but {path} has identifier {found!r}."
        )


def _series_path(handle: h5py.File, source: data.SourceInfo) -> str | None:
    """The fitted object's path when it is a TimeSeries (calcium), else None."""
    path = source.object_path.strip("/")
    obj = handle.get(path) if path else None
    if not isinstance(obj, h5py.Group) or "data" not in obj:
        return None
    return path if "timestamps" in obj or "starting_time" in obj else None


def _write_donor(donor: Path, results, *, module_name: str, rows, n_table_rows: int) -> None:
    """Write the results (with a stand-in for the source table) into a fresh donor file."""
    from hdmf.common import DynamicTable

    nwbfile = derived_nwbfile(results)
    stand_in = None
    if n_table_rows:
        stand_in = DynamicTable(
            name="source_table",
            description="Stand-in for the source table (its rows are referenced).",
            id=np.arange(n_table_rows),
        )
        nwbfile.create_processing_module("lrconn_stand_in", "stand-in").add(stand_in)
    module = nwbfile.create_processing_module(
        name=module_name,
        description="Low-rank RNN connectivity fits (nwb_lrconn, ndx-lrconn extension).",
    )
    with warnings.catch_warnings():  # the stand-in is deliberately outside the fit's module
        warnings.filterwarnings("ignore", message="The linked table for DynamicTableRegion")
        fit = build_fit(results, unit_rows=rows, table=stand_in, versions=software_versions())
        module.add(fit)
    with _open(donor, "w") as io:
        check_namespace(io, donor)
        io.write(nwbfile)


def _write_derived(tmp: Path, results, *, module_name: str, rows, link_target) -> None:
    nwbfile: NWBFile = derived_nwbfile(results)
    module = nwbfile.create_processing_module(
        name=module_name,
        description="Low-rank RNN connectivity fits (nwb_lrconn, ndx-lrconn extension).",
    )
    module.add(build_fit(results, unit_rows=rows, versions=software_versions()))
    with _open(tmp, "w") as io:
        check_namespace(io, tmp)
        io.write(nwbfile)
    source = results.provenance.source
    if link_target is None:
        return
    with h5py.File(tmp, "r+") as handle:
        fit = handle[f"processing/{module_name}/{results.name}"]
        if source.table_path:
            fit["unit_table"]["source_table"] = h5py.ExternalLink(
                link_target, "/" + source.table_path.strip("/")
            )
        if source.object_path and source.object_path.strip("/") != source.table_path.strip("/"):
            fit["source_series"] = h5py.ExternalLink(
                link_target, "/" + source.object_path.strip("/")
            )


def _graft_into(
    tmp: Path, donor: Path, results, *, module_name: str, rows, replace: bool, path
) -> None:
    """Add the results to ``tmp`` (a byte copy of the source) through a donor file."""
    source = results.provenance.source
    with h5py.File(tmp, "r") as handle:
        _check_identifier(handle, results, path)
        n_rows = 0
        if source.table_path:
            rows = _table_rows(handle, results, rows, path)
            n_rows = int(handle[source.table_path.strip("/")]["id"].shape[0])
        elif rows is None:
            rows = np.arange(results.fit.n_units, dtype=np.int64)
        series = _series_path(handle, source)
    try:
        _write_donor(donor, results, module_name=module_name, rows=rows, n_table_rows=n_rows)
        with h5py.File(tmp, "r+") as target, h5py.File(donor, "r") as donor_file:
            graft_fit(
                target,
                donor_file,
                module_name=module_name,
                fit_name=results.name,
                table_path=source.table_path or None,
                series_path=series,
                replace=replace,
                path=str(path),
            )
    finally:
        donor.unlink(missing_ok=True)


def _root_state(path: Path) -> dict:
    with h5py.File(path, "r") as handle:
        attrs = {k: str(handle.attrs[k]) for k in _ROOT_KEYS if k in handle.attrs}
        return {"attrs": attrs, "keys": sorted(handle.keys())}


def _verify(tmp: Path, results: data.Results, module_name: str, before: dict | None) -> None:
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
        cached = any(
            NAMESPACE in group for group in (handle.get("specifications"),) if group is not None
        )
    kept = True
    if before is not None:
        after = _root_state(tmp)
        kept = after["attrs"] == before["attrs"] and set(before["keys"]) <= set(after["keys"])
    if not (same and cached and kept):
        raise RuntimeError(
            f"Read-back check of {tmp} failed (values equal: {same}, {NAMESPACE} spec cached: "
            f"{cached}, source root unchanged: {kept}); the target was left untouched."
        )


def _fingerprint(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def write_results(
    results: data.Results,
    source: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    *,
    mode: str = "derived",
    overwrite: bool = False,
    module_name: str = "lrconn",
    unit_rows: np.ndarray | None = None,
    lock_timeout: float = 600.0,
    link_from: str | os.PathLike | None = None,
) -> Path:
    """Write ``results`` as one ``LowRankRNNFit`` group (``processing[module_name][name]``).

    Parameters
    ----------
    results : Results
        What to write.
    source : str, path, DandiAsset or None
        The recording the results were fitted on: a local NWB file, a URL or a DANDI asset. A
        derived file links to a local source or a DANDI asset (external links, resolved while
        the source is reachable); ``"copy"`` and ``"in-place"`` need a local source.
    output : str or path, optional
        The new file (``"derived"``, ``"copy"``); see :func:`default_output`. Not used with
        ``"in-place"``.
    mode : {"derived", "copy", "in-place"}, default: "derived"
        A new file with only the results and the source's identity; a copy of the source
        plus the results; or the results added to the source itself.
    overwrite : bool, default: False
        Replace an existing output file (only a regular file), or in place an existing fit of
        the same name (only that group is removed; HDF5 does not return its space).
    module_name : str, default: "lrconn"
        Processing module holding the fits.
    unit_rows : ndarray of shape (n_units,), int, optional
        Rows of the source table that are the rows of M and K; default
        ``results.fit.unit_rows``.
    lock_timeout : float, default: 600
        Seconds to wait while another process writes the same target.
    link_from : str or path, optional
        Folder from which the derived file will be read, when it is written elsewhere first
        (a batch writes into scratch space): the external links to a local source are made
        relative to it. Default: the output's folder.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        Missing source or output folder, a folder given as output, read-only targets.
    FileExistsError
        ``output`` exists without ``overwrite``, is not a regular file, or appeared while
        writing.
    FitExistsError
        In place: the source holds a fit of that name and ``overwrite`` is False.
    ValueError
        Bad ``mode``; a remote source with ``"copy"``/``"in-place"``; the output is the
        source; the source is not NWB; identifier or unit ids that do not match the source.
    KeyError, IndexError
        The source table is missing, or ``unit_rows`` fall outside it.
    """
    if not isinstance(results, data.Results):
        raise TypeError(
            f"results must be a nwb_lrconn.data.Results; got {type(results).__name__}."
        )
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}; got {mode!r}.")
    if not isinstance(module_name, str) or not module_name or "/" in module_name:
        raise ValueError(f"module_name must be a non-empty name without '/'; got {module_name!r}.")
    if mode != "derived" and not _is_local(source):
        raise ValueError(
            f"mode={mode!r} needs a local source file (got {source!r}); a remote or in-memory "
            "recording gets a derived file."
        )
    if _is_local(source):
        check_nwb_file(source)
        source = Path(source)
    local_source = source if _is_local(source) else None
    if mode == "in-place":
        source = _local(source)
        if output is not None and not same_file(output, source):
            raise ValueError(
                f"mode='in-place' writes into the source {source}; do not also pass a different "
                f"output ({output})."
            )
        check_writable_file(source)
        target = source.resolve()
    else:
        target = Path(output) if output is not None else default_output(results, source, mode)
        check_output_path(target, overwrite=overwrite, source=local_source)
    rows = _given_rows(results, unit_rows)
    final = target.absolute()
    if mode != "derived":
        check_free_space(final.parent, 2 * os.path.getsize(_local(source)), f"a copy of {source}")
    with target_lock(final, timeout=lock_timeout):
        remove_stale_temps(final)
        if mode != "in-place":  # re-checked under the lock: another writer may have finished
            check_output_path(target, overwrite=overwrite, source=local_source)
        tmp = temp_path(final)
        try:
            before = fingerprint = None
            if mode == "derived":
                link = None
                if _is_local(source) and results.provenance.source.table_path:
                    with h5py.File(source, "r") as handle:
                        _check_identifier(handle, results, source)
                        rows = _table_rows(handle, results, rows, source)
                if rows is None:
                    rows = np.arange(results.fit.n_units, dtype=np.int64)
                if source is not None:
                    seen_from = final if link_from is None else Path(link_from) / final.name
                    link = relative_link_target(
                        results.provenance.source,
                        seen_from,
                        Path(source) if _is_local(source) else None,
                    )
                _write_derived(tmp, results, module_name=module_name, rows=rows, link_target=link)
            else:
                local = _local(source)
                with h5py.File(local, "r"):  # HDF5's shared lock: no other writer meanwhile
                    fingerprint = _fingerprint(local)
                    shutil.copyfile(local, tmp)
                before = _root_state(tmp)
                _graft_into(
                    tmp,
                    temp_path(final),
                    results,
                    module_name=module_name,
                    rows=rows,
                    replace=overwrite and mode == "in-place",
                    path=source,
                )
            fsync_file(tmp)
            _verify(tmp, results, module_name, before)
            if fingerprint is not None and _fingerprint(_local(source)) != fingerprint:
                raise RuntimeError(
                    f"{source} changed while the results were being written (another program "
                    "wrote to it); nothing was replaced: run again."
                )
            if mode == "in-place" and os.stat(final).st_nlink > 1:
                log.warning(
                    "%s has %d hard links; the in-place write replaces the file, so the other "
                    "names keep the old content.",
                    final,
                    os.stat(final).st_nlink,
                )
            publish(tmp, final, replace=mode == "in-place" or overwrite)
            fsync_folder(final.parent)
        except Exception as err:
            if _disk_full(err):
                raise OSError(
                    errno.ENOSPC,
                    f"The disk holding {final} is full; nothing was written (the source is "
                    "unchanged): free some space or choose another output.",
                ) from None
            raise
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an error it wraps, as hdmf and h5py do) is ENOSPC."""
    seen: BaseException | None = err
    while seen is not None:
        if getattr(seen, "errno", None) == errno.ENOSPC or "No space left" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
