"""Written files stand alone: readable by pynwb without nwb_lrconn, and clean for DANDI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from nwb_lrconn.extension import write_results

# Runs in a fresh interpreter where `import nwb_lrconn` fails: pynwb must use the cached spec.
_READER = textwrap.dedent(
    """
    import sys
    sys.modules["nwb_lrconn"] = None
    import json
    import warnings
    import numpy as np
    from hdmf.common import DynamicTable
    from hdmf.container import AbstractContainer
    from pynwb import NWBHDF5IO

    warnings.simplefilter("ignore")
    path, dump = sys.argv[1], sys.argv[2]
    arrays, scalars = {}, {}

    def walk(obj, prefix):
        for key, value in obj.fields.items():
            where = prefix + key
            if key in ("source_series", "source_table"):
                continue
            if isinstance(value, DynamicTable):
                arrays[where + "/id"] = np.asarray(value.id.data[()])
                for column in value.columns:
                    arrays[where + "/" + column.name] = np.asarray(column.data[()])
            elif isinstance(value, AbstractContainer):
                walk(value, where + "/")
            elif isinstance(value, dict):
                for name, item in value.items():
                    arrays[where + "/" + name] = np.asarray(item.data[()])
            elif isinstance(value, (str, int, float, bool, np.generic)):
                scalars[where] = value.item() if isinstance(value, np.generic) else value
            elif hasattr(value, "shape") and hasattr(value, "dtype"):
                arrays[where] = np.asarray(value[()])

    with NWBHDF5IO(path, "r") as io:
        nwb = io.read()
        fit = nwb.processing["lrconn"]["fit"]
        walk(fit, "")
        scalars["class_module"] = type(fit).__module__
        table = fit.unit_table
        scalars["region_table"] = table["unit"].table.name if "unit" in table.colnames else None
        linked = table.source_table
        scalars["source_table"] = None if linked is None else linked.name
        scalars["source_series"] = None if fit.source_series is None else fit.source_series.name
        scalars["frame_columns"] = list(table.to_dataframe(index=True).columns)
    np.savez(dump, **{k.replace("/", "|"): v for k, v in arrays.items()})
    print(json.dumps(scalars))
    """
)


def _read_without_package(path, tmp_path):
    dump = tmp_path / "dump.npz"
    proc = subprocess.run(
        [sys.executable, "-c", _READER, str(path), str(dump)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with np.load(dump, allow_pickle=True) as npz:
        arrays = {k.replace("|", "/"): npz[k] for k in npz.files}
    return arrays, json.loads(proc.stdout.strip().splitlines()[-1])


def _check_values(arrays, scalars, results):
    fit, post = results.fit, results.posterior
    deg, dist, prov = results.degeneracy, results.distribution, results.provenance
    assert not scalars["class_module"].startswith("nwb_lrconn")
    for key in (
        "M", "K", "B", "d", "readout_gain", "readout_offset", "noise_std", "unit_quality",
        "unit_ids", "trial_start_times", "loss_history", "train_trials", "test_trials",
    ):  # fmt: skip
        np.testing.assert_array_equal(arrays[key], getattr(fit, key), err_msg=key)
    for column, value in (
        ("m", fit.M), ("k", fit.K), ("b", fit.B), ("d", fit.d), ("quality", fit.unit_quality),
        ("readout_gain", fit.readout_gain), ("identifiability", deg.unit_scores),
        ("source_row", fit.unit_rows), ("unit_id", fit.unit_ids),
    ):  # fmt: skip
        np.testing.assert_array_equal(arrays[f"unit_table/{column}"], value, err_msg=column)
    trial, bin_ = np.nonzero(fit.latent_mask)
    np.testing.assert_array_equal(
        np.sort(arrays["latents/data"], axis=0), np.sort(fit.latents[trial, bin_], axis=0)
    )
    assert scalars["latents/n_time"] == fit.latents.shape[1]
    for key in ("rank", "nonlinearity", "alpha", "bin_width", "observation", "calcium_decay"):
        assert scalars[key] == getattr(fit, key), key
    metrics = dict(zip(arrays["metrics/metric"].tolist(), arrays["metrics/value"].tolist()))
    assert metrics == fit.metrics
    for key in ("mean", "eigenvalues", "eigenvectors", "unit_indices", "unit_blocks"):
        np.testing.assert_array_equal(arrays[f"posterior/{key}"], getattr(post, key), err_msg=key)
    assert "posterior/covariance" not in arrays
    assert scalars["posterior/layout"] == post.layout_json()
    assert scalars["posterior/prior_precision"] == post.prior_precision
    assert scalars["posterior/structure"] == "blocks"
    for key in ("spectrum", "gauge_basis", "phi_singular_values", "unit_scores"):
        np.testing.assert_array_equal(arrays[f"degeneracy/{key}"], getattr(deg, key))
    for key in ("n_constrained", "n_degenerate", "n_gauge", "n_total", "phi_effective_rank"):
        assert scalars[f"degeneracy/{key}"] == getattr(deg, key), key
    assert scalars["degeneracy/identifiable"] == deg.identifiable
    assert scalars["degeneracy/verdict"] == deg.verdict
    assert scalars["degeneracy/threshold_rule"] == deg.threshold_rule
    for group in ("flow_a_parameters", "flow_b_parameters", "training_curves"):
        for name, value in getattr(dist, group).items():
            got = arrays[f"distribution/{group}/named_arrays/{name}"]
            assert got.dtype == value.dtype
            np.testing.assert_array_equal(got, value)
    np.testing.assert_array_equal(arrays["distribution/samples_z"], dist.samples_z)
    np.testing.assert_array_equal(arrays["distribution/samples_k"], dist.samples_k)
    checks = dict(
        zip(
            arrays["distribution/validation/metric"].tolist(),
            arrays["distribution/validation/value"].tolist(),
        )
    )
    assert checks == dist.validation_metrics
    assert json.loads(scalars["distribution/architecture"]) == dist.architecture
    assert scalars["distribution/n_virtual_units"] == dist.n_virtual_units
    assert scalars["provenance/config_json"] == prov.config_json
    assert scalars["provenance/random_seed"] == prov.random_seed
    assert scalars["provenance/source_object_path"] == prov.source.object_path
    assert scalars["provenance/source_identifier"] == prov.source.identifier
    assert json.loads(scalars["provenance/source_session"])["subject"]["subject_id"] == "mouse1"
    assert "pynwb" in json.loads(scalars["provenance/dependency_versions"])


def test_copy_reads_without_nwb_lrconn(tmp_path, ophys_source, ophys_results):
    out = write_results(ophys_results, ophys_source, tmp_path / "out.nwb", mode="copy")
    arrays, scalars = _read_without_package(out, tmp_path)
    _check_values(arrays, scalars, ophys_results)
    assert scalars["region_table"] == scalars["source_table"] == "rois_RoiResponseSeries"
    assert scalars["source_series"] == "RoiResponseSeries"
    np.testing.assert_array_equal(arrays["unit_table/unit"], np.arange(8))


@pytest.mark.parametrize("reachable", [True, False])
def test_derived_file_reads_without_nwb_lrconn(tmp_path, ophys_source, ophys_results, reachable):
    out = write_results(ophys_results, ophys_source, tmp_path / "out.nwb")
    if not reachable:
        ophys_source.unlink()
    arrays, scalars = _read_without_package(out, tmp_path)
    _check_values(arrays, scalars, ophys_results)
    assert scalars["region_table"] is None
    linked = "rois_RoiResponseSeries" if reachable else None
    assert scalars["source_table"] == linked
    assert scalars["source_series"] == ("RoiResponseSeries" if reachable else None)
    assert scalars["frame_columns"][:3] == ["source_row", "unit_id", "m"]


def _violations(path) -> list[tuple[str, str, str]]:
    from nwbinspector import Importance, inspect_nwbfile, load_config

    messages = inspect_nwbfile(
        nwbfile_path=str(path),
        config=load_config(filepath_or_keyword="dandi"),
        importance_threshold=Importance.BEST_PRACTICE_SUGGESTION,
    )
    return sorted((m.importance.name, m.check_function_name, str(m.location)) for m in messages)


@pytest.mark.parametrize("kind", ["units", "ophys"])
@pytest.mark.parametrize("mode", ["derived", "copy"])
def test_nwbinspector_dandi_config(tmp_path, request, kind, mode):
    source = request.getfixturevalue(f"{kind}_source")
    results = request.getfixturevalue(f"{kind}_results")
    out = write_results(results, source, tmp_path / "out.nwb", mode=mode)
    before, after = _violations(source), _violations(out)
    new = [m for m in after if m not in before]
    # the module name "lrconn" is outside nwbinspector's list: a suggestion, by design
    assert new == [("BEST_PRACTICE_SUGGESTION", "check_processing_module_name", "None")], new


def test_reading_results_needs_no_torch_sklearn_or_matplotlib(tmp_path, units_results):
    out = write_results(units_results, None, tmp_path / "out.nwb")
    code = textwrap.dedent(
        f"""
        import sys
        for name in ("torch", "sklearn", "matplotlib", "scipy"):
            sys.modules[name] = None  # any import of them now fails
        import nwb_lrconn.extension as extension
        results = extension.read_results({str(out)!r})
        frame = extension.read_unit_table({str(out)!r})
        print(results.fit.n_units, len(frame))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["8", "8"]
