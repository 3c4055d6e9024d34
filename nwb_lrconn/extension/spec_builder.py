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

from nwb_lrconn import __version__

__all__ = ["NAMESPACE", "SPEC_VERSION", "REPO_SPEC_DIR", "build_spec", "main"]

NAMESPACE = "ndx-lrconn"
SPEC_VERSION = __version__
REPO_SPEC_DIR = Path(__file__).resolve().parents[2] / "spec"


def _attr(name: str, dtype: str, doc: str, *, required: bool = True) -> NWBAttributeSpec:
    return NWBAttributeSpec(name=name, doc=doc, dtype=dtype, required=required)


def _array(
    name: str,
    dims: Sequence[str] | None,
    doc: str,
    *,
    dtype: str | None = "float64",
    optional: bool = False,
) -> NWBDatasetSpec:
    kwargs = {}
    if dims is not None:
        kwargs = {"dims": list(dims), "shape": [None] * len(dims)}
    if dtype is not None:
        kwargs["dtype"] = dtype
    return NWBDatasetSpec(name=name, doc=doc, quantity="?" if optional else 1, **kwargs)


def _per_unit(name: str, doc: str) -> NWBDatasetSpec:
    return _array(name, ["num_units"], doc)


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


def _latents_type() -> NWBGroupSpec:
    return NWBGroupSpec(
        neurodata_type_def="LatentTrajectories",
        neurodata_type_inc="TimeSeries",
        doc=(
            "Latent states kappa(t) of a fitted low-rank RNN over every observed bin of every "
            "trial, flattened to (num_times, rank). Timestamps (seconds, session clock) are "
            "trial_start_time + bin_index * bin_width, sorted ascending. The padded array "
            "(num_trials, n_time, rank) and its mask are rebuilt exactly from trial_index and "
            "bin_index (padding is zero)."
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
    return NWBGroupSpec(
        neurodata_type_def="FitProvenance",
        neurodata_type_inc="NWBDataInterface",
        doc="How a low-rank connectivity fit was produced.",
        attributes=[_attr(n, "text", d) for n, d in text]
        + [_attr("random_seed", "int32", "Seed of the run (absent: none).", required=False)],
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
        neurodata_type_def="DegeneracyReport",
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
        neurodata_type_def="ConnectivityDistribution",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "Maximum-entropy connectivity distribution: flow A over z = (m, b, d), conditional "
            "flow B over k given z; velocity-network weights stored as plain arrays."
        ),
        attributes=[
            _attr("architecture", "text", "JSON description needed to rebuild the flows."),
            _attr("sigma", "float64", "Isotropic spread added to k when sampling."),
            _attr("ridge_lambda", "float64", "Ridge strength of the flow-B targets."),
            _attr("n_virtual_units", "int32", "Virtual units S per flow-B training step."),
            _attr("validation_metrics", "text", "JSON object of held-out checks."),
        ],
        datasets=[
            _array("samples_z", ["num_samples", "num_z"], "Drawn z = (m, b, d)."),
            _array("samples_k", ["num_samples", "rank"], "Drawn k at sigma."),
        ],
        groups=[
            arrays("flow_a_parameters", "Flow A velocity-network weights."),
            arrays("flow_b_parameters", "Flow B velocity-network weights."),
            arrays("training_curves", "Training and validation curves."),
        ],
    )


def _fit_type() -> NWBGroupSpec:
    def child(name: str, type_: str, doc: str, quantity: str | int = "?") -> NWBGroupSpec:
        return NWBGroupSpec(name=name, neurodata_type_inc=type_, doc=doc, quantity=quantity)

    return NWBGroupSpec(
        neurodata_type_def="LowRankRNNFit",
        neurodata_type_inc="NWBDataInterface",
        doc=(
            "A low-rank RNN fitted to recorded units (canonical gauge): x_i = m_i.kappa + "
            "b_i.u + d_i, kappa(t+1) = (1 - alpha) kappa(t) + (alpha/N) sum_i k_i phi(x_i), "
            "connectivity J = M K^T / N. Row i of every per-unit dataset is row i of units."
        ),
        attributes=[
            _attr("rank", "int32", "Rank R."),
            _attr("nonlinearity", "text", "phi: 'tanh', 'relu' or 'softplus'."),
            _attr("alpha", "float64", "Euler step bin_width / tau."),
            _attr("bin_width", "float64", "Width of one time bin, in seconds."),
            _attr("observation", "text", "'gaussian', 'poisson' or 'calcium'."),
            _attr("calcium_decay", "float64", "Per-bin indicator decay (0: no kernel)."),
            _attr("metrics", "text", "JSON object of held-out metrics."),
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
            _array("trial_start_times", ["num_trials"], "Start of each trial, in seconds."),
            _array(
                "loss_history",
                ["num_epochs", "num_columns"],
                "Per epoch: training and held-out negative log-likelihood.",
            ),
            _array("train_trials", ["num_train"], "Training trial indices.", dtype="int64"),
            _array("test_trials", ["num_test"], "Held-out trial indices.", dtype="int64"),
            NWBDatasetSpec(
                name="units",
                neurodata_type_inc="DynamicTableRegion",
                quantity="?",
                doc="Rows of the source Units table or PlaneSegmentation (= rows of M and K).",
            ),
        ],
        groups=[
            child("latents", "LatentTrajectories", "Latent trajectories.", quantity=1),
            child("provenance", "FitProvenance", "How the fit was produced.", quantity=1),
            child("posterior", "LaplacePosterior", "Laplace posterior at the fit."),
            child("degeneracy", "DegeneracyReport", "Degeneracy analysis of the fit."),
            child("distribution", "ConnectivityDistribution", "Connectivity distribution."),
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
        _latents_type(),
        _provenance_type(),
        _posterior_type(),
        _degeneracy_type(),
        _distribution_type(),
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
    ns.include_type("DynamicTableRegion", namespace="hdmf-common")
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
