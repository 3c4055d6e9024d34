"""Dataclasses of :mod:`nwb_lrconn.data` → ``ndx-lrconn`` containers (no file access)."""

from __future__ import annotations

import json

import numpy as np
from hdmf.common import DynamicTableRegion, VectorData

from .. import data
from .containers import (
    DegeneracyAnalysis,
    FitProvenance,
    JointFitSummary,
    JointSessionTable,
    LaplacePosterior,
    LatentTrajectories,
    LoadingDistribution,
    LowRankRNNFit,
    MetricsTable,
    NamedArrays,
    UnitLoadings,
    compressed,
)

__all__ = ["build_fit", "LOSS_COLUMNS"]

LOSS_COLUMNS = ("training_loss", "heldout_loss")
"""Labels of the two columns of ``loss_history``."""


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _provenance(prov: data.Provenance, versions: dict[str, str]) -> FitProvenance:
    src = prov.source
    kwargs = {}
    if prov.random_seed is not None:
        kwargs["random_seed"] = np.int64(prov.random_seed)
    if src.session:
        kwargs["source_session"] = _json(src.to_dict()["session"])
    if src.origin:
        kwargs["source_origin"] = _json(src.to_dict()["origin"])
    if src.origin.get("sha256"):
        kwargs["source_sha256"] = str(src.origin["sha256"])
    if versions:
        kwargs["dependency_versions"] = _json(versions)
    return FitProvenance(
        name="provenance",
        software_version=str(prov.software_version),
        config_json=str(prov.config_json),
        created=str(prov.created),
        source_identifier=src.identifier,
        source_path=src.path,
        source_object_path=src.object_path,
        source_table_path=src.table_path,
        source_selection=_json(src.to_dict()["selection"]),
        **kwargs,
    )


def _posterior(post: data.PosteriorCovariance) -> LaplacePosterior:
    optional = {
        key: compressed(np.asarray(getattr(post, key), dtype))
        for key, dtype in (
            ("covariance", np.float64),
            ("unit_indices", np.int64),
            ("unit_blocks", np.float64),
        )
        if getattr(post, key) is not None
    }
    return LaplacePosterior(
        name="posterior",
        layout=post.layout_json(),
        prior_precision=float(post.prior_precision),
        observation=str(post.observation),
        structure=str(post.structure),
        mean=compressed(post.mean),
        eigenvalues=compressed(np.asarray(post.eigenvalues, np.float64)),
        eigenvectors=compressed(np.asarray(post.eigenvectors, np.float64)),
        **optional,
    )


def _degeneracy(report: data.DegeneracyReport) -> DegeneracyAnalysis:
    return DegeneracyAnalysis(
        name="degeneracy",
        n_constrained=int(report.n_constrained),
        n_degenerate=int(report.n_degenerate),
        n_gauge=int(report.n_gauge),
        n_total=int(report.n_total),
        phi_effective_rank=int(report.phi_effective_rank),
        threshold=float(report.threshold),
        threshold_rule=str(report.threshold_rule),
        identifiable=bool(report.identifiable),
        verdict=str(report.verdict),
        spectrum=compressed(np.asarray(report.spectrum, np.float64)),
        gauge_basis=compressed(np.asarray(report.gauge_basis, np.float64)),
        phi_singular_values=compressed(np.asarray(report.phi_singular_values, np.float64)),
        unit_scores=compressed(np.asarray(report.unit_scores, np.float64)),
    )


def _distribution(
    dist: data.ConnectivityDistribution, *, name: str = "distribution"
) -> LoadingDistribution:
    optional = {}
    for key, attr in (("model", "model"), ("reason", "model_reason")):
        value = getattr(dist, key, "")
        if value:
            optional[attr] = str(value)
    return LoadingDistribution(
        name=name,
        architecture=_json(dist.architecture),
        sigma=float(dist.sigma),
        ridge_lambda=float(dist.ridge_lambda),
        n_virtual_units=int(dist.n_virtual_units),
        samples_z=compressed(np.asarray(dist.samples_z, np.float64)),
        samples_k=compressed(np.asarray(dist.samples_k, np.float64)),
        flow_a_parameters=NamedArrays.from_dict("flow_a_parameters", dist.flow_a_parameters),
        flow_b_parameters=NamedArrays.from_dict("flow_b_parameters", dist.flow_b_parameters),
        training_curves=NamedArrays.from_dict("training_curves", dist.training_curves),
        validation=MetricsTable.from_dict(
            "validation", dist.validation_metrics, "Held-out checks of the distribution."
        ),
        **optional,
    )


def _joint(joint: data.JointSummary) -> JointFitSummary:
    columns = [
        _column("source", np.asarray(joint.sources, dtype=str), "Source file of the session."),
        _column("identifier", np.asarray(joint.identifiers, dtype=str), "NWBFile.identifier."),
        _column("n_units", np.asarray(joint.n_units, np.int64), "Units of the session."),
        _column("n_trials", np.asarray(joint.n_trials, np.int64), "Trials of the session."),
    ]
    for name, doc in (
        ("joint_log_likelihood", "Held-out log-likelihood per value under the joint fit."),
        ("separate_log_likelihood", "The same under the session's own fit."),
        ("difference", "Joint minus separate."),
        ("stderr", "Standard error of the difference."),
    ):
        columns.append(_column(name, np.asarray(getattr(joint, name), np.float64), doc))
    columns.append(_column("worse", np.asarray(joint.worse, bool), "Joint fit worse (2 SE)."))
    optional: dict = {}
    if joint.pooled is not None:
        n = joint.n_sessions
        flagged = np.isin(np.arange(n), np.asarray(joint.flagged, np.int64))
        if joint.floor is not None:
            columns.append(_column("floor", np.asarray(joint.floor, np.float64), "Floor of D."))
        columns.append(_column("flagged", flagged, "Distribution far from the others'."))
        optional["pooled_distribution"] = _distribution(joint.pooled, name="pooled_distribution")
    for key in ("dissimilarity", "symmetry"):
        value = getattr(joint, key)
        if value is not None:
            optional[key] = compressed(np.asarray(value, np.float64))
    for key in ("note", "pooled_reason"):
        if getattr(joint, key):
            optional[key] = str(getattr(joint, key))
    table = JointSessionTable(
        name="sessions",
        description="The sessions of the joint fit, with the check that pooling is warranted.",
        id=np.arange(joint.n_sessions),
        columns=columns,
    )
    return JointFitSummary(
        name="joint",
        session_index=int(joint.session),
        reference_session=int(joint.reference),
        gauge_note=str(joint.gauge_note),
        network_M=compressed(np.asarray(joint.network_M, np.float64)),
        network_K=compressed(np.asarray(joint.network_K, np.float64)),
        network_B=compressed(np.asarray(joint.network_B, np.float64)),
        network_d=compressed(np.asarray(joint.network_d, np.float64)),
        sessions=table,
        **optional,
    )


def _column(name: str, values, description: str) -> VectorData:
    return VectorData(name=name, description=description, data=compressed(np.asarray(values)))


def _unit_ids(values: np.ndarray) -> np.ndarray:
    ids = np.asarray(values)
    return ids.astype(str) if ids.dtype.kind in "OU" else ids


def _unit_table(results: data.Results, rows: np.ndarray, table, source_table) -> UnitLoadings:
    """One row per fitted unit; ``table``: same-file source table for the region column."""
    fit = results.fit
    columns = []
    if table is not None:
        columns.append(
            DynamicTableRegion(
                name="unit",
                description="Row of the source table of each fitted unit.",
                data=rows,
                table=table,
            )
        )
    columns += [
        _column("source_row", rows, "Row index of the unit in the source table."),
        _column("unit_id", _unit_ids(fit.unit_ids), "Id of the unit/ROI in the source table."),
        _column("m", fit.M, "Input-side loading m_i (canonical gauge)."),
        _column("k", fit.K, "Output-side loading k_i (canonical gauge)."),
    ]
    if fit.B.shape[1]:
        columns.append(_column("b", fit.B, "External-input weights b_i."))
    columns += [
        _column("d", fit.d, "Bias d_i inside the nonlinearity."),
        _column("readout_gain", fit.readout_gain, "Observation readout gain g_i."),
        _column("readout_offset", fit.readout_offset, "Observation readout offset c_i."),
        _column("noise_std", fit.noise_std, "Observation noise standard deviation."),
        _column("quality", fit.unit_quality, "Held-out fit quality of the unit."),
    ]
    if results.degeneracy is not None:
        columns.append(
            _column(
                "identifiability",
                results.degeneracy.unit_scores,
                "Fraction of the unit's output loading the data determine.",
            )
        )
    kwargs = {} if source_table is None else {"source_table": source_table}
    return UnitLoadings(
        name="unit_table",
        description=(
            f"Low-rank RNN fit {results.name!r} per unit: loadings, readout, held-out quality "
            "and identifiability; source_row is the unit's row in the source table."
        ),
        id=np.arange(fit.n_units),
        columns=columns,
        **kwargs,
    )


def build_fit(
    results: data.Results,
    *,
    unit_rows: np.ndarray,
    table=None,
    source_table=None,
    source_series=None,
    versions: dict[str, str] | None = None,
) -> LowRankRNNFit:
    """Convert ``results`` into one ``LowRankRNNFit`` container named ``results.name``.

    Parameters
    ----------
    results : Results
        What to store.
    unit_rows : ndarray of shape (n_units,), int
        Row of each fitted unit in the source table (``source_row`` column).
    table : DynamicTable, optional
        The source table when it lives in the file being written: the unit table then gets a
        region column ``unit`` into it.
    source_table : DynamicTable, optional
        The source table as a link (``unit_table.source_table``).
    source_series : TimeSeries, optional
        The fitted source series, stored as a link.
    versions : dict of str to str, optional
        Package versions recorded in the provenance.

    Returns
    -------
    LowRankRNNFit
        With its latents, metrics, unit table, provenance and the optional posterior,
        degeneracy and distribution.
    """
    fit = results.fit
    optional = {}
    if source_series is not None:
        optional["source_series"] = source_series
    if results.posterior is not None:
        optional["posterior"] = _posterior(results.posterior)
    if results.degeneracy is not None:
        optional["degeneracy"] = _degeneracy(results.degeneracy)
    if results.distribution is not None:
        optional["distribution"] = _distribution(results.distribution)
    if results.joint is not None:
        optional["joint"] = _joint(results.joint)
    rows = np.asarray(unit_rows, dtype=np.int64)
    return LowRankRNNFit(
        name=results.name,
        rank=int(fit.rank),
        nonlinearity=fit.nonlinearity,
        alpha=float(fit.alpha),
        bin_width=float(fit.bin_width),
        observation=fit.observation,
        calcium_decay=float(fit.calcium_decay),
        metrics=MetricsTable.from_dict(
            "metrics", fit.metrics, "Held-out metrics of the low-rank RNN fit."
        ),
        unit_table=_unit_table(results, rows, table, source_table),
        latents=LatentTrajectories.from_padded(
            fit.latents, fit.latent_mask, fit.trial_start_times, fit.bin_width
        ),
        provenance=_provenance(results.provenance, versions or {}),
        M=compressed(fit.M),
        K=compressed(fit.K),
        B=compressed(fit.B),
        d=compressed(fit.d),
        readout_gain=compressed(fit.readout_gain),
        readout_offset=compressed(fit.readout_offset),
        noise_std=compressed(fit.noise_std),
        unit_quality=compressed(fit.unit_quality),
        unit_ids=compressed(_unit_ids(fit.unit_ids)),
        trial_start_times=compressed(fit.trial_start_times),
        loss_history=compressed(fit.loss_history),
        loss_history__columns=list(LOSS_COLUMNS),
        train_trials=compressed(fit.train_trials),
        test_trials=compressed(fit.test_trials),
        **optional,
    )
