"""Batch analysis on Dask: planning, resumability, failures, killed workers, rank selection."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
from contextlib import nullcontext as does_not_raise
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from nwb_lrconn.batch import (
    SUMMARY_COLUMNS,
    expand_inputs,
    local_cluster,
    output_name,
    plan_batch,
    resolve_device,
    run_batch,
    run_pipeline_task,
    select_ranks,
    write_summary,
)
from nwb_lrconn.cli import main
from nwb_lrconn.config import RunConfig
from nwb_lrconn.extension import read_results
from nwb_lrconn.io import write_units_nwb
from nwb_lrconn.model.networks import sample_network
from nwb_lrconn.model.simulate import simulate_spikes


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _nwb(path: Path, subject: str = "mouse1") -> Path:
    """A small real NWB file (mouse1, session1 unless told)."""
    import h5py

    from nwb_lrconn.extension import mock_units_nwb

    path.parent.mkdir(parents=True, exist_ok=True)
    mock_units_nwb(path, n_units=4)
    with h5py.File(path, "r+") as handle:
        del handle["general/subject/subject_id"]
        handle["general/subject/subject_id"] = subject
    return path


# ------------------------------------------------------------------------------------ inputs
def test_expand_inputs_files_globs_manifests_urls(tmp_path, monkeypatch):
    a = _touch(tmp_path / "data" / "a.nwb")
    b = _touch(tmp_path / "data" / "b.nwb")
    c = _touch(tmp_path / "data" / "sub" / "c.nwb")
    manifest = tmp_path / "data" / "list.txt"
    manifest.write_text("# sessions\n\na.nwb\n  sub/c.nwb  \nhttps://host/x.nwb\n")
    csv = tmp_path / "list.csv"
    pd.DataFrame({"subject": ["s1", "s2"], "path": [str(b), "data/a.nwb"]}).to_csv(csv)
    monkeypatch.chdir(tmp_path)
    found = expand_inputs(["data/*.nwb", manifest, csv, "data/**/c.nwb", str(a)])
    # Order of first appearance, duplicates dropped, URLs kept verbatim, paths absolute.
    assert found == [str(a), str(b), str(c), "https://host/x.nwb"]
    assert expand_inputs(str(b)) == [str(b)]


@pytest.mark.parametrize(
    ("entry", "expectation"),
    [
        ("missing.nwb", pytest.raises(FileNotFoundError, match=r"input not found: .*missing.nwb")),
        ("none/*.nwb", pytest.raises(FileNotFoundError, match=r"matched no file")),
        ("nested.txt", pytest.raises(ValueError, match=r"lists another manifest")),
        ("empty.txt", pytest.raises(ValueError, match=r"no inputs to process")),
        ("empty.csv", pytest.raises(ValueError, match=r"lists no input")),
        ("ok.nwb", does_not_raise()),
    ],
)
def test_expand_inputs_errors(tmp_path, monkeypatch, entry, expectation):
    _touch(tmp_path / "ok.nwb")
    (tmp_path / "nested.txt").write_text("other.txt\n")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    (tmp_path / "empty.csv").write_text("path\n")
    monkeypatch.chdir(tmp_path)
    with expectation:
        expand_inputs([entry])


def test_output_names_are_deterministic_and_distinct():
    session = {"session_id": "day-2", "subject": {"subject_id": "M12"}}
    first = output_name("/data/one/session.nwb", 2, 0, session=session)
    assert first == output_name("/data/one/session.nwb", 2, 0, session=session)
    assert first == "sub-M12/sub-M12_ses-day2_desc-lrconn-rank2seed0_ecephys.nwb"
    assert output_name("/x.nwb", 1, 4, session=session, modality="ophys").endswith("_ophys.nwb")
    # Another rank or seed, or the digest of the source: another output.
    others = {
        output_name("/data/one/session.nwb", 2, 0, session=session, unique=True),
        output_name("/data/two/session.nwb", 2, 0, session=session, unique=True),
        output_name("/data/one/session.nwb", 3, 0, session=session),
        output_name("/data/one/session.nwb", 2, 1, session=session),
    }
    assert first not in others and len(others) == 4
    url = output_name("https://api.dandiarchive.org/assets/abc/download/?x=1 y", 1, 4)
    assert url == "download_desc-lrconn-rank1seed4.nwb"


def test_plan_batch_names_outputs_by_subject_and_session(tmp_path):
    a = _nwb(tmp_path / "a.nwb", subject="A1")
    b = _nwb(tmp_path / "b.nwb", subject="B2")
    twin = _nwb(tmp_path / "twin" / "a.nwb", subject="A1")  # same ids as a: digests added
    tasks = plan_batch([a, b, twin], ranks=[2], seeds=[0], config=RunConfig(), output_dir="o")
    names = [Path(t.output).relative_to(Path("o").resolve()).as_posix() for t in tasks]
    assert names[1] == "sub-B2/sub-B2_ses-session1_desc-lrconn-rank2seed0_ecephys.nwb"
    assert names[0].startswith("sub-A1/sub-A1_ses-session1_desc-lrconn-") and names[0] != names[2]
    again = plan_batch([a, b, twin], ranks=[2], seeds=[0], config=RunConfig(), output_dir="o")
    assert [t.output for t in again] == [t.output for t in tasks]  # stable under reruns


def test_plan_batch_finds_unreadable_inputs_up_front(tmp_path):
    good, bad = _nwb(tmp_path / "good.nwb"), _touch(tmp_path / "bad.nwb")
    tasks = plan_batch([good, bad], ranks=[1], seeds=[0], config=RunConfig(), output_dir=tmp_path)
    assert tasks[0].problem == ""
    assert tasks[1].problem.startswith("PipelineError: ") and "bad.nwb is not an HDF5" in (
        tasks[1].problem
    )


def test_plan_batch_crosses_files_ranks_seeds(tmp_path):
    files = [_nwb(tmp_path / f"s{i}.nwb", subject=f"S{i}") for i in range(3)]
    config = RunConfig().with_overrides(max_epochs=7)
    tasks = plan_batch(files, ranks=[1, 2], seeds=[0, 5], config=config, output_dir="out")
    assert len(tasks) == 3 * 2 * 2
    assert len({t.output for t in tasks}) == len(tasks)  # one writer per file
    for task in tasks:
        task_config = RunConfig.from_json(task.config_json)
        assert (task_config.fit.rank, task_config.seed) == (task.rank, task.seed)
        assert task_config.fit.max_epochs == 7
        assert Path(task.output).parent.parent == Path("out").resolve()
        assert not task.is_remote
    # Defaults come from the configuration.
    auto = RunConfig().with_overrides(rank="auto", ranks=(1, 3), seed=4)
    tasks = plan_batch(files[0], ranks=None, seeds=None, config=auto, output_dir=tmp_path)
    assert [(t.rank, t.seed) for t in tasks] == [(1, 4), (3, 4)]


@pytest.mark.parametrize(
    ("override", "expectation"),
    [
        ({}, does_not_raise()),
        ({"ranks": []}, pytest.raises(ValueError, match=r"ranks must list at least one value")),
        ({"ranks": [2, 2]}, pytest.raises(ValueError, match=r"ranks must not repeat a value")),
        ({"ranks": [0]}, pytest.raises(ValueError, match=r"ranks entries must be >= 1")),
        ({"ranks": [1.5]}, pytest.raises(TypeError, match=r"ranks entries must be an integer")),
        ({"seeds": [-1]}, pytest.raises(ValueError, match=r"seeds entries must be >= 0")),
        (
            {"seeds": None, "config": RunConfig(seed=None)},
            pytest.raises(ValueError, match=r"batch runs need integer seeds"),
        ),
        ({"config": {"seed": 0}}, pytest.raises(TypeError, match=r"config must be a RunConfig")),
    ],
)
def test_plan_batch_validation(tmp_path, override, expectation):
    source = _nwb(tmp_path / "s.nwb")
    kwargs = {"ranks": [1], "seeds": [0], "config": RunConfig(), "output_dir": tmp_path}
    with expectation:
        plan_batch(source, **{**kwargs, **override})


@pytest.mark.parametrize(
    ("override", "expectation"),
    [
        ({"n_workers": 0}, pytest.raises(ValueError, match=r"n_workers must be >= 1")),
        ({"retries": -1}, pytest.raises(ValueError, match=r"retries must be >= 0")),
        (
            {"resources": {"GPU": 0}},
            pytest.raises(ValueError, match=r"resources\['GPU'\] must be a number > 0"),
        ),
        ({"resources": [1]}, pytest.raises(TypeError, match=r"resources must be a dict")),
        (
            {"resources": {"GPU": True}},
            pytest.raises(TypeError, match=r"resources must map names to amounts; got 'GPU'"),
        ),
        (
            {"resources": {"MEMORY": 1e12}, "memory_limit": "1GB"},
            pytest.raises(ValueError, match=r"exceeds the memory of each embedded worker"),
        ),
    ],
)
def test_run_batch_validation(tmp_path, override, expectation):
    source = _nwb(tmp_path / "s.nwb")
    with expectation:
        run_batch(source, ranks=[1], seeds=[0], output_dir=tmp_path / "out", **override)


def test_resolve_device():
    import torch

    assert resolve_device("cpu") == "cpu"
    if torch.cuda.is_available():
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.warns(RuntimeWarning, match=r"CUDA is not available.*on the CPU instead"):
            assert resolve_device("cuda:0") == "cpu"


# ------------------------------------------------------------------- recognising finished work
def _write_mock_output(task, **provenance) -> None:
    """Write results for ``task`` whose provenance fields can be overridden."""
    from nwb_lrconn.data import Provenance, SourceInfo
    from nwb_lrconn.extension import mock_results, write_results

    fields = {
        "software_version": "0",
        "config_json": task.config_json,
        "random_seed": task.seed,
        "source": SourceInfo(identifier="session-a", path=task.input),
        "created": "2026-01-01T00:00:00+00:00",
        **provenance,
    }
    results = mock_results(rank=task.rank, with_distribution=False, random_state=0)
    results = dataclasses.replace(results, name=RunConfig().name, provenance=Provenance(**fields))
    Path(task.output).parent.mkdir(parents=True, exist_ok=True)
    write_results(results, None, task.output)


@pytest.mark.parametrize(
    ("provenance", "mismatch"),
    [
        ({}, None),
        ({"config_json": RunConfig(device="cuda").with_overrides(rank=2).to_json()}, None),
        ({"random_seed": 1}, "seed 1 != 0"),
        (
            {"config_json": RunConfig().with_overrides(rank=2, lr=0.5).to_json()},
            "the run configuration differs",
        ),
        ({"source": "other"}, r"source '.*other.nwb' != "),
        ({"source": "identifier"}, "source identifier 'session-b' != 'session-a'"),
    ],
)
def test_finished_outputs_are_recognised_by_provenance(tmp_path, provenance, mismatch):
    from nwb_lrconn.batch import summarise_output
    from nwb_lrconn.data import SourceInfo
    from nwb_lrconn.extension import mock_units_nwb

    source = mock_units_nwb(tmp_path / "a.nwb", identifier="session-a")
    (task,) = plan_batch(source, ranks=[2], seeds=[0], config=RunConfig(), output_dir=tmp_path)
    if provenance.get("source") == "other":
        provenance["source"] = SourceInfo(identifier="session-a", path=str(tmp_path / "other.nwb"))
    elif provenance.get("source") == "identifier":
        provenance["source"] = SourceInfo(identifier="session-b", path=task.input)
    _write_mock_output(task, **provenance)
    if mismatch is None:
        row = summarise_output(task.output, task)
        assert (row["status"], row["rank"], row["seed"]) == ("skipped", 2, 0)
        assert row["file"] == str(source)
        assert row["n_gauge"] == 4 and math.isfinite(row["log_likelihood"])
    else:
        expected = f"does not hold the results of this task: {mismatch}"
        with pytest.raises(RuntimeError, match=expected):
            summarise_output(task.output, task)
        # A batch never counts it as finished, nor silently replaces it.
        with pytest.raises(FileExistsError, match=r"1 output\(s\) in .* do not match their task"):
            run_batch(source, ranks=[2], seeds=[0], output_dir=tmp_path)


# ---------------------------------------------------------------------------- rank selection
def _summary(rows):
    table = pd.DataFrame(rows, columns=["file", "rank", "seed", "status", "log_likelihood"])
    table["output"] = [f"{r[0]}-{r[1]}-{r[2]}.nwb" for r in rows]
    return table


def test_select_ranks_best_and_one_se():
    rows = [
        # file a: rank 2 best on average; rank 3 ties within noise.
        ("a", 1, 0, "done", -2.0),
        ("a", 1, 1, "done", -2.2),
        ("a", 2, 0, "done", -1.0),
        ("a", 2, 1, "skipped", -1.2),
        ("a", 3, 0, "done", -0.9),
        ("a", 3, 1, "done", -1.2),
        ("a", 4, 0, "failed", np.nan),
        # file b: only rank 1 succeeded.
        ("b", 1, 0, "done", -3.0),
        ("b", 2, 0, "failed", np.nan),
        # file c: nothing succeeded, still listed.
        ("c", 1, 0, "failed", np.nan),
    ]
    best = select_ranks(_summary(rows))
    assert list(best["file"]) == ["a", "b", "c"]
    a, b, c = (best.iloc[i] for i in range(3))
    assert a["rank"] == 3 and math.isclose(a["log_likelihood"], -1.05)
    assert a["n_seeds"] == 2 and a["best_seed"] == 0 and a["output"] == "a-3-0.nwb"
    assert a["ranks_tried"] == [1, 2, 3]
    assert b["rank"] == 1 and b["n_seeds"] == 1 and b["log_likelihood_sem"] == 0.0
    assert pd.isna(c["rank"]) and c["n_seeds"] == 0 and c["ranks_tried"] == []
    # One standard error: rank 2 (mean -1.1) is within one SE (0.15) of rank 3 (-1.05).
    parsimonious = select_ranks(_summary(rows), rule="one_se")
    assert parsimonious.iloc[0]["rank"] == 2


@pytest.mark.parametrize(
    ("kwargs", "expectation"),
    [
        ({"rule": "aic"}, pytest.raises(ValueError, match=r"rule must be one of")),
        (
            {"drop": "status"},
            pytest.raises(ValueError, match=r"table lacks column\(s\) \['status'\]"),
        ),
        ({}, does_not_raise()),
    ],
)
def test_select_ranks_validation(kwargs, expectation):
    table = _summary([("a", 1, 0, "done", -1.0)])
    if "drop" in kwargs:
        table = table.drop(columns=kwargs.pop("drop"))
    with expectation:
        select_ranks(table, **kwargs)


def test_write_summary_round_trip(tmp_path):
    table = pd.DataFrame([dict.fromkeys(SUMMARY_COLUMNS, 1)])
    written = write_summary(table, tmp_path / "sub" / "summary.csv")
    assert written[0] == tmp_path / "sub" / "summary.csv"
    back = pd.read_csv(written[0])
    assert list(back.columns) == list(SUMMARY_COLUMNS)
    has_arrow = any(p.suffix == ".parquet" for p in written)
    try:
        import pyarrow  # noqa: F401

        assert has_arrow
    except ImportError:
        assert not has_arrow


# ----------------------------------------------------------------------------------------- CLI
def test_batch_cli_bad_input_is_one_line(tmp_path, capsys):
    from nwb_lrconn.cli import build_parser

    assert main(["batch", str(tmp_path / "nope.nwb"), "--output-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nwb-lrconn batch: error: input not found:") and err.count("\n") == 1
    argv = ["batch", "x.nwb", "-o", "o", "--ranks", "1", "2", "--gpu", "--task-memory=1G"]
    args = build_parser().parse_args(argv)
    assert (args.ranks, args.gpu, args.task_memory, args.retries) == ([1, 2], True, "1G", 1)


# ------------------------------------------------------------------ Dask runs (real pipeline)
# Task functions defined here run in worker processes: pickle them by value, since the workers
# cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TINY = {
    "trials": "trials",
    "fit.max_epochs": 15,
    "fit.patience": 5,
    "distribution.enabled": False,
}


def _tiny_config(**overrides) -> RunConfig:
    return RunConfig().with_overrides(**{**TINY, **overrides})


def _write_session(path: Path, seed: int) -> Path:
    """A small synthetic spike session (bistable network, 12 units, 32 trials of 0.8 s)."""
    rng = np.random.default_rng(seed)
    network = sample_network("bistable", 12, random_state=seed)
    session = simulate_spikes(
        network,
        initial=rng.uniform(-2, 2, (32, 2)),
        n_time=40,
        rate_range=(1.0, 60.0),
        random_state=seed,
    )
    return write_units_nwb(path, session.spike_times, trials=session.trials)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("sessions")
    return [_write_session(folder / f"session{i}.nwb", seed=i) for i in range(8)]


@pytest.fixture(scope="module")
def client():
    """A shared 2-process local cluster (starting one costs several seconds)."""
    from distributed import Client

    with local_cluster(n_workers=2) as cluster, Client(cluster) as client:
        yield client


def test_local_cluster_workers_keep_glibc_malloc_defaults(client):
    env = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert list(env.values()) == [None, None]


def _check_outputs(table: pd.DataFrame, config: RunConfig) -> None:
    """Every finished row points to a valid results file of its task; nothing partial left."""
    for row in table[table["status"] != "failed"].itertuples():
        results = read_results(row.output, config.name)
        assert results.fit.rank == row.rank
        assert results.provenance.random_seed == row.seed
        assert results.provenance.source.path == row.file
        stored = RunConfig.from_json(results.provenance.config_json)
        assert stored == config.with_overrides(rank=row.rank, seed=row.seed)
        assert math.isclose(row.log_likelihood, results.fit.metrics["log_likelihood"])
        deg = results.degeneracy
        counts = (deg.n_constrained, deg.n_degenerate, deg.n_gauge, deg.n_total)
        assert (row.n_constrained, row.n_degenerate, row.n_gauge, row.n_total) == counts
        assert deg.n_gauge == row.rank**2  # the GL(R) gauge directions
    out_dir = Path(table["output"][table["status"] != "failed"].iloc[0]).parent
    assert not (out_dir / ".partial").exists()
    finished = {p.name for p in out_dir.glob("*.nwb")}
    expected = {Path(p).name for p in table.loc[table["status"] != "failed", "output"]}
    assert finished == expected


def _no_cluster(*args, **kwargs):
    raise AssertionError("a rerun of a finished batch must not start a cluster")


@pytest.mark.timeout(400)  # a hung cluster fails instead of blocking the suite
def test_batch_cli_runs_then_rerun_does_no_work(sessions, tmp_path, capsys, monkeypatch):
    config = _tiny_config()
    config_file = tmp_path / "run.json"
    config_file.write_text(config.to_json())
    out = tmp_path / "out"
    argv = ["batch", *map(str, sessions[:2]), "-o", str(out), "--ranks", "2", "3"]
    argv += ["--seeds", "3", "--config", str(config_file), "--quiet"]
    assert main(argv) == 0  # through the package's command line
    printed = capsys.readouterr().out
    assert "4 task(s): 4 done, 0 skipped, 0 failed" in printed
    table = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert len(table) == 4 and set(table["status"]) == {"done"}
    assert set(zip(table["file"], table["rank"])) == {
        (str(s), r) for s in sessions[:2] for r in (2, 3)
    }
    assert (table["seed"] == 3).all() and (table["time_s"] > 0).all()
    _check_outputs(table, config.with_overrides(seed=3))
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.nwb")}

    # Rerun: every output is recognised by its provenance; no cluster, no file touched.
    import distributed

    monkeypatch.setattr(distributed, "LocalCluster", _no_cluster)
    again = run_batch(
        sessions[:2], ranks=[2, 3], seeds=[3], config=config, output_dir=out, progress=False
    )
    assert set(again["status"]) == {"skipped"} and (again["time_s"] == 0).all()
    pd.testing.assert_series_equal(again["log_likelihood"], table["log_likelihood"])
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.nwb")} == mtimes

    # Another configuration in the same folder is refused instead of silently replaced.
    with pytest.raises(FileExistsError, match=r"4 output\(s\) in .* do not match their task"):
        run_batch(
            sessions[:2],
            ranks=[2, 3],
            seeds=[3],
            config=_tiny_config(**{"fit.max_epochs": 16}),
            output_dir=out,
        )


def _attempts_file(task) -> Path:
    return Path(task.output).with_suffix(".attempts")


def counting_task(task, output: Path) -> None:
    """The real pipeline task, recording each attempt beside the output."""
    with _attempts_file(task).open("a") as f:
        f.write("attempt\n")
    run_pipeline_task(task, output)


@pytest.mark.timeout(400)  # a hung cluster fails instead of blocking the suite
def test_corrupt_input_is_reported_up_front_others_finish(sessions, tmp_path, client, capsys):
    corrupt = tmp_path / "corrupt.nwb"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2000))  # HDF5 magic, garbage after
    config = _tiny_config()
    table = run_batch(
        [sessions[2], corrupt, sessions[3]],
        ranks=[2],
        seeds=[0],
        config=config,
        output_dir=tmp_path / "out",
        scheduler=client,
        retries=1,
        task_fn=counting_task,
        progress=False,
    )
    assert list(table["status"]) == ["done", "failed", "done"]
    failed = table.iloc[1]
    assert failed["file"] == str(corrupt)
    assert failed["error"].startswith(f"PipelineError: {corrupt} is a damaged or truncated")
    assert failed["output"] == "" and math.isnan(failed["time_s"])
    assert table.iloc[[0, 2]]["error"].tolist() == ["", ""]
    _check_outputs(table, config)
    plan = plan_batch(corrupt, ranks=[2], seeds=[0], config=config, output_dir=tmp_path / "out")
    assert not _attempts_file(plan[0]).exists()  # found by the input check: never run
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["status"].tolist() == ["done", "failed", "done"]

    # The command line on an existing scheduler: exit code 1 and the failure listed.
    argv = ["batch", str(corrupt), "-o", str(tmp_path / "cli"), "--ranks", "1", "--quiet"]
    argv += ["--scheduler", client.scheduler.address, "--retries", "0"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "1 task(s): 0 done, 0 skipped, 1 failed" in captured.out
    assert captured.err.startswith(f"failed: {corrupt} rank=1 seed=0: ")


def kill_once_task(task, output: Path) -> None:
    """On the first attempt of the first session: write, truncate, then SIGKILL the worker."""
    marker = Path(task.output).with_suffix(".killed")
    if Path(task.input).name == "session4.nwb" and not marker.exists():
        marker.write_text("killed")
        run_pipeline_task(task, output)
        content = output.read_bytes()
        output.write_bytes(content[: len(content) // 2])  # a partial file...
        os.kill(os.getpid(), signal.SIGKILL)  # ...and the worker dies mid-task
    run_pipeline_task(task, output)


@pytest.mark.timeout(400)  # a hung cluster fails instead of blocking the suite
def test_killed_worker_is_rescheduled_and_leaves_no_partial_output(sessions, tmp_path, client):
    config = _tiny_config()
    table = run_batch(
        sessions[4:6],
        ranks=[2],
        seeds=[0],
        config=config,
        output_dir=tmp_path / "out",
        scheduler=client,
        task_fn=kill_once_task,
        progress=False,
    )
    assert Path(table["output"][0]).with_suffix(".killed").exists()
    assert list(table["status"]) == ["done", "done"]
    _check_outputs(table, config)  # complete and readable, no scratch folder left


@pytest.mark.timeout(400)
def test_overwrite_replaces_a_mismatched_output(sessions, tmp_path, client):
    config = _tiny_config()
    (task,) = plan_batch(sessions[6], ranks=[2], seeds=[0], config=config, output_dir=tmp_path)
    _write_mock_output(task, random_seed=7)  # someone else's result under this name
    kwargs = {"ranks": [2], "seeds": [0], "config": config, "output_dir": tmp_path}
    with pytest.raises(FileExistsError, match=r"seed 7 != 0"):
        run_batch(sessions[6], scheduler=client, **kwargs)
    table = run_batch(sessions[6], scheduler=client, overwrite=True, progress=False, **kwargs)
    assert list(table["status"]) == ["done"]
    _check_outputs(table, config)


def test_unoffered_resources_warn_on_an_existing_cluster(client):
    from nwb_lrconn.batch.run import _warn_if_unoffered

    with pytest.warns(RuntimeWarning, match=r"no worker .* offers resource GPU=1; the tasks wait"):
        _warn_if_unoffered(client, {"GPU": 1})


def test_task_that_writes_nothing_fails_cleanly(tmp_path):
    from nwb_lrconn.batch import run_task

    source = _nwb(tmp_path / "s.nwb")
    (task,) = plan_batch(source, ranks=[2], seeds=[0], config=RunConfig(), output_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"the task function wrote no file at .*rank2seed0"):
        run_task(task, task_fn=lambda task, path: None)
    partial = Path(task.output).parent / ".partial"
    assert not Path(task.output).exists() and not list(partial.iterdir())


@pytest.mark.timeout(900)  # about 40 s on 2 idle cores: part of the default run
def test_full_batch_8_files_2_ranks_2_seeds(sessions, tmp_path, monkeypatch):
    config = _tiny_config()
    out = tmp_path / "out"
    kwargs = {"ranks": [2, 3], "seeds": [0, 1], "config": config, "output_dir": out}
    table = run_batch(sessions, n_workers=2, progress=False, **kwargs)
    assert len(table) == 32 and set(table["status"]) == {"done"}
    _check_outputs(table, config)
    chosen = select_ranks(table)
    assert list(chosen["file"]) == [str(s) for s in sessions]
    assert chosen["rank"].isin([2, 3]).all() and (chosen["n_seeds"] == 2).all()
    import distributed

    monkeypatch.setattr(distributed, "LocalCluster", _no_cluster)
    again = run_batch(sessions, progress=False, **kwargs)
    assert set(again["status"]) == {"skipped"}
