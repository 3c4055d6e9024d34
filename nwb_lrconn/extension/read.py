"""Read ``ndx-lrconn`` results back into the plain dataclasses of :mod:`nwb_lrconn.data`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
from pynwb import NWBHDF5IO

from .. import data
from ..io.streaming import quiet_orientation_warnings
from ._files import check_nwb_file
from ._namespace import NAMESPACE, SPEC_VERSION
from .containers import LowRankRNNFit, copy_array

__all__ = ["list_results", "read_results", "fit_to_results"]


def _fits(nwbfile, module_name: str) -> dict:
    if module_name not in nwbfile.processing:
        return {}
    module = nwbfile.processing[module_name]
    return {
        name: obj
        for name, obj in module.data_interfaces.items()
        if getattr(obj, "neurodata_type", None) == "LowRankRNNFit"
    }


# Older schemas whose files this version reads unchanged (each later one only added optional
# groups: 0.3.0 the joint-fit summary).
_READABLE_SCHEMAS = ("0.2.0",)


def _check_schema(path: Path, module_name: str) -> None:
    """Refuse fits written with an older, incompatible ndx-lrconn schema, in plain words."""
    with h5py.File(path, "r") as handle:
        cached = handle.get(f"specifications/{NAMESPACE}")
        versions = sorted(cached) if isinstance(cached, h5py.Group) else []
        has_fits = f"processing/{module_name}" in handle
    if has_fits and versions and not set(versions) & {SPEC_VERSION, *_READABLE_SCHEMAS}:
        if max(map(_version_key, versions)) > _version_key(SPEC_VERSION):
            return  # newer schemas only add optional fields; read what we know
        raise ValueError(
            f"{path} holds fits written with the {NAMESPACE} schema {', '.join(versions)}, "
            f"which this version of nwb_lrconn (schema {SPEC_VERSION}) cannot read; fit the "
            "recording again."
        )


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in text.split("."))


@contextmanager
def _opened_fits(path: str | Path, module_name: str) -> Iterator[tuple[Path, dict]]:
    path = Path(path)
    check_nwb_file(path)
    _check_schema(path, module_name)
    with NWBHDF5IO(str(path), "r") as io:
        with quiet_orientation_warnings():  # a derived file links to the source's series
            nwbfile = io.read()
        yield path, _fits(nwbfile, module_name)


def _pick(path: Path, fits: dict, name: str | None, module_name: str):
    if not fits:
        raise KeyError(f"{path} holds no fits in processing module {module_name!r}.")
    if name is None:
        if len(fits) != 1:
            raise ValueError(
                f"{path} holds {len(fits)} fits in {module_name!r} ({sorted(fits)}); "
                "pass name=... to choose one."
            )
        name = next(iter(fits))
    if name not in fits:
        raise KeyError(
            f"{path} has no fit named {name!r} in module {module_name!r}; found {sorted(fits)}."
        )
    return fits[name]


def list_results(path: str | Path, *, module_name: str = "lrconn") -> list[str]:
    """Return the sorted names of the fits stored in ``processing[module_name]``.

    Parameters
    ----------
    path : str or Path
        NWB file.
    module_name : str, default: "lrconn"
        Processing module holding the fits.

    Returns
    -------
    list of str
        Empty when the module does not exist.

    Raises
    ------
    FileNotFoundError, ValueError
        When ``path`` is missing, is not a complete NWB file, or holds fits of an older schema.
    """
    with _opened_fits(path, module_name) as (_, fits):
        return sorted(fits)


def read_results(
    path: str | Path, name: str | None = None, *, module_name: str = "lrconn"
) -> data.Results:
    """Read one fit and everything stored with it.

    Parameters
    ----------
    path : str or Path
        NWB file written by :func:`~nwb_lrconn.extension.write_results`.
    name : str, optional
        Name of the fit; may be omitted when the module holds exactly one.
    module_name : str, default: "lrconn"
        Processing module holding the fits.

    Returns
    -------
    Results
        Plain dataclasses; every array is copied into memory and the file is closed.

    Raises
    ------
    FileNotFoundError, ValueError
        When ``path`` is missing, is not a complete NWB file, or holds fits of an older schema.
    KeyError
        When the module or the named fit does not exist (the message lists what does).
    ValueError
        When ``name`` is omitted and the module holds several fits.
    """
    with _opened_fits(path, module_name) as (path, fits):
        return fit_to_results(_pick(path, fits, name, module_name))


def read_unit_table(
    path: str | Path,
    name: str | None = None,
    *,
    module_name: str = "lrconn",
    join_source: bool = False,
):
    """Return the per-unit table of one fit as a pandas DataFrame, one row per fitted unit.

    Parameters
    ----------
    path : str or Path
        NWB file holding the fit (a derived file, a copy, or the source itself).
    name : str, optional
        Name of the fit; may be omitted when the module holds exactly one.
    module_name : str, default: "lrconn"
        Processing module holding the fits.
    join_source : bool, default: False
        Also add the source table's columns (e.g. the Units table's ``location`` or
        ``quality``) for each unit, prefixed ``source_``. The source table is reached through
        the region column, or in a derived file through its external link, which resolves
        only while the source file is reachable.

    Returns
    -------
    pandas.DataFrame
        Indexed by row; columns ``source_row``, ``unit_id``, ``m``, ``k`` (one array per row),
        ``d``, readout, ``quality``, ``identifiability`` (when computed).

    Raises
    ------
    FileNotFoundError
        ``join_source=True`` but the source table cannot be reached.
    """
    with _opened_fits(path, module_name) as (path, fits):
        table = _pick(path, fits, name, module_name).unit_table
        frame = table.to_dataframe(index=True)
        if "unit" in frame.columns:
            frame = frame.drop(columns="unit")
        if not join_source:
            return frame
        source = table.source_table
        if source is None:
            raise FileNotFoundError(
                f"The source table of the fit in {path} cannot be reached (the link is absent or "
                "its file is missing); place the source file where the link points, or read "
                "without join_source."
            )
        exclude = {c for c in source.colnames if c in ("electrodes", "electrode_group")}
        extra = source.to_dataframe(exclude=exclude).iloc[frame["source_row"].to_numpy()]
        extra = extra.add_prefix("source_").reset_index().rename(columns={"id": "source_id"})
        extra.index = frame.index
        return frame.join(extra)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _json_attr(container, name: str) -> dict:
    value = getattr(container, name, None)
    return {} if value is None else json.loads(_text(value))


def _fit(container: LowRankRNNFit) -> data.LowRankFit:
    trial_start_times = copy_array(container.trial_start_times).astype(np.float64)
    latents, mask = container.latents.to_padded(trial_start_times.size)
    return data.LowRankFit(
        M=copy_array(container.M),
        K=copy_array(container.K),
        B=copy_array(container.B),
        d=copy_array(container.d),
        readout_gain=copy_array(container.readout_gain),
        readout_offset=copy_array(container.readout_offset),
        noise_std=copy_array(container.noise_std),
        rank=int(container.rank),
        nonlinearity=_text(container.nonlinearity),
        alpha=float(container.alpha),
        bin_width=float(container.bin_width),
        observation=_text(container.observation),
        latents=latents,
        latent_mask=mask,
        trial_start_times=trial_start_times,
        loss_history=copy_array(container.loss_history),
        metrics=container.metrics.to_dict(),
        unit_quality=copy_array(container.unit_quality),
        train_trials=copy_array(container.train_trials),
        test_trials=copy_array(container.test_trials),
        unit_ids=copy_array(container.unit_ids),
        calcium_decay=float(container.calcium_decay),
        unit_rows=copy_array(container.unit_table["source_row"].data).astype(np.int64),
    )


def _provenance(container) -> data.Provenance:
    seed = container.random_seed
    return data.Provenance(
        software_version=_text(container.software_version),
        config_json=_text(container.config_json),
        random_seed=None if seed is None else int(seed),
        source=data.SourceInfo(
            identifier=_text(container.source_identifier),
            path=_text(container.source_path),
            object_path=_text(container.source_object_path),
            table_path=_text(container.source_table_path),
            selection=json.loads(_text(container.source_selection)),
            session=_json_attr(container, "source_session"),
            origin=_json_attr(container, "source_origin"),
        ),
        created=_text(container.created),
    )


def _posterior(container) -> data.PosteriorCovariance:
    def optional(value):
        return None if value is None else copy_array(value)

    return data.PosteriorCovariance(
        mean=copy_array(container.mean),
        layout=data.PosteriorCovariance.layout_from_json(_text(container.layout)),
        prior_precision=float(container.prior_precision),
        observation=_text(container.observation),
        structure=_text(container.structure),
        eigenvalues=copy_array(container.eigenvalues),
        eigenvectors=copy_array(container.eigenvectors),
        covariance=optional(container.covariance),
        unit_indices=optional(container.unit_indices),
        unit_blocks=optional(container.unit_blocks),
    )


def _degeneracy(container) -> data.DegeneracyReport:
    return data.DegeneracyReport(
        spectrum=copy_array(container.spectrum),
        gauge_basis=copy_array(container.gauge_basis),
        n_constrained=int(container.n_constrained),
        n_degenerate=int(container.n_degenerate),
        n_gauge=int(container.n_gauge),
        n_total=int(container.n_total),
        threshold=float(container.threshold),
        threshold_rule=_text(container.threshold_rule),
        phi_singular_values=copy_array(container.phi_singular_values),
        phi_effective_rank=int(container.phi_effective_rank),
        identifiable=bool(container.identifiable),
        verdict=_text(container.verdict),
        unit_scores=copy_array(container.unit_scores),
    )


def _model_fields(container) -> dict[str, str]:
    """``model``/``reason`` when the dataclass has those fields and the file holds them."""
    fields = {f.name for f in dataclasses.fields(data.ConnectivityDistribution)}
    out = {}
    for key, attr in (("model", "model"), ("reason", "model_reason")):
        value = getattr(container, attr, None)
        if key in fields and value is not None:
            out[key] = _text(value)
    return out


def _distribution(container) -> data.ConnectivityDistribution:
    return data.ConnectivityDistribution(
        flow_a_parameters=container.flow_a_parameters.to_dict(),
        flow_b_parameters=container.flow_b_parameters.to_dict(),
        architecture=json.loads(_text(container.architecture)),
        sigma=float(container.sigma),
        ridge_lambda=float(container.ridge_lambda),
        n_virtual_units=int(container.n_virtual_units),
        training_curves=container.training_curves.to_dict(),
        samples_z=copy_array(container.samples_z),
        samples_k=copy_array(container.samples_k),
        validation_metrics=container.validation.to_dict(),
        **_model_fields(container),
    )


def _joint(container) -> data.JointSummary:
    table = container.sessions

    def column(name: str) -> np.ndarray:
        return copy_array(table[name].data)

    optional: dict = {}
    if container.pooled_distribution is not None:
        optional["pooled"] = _distribution(container.pooled_distribution)
        if "flagged" in table.colnames:
            optional["flagged"] = tuple(int(s) for s in np.flatnonzero(column("flagged")))
        if "floor" in table.colnames:
            optional["floor"] = column("floor").astype(np.float64)
    for key in ("dissimilarity", "symmetry"):
        if getattr(container, key) is not None:
            optional[key] = copy_array(getattr(container, key))
    for key in ("note", "pooled_reason"):
        if getattr(container, key) is not None:
            optional[key] = _text(getattr(container, key))
    return data.JointSummary(
        session=int(container.session_index),
        reference=int(container.reference_session),
        sources=tuple(str(v) for v in column("source")),
        identifiers=tuple(str(v) for v in column("identifier")),
        n_units=column("n_units").astype(np.int64),
        n_trials=column("n_trials").astype(np.int64),
        joint_log_likelihood=column("joint_log_likelihood").astype(np.float64),
        separate_log_likelihood=column("separate_log_likelihood").astype(np.float64),
        difference=column("difference").astype(np.float64),
        stderr=column("stderr").astype(np.float64),
        worse=column("worse").astype(bool),
        network_M=copy_array(container.network_M),
        network_K=copy_array(container.network_K),
        network_B=copy_array(container.network_B),
        network_d=copy_array(container.network_d),
        gauge_note=_text(container.gauge_note),
        **optional,
    )


def fit_to_results(container: LowRankRNNFit) -> data.Results:
    """Convert a ``LowRankRNNFit`` container (read from a file) into :class:`Results`.

    Parameters
    ----------
    container : LowRankRNNFit
        The fit group; its file must still be open.

    Returns
    -------
    Results
        Every array copied into memory.
    """
    return data.Results(
        name=container.name,
        fit=_fit(container),
        provenance=_provenance(container.provenance),
        posterior=None if container.posterior is None else _posterior(container.posterior),
        degeneracy=None if container.degeneracy is None else _degeneracy(container.degeneracy),
        distribution=(
            None if container.distribution is None else _distribution(container.distribution)
        ),
        joint=None if getattr(container, "joint", None) is None else _joint(container.joint),
    )
