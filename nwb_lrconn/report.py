"""The report of a stored fit: plain-text summary and figures (``nwb-lrconn report``).

:func:`format_report` explains each number in words; :func:`relate_results_to_behaviour` relates
the fitted latents to a behavioural TimeSeries of the source file; :func:`write_figures` draws
every figure of one fit (matplotlib, imported on use).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import RunConfig
from .data import ConnectivityDistribution, LowRankFit, Recording, Results
from .inference.behaviour import DEGREE_UNITS, BehaviourReport

__all__ = [
    "format_report",
    "write_figures",
    "relate_results_to_behaviour",
    "load_recording",
    "unit_annotations",
]

# Units-table columns that name a unit's brain region, most specific first.
REGION_COLUMNS = ("location", "brain_area", "brain_region", "region", "area", "structure")
# Fewer fitted units than this give a Gaussian-mixture curve of one point: not drawn.
MIN_UNITS_FOR_GMM = 16


def _explain_quality(metrics: dict[str, float]) -> list[str]:
    lines = []
    if "log_likelihood" in metrics:
        lines.append(f"held-out log-likelihood {metrics['log_likelihood']:.5g} nats per value")
    if "bits_per_spike" in metrics:
        bps = metrics["bits_per_spike"]
        verdict = "better than" if bps > 0 else "NOT better than"
        lines.append(f"held-out {bps:.4g} bits/spike ({verdict} a constant rate per unit)")
    if "r2" in metrics:
        lines.append(f"held-out R² {metrics['r2']:.4f} (fraction of variance explained)")
    ranks = sorted((int(k.split("_")[1]), v) for k, v in metrics.items() if k.startswith("rank_"))
    if ranks:
        curve = ", ".join(f"rank {r}: {v:.5g}" for r, v in ranks)
        lines.append(f"rank selection (held-out log-likelihood): {curve}")
    return lines


def format_report(results: Results, behaviour: BehaviourReport | None = None) -> str:
    """Return a readable, plain-text summary of one stored fit.

    Parameters
    ----------
    results : Results
        One fit as read by :func:`nwb_lrconn.extension.read_results`.
    behaviour : BehaviourReport, optional
        The latents against a behavioural variable (:func:`relate_results_to_behaviour`).

    Returns
    -------
    str
        Several indented lines: source, fit quality, behaviour (when given), posterior,
        degeneracy counts and what they mean, distribution checks, provenance.
    """
    import numpy as np

    fit, prov = results.fit, results.provenance
    src = prov.source
    held = len(fit.test_trials)
    lines = [f"fit '{results.name}'"]
    if src.path or src.object_path:
        lines.append(f"  source: {src.path or '(in memory)'} [{src.object_path or '-'}]")
    lines.append(
        f"  model: {fit.n_units} units, rank {fit.rank}, {fit.nonlinearity}, {fit.observation} "
        f"observations, bin {fit.bin_width:g} s, alpha {fit.alpha:.3g}; {fit.latents.shape[0]} "
        f"trials ({held} held out)"
    )
    lines.append("  fit quality:")
    lines += [f"    {line}" for line in _explain_quality(fit.metrics)]
    quality = fit.unit_quality[np.isfinite(fit.unit_quality)]
    if quality.size:
        lines.append(
            f"    per-unit held-out quality: median {np.median(quality):.3g}, "
            f"{int((quality <= 0).sum())} of {quality.size} units <= 0"
        )
    if behaviour is not None:
        lines.append("  behaviour: " + behaviour.summary_lines()[0])
        lines += [f"    {line.strip()}" for line in behaviour.summary_lines()[1:-1]]
        lines.append(
            "    (decoders fitted on the training trials; the latent's gauge (rotation, "
            "reflection, scale) does not change the scores)"
        )
        lines.append(f"    verdict: {behaviour.verdict}")
    if results.posterior is not None:
        post = results.posterior
        lines.append(
            f"  posterior: Laplace, {post.n_params} parameters, {post.structure} storage, "
            f"prior precision {post.prior_precision:g}"
        )
    deg = results.degeneracy
    if deg is not None:
        lines += [
            f"  degeneracy: {deg.n_constrained} constrained, {deg.n_degenerate} degenerate, "
            f"{deg.n_gauge} gauge of {deg.n_total} directions",
            "    constrained: the recording determines them (posterior variance below half the "
            "prior's);",
            "    degenerate: the recording leaves them to the prior; connectivity along them "
            "(mostly output loadings K) is not known from this data;",
            "    gauge: reparametrisations of the latent space that change nothing (always "
            f"rank² = {fit.rank**2}).",
            f"    visited states: state matrix effective rank {deg.phi_effective_rank} of "
            f"{fit.n_units} units; {'rich enough' if deg.identifiable else 'NOT rich enough'} "
            "for the mean output loading per unit to be determined",
            f"    verdict: {deg.verdict}",
        ]
        scores = np.asarray(deg.unit_scores, dtype=float)
        if scores.size:
            lines.append(
                f"    per-unit identifiability (share of k determined): median "
                f"{np.median(scores):.2f}, range [{scores.min():.2f}, {scores.max():.2f}]"
            )
    else:
        lines.append("  degeneracy: not computed")
    dist = results.distribution
    if dist is not None:
        lines.append(
            f"  distribution: {len(dist.samples_k)} sampled units at sigma {dist.sigma:g} "
            f"(sigma = spread of k over what the data cannot determine; 0 = identifiable core), "
            f"ridge lambda {dist.ridge_lambda:g}, S {dist.n_virtual_units}"
        )
        for key, value in sorted(dist.validation_metrics.items()):
            lines.append(f"    check {key}: {value:.4g}")
    else:
        lines.append("  distribution: not computed")
    if results.joint is not None:
        lines += _joint_lines(results.joint)
    lines.append(
        f"  provenance: nwb_lrconn {prov.software_version}, seed {prov.random_seed}, "
        f"created {prov.created}"
    )
    return "\n".join(lines)


def _joint_lines(joint) -> list[str]:
    """The joint fit this fit is one session of: its sessions and the warrant check."""
    import numpy as np

    lines = [
        f"  joint fit: session {joint.session + 1} of {joint.n_sessions}, one network of "
        f"{int(np.sum(joint.n_units))} units (started from session {joint.reference + 1})",
        f"    gauge: {joint.gauge_note}",
        "    held-out log-likelihood per value, joint vs the session's own fit:",
    ]
    for s in range(joint.n_sessions):
        verdict = joint.verdict(s)
        mark = "*" if s == joint.session else " "
        lines.append(
            f"   {mark}{s + 1}. {Path(joint.sources[s]).name or joint.identifiers[s]} "
            f"({joint.n_units[s]} units): {joint.joint_log_likelihood[s]:.5g} vs "
            f"{joint.separate_log_likelihood[s]:.5g} ({joint.difference[s]:+.3g} ± "
            f"{joint.stderr[s]:.2g}): {verdict}"
        )
    if joint.pooled is not None:
        lines.append(f"    pooled distribution: {joint.pooled.model}; {joint.pooled_reason}")
    if joint.dissimilarity is not None and joint.floor is not None:
        lines.append("    dissimilarity D between the sessions' distributions (and each floor):")
        for s, (row, floor) in enumerate(zip(joint.dissimilarity, joint.floor)):
            values = " ".join(f"{v:.3g}" for v in row)
            lines.append(f"      {s + 1}. {values}  (floor {floor:.3g})")
    if joint.note:
        lines.append(f"    note: {joint.note}")
    return lines


def load_recording(
    results: Results, nwb_path: str | os.PathLike | None = None
) -> tuple[Recording, Path] | None:
    """Re-read the fitted recording with the stored configuration, or None when impossible.

    Tried in turn: ``nwb_path`` (a copy or in-place file holds the data), the recorded source
    path, and a file of the source's name beside ``nwb_path`` (a derived file next to its
    source). Remote sources and spikeinterface sortings are not re-read.

    Returns
    -------
    (Recording, Path) or None
        The recording (same units, trials and bins as the fit) and the file it was read from.
    """
    from .pipeline import read_recording

    source = results.provenance.source.path
    candidates = [nwb_path, source]
    if nwb_path is not None and source and "://" not in source:
        candidates.append(Path(nwb_path).parent / Path(source).name)
    try:
        config = RunConfig.from_json(results.provenance.config_json)
    except (ValueError, KeyError, TypeError):
        return None
    if config.read.source == "sorting":
        return None
    for candidate in candidates:
        if not candidate or "://" in str(candidate) or not Path(candidate).is_file():
            continue
        try:
            recording = read_recording(config, str(candidate))
        except (ValueError, KeyError, TypeError, FileNotFoundError, OSError):
            continue
        same = (
            recording.n_units == results.fit.n_units
            and recording.data.shape[:2] == (results.fit.latents.shape[:2])
        )
        if same:
            return recording, Path(candidate)
    return None


def relate_results_to_behaviour(
    results: Results,
    series: str,
    *,
    nwb_path: str | os.PathLike | None = None,
    kind: str = "auto",
    loaded: tuple[Recording, Path] | None = None,
) -> BehaviourReport:
    """Relate the fitted latents to a behavioural TimeSeries of the source file.

    The series is read on the fit's bins (:func:`nwb_lrconn.io.read_timeseries`; a circular
    mean inside each bin for an angle) and compared on the held-out trials
    (:func:`nwb_lrconn.inference.behaviour.relate_to_behaviour`).

    Parameters
    ----------
    results : Results
        One fit.
    series : str
        Path of the TimeSeries in the source file, e.g.
        ``"processing/behavior/CompassDirection/head_direction"``.
    nwb_path : path, optional
        The file the results were read from (see :func:`load_recording`).
    kind : {"auto", "angle", "linear"}, default: "auto"
        ``"auto"``: an angle when the series' unit is radians or degrees.
    loaded : (Recording, Path), optional
        The output of :func:`load_recording`, when already read.

    Returns
    -------
    BehaviourReport

    Raises
    ------
    FileNotFoundError
        When the source recording cannot be re-read.
    KeyError
        When the file holds no TimeSeries at ``series`` (the message lists those it holds).
    """
    from .inference.behaviour import relate_to_behaviour, resolve_kind
    from .io import read_timeseries

    loaded = loaded if loaded is not None else load_recording(results, nwb_path)
    if loaded is None:
        raise FileNotFoundError(
            f"the recording of fit {results.name!r} cannot be re-read (source "
            f"{results.provenance.source.path or 'unknown'!r}); relating it to behaviour needs "
            "the source file: place it beside the results or at its recorded path."
        )
    recording, path = loaded
    unit = _series_unit(path, series)
    kind, _ = resolve_kind(kind, unit)
    # The circular mean inside a bin needs radians; an angle in degrees is averaged linearly
    # (exact unless a bin straddles the ±180° wrap).
    radians = kind == "angle" and unit.strip().lower() not in DEGREE_UNITS
    values = read_timeseries(path, series, recording, reduce="circmean" if radians else "mean")
    return relate_to_behaviour(
        results.fit, recording, values, variable=series, kind=kind, unit=unit
    )


def _series_unit(path: Path, series: str) -> str:
    """The ``unit`` attribute of the TimeSeries' data ("" when absent or unreadable)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            unit = handle[series.strip("/")]["data"].attrs.get("unit", "")
    except (KeyError, OSError, TypeError):
        return ""
    return unit.decode() if isinstance(unit, bytes) else str(unit)


def unit_annotations(
    recording: Recording, path: str | os.PathLike
) -> tuple[list[str], list[str] | None]:
    """Labels ("id · region") and regions of the fitted units, from the source Units table.

    The region is the first of :data:`REGION_COLUMNS` the table holds, else the ``location`` of
    each unit's first electrode; None when neither exists (labels are then the ids).
    """
    ids = [str(u) for u in recording.unit_ids]
    if recording.kind != "spikes":
        return ids, None
    regions = None
    try:
        from .io import open_nwb

        with open_nwb(path) as nwbfile:
            table = _units_table(nwbfile, recording.source.table_path or "units")
            regions = _regions(table, recording.unit_rows) if table is not None else None
    except (KeyError, OSError, ValueError, TypeError, IndexError):
        regions = None
    if regions is None:
        return ids, None
    return [f"{i} · {r}" for i, r in zip(ids, regions)], regions


def _units_table(nwbfile: Any, table_path: str) -> Any:
    parts = table_path.strip("/").split("/")
    if parts == ["units"]:
        return nwbfile.units
    if len(parts) == 3 and parts[0] == "processing":
        return nwbfile.processing[parts[1]][parts[2]]
    return None


def _regions(table: Any, rows: Any) -> list[str] | None:
    import numpy as np

    for column in REGION_COLUMNS:
        if column in table.colnames:
            values = table[column].data[:]
            return [_text(values[int(r)]) for r in rows]
    if "electrodes" not in table.colnames:
        return None
    column = table["electrodes"]
    region = getattr(column, "target", column)  # a ragged column comes as its index
    if "location" not in region.table.colnames:
        return None
    locations = region.table["location"].data[:]
    refs = np.asarray(region.data[:], dtype=int)
    if region is column:
        first = refs[np.asarray(rows, dtype=int)]
    else:
        ends = np.asarray(column.data[:], dtype=int)
        starts = np.r_[0, ends[:-1]]
        first = refs[starts[np.asarray(rows, dtype=int)]]
    return [_text(locations[e]) for e in first]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def write_figures(
    results: Results,
    folder: str | os.PathLike,
    *,
    nwb_path: str | os.PathLike | None = None,
    behaviour: BehaviourReport | None = None,
    formats: tuple[str, ...] = ("png", "pdf"),
    loaded: tuple[Recording, Path] | None = None,
) -> list[Path]:
    """Write the figures of one fit into ``folder``, one file per figure and format.

    Figures: the one-page summary, training curves, latent dynamics (fixed points with the
    number of trials visiting them), loadings, degeneracy spectrum, connectivity (unit ids and
    regions on the axes), flow training, cross-validated Gaussian-mixture curves of the loadings
    (only for curves of at least two component counts, i.e. 16 or more units), and, when the
    source data can be re-read (:func:`load_recording`), fitted against observed activity of the
    best units over a long span of session time (or averaged over held-out trials); with
    ``behaviour``, the latents coloured by the behavioural variable.

    Parameters
    ----------
    results : Results
        One fit.
    folder : path
        Output folder (created when missing).
    nwb_path : path, optional
        The file the results were read from; used to re-read the recording.
    behaviour : BehaviourReport, optional
        From :func:`relate_results_to_behaviour`.
    formats : tuple of str, default: ("png", "pdf")
        File formats.
    loaded : (Recording, Path), optional
        The output of :func:`load_recording`, when already read.

    Returns
    -------
    list of Path
        Every file written.
    """
    from . import plotting
    from .inference.dynamics import find_fixed_points

    fit = results.fit
    stem = Path(folder) / results.name
    loaded = loaded if loaded is not None else load_recording(results, nwb_path)
    labels, regions = [str(u) for u in fit.unit_ids], None
    if loaded is not None:
        labels, regions = unit_annotations(*loaded)
    # one session of a joint fit: the whole network drives the session's latents
    dynamics = fit if results.joint is None else results.joint.network_fit(fit)
    fixed_points = None
    if fit.rank == 2:
        fixed_points = find_fixed_points(
            dynamics.M,
            dynamics.K,
            d=dynamics.d,
            nonlinearity=fit.nonlinearity,
            extent=plotting.latent_extent(fit),
            n_starts=100,
        )
    ids = [str(u) for u in fit.unit_ids]
    figures = {
        "summary": plotting.plot_summary(
            results, fixed_points=fixed_points, unit_labels=ids, regions=regions
        ),
        "training": plotting.plot_training_curves(fit),
        "latents": plotting.plot_latent_dynamics(dynamics, fixed_points=fixed_points),
        "loadings": plotting.plot_loadings(fit, results.distribution),
        "connectivity": plotting.plot_connectivity(fit, unit_labels=ids, regions=regions),
    }
    if results.degeneracy is not None:
        figures["degeneracy"] = plotting.plot_degeneracy_spectrum(results.degeneracy)
    if results.distribution is not None:
        figures["flow_training"] = plotting.plot_flow_training(results.distribution)
        curves, notes = _gmm_curves(results.fit, results.distribution)
        if curves:
            figures["gmm"] = plotting.plot_gmm_curves(curves, notes=notes)
    if loaded is not None:
        figures["activity"] = plotting.plot_fitted_activity(
            fit, loaded[0], unit_labels=labels, n_units=min(4, fit.n_units)
        )
    if behaviour is not None:
        figures["behaviour"] = plotting.plot_latent_behaviour(fit, behaviour)
    paths: list[Path] = []
    for name, figure in figures.items():
        paths += plotting.save_figure(figure, f"{stem}_{name}", formats=formats)
    return paths


def _gmm_curves(
    fit: LowRankFit, dist: ConnectivityDistribution, *, max_rows: int = 500
) -> tuple[dict[str, tuple[Any, Any]], list[str]]:
    """Cross-validated GMM log-likelihood of [m, k] for the fitted and the sampled units.

    A table of n rows is tried with 1..min(6, n // 8) components (3-fold cross-validation); a
    curve of one point says nothing, so tables of fewer than 16 rows are left out with a note.
    At most ``max_rows`` sampled rows are used (evenly spaced).
    """
    import numpy as np

    from .inference.clusters import gmm_cv_log_likelihood

    samples = np.hstack([dist.samples_z[:, : fit.rank], dist.samples_k])
    step = max(1, samples.shape[0] // max_rows)
    tables = {
        "fitted units": np.hstack([fit.M, fit.K]),
        f"sampled units, σ={dist.sigma:g}": samples[::step],
    }
    curves, notes = {}, []
    for label, X in tables.items():
        if X.shape[0] < MIN_UNITS_FOR_GMM:
            notes.append(
                f"{label}: {X.shape[0]} are too few for a cross-validated curve "
                f"(at least {MIN_UNITS_FOR_GMM})"
            )
            continue
        components = np.arange(1, min(6, X.shape[0] // 8) + 1)
        curves[label] = (
            components,
            gmm_cv_log_likelihood(X, n_components=components.tolist(), n_folds=3),
        )
    return curves, notes
