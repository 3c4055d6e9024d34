"""The ``ndx-lrconn`` schema as code: the single source of ``spec/ndx-lrconn.*.yaml``.

Regenerate the committed YAML with::

    python -m nwb_lrconn.extension.spec_builder            # writes <repo>/spec
    python nwb_lrconn/extension/spec_builder.py --output-dir DIR

(the second form does not import ``nwb_lrconn.extension``, so it also works when the YAML is
missing or broken). Fields mirror the dataclasses of :mod:`nwb_lrconn.data`; times are in seconds.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pynwb.spec import (
    NWBAttributeSpec,
    NWBDatasetSpec,
    NWBGroupSpec,
    NWBLinkSpec,
    NWBNamespaceBuilder,
    export_spec,
)

__all__ = ["NAMESPACE", "SPEC_VERSION", "REPO_SPEC_DIR", "build_spec", "main"]

NAMESPACE = "ndx-lrconn"
SPEC_VERSION = "0.3.0"
"""Version of the schema; it moves only when the YAML changes (a test holds the YAML's hash)."""
REPO_SPEC_DIR = Path(__file__).resolve().parents[2] / "spec"


def _attr(
    name: str,
    dtype: str,
    doc: str,
    *,
    required: bool = True,
    shape: Sequence[int | None] | None = None,
) -> NWBAttributeSpec:
    kwargs = {} if shape is None else {"shape": list(shape), "dims": ["num_values"]}
    return NWBAttributeSpec(name=name, doc=doc, dtype=dtype, required=required, **kwargs)


def _array(
    name: str,
    dims: Sequence[str] | None,
    doc: str,
    *,
    dtype: str | None = "float64",
    optional: bool = False,
    attributes: Sequence[NWBAttributeSpec] = (),
) -> NWBDatasetSpec:
    kwargs = {}
    if dims is not None:
        kwargs = {"dims": list(dims), "shape": [None] * len(dims)}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if attributes:
        kwargs["attributes"] = list(attributes)
    return NWBDatasetSpec(name=name, doc=doc, quantity="?" if optional else 1, **kwargs)


def _per_unit(name: str, doc: str) -> NWBDatasetSpec:
    return _array(name, ["num_units"], doc)


def _seconds(name: str, dims: Sequence[str], doc: str) -> NWBDatasetSpec:
    unit = NWBAttributeSpec(name="unit", doc="Unit of the values.", dtype="text", value="seconds")
    return _array(name, dims, doc, attributes=[unit])


def _column(
    name: str,
    doc: str,
    *,
    dtype: str | None = "float64",
    dims: Sequence[str] = ("num_units",),
    optional: bool = False,
) -> NWBDatasetSpec:
    kwargs = {"dims": list(dims), "shape": [None] * len(dims)}
    if dtype is not None:
        kwargs["dtype"] = dtype
    return NWBDatasetSpec(
        name=name,
        neurodata_type_inc="VectorData",
        doc=doc,
        quantity="?" if optional else 1,
        **kwargs,
    )


def _named_arrays_types() -> list:
    named_array = NWBDatasetSpec(
        neurodata_type_def="NamedArray",
        neurodata_type_inc="NWBData",
        doc="A numeric array of any shape and dtype; its dataset name is its key.",
    )
    named_arrays = NWBGroupSpec(
        neurodata_type_def="NamedArrays",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "A dictionary of named numeric arrays (e.g. the state_dict of a velocity network "
            "converted to plain arrays, or training curves): one NamedArray dataset per key."
        ),
        datasets=[
            NWBDatasetSpec(neurodata_type_inc="NamedArray", doc="One named array.", quantity="*")
        ],
    )
    return [named_array, named_arrays]


def _metrics_type() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="MetricsTable",
        neurodata_type_inc="DynamicTable",
        doc="Named numeric results, one row per metric (e.g. held-out log-likelihood).",
        datasets=[
            _column("metric", "Name of the metric.", dtype="text", dims=["num_metrics"]),
            _column("value", "Value of the metric.", dims=["num_metrics"]),
        ],
    )


def _latents_type() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="LatentTrajectories",
        neurodata_type_inc="TimeSeries",
        doc=(
            "Latent states kappa(t) of a fitted low-rank RNN over every observed bin of every "
            "trial, flattened to (num_times, rank), on the source recording's clock (seconds "
            "from its session_start_time): trial_start_time + bin_index * bin_width, sorted "
            "ascending; stored as starting_time and rate when those times are regular. The "
            "padded array (num_trials, n_time, rank) and its mask are rebuilt exactly from "
            "trial_index and bin_index (padding is zero)."
        ),
        datasets=[
            _array("trial_index", ["num_times"], "Trial of each row of data.", dtype="int64"),
            _array("bin_index", ["num_times"], "Bin within its trial of each row.", dtype="int64"),
        ],
        attributes=[
            _attr("n_time", "int32", "Number of bins of the longest trial (padded length).")
        ],
    )


def _provenance_type() -> NWBGroupSpec:
    text = [
        ("software_version", "Version of nwb_lrconn that produced the results."),
        ("config_json", "The full run configuration, as JSON."),
        ("created", "ISO-8601 creation time (UTC)."),
        ("source_identifier", "NWBFile.identifier of the source ('' when not from NWB)."),
        ("source_path", "Local path or URL of the source file ('' when in memory)."),
        ("source_object_path", "Path in the source file of the fitted object."),
        ("source_table_path", "Path in the source file of the table whose rows are M's rows."),
        ("source_selection", "JSON description of what was selected from the source."),
    ]
    optional_text = [
        (
            "source_session",
            "JSON identity of the source session: session_id, session_start_time, subject.",
        ),
        (
            "source_origin",
            "JSON description of where the source bytes came from: kind (local, url, dandi), "
            "url, dandiset_id, version, asset_path, asset_id, size.",
        ),
        ("source_sha256", "SHA-256 checksum of the source file (hex), when known."),
        ("dependency_versions", "JSON object: versions of the packages used for the run."),
    ]
    return NWBGroupSpec(
        neurodata_type_def="FitProvenance",
        neurodata_type_inc="NWBDataInterface",
        doc="How a low-rank connectivity fit was produced, and from which source.",
        attributes=[_attr(n, "text", d) for n, d in text]
        + [_attr(n, "text", d, required=False) for n, d in optional_text]
        + [_attr("random_seed", "int64", "Seed of the run (absent: none).", required=False)],
    )


def _posterior_type() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="LaplacePosterior",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "Laplace posterior N(mean, (F + prior_precision I)^-1) over theta = (M, K, B, d) "
            "flattened block by block in C order, stored dense or as per-unit blocks plus the "
            "leading eigenpairs of the data precision F."
        ),
        attributes=[
            _attr("layout", "text", "JSON list of {name, shape, offset}, one per block."),
            _attr("prior_precision", "float64", "Precision lambda of the isotropic prior."),
            _attr("observation", "text", "Observation model whose Fisher matrix F was used."),
            _attr("structure", "text", "'dense' or 'blocks': which datasets hold it."),
        ],
        datasets=[
            _array("mean", ["num_params"], "theta at the fit."),
            _array("eigenvalues", ["num_eig"], "Leading eigenvalues of F, descending."),
            _array("eigenvectors", ["num_params", "num_eig"], "Matching eigenvectors."),
            _array(
                "covariance",
                ["num_params", "num_params"],
                "Dense posterior covariance (structure='dense').",
                optional=True,
            ),
            _array(
                "unit_indices",
                ["num_units", "params_per_unit"],
                "Entries of theta belonging to each unit (structure='blocks').",
                dtype="int64",
                optional=True,
            ),
            _array(
                "unit_blocks",
                ["num_units", "params_per_unit", "params_per_unit"],
                "Per-unit posterior covariance blocks (structure='blocks').",
                optional=True,
            ),
        ],
    )


def _degeneracy_type() -> NWBGroupSpec:
    counts = [
        ("n_constrained", "Directions whose data precision exceeds the threshold."),
        ("n_degenerate", "Non-gauge directions at or below the threshold."),
        ("n_gauge", "GL(rank) gauge directions."),
        ("n_total", "Number of parameters (sum of the three counts)."),
        ("phi_effective_rank", "Effective rank of the state matrix Phi."),
    ]
    return NWBGroupSpec(
        neurodata_type_def="DegeneracyAnalysis",
        neurodata_type_inc="NWBDataInterface",
        doc="Which directions of theta = (M, K, B, d) the data constrain.",
        attributes=[_attr(n, "int32", d) for n, d in counts]
        + [
            _attr(
                "threshold", "float64", "Data precision above which a direction is constrained."
            ),
            _attr("threshold_rule", "text", "The threshold rule in words."),
            _attr("identifiable", "bool", "Whether the visited states are rich enough."),
            _attr("verdict", "text", "The result in plain language."),
        ],
        datasets=[
            _array("spectrum", ["num_directions"], "Non-gauge spectrum of F, descending."),
            _array("gauge_basis", ["num_params", "num_gauge"], "Orthonormal gauge directions."),
            _array("phi_singular_values", ["num_singular_values"], "Singular values of Phi."),
            _per_unit("unit_scores", "Fraction in [0, 1] of each output loading determined."),
        ],
    )


def _distribution_type() -> NWBGroupSpec:
    def arrays(name: str, doc: str) -> NWBGroupSpec:
        return NWBGroupSpec(name=name, neurodata_type_inc="NamedArrays", doc=doc)

    return NWBGroupSpec(
        neurodata_type_def="LoadingDistribution",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "Maximum-entropy distribution of the per-unit loadings consistent with the fitted "
            "dynamics: a model over z = (m, b, d) and a conditional model over k given z. With "
            "model 'flows' these are continuous normalizing flows (flow A over z, flow B over "
            "k given z) whose velocity-network weights are stored as plain arrays; simpler "
            "models (e.g. 'gaussian') store their parameters the same way."
        ),
        attributes=[
            _attr("architecture", "text", "JSON description needed to rebuild the model."),
            _attr("sigma", "float64", "Isotropic spread added to k when sampling."),
            _attr("ridge_lambda", "float64", "Ridge strength of the k targets."),
            _attr("n_virtual_units", "int32", "Virtual units S per flow-B training step."),
            _attr(
                "model",
                "text",
                "Which model was fitted ('flows', 'gaussian', ...).",
                required=False,
            ),
            _attr("model_reason", "text", "Why that model was chosen.", required=False),
        ],
        datasets=[
            _array("samples_z", ["num_samples", "num_z"], "Drawn z = (m, b, d)."),
            _array("samples_k", ["num_samples", "rank"], "Drawn k at sigma."),
        ],
        groups=[
            arrays("flow_a_parameters", "Parameters of the model over z (flow A weights)."),
            arrays("flow_b_parameters", "Parameters of the model over k given z (flow B)."),
            arrays("training_curves", "Training and validation curves."),
            NWBGroupSpec(
                name="validation",
                neurodata_type_inc="MetricsTable",
                doc="Held-out checks of the distribution.",
            ),
        ],
    )


def _unit_table_type() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="UnitLoadings",
        neurodata_type_inc="DynamicTable",
        doc=(
            "The fit per unit, one row per fitted unit (row i = row i of M and K): loadings, "
            "readout, fit quality and identifiability. 'unit' points at the unit's row of the "
            "source Units table or PlaneSegmentation when that table is in the same file; "
            "'source_row' always holds that row index, and the link 'source_table' reaches the "
            "table (an external link in derived files, resolved when the source is reachable)."
        ),
        datasets=[
            NWBDatasetSpec(
                name="unit",
                neurodata_type_inc="DynamicTableRegion",
                doc="Row of the source table (when it is in the same file).",
                quantity="?",
            ),
            _column("source_row", "Row index of the unit in the source table.", dtype="int64"),
            _column("unit_id", "Id of the unit/ROI in the source table.", dtype=None),
            _column("m", "Input-side loading m_i.", dims=["num_units", "rank"]),
            _column("k", "Output-side loading k_i.", dims=["num_units", "rank"]),
            _column(
                "b", "External-input weights b_i.", dims=["num_units", "num_inputs"], optional=True
            ),
            _column("d", "Bias d_i inside the nonlinearity."),
            _column("readout_gain", "Observation readout gain g_i."),
            _column("readout_offset", "Observation readout offset c_i."),
            _column("noise_std", "Observation noise standard deviation (1 for Poisson)."),
            _column("quality", "Held-out fit quality (bits/spike for spikes, R^2 otherwise)."),
            _column(
                "identifiability",
                "Fraction in [0, 1] of the unit's output loading the data determine.",
                optional=True,
            ),
        ],
        links=[
            NWBLinkSpec(
                name="source_table",
                target_type="DynamicTable",
                quantity="?",
                doc="The source Units table or PlaneSegmentation whose rows source_row indexes.",
            )
        ],
    )


def _joint_types() -> list:
    def per_session(name: str, doc: str, dtype: str = "float64", optional: bool = False):
        return _column(name, doc, dtype=dtype, dims=["num_sessions"], optional=optional)

    table = NWBGroupSpec(
        neurodata_type_def="JointSessionTable",
        neurodata_type_inc="DynamicTable",
        doc=(
            "The sessions of a joint fit, one row per session in the order of the fit: where "
            "each came from, its size, and whether pooling it with the others is warranted "
            "(held-out log-likelihood per observed value under the joint fit against the "
            "session's own separate fit, on the same held-out trials)."
        ),
        datasets=[
            per_session("source", "Path or URL of the session's source file.", dtype="text"),
            per_session("identifier", "NWBFile.identifier of the source.", dtype="text"),
            per_session("n_units", "Units of the session in the network.", dtype="int64"),
            per_session("n_trials", "Trials of the session.", dtype="int64"),
            per_session("joint_log_likelihood", "Held-out log-likelihood, joint fit (nats)."),
            per_session("separate_log_likelihood", "The same under the session's own fit."),
            per_session("difference", "joint_log_likelihood - separate_log_likelihood."),
            per_session("stderr", "Standard error of the difference over held-out trials."),
            per_session(
                "worse",
                "True when the joint fit is worse by more than two standard errors: the "
                "session's dynamics disagree with the others'.",
                dtype="bool",
            ),
            per_session("floor", "Within-session floor of the dissimilarity D.", optional=True),
            per_session(
                "flagged",
                "True when the session's distribution is far from the others' (D beyond floor).",
                dtype="bool",
                optional=True,
            ),
        ],
    )
    summary = NWBGroupSpec(
        neurodata_type_def="JointFitSummary",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "How this fit sits in a joint fit of several sessions that record different units "
            "of one circuit: one low-rank network over the union of their units (rows in "
            "session order), one latent dynamics, one shared gauge. The enclosing fit holds "
            "this session's units and latents; its K is this session's share of the network's "
            "mean-field sum, whose exact dynamics use network_M, network_K, network_B and "
            "network_d."
        ),
        attributes=[
            _attr("session_index", "int32", "Row of the enclosing fit's session in sessions."),
            _attr("reference_session", "int32", "Session whose own fit started the network."),
            _attr("gauge_note", "text", "What the shared gauge does and does not pin."),
            _attr("note", "text", "Stages not run for the joint fit, and why.", required=False),
            _attr(
                "pooled_reason",
                "text",
                "The pooled distribution's model and flags.",
                required=False,
            ),
        ],
        datasets=[
            _array("network_M", ["num_network_units", "rank"], "Input-side loadings, all units."),
            _array("network_K", ["num_network_units", "rank"], "Output-side loadings, all units."),
            _array("network_B", ["num_network_units", "num_inputs"], "Input weights, all units."),
            _array("network_d", ["num_network_units"], "Biases, all units."),
            _array(
                "dissimilarity",
                ["num_sessions", "num_sessions"],
                "Dissimilarity D between the sessions' connectivity distributions.",
                optional=True,
            ),
            _array(
                "symmetry",
                ["num_sessions", "rank", "rank"],
                "Map of each session's latents applied before pooling.",
                optional=True,
            ),
        ],
        groups=[
            NWBGroupSpec(
                name="sessions",
                neurodata_type_inc="JointSessionTable",
                doc="The sessions of the joint fit.",
            ),
            NWBGroupSpec(
                name="pooled_distribution",
                neurodata_type_inc="LoadingDistribution",
                doc="Connectivity distribution on every session's units (shared gauge).",
                quantity="?",
            ),
        ],
    )
    return [table, summary]


def _fit_type() -> NWBGroupSpec:
    def child(name: str, type_: str, doc: str, quantity: str | int = "?") -> NWBGroupSpec:
        return NWBGroupSpec(name=name, neurodata_type_inc=type_, doc=doc, quantity=quantity)

    loss_columns = NWBAttributeSpec(
        name="columns",
        doc="Label of each column.",
        dtype="text",
        dims=["num_columns"],
        shape=[None],
    )
    return NWBGroupSpec(
        neurodata_type_def="LowRankRNNFit",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "A low-rank RNN fitted to recorded units (canonical gauge): x_i = m_i.kappa + "
            "b_i.u + d_i, kappa(t+1) = (1 - alpha) kappa(t) + (alpha/N) sum_i k_i phi(x_i), "
            "connectivity J = M K^T / N. Row i of every per-unit dataset is row i of "
            "unit_table."
        ),
        attributes=[
            _attr("rank", "int32", "Rank R."),
            _attr("nonlinearity", "text", "phi: 'tanh', 'relu' or 'softplus'."),
            _attr("alpha", "float64", "Euler step bin_width / tau."),
            _attr("bin_width", "float64", "Width of one time bin, in seconds."),
            _attr("observation", "text", "'gaussian', 'poisson' or 'calcium'."),
            _attr("calcium_decay", "float64", "Per-bin indicator decay (0: no kernel)."),
        ],
        datasets=[
            _array("M", ["num_units", "rank"], "Input-side loadings m_i."),
            _array("K", ["num_units", "rank"], "Output-side loadings k_i."),
            _array("B", ["num_units", "num_inputs"], "External-input weights."),
            _per_unit("d", "Biases inside the nonlinearity."),
            _per_unit("readout_gain", "Observation readout gain."),
            _per_unit("readout_offset", "Observation readout offset."),
            _per_unit("noise_std", "Observation noise standard deviation."),
            _per_unit("unit_quality", "Held-out per-unit fit quality."),
            _array("unit_ids", ["num_units"], "Ids of the fitted units/ROIs.", dtype=None),
            _seconds(
                "trial_start_times",
                ["num_trials"],
                "Start of each trial on the source clock, in seconds.",
            ),
            _array(
                "loss_history",
                ["num_epochs", "num_columns"],
                "Per epoch: training and held-out negative log-likelihood per observed value.",
                attributes=[loss_columns],
            ),
            _array("train_trials", ["num_train"], "Training trial indices.", dtype="int64"),
            _array("test_trials", ["num_test"], "Held-out trial indices.", dtype="int64"),
        ],
        groups=[
            child("latents", "LatentTrajectories", "Latent trajectories.", quantity=1),
            child("provenance", "FitProvenance", "How the fit was produced.", quantity=1),
            child("metrics", "MetricsTable", "Held-out metrics of the fit.", quantity=1),
            child("unit_table", "UnitLoadings", "The fit per unit.", quantity=1),
            child("posterior", "LaplacePosterior", "Laplace posterior at the fit."),
            child("degeneracy", "DegeneracyAnalysis", "Degeneracy analysis of the fit."),
            child("distribution", "LoadingDistribution", "Connectivity distribution."),
            child("joint", "JointFitSummary", "The joint fit this fit is one session of."),
        ],
        links=[
            NWBLinkSpec(
                name="source_series",
                target_type="TimeSeries",
                quantity="?",
                doc="The fitted source series (e.g. a RoiResponseSeries for calcium).",
            )
        ],
    )


def neurodata_types() -> list:
    """Return the new type specifications of ``ndx-lrconn``, in dependency order."""
    return [
        *_named_arrays_types(),
        _metrics_type(),
        _latents_type(),
        _provenance_type(),
        _posterior_type(),
        _degeneracy_type(),
        _distribution_type(),
        _unit_table_type(),
        *_joint_types(),
        _fit_type(),
    ]


def build_spec(output_dir: str | Path = REPO_SPEC_DIR) -> tuple[Path, Path]:
    """Write ``ndx-lrconn.namespace.yaml`` and ``ndx-lrconn.extensions.yaml``.

    Parameters
    ----------
    output_dir : str or Path, default: the repository's ``spec/``
        Folder to write into (created if needed).

    Returns
    -------
    tuple of Path
        The namespace file and the extensions file.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ns = NWBNamespaceBuilder(
        name=NAMESPACE,
        version=SPEC_VERSION,
        doc=(
            "Low-rank RNN connectivity fitted to NWB recordings, its Laplace posterior, its "
            "degeneracies and its maximum-entropy distribution (nwb_lrconn)."
        ),
        author=["nwb_lrconn developers"],
        contact=["nwb_lrconn developers"],
    )
    for type_ in ("NWBData", "NWBDataInterface", "TimeSeries"):
        ns.include_type(type_, namespace="core")
    for type_ in ("DynamicTable", "VectorData", "DynamicTableRegion"):
        ns.include_type(type_, namespace="hdmf-common")
    export_spec(ns, neurodata_types(), str(output_dir))
    return (
        output_dir / f"{NAMESPACE}.namespace.yaml",
        output_dir / f"{NAMESPACE}.extensions.yaml",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: regenerate the YAML; returns the exit code."""
    parser = argparse.ArgumentParser(description="Regenerate the ndx-lrconn YAML spec.")
    parser.add_argument("--output-dir", default=str(REPO_SPEC_DIR), help="target folder")
    args = parser.parse_args(argv)
    for path in build_spec(args.output_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
