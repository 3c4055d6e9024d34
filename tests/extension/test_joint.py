"""The joint-fit summary (JointFitSummary) round-trips, stands alone, and old files still read."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from nwb_lrconn.extension import mock_joint, mock_results, read_results, write_results
from nwb_lrconn.extension.spec_builder import NAMESPACE


@pytest.mark.parametrize("with_pooled", [True, False])
@pytest.mark.parametrize("mode", ["derived", "copy"])
def test_joint_summary_round_trips(tmp_path, units_source, units_results, assert_same, mode,
                                   with_pooled):  # fmt: skip
    results = mock_joint(units_results, session=1, with_pooled=with_pooled)
    out = write_results(results, units_source, tmp_path / "out.nwb", mode=mode)
    back = read_results(out)
    assert_same(results, back)
    joint = back.joint
    np.testing.assert_array_equal(joint.network_M[joint.units], back.fit.M)
    assert (joint.pooled is None) is (not with_pooled)


def test_a_fit_without_joint_reads_as_before(tmp_path, units_results):
    out = write_results(units_results, None, tmp_path / "out.nwb")
    assert read_results(out).joint is None
    with h5py.File(out, "r") as handle:
        assert "joint" not in handle["processing/lrconn/fit"]


def test_plain_pynwb_reads_the_joint_group(tmp_path):
    results = mock_joint(mock_results(), session=0)
    out = write_results(results, None, tmp_path / "out.nwb")
    code = textwrap.dedent(
        f"""
        import sys, warnings
        sys.modules["nwb_lrconn"] = None
        warnings.simplefilter("ignore")
        from pynwb import NWBHDF5IO
        with NWBHDF5IO({str(out)!r}, "r") as io:
            joint = io.read().processing["lrconn"]["fit"].joint
            frame = joint.sessions.to_dataframe()
            print(joint.session_index, joint.network_M.shape[0], list(frame["worse"]),
                  list(frame["flagged"]), joint.pooled_distribution.samples_k.shape[0])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = results.joint
    expected = (
        f"0 {int(summary.n_units.sum())} {[bool(v) for v in summary.worse]} "
        f"[False, False, True] {results.distribution.samples_k.shape[0]}"
    )
    assert proc.stdout.strip() == expected


def _set_cached_version(path, version: str) -> None:
    with h5py.File(path, "r+") as handle:
        group = handle[f"specifications/{NAMESPACE}"]
        (cached,) = list(group)
        group.move(cached, version)


def test_files_of_the_previous_schema_still_read(tmp_path):
    results = mock_results()
    out = write_results(results, None, tmp_path / "out.nwb")
    _set_cached_version(out, "0.2.0")
    np.testing.assert_array_equal(read_results(out).fit.M, results.fit.M)
    _set_cached_version(out, "0.1.0")
    with pytest.raises(ValueError, match=r"schema 0\.1\.0, which this version .* cannot read"):
        read_results(out)


def test_joint_summary_checks_its_sizes():
    results = mock_joint(mock_results(), with_pooled=False)
    joint = results.joint
    with pytest.raises(ValueError, match=r"session \(5\) and reference \(.\) must index one of"):
        dataclasses.replace(joint, session=5)
    with pytest.raises(ValueError, match=r"JointSummary.worse must have one entry per session"):
        dataclasses.replace(joint, worse=joint.worse[:2])
    with pytest.raises(ValueError, match=r"network_M must have one row per unit of every"):
        dataclasses.replace(joint, network_M=joint.network_M[1:])
    assert "joint" in repr(results) and "session 1 of 3" in repr(results)


def test_the_joint_group_adds_no_nwbinspector_message(tmp_path, units_source, units_results):
    from nwbinspector import Importance, inspect_nwbfile, load_config

    def messages(path):
        found = inspect_nwbfile(
            nwbfile_path=str(path),
            config=load_config(filepath_or_keyword="dandi"),
            importance_threshold=Importance.BEST_PRACTICE_SUGGESTION,
        )
        return sorted((m.check_function_name, str(m.location)) for m in found)

    plain = write_results(units_results, units_source, tmp_path / "plain.nwb")
    joint = write_results(mock_joint(units_results), units_source, tmp_path / "joint.nwb")
    assert messages(joint) == messages(plain)


def test_the_verdict_names_each_reason():
    joint = mock_joint(mock_results(), with_pooled=False).joint
    worse = np.zeros(joint.n_sessions, bool)
    worse[0] = True
    summary = dataclasses.replace(joint, worse=worse, flagged=(0, 1))
    assert summary.verdict(0) == (
        "FLAGGED: worse than its own fit; its units' distribution is far from the others'"
    )
    assert summary.verdict(1) == "FLAGGED: its units' distribution is far from the others'"
    assert summary.verdict(2) == "pooling warranted"
