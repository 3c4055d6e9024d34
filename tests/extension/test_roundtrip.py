"""Write → read round trips of every ndx-lrconn type, and the links into the source."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
from pynwb import NWBHDF5IO

from nwb_lrconn.extension import (
    LowRankRNNFit,
    list_results,
    mock_results,
    read_results,
    read_unit_table,
    write_results,
)
from nwb_lrconn.extension.containers import COMPRESSION_MIN_SIZE


def test_derived_file_holds_only_the_results_and_the_source_identity(
    tmp_path, units_source, units_results, assert_same
):
    before = units_source.read_bytes()
    out = write_results(units_results, units_source, tmp_path / "out.nwb")
    assert out == tmp_path / "out.nwb"
    assert units_source.read_bytes() == before, "the default mode must not touch the source"
    assert_same(units_results, read_results(out))
    with NWBHDF5IO(str(units_source), "r") as src_io, NWBHDF5IO(str(out), "r") as io:
        src, nwb = src_io.read(), io.read()
        assert nwb.units is None and nwb.trials is None, "no source content is copied"
        assert nwb.identifier != src.identifier
        assert nwb.session_id == src.session_id
        assert nwb.session_start_time == src.session_start_time
        for key in ("subject_id", "species", "sex", "age"):
            assert getattr(nwb.subject, key) == getattr(src.subject, key)
        assert dict(nwb.was_generated_by)["nwb_lrconn"]
        fit = nwb.processing["lrconn"]["fit"]
        assert isinstance(fit, LowRankRNNFit)
        assert fit.provenance.source_identifier == src.identifier
        table = fit.unit_table
        assert "unit" not in table.colnames  # the source table lives in another file
        assert len(table.source_table) == 8  # the external link resolves
        np.testing.assert_array_equal(table["source_row"].data[:], np.arange(8))
    with h5py.File(out, "r") as handle:
        link = handle["processing/lrconn/fit/unit_table"].get("source_table", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.path == "/units"
        assert link.filename == "units.nwb"


def test_derived_file_reads_when_the_source_is_gone(tmp_path, units_source, units_results):
    out = write_results(units_results, units_source, tmp_path / "out.nwb")
    units_source.rename(tmp_path / "moved.nwb")
    with pytest.warns(UserWarning, match="broken at /processing/lrconn/fit/unit_table"):
        back = read_results(out)
    np.testing.assert_array_equal(back.fit.M, units_results.fit.M)
    with (
        pytest.warns(UserWarning, match="broken"),
        pytest.raises(FileNotFoundError, match="The source table of the fit in .* cannot be"),
    ):
        read_unit_table(out, join_source=True)


def test_unit_table_joins_the_source_units(tmp_path, units_source, units_results):
    results = units_results
    for mode in ("derived", "copy"):
        out = write_results(results, units_source, tmp_path / f"{mode}.nwb", mode=mode)
        frame = read_unit_table(out)
        np.testing.assert_array_equal(np.stack(frame["m"]), results.fit.M)
        np.testing.assert_array_equal(np.stack(frame["k"]), results.fit.K)
        np.testing.assert_array_equal(frame["identifiability"], results.degeneracy.unit_scores)
        with NWBHDF5IO(str(units_source), "r") as io:
            units = io.read().units.to_dataframe()
        joined = frame.join(units, on="unit_id")
        np.testing.assert_array_equal(joined.index, np.arange(8))
        for row in (0, 5):
            np.testing.assert_array_equal(
                joined["spike_times"].iloc[row], units["spike_times"].iloc[row]
            )
        with_source = read_unit_table(out, join_source=True)
        np.testing.assert_array_equal(with_source["source_id"], frame["unit_id"])


def test_copy_keeps_the_source_and_links_the_rows(
    tmp_path, units_source, units_results, assert_same
):
    out = write_results(units_results, units_source, tmp_path / "out.nwb", mode="copy")
    assert_same(units_results, read_results(out))
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        fit = nwb.processing["lrconn"]["fit"]
        region = fit.unit_table["unit"]
        assert region.table is nwb.units and fit.unit_table.source_table is nwb.units
        np.testing.assert_array_equal(region.data[:], np.arange(8))
        with NWBHDF5IO(str(units_source), "r") as src_io:
            src_units = src_io.read().units
            for row in (0, 5):
                np.testing.assert_array_equal(
                    region[row]["spike_times"].iloc[0], src_units["spike_times"][row]
                )
        assert fit.source_series is None
        np.testing.assert_allclose(fit.connectivity(), units_results.fit.connectivity())
        assert len(nwb.trials) == 5, "source content is carried into the copy"


def test_ophys_links(tmp_path, ophys_source, ophys_results, assert_same):
    out = write_results(ophys_results, ophys_source, tmp_path / "out.nwb", mode="copy")
    assert_same(ophys_results, read_results(out, "fit"))
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        fit = nwb.processing["lrconn"]["fit"]
        ophys = nwb.processing["ophys"]
        assert fit.source_series is ophys["Fluorescence"]["RoiResponseSeries"]
        plane = ophys["ImageSegmentation"]["rois_RoiResponseSeries"]
        assert fit.unit_table["unit"].table is plane
        np.testing.assert_array_equal(
            fit.unit_table["unit"][3]["pixel_mask"].iloc[0], plane["pixel_mask"][3]
        )
    with h5py.File(out, "r") as handle:
        link = handle["processing/lrconn/fit"].get("source_series", getlink=True)
        assert isinstance(link, h5py.SoftLink)
    derived = write_results(ophys_results, ophys_source, tmp_path / "derived.nwb")
    with h5py.File(derived, "r") as handle:
        link = handle["processing/lrconn/fit"].get("source_series", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename == "ophys.nwb"
    with NWBHDF5IO(str(derived), "r") as io:
        series = io.read().processing["lrconn"]["fit"].source_series
        assert series.data.shape == (200, 8)


def test_explicit_unit_rows_and_subset(tmp_path, units_source, units_results, assert_same):
    sub = mock_results(n_units=3, source=units_results.provenance.source, random_state=1)
    sub = dataclasses.replace(
        sub, fit=dataclasses.replace(sub.fit, unit_ids=np.array([7, 2, 4]), unit_rows=None)
    )
    for mode in ("derived", "copy"):
        out = write_results(sub, units_source, tmp_path / f"a_{mode}.nwb", mode=mode)
        with NWBHDF5IO(str(out), "r") as io:
            table = io.read().processing["lrconn"]["fit"].unit_table
            np.testing.assert_array_equal(table["source_row"].data[:], [7, 2, 4])
    other = dataclasses.replace(
        sub, fit=dataclasses.replace(sub.fit, unit_ids=np.array([1, 0, 6]))
    )
    out = write_results(other, units_source, tmp_path / "b.nwb", unit_rows=np.array([1, 0, 6]))
    back = read_results(out)
    np.testing.assert_array_equal(back.fit.unit_rows, [1, 0, 6])


def test_default_outputs(units_source, units_results):
    out = write_results(units_results, units_source)
    assert out == units_source.with_name("sub-mouse1_ses-session1_desc-lrconn-fit_ecephys.nwb")
    copy = write_results(units_results, units_source, mode="copy")
    assert copy == units_source.with_name("units_lrconn.nwb")
    assert list_results(out) == list_results(copy) == ["fit"]
    assert list_results(units_source) == []


@pytest.mark.parametrize(
    "options",
    [
        {"with_posterior": False, "with_degeneracy": False, "with_distribution": False},
        {"structure": "blocks", "n_inputs": 0, "observation": "gaussian"},
        {"n_units": 40, "rank": 3, "n_trials": 4, "n_time": 50},
    ],
    ids=["minimal", "blocks-no-inputs", "larger"],
)
def test_fresh_file_round_trip(tmp_path, options, assert_same):
    results = mock_results(**options, random_state=3)
    out = write_results(results, None, tmp_path / "fresh.nwb")
    assert_same(results, read_results(out))


def test_large_arrays_are_gzip_compressed(tmp_path):
    results = mock_results(n_units=40, rank=3)
    out = write_results(results, None, tmp_path / "fresh.nwb")
    with h5py.File(out, "r") as handle:
        fit = handle["processing/lrconn/fit"]
        cov = fit["posterior/covariance"]
        assert cov.size >= COMPRESSION_MIN_SIZE and cov.compression == "gzip" and cov.chunks
        assert fit["M"].compression is None  # 120 values: small arrays stay contiguous
        assert handle.attrs["nwb_version"]
        assert "ndx-lrconn" in handle["specifications"]


def test_latents_series_timestamps_and_mask(tmp_path, units_results):
    out = write_results(units_results, None, tmp_path / "fresh.nwb")
    fit = units_results.fit
    with NWBHDF5IO(str(out), "r") as io:
        latents = io.read().processing["lrconn"]["fit"].latents
        stamps = latents.timestamps[:]
        trial, bin_ = latents.trial_index[:], latents.bin_index[:]
        assert latents.data.shape == (int(fit.latent_mask.sum()), fit.rank)
        np.testing.assert_allclose(stamps, fit.trial_start_times[trial] + bin_ * fit.bin_width)
        assert np.all(np.diff(stamps) >= 0)
        np.testing.assert_array_equal(latents.data[:], fit.latents[trial, bin_])


def test_several_fits_and_selection(tmp_path, units_source, units_results, assert_same):
    second = dataclasses.replace(mock_results(random_state=5), name="fit_rank2_seed5")
    second = dataclasses.replace(second, provenance=units_results.provenance)
    out = write_results(units_results, units_source, tmp_path / "out.nwb", mode="copy")
    write_results(second, out, mode="in-place")
    assert list_results(out) == ["fit", "fit_rank2_seed5"]
    assert_same(second, read_results(out, "fit_rank2_seed5"))
    assert list_results(out, module_name="other") == []
    with pytest.raises(
        ValueError, match=r"holds 2 fits in 'lrconn' \(\['fit', 'fit_rank2_seed5'\]\)"
    ):
        read_results(out)
    with pytest.raises(KeyError, match="no fit named 'nope' in module 'lrconn'"):
        read_results(out, "nope")
    with pytest.raises(KeyError, match="holds no fits in processing module 'other'"):
        read_results(out, module_name="other")


def test_overwrite_replaces_only_that_fit(tmp_path, units_source, units_results, assert_same):
    out = write_results(units_results, units_source, tmp_path / "out.nwb", mode="copy")
    replacement = dataclasses.replace(
        mock_results(n_units=8, rank=3, random_state=9, with_distribution=False),
        provenance=units_results.provenance,
    )
    with pytest.raises(ValueError, match=r"already holds a fit named 'fit' in module 'lrconn'"):
        write_results(replacement, out, mode="in-place")
    write_results(replacement, out, mode="in-place", overwrite=True)
    assert_same(replacement, read_results(out))
    with h5py.File(out, "r") as handle:
        assert "distribution" not in handle["processing/lrconn/fit"]
        assert handle["processing/lrconn/fit/M"].shape == (8, 3)
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.processing["lrconn"]["fit"].unit_table["unit"].table is nwb.units
        assert len(nwb.units) == 8 and len(nwb.trials) == 5


def test_custom_module_name(tmp_path, units_source, units_results, assert_same):
    for mode in ("derived", "copy"):
        out = write_results(
            units_results, units_source, tmp_path / f"{mode}.nwb", module_name="misc", mode=mode
        )
        assert list_results(out, module_name="misc") == ["fit"]
        assert_same(units_results, read_results(out, module_name="misc"))


def test_latent_padding_is_stored_as_zero(tmp_path, units_results):
    fit = units_results.fit
    noisy = np.where(fit.latent_mask[..., None], fit.latents, 7.0)
    results = dataclasses.replace(units_results, fit=dataclasses.replace(fit, latents=noisy))
    back = read_results(write_results(results, None, tmp_path / "f.nwb")).fit
    np.testing.assert_array_equal(back.latent_mask, fit.latent_mask)
    np.testing.assert_array_equal(back.latents, fit.latents)  # mock padding is zero
    assert not np.any(back.latents[~fit.latent_mask])
