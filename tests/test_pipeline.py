"""Pipeline: read → fit → posterior → degeneracy → distribution → Results, and run_file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import stat

import numpy as np
import pytest

from nwb_lrconn.config import (
    DistributionConfig,
    FitConfig,
    PosteriorConfig,
    ReadConfig,
    RunConfig,
)
from nwb_lrconn.pipeline import PipelineError, output_path, read_recording, run, run_file

N_UNITS = 24


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def session():
    from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
    from nwb_lrconn.model.simulate import simulate_spikes

    network = sample_network("ring", N_UNITS, random_state=0)
    return simulate_spikes(
        network,
        initial=grid_initial_conditions(4),
        n_time=40,
        rate_range=(1.0, 60.0),
        random_state=0,
    )


@pytest.fixture(scope="module")
def units_file(session, tmp_path_factory):
    from nwb_lrconn.io import write_units_nwb

    path = tmp_path_factory.mktemp("pipeline") / "ring.nwb"
    return write_units_nwb(path, session.spike_times, trials=session.trials)


def tiny_config(**overrides) -> RunConfig:
    config = RunConfig(
        read=ReadConfig(bin_width=0.02, trials="trials"),
        fit=FitConfig(rank=2, max_epochs=4, patience=2, batch_size=None),
        posterior=PosteriorConfig(enabled=False),
        distribution=DistributionConfig(
            enabled=False,
            n_steps_a=10,
            n_steps_b=4,
            n_virtual_units=16,
            hidden_features=8,
            n_layers=2,
            n_samples=30,
            pool_size=200,
            validation_every=5,
        ),
        seed=3,
        name="tiny",
    )
    return config.with_overrides(**overrides)


def test_run_on_a_file_returns_results_with_provenance(units_file, session):
    config = tiny_config(**{"distribution.enabled": True})
    messages: list[str] = []
    results = run(config, units_file, progress=False, log=messages.append)
    fit = results.fit
    assert results.name == "tiny"
    assert (fit.n_units, fit.rank, fit.observation) == (N_UNITS, 2, "poisson")
    assert fit.latents.shape[:2] == session.data.shape[:2]
    assert RunConfig.from_json(results.provenance.config_json) == config
    assert results.provenance.random_seed == 3
    assert results.provenance.source.path == str(units_file)
    assert results.posterior is None and results.degeneracy is None
    dist = results.distribution
    assert dist.samples_k.shape == (30, 2) and dist.sigma == config.distribution.sigma
    # 24 units: below the flow threshold, the Gaussian (mixture) model, and the log says why.
    assert dist.model in ("gaussian", "gmm") and dist.reason.startswith("24 units < ")
    assert f"distribution model: {dist.model} ({dist.reason})" in messages
    assert messages[0] == "reading the recording"
    assert any(m.startswith("read 24 units, 16 trials") for m in messages)


def test_posterior_and_degeneracy_stage(session):
    config = tiny_config(**{"posterior.enabled": True, "posterior.structure": "blocks"})
    results = run(config, session.to_recording(), progress=False)
    post, deg = results.posterior, results.degeneracy
    n_params = N_UNITS * (2 + 2 + 1)  # M, K, d (no inputs)
    assert post.n_params == n_params and post.structure == "blocks"
    assert post.prior_precision == config.posterior.prior_precision
    assert deg.n_total == n_params and deg.n_gauge == 4
    assert deg.n_constrained + deg.n_degenerate + deg.n_gauge == n_params
    assert deg.unit_scores.shape == (N_UNITS,)


def test_run_accepts_an_in_memory_recording_and_is_deterministic(session):
    recording = session.to_recording()
    first = run(tiny_config(), recording, progress=False)
    second = run(tiny_config(), recording, progress=False)
    np.testing.assert_array_equal(first.fit.M, second.fit.M)
    np.testing.assert_array_equal(first.fit.latents, second.fit.latents)
    assert first.provenance.source.path == ""


def test_rank_auto_keeps_the_best_held_out_rank_and_the_curve(session):
    recording = session.to_recording()
    results = run(tiny_config(rank="auto", ranks=(1, 2, 50)), recording, progress=False)
    metrics = results.fit.metrics
    curve = {r: metrics[f"rank_{r}_log_likelihood"] for r in (1, 2)}
    assert "rank_50_log_likelihood" not in metrics  # larger than the number of units: skipped
    best = max(curve, key=curve.get)
    assert metrics["selected_rank"] == best == results.fit.rank
    assert metrics["log_likelihood"] == curve[best]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"rank": 30}, r"rank 30 is larger than the 24 units read from .*choose a rank <= 24"),
        (
            {"rank": "auto", "ranks": (40, 50)},
            r"every rank tried \(\[40, 50\]\) is larger than the 24 units",
        ),
    ],
)
def test_rank_errors_say_what_to_do(units_file, overrides, match):
    with pytest.raises(PipelineError, match=match):
        run(tiny_config(**overrides), units_file, progress=False)


def test_single_trial_error_suggests_windows(session):
    recording = session.to_recording().select_trials(np.array([0]))
    with pytest.raises(PipelineError, match=r"single trial.*--window"):
        run(tiny_config(), recording, progress=False)


def test_read_recording_errors(tmp_path, units_file):
    with pytest.raises(FileNotFoundError, match=r"NWB file not found: .*missing.nwb"):
        read_recording(tiny_config(), tmp_path / "missing.nwb")
    with pytest.raises(PipelineError, match=r"takes a spikeinterface sorting object"):
        read_recording(tiny_config(source="sorting", trials=None), units_file)
    with pytest.raises(
        PipelineError, match=r"source must be an NWB path, URL, DANDI reference or open NWBFile"
    ):
        read_recording(tiny_config(), 42)
    with pytest.raises(TypeError, match=r"config must be a RunConfig"):
        run({"seed": 1}, units_file)


def test_run_reads_a_spikeinterface_sorting(session, units_file):
    from spikeinterface.core import NumpySorting

    fs = 10_000.0
    times = np.concatenate(session.spike_times)
    labels = np.concatenate([np.full(len(t), i) for i, t in enumerate(session.spike_times)])
    order = np.argsort(times, kind="stable")
    sorting = NumpySorting.from_samples_and_labels(
        [np.round(times[order] * fs).astype(np.int64)], [labels[order]], fs
    )
    config = tiny_config(source="sorting", trials=None, window_length=0.5)
    recording = read_recording(config, sorting)
    assert recording.n_units == N_UNITS and recording.kind == "spikes"
    assert recording.n_trials >= 2


def test_run_file_writes_a_derived_file_and_leaves_the_source_untouched(units_file, tmp_path):
    from nwb_lrconn.extension import list_results, read_results

    before = _sha(units_file)
    output = tmp_path / "out.nwb"
    assert run_file(units_file, output, tiny_config(), progress=False) == output
    assert _sha(units_file) == before
    assert list_results(output) == ["tiny"]
    back = read_results(output, "tiny")
    assert back.fit.n_units == N_UNITS
    assert json.loads(back.provenance.config_json) == json.loads(tiny_config().to_json())
    assert output.stat().st_size < units_file.stat().st_size + 2_000_000
    # a second run refuses to clobber the output, before fitting
    with pytest.raises(FileExistsError, match=r"The output file .*out.nwb already exists"):
        run_file(units_file, output, tiny_config(), progress=False)
    assert _sha(units_file) == before


def test_output_path_follows_the_dandi_layout(units_file, tmp_path):
    config = tiny_config()
    recording = read_recording(config, units_file)
    beside = output_path(config, recording, units_file)
    assert beside == units_file.with_name(
        "sub-synthetic1_ses-session1_desc-lrconn-tiny_ecephys.nwb"
    )
    identified = dataclasses.replace(
        recording,
        source=dataclasses.replace(
            recording.source,
            session={"session_id": "day-1", "subject": {"subject_id": "m_12"}},
        ),
    )
    assert output_path(config, identified, units_file, output_dir=tmp_path) == (
        tmp_path / "sub-m12" / "sub-m12_ses-day1_desc-lrconn-tiny_ecephys.nwb"
    )


def test_run_file_checks_the_output_before_fitting(units_file, tmp_path):
    config = tiny_config()
    with pytest.raises(ValueError, match=r"The output .* is the input file; use --in-place"):
        run_file(units_file, units_file, config)
    with pytest.raises(FileNotFoundError, match=r"The output folder .*no does not exist"):
        run_file(units_file, tmp_path / "no" / "out.nwb", config)
    with pytest.raises(FileNotFoundError, match=r"NWB file not found: .*nope.nwb"):
        run_file(tmp_path / "nope.nwb", tmp_path / "out.nwb", config)
    with pytest.raises(IsADirectoryError, match=r"The output .* is a folder"):
        run_file(units_file, tmp_path, config)


def test_run_file_refuses_unwritable_targets(units_file, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(PermissionError, match=r"The output folder .*locked is not writable"):
            run_file(units_file, locked / "out.nwb", tiny_config())
        with pytest.raises(PermissionError, match=r"The output folder .*locked is not writable"):
            run_file(units_file, None, tiny_config(), output_dir=locked / "sub")
    finally:
        locked.chmod(stat.S_IRWXU)


def test_run_file_in_place_adds_the_fit_to_the_source(units_file, tmp_path):
    import shutil

    from nwb_lrconn.extension import list_results

    copy = tmp_path / "copy.nwb"
    shutil.copy(units_file, copy)
    assert (
        run_file(copy, None, tiny_config(name="inplace"), mode="in-place", progress=False) == copy
    )
    assert list_results(copy) == ["inplace"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.nwb"]
    with pytest.raises(FileExistsError, match=r"already holds a fit named 'inplace' in module"):
        run_file(copy, None, tiny_config(name="inplace"), mode="in-place", progress=False)


def test_a_fit_worse_than_the_baseline_is_failed(units_file, tmp_path, monkeypatch):
    import dataclasses as dc

    import nwb_lrconn.pipeline as pipeline
    from nwb_lrconn.extension import read_results

    real = pipeline.fit_lowrank

    def worse(config, recording, **kwargs):
        fit = real(config, recording, **kwargs)
        return dc.replace(fit, metrics={**fit.metrics, "bits_per_spike": -0.02})

    monkeypatch.setattr(pipeline, "fit_lowrank", worse)
    output = tmp_path / "out.nwb"
    with pytest.raises(pipeline.FitFailedError, match=r"no better than a constant rate per unit"):
        run_file(units_file, output, tiny_config(), progress=False)
    assert not output.exists()
    run_file(units_file, output, tiny_config(keep_failed=True), progress=False)
    back = read_results(output, "tiny")
    assert back.fit.metrics["failed"] == 1.0 and back.posterior is None


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"log_likelihood": -6.7e17}, "noise scale has collapsed"),
        ({"log_likelihood": float("nan")}, "log-likelihood is nan"),
        ({"log_likelihood": -1.0, "r2": -0.3}, r"no better than each unit's mean \(R² -0.3\)"),
        ({"log_likelihood": -1.0, "r2": 0.4}, None),
    ],
)
def test_assess_fit(metrics, message):
    from types import SimpleNamespace

    from nwb_lrconn.pipeline import assess_fit

    reason = assess_fit(SimpleNamespace(metrics=metrics))
    assert (reason is None) if message is None else re.search(message, reason)


def test_an_interrupted_run_keeps_stage_one_and_continues(units_file, tmp_path, monkeypatch):
    import nwb_lrconn.inference.laplace as laplace
    import nwb_lrconn.pipeline as pipeline
    from nwb_lrconn.extension import read_results

    output = tmp_path / "out.nwb"
    config = tiny_config(**{"posterior.enabled": True, "max_epochs": 60, "fit.patience": 20})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(laplace, "laplace_posterior", killed)
        with pytest.raises(KeyboardInterrupt):
            run_file(units_file, output, config, progress=False)
    saved = read_results(output, "tiny")
    assert saved.fit.metrics["partial"] == 1.0 and saved.posterior is None

    def no_refit(*args, **kwargs):
        raise AssertionError("stage 1 ran again")

    monkeypatch.setattr(pipeline, "fit_lowrank", no_refit)
    run_file(units_file, output, config, progress=False)
    done = read_results(output, "tiny")
    assert "partial" not in done.fit.metrics and done.posterior is not None
    np.testing.assert_array_equal(done.fit.M, saved.fit.M)
    with pytest.raises(FileExistsError, match="already exists"):
        run_file(units_file, output, config, progress=False)  # complete: not continued
