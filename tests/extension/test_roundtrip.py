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
    write_results,
)
from nwb_lrconn.extension.types import COMPRESSION_MIN_SIZE


def test_units_source_round_trip(tmp_path, units_source, units_results, assert_same):
    before = units_source.read_bytes()
    out = write_results(units_results, units_source, tmp_path / "out.nwb")
    assert out == tmp_path / "out.nwb"
    assert units_source.read_bytes() == before, "the default mode must not touch the source"
    assert_same(units_results, read_results(out))
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        fit = nwb.processing["lrconn"]["fit"]
        assert isinstance(fit, LowRankRNNFit)
        assert fit.units.table is nwb.units
        np.testing.assert_array_equal(fit.units.data[:], np.arange(8))
        # the region resolves to the right rows: compare spike trains with the source file
        with NWBHDF5IO(str(units_source), "r") as src_io:
            src_units = src_io.read().units
            for row in (0, 5):
                np.testing.assert_array_equal(
                    fit.units[row]["spike_times"].iloc[0], src_units["spike_times"][row]
                )
        assert fit.source_series is None
        np.testing.assert_allclose(fit.connectivity(), units_results.fit.connectivity())
        assert len(nwb.trials) == 5, "source content is carried into the new file"


def test_ophys_source_round_trip_with_link(tmp_path, ophys_source, ophys_results, assert_same):
    out = write_results(ophys_results, ophys_source, tmp_path / "out.nwb")
    assert_same(ophys_results, read_results(out, "fit"))
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        fit = nwb.processing["lrconn"]["fit"]
        ophys = nwb.processing["ophys"]
        assert fit.source_series is ophys["Fluorescence"]["RoiResponseSeries"]
        assert fit.units.table is ophys["ImageSegmentation"]["PlaneSegmentation"]
        np.testing.assert_array_equal(
            fit.units[3]["image_mask"].iloc[0],
            ophys["ImageSegmentation"]["PlaneSegmentation"]["image_mask"][3],
        )
    with h5py.File(out, "r") as handle:
        link = handle["processing/lrconn/fit"].get("source_series", getlink=True)
        assert isinstance(link, h5py.SoftLink)


def test_explicit_unit_rows_and_subset(tmp_path, units_source, units_results, assert_same):
    sub = mock_results(n_units=3, source=units_results.provenance.source, random_state=1)
    sub = dataclasses.replace(sub, fit=dataclasses.replace(sub.fit, unit_ids=np.array([7, 2, 4])))
    out = write_results(sub, units_source, tmp_path / "a.nwb")
    with NWBHDF5IO(str(out), "r") as io:
        np.testing.assert_array_equal(
            io.read().processing["lrconn"]["fit"].units.data[:], [7, 2, 4]
        )
    out = write_results(sub, units_source, tmp_path / "b.nwb", unit_rows=np.array([1, 0, 6]))
    with NWBHDF5IO(str(out), "r") as io:
        np.testing.assert_array_equal(
            io.read().processing["lrconn"]["fit"].units.data[:], [1, 0, 6]
        )
    assert_same(sub, read_results(out))


def test_default_output_is_a_new_file_beside_the_source(units_source, units_results):
    out = write_results(units_results, units_source)
    assert out == units_source.with_name("units_lrconn.nwb")
    assert list_results(out) == ["fit"] and list_results(units_source) == []


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
    out = write_results(units_results, units_source, tmp_path / "out.nwb")
    write_results(second, out, in_place=True)
    assert list_results(out) == ["fit", "fit_rank2_seed5"]
    assert_same(second, read_results(out, "fit_rank2_seed5"))
    assert list_results(out, module_name="other") == []
    with pytest.raises(
        ValueError, match=r"holds 2 fits in 'lrconn' \(\['fit', 'fit_rank2_seed5'\]\)"
    ):
        read_results(out)
    with pytest.raises(KeyError, match="no fit named 'nope' in module 'lrconn'"):
        read_results(out, "nope")
    with pytest.raises(KeyError, match="has no processing module 'other'"):
        read_results(out, module_name="other")


def test_overwrite_rewrites_without_the_old_group(
    tmp_path, units_source, units_results, assert_same
):
    out = write_results(units_results, units_source, tmp_path / "out.nwb")
    replacement = dataclasses.replace(
        mock_results(n_units=8, rank=3, random_state=9, with_distribution=False),
        provenance=units_results.provenance,
    )
    with pytest.raises(ValueError, match=r"already holds a fit named 'fit' in module 'lrconn'"):
        write_results(replacement, out, in_place=True)
    write_results(replacement, out, in_place=True, overwrite=True)
    assert_same(replacement, read_results(out))
    with h5py.File(out, "r") as handle:
        assert "distribution" not in handle["processing/lrconn/fit"]
        assert handle["processing/lrconn/fit/M"].shape == (8, 3)
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.processing["lrconn"]["fit"].units.table is nwb.units
        assert len(nwb.units) == 8 and len(nwb.trials) == 5


def test_custom_module_name(tmp_path, units_source, units_results, assert_same):
    out = write_results(units_results, units_source, tmp_path / "o.nwb", module_name="misc")
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
