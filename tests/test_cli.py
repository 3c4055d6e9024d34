"""CLI: every command through main([...]), once as a real subprocess, and bad input handling."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nwb_lrconn.cli import main

N_UNITS = 24
TINY_TOML = """
seed = 2
name = "tiny"
[read]
bin_width = 0.02
trials = "trials"
[fit]
rank = 2
max_epochs = 4
patience = 2
batch_size = 16
[posterior]
enabled = false
[distribution]
n_steps_a = 10
n_steps_b = 4
n_virtual_units = 16
hidden_features = 8
n_layers = 2
n_samples = 30
pool_size = 200
validation_every = 5
"""


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    from nwb_lrconn.io import write_units_nwb
    from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
    from nwb_lrconn.model.simulate import simulate_spikes

    folder = tmp_path_factory.mktemp("cli")
    session = simulate_spikes(
        sample_network("ring", N_UNITS, random_state=0),
        initial=grid_initial_conditions(4),
        n_time=40,
        rate_range=(1.0, 60.0),
        random_state=0,
    )
    write_units_nwb(folder / "ring.nwb", session.spike_times, trials=session.trials)
    (folder / "tiny.toml").write_text(TINY_TOML)
    (folder / "tiny_sorting.toml").write_text(TINY_TOML.replace('trials = "trials"', ""))
    return folder


@pytest.fixture(scope="module")
def fitted(workdir) -> Path:
    out = workdir / "fitted.nwb"
    code = main(
        [
            "fit",
            str(workdir / "ring.nwb"),
            "--config",
            str(workdir / "tiny.toml"),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_help_lists_commands_and_examples(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ("fit", "report", "demo", "inspect", "examples:", "--bin-width 0.02"):
        assert word in text
    assert main(["fit", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--rank" in text and "--in-place" in text and "examples:" in text


def test_batch_subcommand_is_hooked_in(tmp_path, capsys):
    assert main(["batch", "--help"]) == 0
    assert "--output-dir" in capsys.readouterr().out
    code = main(["batch", str(tmp_path / "none_*.nwb"), "-o", str(tmp_path / "out"), "--quiet"])
    assert code == 1
    assert "matched no file" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["fit"]) == 2
    assert "required: IN" in capsys.readouterr().err
    assert main(["fit", "x.nwb", "--rank", "two"]) == 2
    assert "expected a positive integer or 'auto'" in capsys.readouterr().err
    assert main(["fit", "x.nwb", "--out", "a.nwb", "--in-place"]) == 2


def test_fit_writes_results_and_config_flags_override_the_file(workdir, fitted, capsys):
    from nwb_lrconn.config import RunConfig
    from nwb_lrconn.extension import list_results, read_results

    assert list_results(fitted) == ["tiny"]
    results = read_results(fitted, "tiny")
    config = RunConfig.from_json(results.provenance.config_json)
    assert config.seed == 2 and config.fit.max_epochs == 4 and not config.posterior.enabled
    assert results.distribution is not None and results.distribution.samples_k.shape == (30, 2)
    # Flags override the configuration file.
    out = workdir / "flags.nwb"
    code = main(
        [
            "fit",
            str(workdir / "ring.nwb"),
            "--config",
            str(workdir / "tiny.toml"),
            "--out",
            str(out),
            "--seed",
            "5",
            "--name",
            "rank1",
            "--rank",
            "1",
            "--no-distribution",
            "--quiet",
        ]
    )
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("wrote fit 'rank1' (24 units, rank 1; held-out log_likelihood")
    assert line.endswith(f"next: nwb-lrconn report {out}")
    results = read_results(out, "rank1")
    config = RunConfig.from_json(results.provenance.config_json)
    assert (config.seed, config.fit.rank, results.fit.rank) == (5, 1, 1)
    assert results.distribution is None


def test_fit_progress_messages_go_to_stderr(workdir, capsys):
    out = workdir / "loud.nwb"
    code = main(
        [
            "fit",
            str(workdir / "ring.nwb"),
            "--config",
            str(workdir / "tiny.toml"),
            "--out",
            str(out),
            "--no-distribution",
            "--max-epochs",
            "2",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    # Each line: the prefix, the seconds since the start, the message.
    assert re.search(r"^\[nwb-lrconn\] +[0-9.]+ s  reading the recording$", err, re.M), err
    assert re.search(r"^\[nwb-lrconn\] +[0-9.]+ s  writing the results", err, re.M), err


def test_report_summarises_every_fit_and_draws_figures(fitted, tmp_path, capsys):
    figures = tmp_path / "figs"
    assert main(["report", str(fitted), "--figures", str(figures)]) == 0
    text = capsys.readouterr().out
    assert "fit 'tiny'" in text
    assert "24 units, rank 2, tanh, poisson observations" in text
    assert "bits/spike" in text and "degeneracy: not computed" in text
    assert "distribution: 30 sampled units at sigma 1" in text
    names = sorted(p.name for p in figures.iterdir())
    stems = ("summary", "training", "latents", "loadings", "connectivity", "activity", "gmm")
    for stem in stems:
        assert f"tiny_{stem}.png" in names and f"tiny_{stem}.pdf" in names


def test_report_errors(fitted, workdir, capsys):
    assert main(["report", str(fitted), "--name", "nope"]) == 1
    assert "no fit named 'nope'" in capsys.readouterr().err
    assert main(["report", str(workdir / "ring.nwb")]) == 1
    err = capsys.readouterr().err
    assert "holds no fits in processing module 'lrconn'" in err and "Traceback" not in err


def test_inspect_lists_what_can_be_fitted(workdir, capsys):
    assert main(["inspect", str(workdir / "ring.nwb")]) == 0
    text = capsys.readouterr().out
    assert f"Units table 'units': {N_UNITS} units" in text
    assert "fit with: nwb-lrconn fit" in text and "--trials intervals/trials" in text
    assert main(["inspect", str(workdir / "ring.nwb"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["units"][0]["n_units"] == N_UNITS


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--units", "processing/nope"], r"processing/nope"),
        (["--rank", "40"], r"rank 40 is larger than the 24 units .* choose a rank <= 24"),
        (["--trials", "nope"], r"nope"),
        (["--bin-width", "-1"], r"read.bin_width must be finite and > 0"),
        (["--config", "missing.toml"], r"configuration file not found"),
        (["--out", "{dir}/ring.nwb/out.nwb"], r"The output folder .*ring.nwb does not exist"),
        (["--out", "{dir}/ring.nwb"], r"output .* is the input file; use --in-place"),
        (["--out", "{dir}/existing.nwb"], r"The output file .*existing.nwb already exists; pass"),
        (["--sorting"], r"read.trials is not available for source='sorting'"),
    ],
)
def test_bad_fit_input_gives_one_line_and_leaves_the_source(workdir, capsys, extra, message):
    import re

    source = workdir / "ring.nwb"
    (workdir / "existing.nwb").write_bytes(b"keep me")
    before = _sha(source)
    extra = [e.replace("{dir}", str(workdir)) for e in extra]
    args = ["fit", str(source), "--config", str(workdir / "tiny.toml"), "--quiet", *extra]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("nwb-lrconn fit: error: ")
    assert re.search(message, err), err
    assert _sha(source) == before
    assert (workdir / "existing.nwb").read_bytes() == b"keep me"


def test_missing_input_file(tmp_path, capsys):
    for command in ("fit", "inspect", "report"):
        assert main([command, str(tmp_path / "none.nwb")]) == 1
        err = capsys.readouterr().err.strip()
        assert "none.nwb" in err and "\n" not in err, err


def test_library_keywords_in_errors_get_their_flag(capsys, data_file):
    path = data_file(
        "turner-evans2017-fly-central-complex/derived_nwb/"
        "EB_Fly1_9day_6fx37F06_jRGC1ax60D05_Dark_00001_DERIVED.nwb"
    )
    assert main(["fit", str(path), "--ophys", "--window", "4", "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "holds 2 RoiResponseSeries" in err and err.endswith("(CLI: --ophys SERIES)")


def test_not_an_nwb_file(tmp_path, capsys):
    bogus = tmp_path / "bogus.nwb"
    bogus.write_text("not hdf5")
    assert main(["inspect", str(bogus)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("nwb-lrconn inspect: error: ") and "\n" not in err
    assert bogus.read_text() == "not hdf5"


def test_fit_in_place_and_sorting_input(workdir, tmp_path, capsys):
    from spikeinterface.extractors import read_nwb_sorting

    from nwb_lrconn.extension import list_results

    copy = tmp_path / "copy.nwb"
    shutil.copy(workdir / "ring.nwb", copy)
    args = ["--config", str(workdir / "tiny.toml"), "--no-distribution", "--quiet"]
    assert main(["fit", str(copy), "--in-place", *args]) == 0
    assert list_results(copy) == ["tiny"]
    sorting = read_nwb_sorting(str(workdir / "ring.nwb"), sampling_frequency=30_000.0)
    saved = tmp_path / "sorting"
    sorting.save(folder=saved)
    out = tmp_path / "from_sorting.nwb"
    args[1] = str(workdir / "tiny_sorting.toml")
    assert main(["fit", str(saved), "--sorting", *args]) == 1
    assert (
        "--sorting reads a sorting folder IN and writes a new file: give --out"
        in capsys.readouterr().err
    )
    code = main(["fit", str(saved), "--sorting", "--window", "0.5", "--out", str(out), *args])
    assert code == 0, capsys.readouterr().err
    assert list_results(out) == ["tiny"]


def test_demo_quick_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "fit 'ring_demo'" in text and "latent alignment R²" in text
    assert (out / "ring_demo.nwb").is_file() and (out / "ring_demo_lrconn.nwb").is_file()
    assert (out / "figures" / "ring_demo_summary.png").is_file()
    assert "demo finished in" in text


def test_real_subprocess_inspect_and_bad_input(workdir, tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "nwb_lrconn.cli", "inspect", str(workdir / "ring.nwb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and "Units table 'units'" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "nwb_lrconn.cli", "fit", str(tmp_path / "missing.nwb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        f"nwb-lrconn fit: error: NWB file not found: {tmp_path / 'missing.nwb'}"
    )


def test_real_subprocess_report(fitted):
    out = subprocess.run(
        [sys.executable, "-m", "nwb_lrconn.cli", "report", str(fitted)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "fit 'tiny'" in out.stdout and "bits/spike" in out.stdout


def _console_script() -> Path:
    script = Path(sys.executable).with_name("nwb-lrconn")
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    return script


def test_console_script_is_installed():
    out = subprocess.run(
        [str(_console_script()), "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.startswith("nwb-lrconn ")


@pytest.mark.slow
def test_console_script_fits(workdir, tmp_path):
    script = _console_script()
    target = tmp_path / "script.nwb"
    out = subprocess.run(
        [
            str(script),
            "fit",
            str(workdir / "ring.nwb"),
            "--config",
            str(workdir / "tiny.toml"),
            "--out",
            str(target),
            "--no-posterior",
            "--no-distribution",
            "--max-epochs",
            "2",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("wrote fit 'tiny'") and target.is_file()


def test_report_reads_back_what_fit_wrote(fitted):
    from nwb_lrconn.extension import read_results
    from nwb_lrconn.report import format_report

    results = read_results(fitted, "tiny")
    text = format_report(results)
    assert f"held-out {results.fit.metrics['bits_per_spike']:.4g} bits/spike" in text
    assert np.isfinite(results.fit.metrics["log_likelihood"])


def test_cli_import_is_light():
    code = (
        "import sys, nwb_lrconn.cli as c; c.build_parser(); "
        "print([m for m in ('torch', 'pynwb', 'matplotlib', 'dask') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
