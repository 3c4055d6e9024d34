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
    import numpy as np
    from hdmf.container import AbstractContainer
    from pynwb import NWBHDF5IO

    path, dump = sys.argv[1], sys.argv[2]
    arrays, scalars = {}, {}

    def walk(obj, prefix):
        for key, value in obj.fields.items():
            where = prefix + key
            if isinstance(value, AbstractContainer) and key not in ("units", "source_series"):
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
        scalars["units_table"] = fit.units.table.name
        arrays["units_rows"] = np.asarray(fit.units.data[:])
        scalars["source_series"] = None if fit.source_series is None else fit.source_series.name
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
    with np.load(dump) as npz:
        arrays = {k.replace("|", "/"): npz[k] for k in npz.files}
    return arrays, json.loads(proc.stdout.strip().splitlines()[-1])


def test_read_every_value_without_nwb_lrconn(tmp_path, ophys_source, ophys_results):
    out = write_results(ophys_results, ophys_source, tmp_path / "out.nwb")
    arrays, scalars = _read_without_package(out, tmp_path)
    fit, post = ophys_results.fit, ophys_results.posterior
    deg, dist, prov = (
        ophys_results.degeneracy,
        ophys_results.distribution,
        ophys_results.provenance,
    )
    assert not scalars["class_module"].startswith("nwb_lrconn")
    assert scalars["units_table"] == "PlaneSegmentation"
    assert scalars["source_series"] == "RoiResponseSeries"
    np.testing.assert_array_equal(arrays["units_rows"], np.arange(8))
    for key in (
        "M", "K", "B", "d", "readout_gain", "readout_offset", "noise_std", "unit_quality",
        "unit_ids", "trial_start_times", "loss_history", "train_trials", "test_trials",
    ):  # fmt: skip
        np.testing.assert_array_equal(arrays[key], getattr(fit, key), err_msg=key)
    trial, bin_ = np.nonzero(fit.latent_mask)
    np.testing.assert_array_equal(
        np.sort(arrays["latents/data"], axis=0), np.sort(fit.latents[trial, bin_], axis=0)
    )
    assert scalars["latents/n_time"] == fit.latents.shape[1]
    for key in ("rank", "nonlinearity", "alpha", "bin_width", "observation", "calcium_decay"):
        assert scalars[key] == getattr(fit, key), key
    assert json.loads(scalars["metrics"]) == fit.metrics
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
    assert json.loads(scalars["distribution/architecture"]) == dist.architecture
    assert scalars["distribution/n_virtual_units"] == dist.n_virtual_units
    assert scalars["provenance/config_json"] == prov.config_json
    assert scalars["provenance/random_seed"] == prov.random_seed
    assert scalars["provenance/source_object_path"] == prov.source.object_path


@pytest.mark.parametrize("kind", ["units", "ophys"])
def test_nwbinspector_dandi_config(tmp_path, request, kind):
    from nwbinspector import Importance, inspect_nwbfile, load_config

    source = request.getfixturevalue(f"{kind}_source")
    results = request.getfixturevalue(f"{kind}_results")
    out = write_results(results, source, tmp_path / "out.nwb")
    messages = list(
        inspect_nwbfile(
            nwbfile_path=str(out),
            config=load_config(filepath_or_keyword="dandi"),
            importance_threshold=Importance.BEST_PRACTICE_VIOLATION,
        )
    )
    assert messages == [], [
        (m.importance.name, m.check_function_name, m.message) for m in messages
    ]
