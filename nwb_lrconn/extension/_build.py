"""Dataclasses of :mod:`nwb_lrconn.data` → ``ndx-lrconn`` containers (no file access)."""

from __future__ import annotations

import json

import numpy as np

from .. import data
from .types import (
    ConnectivityDistribution,
    DegeneracyReport,
    FitProvenance,
    LaplacePosterior,
    LatentTrajectories,
    LowRankRNNFit,
    NamedArrays,
    compressed,
)

__all__ = ["build_fit"]


def _json(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def _provenance(prov: data.Provenance) -> FitProvenance:
    src = prov.source
    kwargs = {}
    if prov.random_seed is not None:
        kwargs["random_seed"] = int(prov.random_seed)
    return FitProvenance(
        name="provenance",
        software_version=str(prov.software_version),
        config_json=str(prov.config_json),
        created=str(prov.created),
        source_identifier=src.identifier,
        source_path=src.path,
        source_object_path=src.object_path,
        source_table_path=src.table_path,
        source_selection=_json(json.loads(src.to_json())["selection"]),
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


def _degeneracy(report: data.DegeneracyReport) -> DegeneracyReport:
    return DegeneracyReport(
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


def _distribution(dist: data.ConnectivityDistribution) -> ConnectivityDistribution:
    return ConnectivityDistribution(
        name="distribution",
        architecture=_json(dist.architecture),
        sigma=float(dist.sigma),
        ridge_lambda=float(dist.ridge_lambda),
        n_virtual_units=int(dist.n_virtual_units),
        validation_metrics=_json({k: float(v) for k, v in dist.validation_metrics.items()}),
        samples_z=compressed(np.asarray(dist.samples_z, np.float64)),
        samples_k=compressed(np.asarray(dist.samples_k, np.float64)),
        flow_a_parameters=NamedArrays.from_dict("flow_a_parameters", dist.flow_a_parameters),
        flow_b_parameters=NamedArrays.from_dict("flow_b_parameters", dist.flow_b_parameters),
        training_curves=NamedArrays.from_dict("training_curves", dist.training_curves),
    )


def build_fit(results: data.Results, *, units=None, source_series=None) -> LowRankRNNFit:
    """Convert ``results`` into one ``LowRankRNNFit`` container named ``results.name``.

    Parameters
    ----------
    results : Results
        What to store.
    units : DynamicTableRegion, optional
        Rows of the source table that are the rows of M and K.
    source_series : TimeSeries, optional
        The fitted source series, stored as a link.

    Returns
    -------
    LowRankRNNFit
        With its latents, provenance and the optional posterior, degeneracy and distribution.
    """
    fit = results.fit
    optional = {}
    if units is not None:
        optional["units"] = units
    if source_series is not None:
        optional["source_series"] = source_series
    if results.posterior is not None:
        optional["posterior"] = _posterior(results.posterior)
    if results.degeneracy is not None:
        optional["degeneracy"] = _degeneracy(results.degeneracy)
    if results.distribution is not None:
        optional["distribution"] = _distribution(results.distribution)
    return LowRankRNNFit(
        name=results.name,
        rank=int(fit.rank),
        nonlinearity=fit.nonlinearity,
        alpha=float(fit.alpha),
        bin_width=float(fit.bin_width),
        observation=fit.observation,
        calcium_decay=float(fit.calcium_decay),
        metrics=_json(fit.metrics),
        latents=LatentTrajectories.from_padded(
            fit.latents, fit.latent_mask, fit.trial_start_times, fit.bin_width
        ),
        provenance=_provenance(results.provenance),
        M=compressed(fit.M),
        K=compressed(fit.K),
        B=compressed(fit.B),
        d=compressed(fit.d),
        readout_gain=compressed(fit.readout_gain),
        readout_offset=compressed(fit.readout_offset),
        noise_std=compressed(fit.noise_std),
        unit_quality=compressed(fit.unit_quality),
        unit_ids=compressed(np.asarray(fit.unit_ids)),
        trial_start_times=compressed(fit.trial_start_times),
        loss_history=compressed(fit.loss_history),
        train_trials=compressed(fit.train_trials),
        test_trials=compressed(fit.test_trials),
        **optional,
    )
