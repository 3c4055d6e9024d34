"""Several sessions as one network: checks before the fit, one derived file per session, the
warrant check and the pooled distribution in each file's ``joint`` group."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import types

import numpy as np
import pytest

from nwb_lrconn import pipeline, pipeline_joint
from nwb_lrconn.data import Recording
from nwb_lrconn.extension import mock_results, read_results, read_unit_table
from nwb_lrconn.pipeline import FitFailedError, PipelineError
from nwb_lrconn.pipeline_joint import (
    GAUGE_NOTE,
    SKIPPED_NOTE,
    check_sessions,
    run_joint,
    run_joint_files,
)


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_the_joint_fit_is_good_and_pooling_is_warranted(joint_fitted):
    recordings, joint, warrant = joint_fitted
    assert joint.model_.n_units == sum(rec.n_units for rec in recordings)
    for view, row in zip(joint.sessions_, warrant):
        assert view.metrics["bits_per_spike"] > 0.05
        assert not row["worse"], row


def test_one_derived_file_per_session_in_the_shared_gauge(
    joint_sources, joint_config, joint_fitted, reuse_joint_fit, tmp_path
):
    recordings, joint, warrant = joint_fitted
    before = [_sha(path) for path in joint_sources]
    messages: list[str] = []
    outputs = run_joint_files(
        joint_sources, joint_config, output_dir=tmp_path, progress=False, log=messages.append
    )
    assert [_sha(path) for path in joint_sources] == before
    assert [p.relative_to(tmp_path).as_posix() for p in outputs] == [
        f"sub-synthetic1/sub-synthetic1_ses-day{s}_desc-lrconn-joint_ecephys.nwb" for s in (0, 1)
    ]
    network_M = joint.model_.M.detach().double().numpy()
    for s, (path, rec, view) in enumerate(zip(outputs, recordings, joint.sessions_)):
        results = read_results(path)
        fit, summary = results.fit, results.joint
        np.testing.assert_array_equal(fit.M, view.M)
        np.testing.assert_array_equal(fit.latents[fit.latent_mask], view.latents[view.latent_mask])
        np.testing.assert_array_equal(fit.unit_ids, rec.unit_ids)
        np.testing.assert_allclose(summary.network_M, network_M)
        np.testing.assert_array_equal(summary.network_M[summary.units], fit.M)
        assert summary.session == s and summary.n_sessions == 2
        assert summary.sources == tuple(str(p) for p in joint_sources)
        assert summary.reference == joint.seed_session_
        np.testing.assert_array_equal(summary.difference, [row["difference"] for row in warrant])
        np.testing.assert_array_equal(summary.worse, [row["worse"] for row in warrant])
        assert summary.gauge_note == GAUGE_NOTE and summary.note == SKIPPED_NOTE
        assert results.posterior is None and results.distribution is None
        assert json.loads(results.provenance.config_json)["posterior"]["enabled"] is False
        assert results.provenance.source.path == str(joint_sources[s])
        frame = read_unit_table(path, join_source=True)  # the link reaches the session's Units
        np.testing.assert_array_equal(frame["source_id"], rec.unit_ids)
    assert reuse_joint_fit == [[p.name for p in joint_sources]]
    assert any("likelihood agrees with pooling" in m or "WORSE" in m for m in messages)
    assert any(m.startswith("note: the Laplace posterior") for m in messages)


def test_in_memory_sessions_give_results(joint_fitted, joint_config, reuse_joint_fit):
    recordings, joint, _ = joint_fitted
    results = run_joint(joint_config, recordings, progress=False)
    assert [r.joint.session for r in results] == [0, 1]
    assert [r.fit.n_units for r in results] == [rec.n_units for rec in recordings]
    config = joint_config.with_overrides(**{"posterior.enabled": False})
    assert run_joint(config, recordings, progress=False)[0].joint.note == ""


@pytest.fixture
def no_fit(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the fit must not start")

    monkeypatch.setattr(pipeline_joint, "_fit_joint", refuse)


def test_outputs_are_checked_before_the_fit(joint_sources, joint_config, tmp_path, no_fit):
    taken = tmp_path / "sub-synthetic1" / "sub-synthetic1_ses-day1_desc-lrconn-joint_ecephys.nwb"
    taken.parent.mkdir()
    taken.write_bytes(b"earlier")
    with pytest.raises(FileExistsError, match="exists"):
        run_joint_files(joint_sources, joint_config, output_dir=tmp_path, progress=False)
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        run_joint_files(joint_sources, joint_config, output_dir=taken, progress=False)
    twin = tmp_path / "copy" / "day0.nwb"
    twin.parent.mkdir()
    shutil.copyfile(joint_sources[0], twin)
    with pytest.raises(
        PipelineError, match=r"sessions day0.nwb and day0.nwb would both be written"
    ):
        run_joint_files([joint_sources[0], twin], joint_config, output_dir=tmp_path / "o")


@pytest.mark.parametrize(
    ("sources", "overrides", "message"),
    [
        ([0], {}, "a joint fit needs at least 2 sessions; got 1"),
        ([0, 0], {}, r"day0.nwb is given twice \(sessions 1 and 2\)"),
        ([0, 1], {"rank": "auto"}, "a joint fit needs one rank; got rank='auto'"),
        ([0, 1], {"rank": 20}, r"rank 20 is larger than the 12 units read from"),
    ],
)
def test_bad_sessions_fail_before_the_fit(
    joint_sources, joint_config, tmp_path, no_fit, sources, overrides, message
):
    config = joint_config.with_overrides(**overrides)
    with pytest.raises(PipelineError, match=message):
        run_joint_files([joint_sources[i] for i in sources], config, output_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_single_path_is_not_a_list_of_sessions(joint_sources, joint_config):
    with pytest.raises(TypeError, match="sources must be a list of NWB files"):
        run_joint_files(str(joint_sources[0]), joint_config)


def _recording(**changes) -> Recording:
    rng = np.random.default_rng(0)
    fields = dict(
        data=rng.poisson(1.0, (3, 10, 4)).astype(float),
        mask=np.ones((3, 10), bool),
        bin_width=0.02,
        kind="spikes",
        unit_ids=np.arange(4),
        unit_rows=np.arange(4),
        trial_start_times=np.arange(3.0),
    )
    return Recording(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "rates"}, r"differ in kind \('spikes' against 'rates'\)"),
        ({"bin_width": 0.05}, r"differ in bin width \(0.02 against 0.05\).*--bin-width"),
        (
            {"inputs": np.zeros((3, 10, 1)), "input_names": ("stim",)},
            r"differ in input channels \(\(\) against \('stim',\)\)",
        ),
    ],
)
def test_sessions_that_differ_are_named(changes, message):
    with pytest.raises(PipelineError, match=r"sessions a.nwb and b.nwb " + message):
        check_sessions([_recording(), _recording(**changes)], ["a.nwb", "b.nwb"])
    with pytest.raises(PipelineError, match=message):  # in memory, before any fit
        run_joint(None, [_recording(), _recording(**changes)], progress=False)


def test_a_session_worse_than_the_baseline_stops_or_is_kept(
    joint_sources, joint_config, tmp_path, reuse_joint_fit, monkeypatch
):
    calls = iter([None, "it predicts held-out spikes no better than a constant rate"])
    monkeypatch.setattr(pipeline, "assess_fit", lambda fit: next(calls))
    with pytest.raises(
        FitFailedError, match=r"fit of session .*day1.nwb in the joint fit failed: it"
    ):
        run_joint_files(joint_sources, joint_config, output_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())
    calls = iter([None, "no better"])
    config = joint_config.with_overrides(keep_failed=True)
    outputs = run_joint_files(joint_sources, config, output_dir=tmp_path, progress=False)
    assert read_results(outputs[1]).fit.metrics["failed"] == 1.0
    assert "failed" not in read_results(outputs[0]).fit.metrics


@dataclasses.dataclass(frozen=True)
class FakePooled:
    """The shape of ``nwb_lrconn.inference.pooled.PooledDistribution``."""

    pooled: object
    sessions: tuple
    dissimilarity: np.ndarray
    floor: np.ndarray
    symmetry: tuple
    flagged: tuple
    reason: str


def _fake_pooled(rank: int = 2) -> FakePooled:
    dists = [mock_results(random_state=s).distribution for s in range(3)]
    return FakePooled(
        pooled=dists[0],
        sessions=(dists[1], dists[2]),
        dissimilarity=np.array([[0.0, 0.3], [0.3, 0.0]]),
        floor=np.array([0.1, 0.2]),
        symmetry=(np.eye(rank), -np.eye(rank)),
        flagged=(1,),
        reason="gmm on 24 units; session 2 is far from session 1",
    )


def test_the_pooled_distribution_goes_into_every_file(
    joint_sources, joint_config, joint_fitted, reuse_joint_fit, tmp_path, monkeypatch
):
    fake = _fake_pooled()
    seen = {}

    def pooled_distribution(joint, recordings, **kwargs):
        seen.update(kwargs, n_recordings=len(recordings))
        return fake

    module = types.ModuleType("nwb_lrconn.inference.pooled")
    module.pooled_distribution = pooled_distribution
    monkeypatch.setitem(sys.modules, "nwb_lrconn.inference.pooled", module)
    config = joint_config.with_overrides(**{"distribution.enabled": True, "model": "gmm"})
    messages: list[str] = []
    outputs = run_joint_files(
        joint_sources, config, output_dir=tmp_path, progress=False, log=messages.append
    )
    flagged = [m for m in messages if "FLAGGED" in m and "distribution" in m]
    assert flagged == [
        f"{joint_sources[1].name}: its units' loading distribution is far from every other "
        "session's (D 0.3 against within-session floor 0.2): FLAGGED, pooling it is not "
        "warranted even where its likelihood agrees"
    ]
    assert seen["n_recordings"] == 2 and seen["model"] == "gmm" and seen["random_state"] == 3
    for s, path in enumerate(outputs):
        results = read_results(path)
        summary = results.joint
        np.testing.assert_array_equal(results.distribution.samples_k, fake.sessions[s].samples_k)
        np.testing.assert_array_equal(summary.pooled.samples_z, fake.pooled.samples_z)
        np.testing.assert_array_equal(summary.dissimilarity, fake.dissimilarity)
        np.testing.assert_array_equal(summary.floor, fake.floor)
        np.testing.assert_array_equal(summary.symmetry, np.stack(fake.symmetry))
        assert summary.flagged == (1,) and summary.pooled_reason == fake.reason
        assert summary.verdict(1).startswith("FLAGGED: ") and "far from the others" in (
            summary.verdict(1)
        )


def test_with_the_pooled_module_of_this_version(joint_fitted, joint_config, reuse_joint_fit):
    recordings, _, _ = joint_fitted
    overrides = {"distribution.enabled": True, "model": "gaussian", "n_samples": 50}
    results = run_joint(joint_config.with_overrides(**overrides), recordings, progress=False)
    for res in results:
        summary = res.joint
        assert summary.pooled is not None and res.distribution is not None
        assert summary.dissimilarity.shape == (2, 2) and summary.floor.shape == (2,)
        assert summary.symmetry.shape == (2, 2, 2)
        assert set(summary.flagged) <= {0, 1} and summary.pooled_reason


def test_sessions_from_a_dandi_asset_and_a_streamed_url(
    joint_sources, joint_config, joint_fitted, reuse_joint_fit, mock_dandi, tmp_path, monkeypatch
):
    # One session named by its DANDI id, the other by the URL of its bytes: both are read through
    # the package's remote readers (a local mock archive) and get their own derived file.
    server = mock_dandi(
        {"sub-synthetic1/day0.nwb": joint_sources[0], "sub-synthetic1/day1.nwb": joint_sources[1]}
    )
    monkeypatch.setenv("NWB_LRCONN_DANDI_INSTANCE", server.api_url)
    sources = ["DANDI:000207/sub-synthetic1/day0.nwb", server.blob_url("sub-synthetic1/day1.nwb")]
    outputs = run_joint_files(
        sources, joint_config, output_dir=tmp_path / "out", progress=False,
        cache_dir=tmp_path / "cache",
    )  # fmt: skip
    recordings = joint_fitted[0]
    assert len(reuse_joint_fit) == 1
    for s, (path, kind) in enumerate(zip(outputs, ("dandi", "url"))):
        results = read_results(path)
        np.testing.assert_array_equal(results.fit.unit_ids, recordings[s].unit_ids)
        assert results.joint.session == s and results.joint.n_sessions == 2
        assert path.is_relative_to(tmp_path / "out")
        assert results.provenance.source.origin["kind"] == kind
