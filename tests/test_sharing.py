"""Shareable results: a DANDI asset in, a small derived NWB file out, clean for DANDI."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from pynwb import NWBHDF5IO

from nwb_lrconn.config import DistributionConfig, FitConfig, PosteriorConfig, ReadConfig, RunConfig
from nwb_lrconn.extension import read_results, read_unit_table
from nwb_lrconn.pipeline import run_file

ASSET = "sub-4/sub-4_ses-4_ecephys+image.nwb"


def _config(**read) -> RunConfig:
    return RunConfig(
        read=ReadConfig(**{"bin_width": 0.1, "window_length": 4.0, **read}),
        fit=FitConfig(rank=2, max_epochs=3, patience=2),
        posterior=PosteriorConfig(enabled=True),
        distribution=DistributionConfig(enabled=False),
        name="shared",
    )


def _inspect(path) -> list[tuple[str, str, str]]:
    from nwbinspector import Importance, inspect_nwbfile, load_config

    messages = inspect_nwbfile(
        nwbfile_path=str(path),
        config=load_config(filepath_or_keyword="dandi"),
        importance_threshold=Importance.BEST_PRACTICE_VIOLATION,
    )
    return sorted((m.importance.name, m.check_function_name, str(m.location)) for m in messages)


@pytest.fixture
def streamed_fit(data_file, mock_dandi, monkeypatch, tmp_path):
    """Fit the shared DANDI file streamed from a local mock archive; return the paths."""
    source = data_file("dandi-000207-zheng2022-human-mtl/sub-4_ses-4_ecephys+image.nwb")
    server = mock_dandi({ASSET: source})
    monkeypatch.setenv("NWB_LRCONN_DANDI_INSTANCE", server.api_url)
    out_dir = tmp_path / "derivatives"
    output = run_file(f"DANDI:000207/{ASSET}", None, _config(), output_dir=out_dir, progress=False)
    return source, output, out_dir


def test_dandi_asset_to_a_derived_file(streamed_fit):
    source, output, out_dir = streamed_fit
    assert output == out_dir / "sub-4" / "sub-4_ses-4_desc-lrconn-shared_ecephys.nwb"
    assert output.stat().st_size < 0.5 * source.stat().st_size
    with NWBHDF5IO(str(source), "r") as src_io, NWBHDF5IO(str(output), "r") as io:
        src, nwb = src_io.read(), io.read()
        assert nwb.identifier != src.identifier and nwb.units is None
        assert (nwb.session_id, nwb.session_start_time) == (src.session_id, src.session_start_time)
        for key in ("subject_id", "species", "sex", "age"):
            assert getattr(nwb.subject, key) == getattr(src.subject, key)
    results = read_results(output)
    origin = results.provenance.source.origin
    assert results.provenance.source.identifier == src.identifier
    assert origin["kind"] == "dandi" and origin["dandiset_id"] == "000207"
    assert origin["asset_path"] == ASSET and len(origin["sha256"]) == 64
    assert results.provenance.source.session["subject"]["subject_id"] == "4"
    latents_start = results.fit.trial_start_times.min()
    assert latents_start >= 0  # latent times on the source clock (seconds from its start)
    with h5py.File(output, "r") as handle:
        link = handle["processing/lrconn/shared/unit_table"].get("source_table", getlink=True)
        assert isinstance(link, h5py.ExternalLink)
        assert (link.filename, link.path) == ("sub-4_ses-4_ecephys+image.nwb", "/units")


def test_derived_file_links_resolve_once_beside_the_source(streamed_fit):
    source, output, _ = streamed_fit
    with pytest.warns(UserWarning, match="broken"):  # the source is not downloaded yet
        frame = read_unit_table(output)
    shutil.copyfile(source, output.parent / source.name)  # as after `dandi download`
    joined = read_unit_table(output, join_source=True)
    with NWBHDF5IO(str(source), "r") as io:
        units = io.read().units.to_dataframe()
    np.testing.assert_array_equal(joined["source_id"], units.index[frame["source_row"]])
    np.testing.assert_array_equal(joined["unit_id"], frame["unit_id"])
    for row in (0, len(frame) - 1):
        np.testing.assert_array_equal(
            joined["source_spike_times"].iloc[row],
            units["spike_times"].iloc[int(frame["source_row"].iloc[row])],
        )


def test_derived_file_reads_without_the_package(streamed_fit):
    _, output, _ = streamed_fit
    code = textwrap.dedent(
        f"""
        import sys, warnings
        sys.modules["nwb_lrconn"] = None
        warnings.simplefilter("ignore")
        from pynwb import NWBHDF5IO
        with NWBHDF5IO({str(output)!r}, "r") as io:
            fit = io.read().processing["lrconn"]["shared"]
            frame = fit.unit_table.to_dataframe()
            print(fit.M.shape[0], len(frame), fit.posterior.mean.shape[0] > 0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    n_units = read_results(output).fit.n_units
    assert proc.stdout.split() == [str(n_units), str(n_units), "True"]


def test_no_new_dandi_violations_for_url_and_batch_outputs(streamed_fit, tmp_path):
    from nwb_lrconn.batch import plan_batch, run_task

    source, output, _ = streamed_fit
    before = _inspect(source)
    assert [m for m in _inspect(output) if m not in before] == []
    (task,) = plan_batch(
        source, ranks=[2], seeds=[0], config=_config(), output_dir=tmp_path / "batch"
    )
    row = run_task(task)
    assert row["output"].endswith("sub-4/sub-4_ses-4_desc-lrconn-rank2seed0_ecephys.nwb")
    assert [m for m in _inspect(row["output"]) if m not in before] == []
    with h5py.File(row["output"], "r") as handle:  # linked from where the file ends up
        link = handle["processing/lrconn/shared/unit_table"].get("source_table", getlink=True)
    assert (Path(task.output).parent / link.filename).resolve() == source.resolve()


def test_derived_file_is_small_beside_a_large_raw_source(tmp_path):
    from pynwb import TimeSeries

    from nwb_lrconn.io import write_units_nwb

    rng = np.random.default_rng(0)
    trains = [np.sort(rng.uniform(0, 60, 600)) for _ in range(12)]
    source = write_units_nwb(tmp_path / "raw.nwb", trains)
    with NWBHDF5IO(str(source), "a") as io:  # 205 MB of raw samples, as an ecephys file holds
        nwbfile = io.read()
        raw = rng.integers(-2000, 2000, size=(1_600_000, 64), dtype=np.int16)
        nwbfile.add_acquisition(TimeSeries(name="raw", data=raw, unit="uV", rate=30000.0))
        io.write(nwbfile)
    assert source.stat().st_size >= 200e6
    config = RunConfig(
        read=ReadConfig(bin_width=0.05, window_length=1.0),
        fit=FitConfig(rank=2, max_epochs=3),
        distribution=DistributionConfig(enabled=False),
    )
    output = run_file(source, tmp_path / "derived.nwb", config, progress=False)
    assert output.stat().st_size < 0.05 * source.stat().st_size
    assert read_results(output).fit.n_units == 12
