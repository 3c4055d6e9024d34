"""CLI: `fit IN IN --joint` and `batch ... --joint` (the shared test fit is reused, every other
step runs), and their one-line errors."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from nwb_lrconn.batch import JOINT_COLUMNS, SUMMARY_COLUMNS, run_joint_batch
from nwb_lrconn.cli import main
from nwb_lrconn.extension import read_results

TOML = """
seed = 3
name = "joint"
[read]
bin_width = 0.02
trials = "trials"
[fit]
rank = 2
alpha = 0.5
[distribution]
enabled = false
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "joint.toml"
    path.write_text(TOML)
    return path


def test_fit_joint_writes_one_file_per_session(
    joint_sources, config_file, tmp_path, reuse_joint_fit, capsys
):
    out = tmp_path / "fits"
    args = ["fit", *map(str, joint_sources), "--joint", "--config", str(config_file), "-o"]
    assert main([*args, str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("wrote joint fit 'joint' of 2 sessions (24 units, rank 2)")
    written = sorted(out.rglob("*.nwb"))
    assert [p.name for p in written] == [
        f"sub-synthetic1_ses-day{s}_desc-lrconn-joint_ecephys.nwb" for s in (0, 1)
    ]
    for s, path in enumerate(written):
        assert f"day{s}.nwb: " in printed and str(path) in printed
        assert read_results(path).joint.session == s
    assert len(reuse_joint_fit) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["{1}"],
            "2 inputs given: fit several sessions of one circuit as one network with --joint",
        ),
        (["--joint"], "--joint needs at least 2 sessions; got 1"),
        (
            ["{1}", "--joint", "--out", "x.nwb"],
            "--joint writes one derived file per session: leave",
        ),
        (["{1}", "--joint", "--in-place"], "leave out --in-place"),
        (["{1}", "--joint", "--copy-source"], "leave out --copy-source"),
        (["{0}", "--joint"], r"day0.nwb is given twice \(sessions 1 and 2\)"),
        (["{1}", "--joint", "--rank", "auto"], "a joint fit needs one rank; got rank='auto'"),
        (["{1}", "--joint", "--bin-width", "0.5"], "gave 16 trials but 0 with at least 2 bins"),
    ],
)
def test_fit_joint_errors_are_one_line(
    joint_sources, config_file, tmp_path, capsys, monkeypatch, extra, message
):
    from nwb_lrconn import pipeline_joint

    monkeypatch.setattr(pipeline_joint, "_fit_joint", None)  # never reached
    extra = [e.format(*map(str, joint_sources)) for e in extra]
    args = ["fit", str(joint_sources[0]), *extra, "--config", str(config_file), "--quiet"]
    if not {"--out", "--in-place"} & set(extra):  # these exclude --output-dir in the parser
        args += ["-o", str(tmp_path / "out")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("nwb-lrconn fit: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_batch_joint_rows_hold_the_warrant_check_and_rerun_skips(
    joint_sources, config_file, joint_fitted, tmp_path, reuse_joint_fit, capsys
):
    _, _, warrant = joint_fitted
    out = tmp_path / "batch"
    args = ["batch", *map(str, joint_sources), "--joint", "--ranks", "2", "--seeds", "3"]
    args += ["--config", str(config_file), "-o", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("2 session fit(s) in joint runs: 2 done, 0 skipped, 0 failed")
    table = pd.read_csv(out / "summary.csv")
    assert list(table.columns) == [*SUMMARY_COLUMNS, *JOINT_COLUMNS]
    assert list(table["file"]) == [str(p) for p in joint_sources]
    assert list(table["joint_minus_separate"]) == pytest.approx(
        [row["difference"] for row in warrant]
    )
    assert list(table["worse"]) == [row["worse"] for row in warrant]
    assert table["flagged"].isna().all()  # no pooled distribution in this run
    for output in table["output"]:
        assert "joint_rank2_seed3" in output and read_results(output).joint is not None
    assert main(args) == 0  # the rerun finds every session's results and fits nothing
    assert "0 done, 2 skipped" in capsys.readouterr().out
    assert len(reuse_joint_fit) == 1


def test_batch_joint_errors(joint_sources, config_file, joint_config, tmp_path, capsys):
    args = ["batch", str(joint_sources[0]), "--joint", "-o", str(tmp_path), "--quiet"]
    assert main(args) == 1
    assert "a joint batch needs at least 2 sessions; the inputs gave 1" in capsys.readouterr().err
    args = ["batch", *map(str, joint_sources), "--joint", "-o", str(tmp_path)]
    assert main([*args, "--scheduler", "tcp://nowhere:1"]) == 1
    assert "leave out --scheduler" in capsys.readouterr().err
    config = joint_config.with_overrides(rank="auto", ranks=(2,))
    table = run_joint_batch(
        joint_sources, output_dir=tmp_path, ranks=[30], config=config, progress=False
    )
    assert list(table["status"]) == ["failed", "failed"]
    assert table["error"][0].startswith("PipelineError: rank 30 is larger than the 12 units")
