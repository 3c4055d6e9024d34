"""Selections from the command line, for units and ROIs alike, and inspect's suggestions."""

from __future__ import annotations

import shlex

import numpy as np
import pytest

from nwb_lrconn.cli import main
from nwb_lrconn.extension import read_results

FAST = ["--max-epochs", "2", "--no-posterior", "--no-distribution", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from nwb_lrconn.io import write_ophys_nwb, write_units_nwb

    folder = tmp_path_factory.mktemp("selection")
    rng = np.random.default_rng(1)
    trains = [np.sort(rng.uniform(0, 60, rng.integers(200, 600))) for _ in range(8)]
    units = write_units_nwb(
        folder / "hd.nwb",
        trains,
        epochs={
            "start_time": [0.0, 20.0, 40.0],
            "stop_time": [20.0, 40.0, 60.0],
            "label": ["wake", "sleep", "wake"],
        },
        columns={"location": ["ADn"] * 5 + ["CA1"] * 3},
    )
    traces = rng.standard_normal((1800, 6)) + 50.0
    traces[:, 3] = 50.0  # a constant, non-cell ROI
    iscell = np.array([[1, 0.9], [1, 0.8], [0, 0.3], [0, 0.1], [1, 0.9], [1, 0.7]])
    calcium = write_ophys_nwb(
        folder / "s2p.nwb", traces, rate=30.0, roi_columns={"iscell": iscell}
    )
    return {"units": units, "calcium": calcium, "folder": folder}


def test_inspect_shows_the_choices_and_its_command_works(files, capsys):
    assert main(["inspect", str(files["units"])]) == 0
    out = capsys.readouterr().out
    assert "label: sleep, wake" in out
    assert "filter units by location (ADn, CA1): --where location==ADn" in out
    (command,) = [
        line.split("fit with: ", 1)[1] for line in out.splitlines() if "fit with" in line
    ]
    assert "--epochs epochs:wake" in command
    argv = shlex.split(command)[1:] + ["--out", str(files["folder"] / "suggested.nwb"), *FAST]
    assert main(argv) == 0, capsys.readouterr().err
    assert main(["inspect", str(files["calcium"])]) == 0
    out = capsys.readouterr().out
    assert "iscell: 4 of 6 ROIs classified as cells" in out
    assert "1 constant ROI(s), ids [3]" in out


def test_where_selects_units(files, capsys):
    out = files["folder"] / "adn.nwb"
    argv = ["fit", str(files["units"]), "--window", "2", "--bin-width", "0.1", "--rank", "1"]
    assert main([*argv, "--where", "location==ADn", "--out", str(out), *FAST]) == 0
    fit = read_results(out).fit
    np.testing.assert_array_equal(fit.unit_ids, np.arange(5))
    np.testing.assert_array_equal(fit.unit_rows, np.arange(5))


def test_unit_ids_and_where_select_rois(files):
    folder, calcium = files["folder"], str(files["calcium"])
    # the traces are noise, so a fit's held-out R² lands either side of 0 by chance (and by
    # platform): --keep-failed, because what is tested here is which ROIs were fitted
    base = ["fit", calcium, "--ophys", "--window", "2", "--rank", "1", "--keep-failed", *FAST]
    assert main([*base, "--unit-ids", "5,0,1", "--out", str(folder / "ids.nwb")]) == 0
    np.testing.assert_array_equal(read_results(folder / "ids.nwb").fit.unit_ids, [5, 0, 1])
    assert main([*base, "--out", str(folder / "cells.nwb")]) == 0
    np.testing.assert_array_equal(read_results(folder / "cells.nwb").fit.unit_ids, [0, 1, 4, 5])
    assert main([*base, "--all-rois", "--out", str(folder / "all.nwb")]) == 0
    kept = read_results(folder / "all.nwb").fit.unit_ids  # the constant ROI 3 is dropped
    np.testing.assert_array_equal(kept, [0, 1, 2, 4, 5])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--where", "nope==1"], "Unknown column 'nope' in the Units table"),
        (["--where", "a b"], "cannot read the filter 'a b'"),
        (["--all-rois"], "read.cells_only selects calcium ROIs"),
        (["--epochs", "epochs:rest"], "the labels there are ['sleep', 'wake']"),
    ],
)
def test_selections_that_cannot_apply_are_errors(files, capsys, extra, message):
    argv = ["fit", str(files["units"]), "--window", "2", "--bin-width", "0.1", *FAST, *extra]
    assert main(argv) in (1, 2)
    assert message in capsys.readouterr().err
