"""The report of a stored fit: behaviour numbers (CLI and API), figures (content, nothing
clipped, speed) on a small synthetic ring-attractor session with a head-direction series."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from nwb_lrconn.cli import main

N_UNITS = 15
HD = "processing/behavior/CompassDirection/head_direction"
SPEED = "processing/behavior/speed"
TOML = """
seed = 1
name = "ring15"
[read]
bin_width = 0.02
trials = "trials"
[fit]
rank = 2
max_epochs = 12
patience = 10
batch_size = 16
[distribution]
n_steps_a = 10
n_steps_b = 4
n_virtual_units = 16
hidden_features = 8
n_layers = 2
n_samples = 40
pool_size = 200
validation_every = 5
"""


def _add_behaviour(path: Path, session) -> None:
    """The true latent angle (radians) and radius as behaviour series, sampled at bin centres."""
    from pynwb import NWBHDF5IO, TimeSeries
    from pynwb.behavior import CompassDirection, SpatialSeries

    n_trials, n_time, _ = session.latents.shape
    times = session.trial_start_times[:, None] + session.bin_width * (np.arange(n_time) + 0.5)
    angle = np.arctan2(session.latents[..., 1], session.latents[..., 0])
    radius = np.linalg.norm(session.latents, axis=-1)
    with NWBHDF5IO(str(path), "a") as nwb_io:
        nwbfile = nwb_io.read()
        module = nwbfile.create_processing_module("behavior", "simulated behaviour")
        module.add(
            CompassDirection(
                spatial_series=SpatialSeries(
                    name="head_direction",
                    data=angle.ravel(),
                    timestamps=times.ravel(),
                    reference_frame="the latent plane",
                    unit="radians",
                )
            )
        )
        module.add(
            TimeSeries(name="speed", data=radius.ravel(), timestamps=times.ravel(), unit="m/s")
        )
        nwb_io.write(nwbfile)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    from nwb_lrconn.io import write_units_nwb
    from nwb_lrconn.model.networks import sample_network
    from nwb_lrconn.model.simulate import simulate_spikes

    folder = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    angles = rng.uniform(-np.pi, np.pi, 40)
    session = simulate_spikes(
        sample_network("ring", N_UNITS, random_state=0),
        initial=1.5 * np.c_[np.cos(angles), np.sin(angles)],
        n_time=25,
        rate_range=(2.0, 40.0),
        process_noise=0.05,
        random_state=0,
    )
    source = folder / "ring15.nwb"
    regions = np.where(np.arange(N_UNITS) < 10, "ADn", "CA1")
    write_units_nwb(
        source, session.spike_times, trials=session.trials, columns={"location": regions}
    )
    _add_behaviour(source, session)
    (folder / "run.toml").write_text(TOML)
    out = folder / "ring15_lrconn.nwb"
    args = ["fit", str(source), "--config", str(folder / "run.toml"), "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    return out


def test_cli_report_relates_the_latents_to_behaviour(fitted, tmp_path, capsys):
    figures = tmp_path / "figs"
    code = main(["report", str(fitted), "--behaviour", HD, "--figures", str(figures)])
    assert code == 0
    text = capsys.readouterr().out
    assert f"behaviour: {HD} (angle; held-out circular R², 2-D features" in text
    for name in ("latent", "PCA of z-scored activity", "PCA of square-root counts"):
        assert f"    {name} " in text
    assert "PCA of raw counts (reference)" in text
    assert "does not change the scores" in text and "verdict: the latent angle reaches" in text
    names = {p.name for p in figures.iterdir()}
    assert {"ring15_behaviour.png", "ring15_behaviour.pdf"} <= names


def test_api_angle_and_linear_behaviour(fitted):
    from nwb_lrconn.extension import read_results
    from nwb_lrconn.inference.behaviour import LATENT
    from nwb_lrconn.report import format_report, relate_results_to_behaviour

    results = read_results(fitted)
    angle = relate_results_to_behaviour(results, HD, nwb_path=fitted)
    assert angle.kind == "angle" and angle.variable == HD
    # The simulated head direction is the true latent angle: the fitted latent recovers it,
    # single bins of 15 units do not.
    assert angle.errors[LATENT] < 30 and angle.interval[0] > 0
    assert angle.scores[LATENT] > max(angle.scores[n] for n in angle.fair_baselines)
    assert angle.n_test_trials == len(results.fit.test_trials)
    text = format_report(results, behaviour=angle)
    assert angle.verdict in text and "median |error|" in text
    assert "behaviour:" not in format_report(results)
    speed = relate_results_to_behaviour(results, SPEED, nwb_path=fitted)
    assert speed.kind == "linear" and speed.measure == "R²"
    assert set(speed.scores) == set(angle.scores)
    forced = relate_results_to_behaviour(results, HD, nwb_path=fitted, kind="linear")
    assert forced.kind == "linear"


def test_behaviour_errors_are_one_line(fitted, tmp_path, capsys):
    assert main(["report", str(fitted), "--behaviour", "processing/behavior/nope"]) == 1
    err = capsys.readouterr().err
    assert "processing/behavior/nope" in err and HD in err and "Traceback" not in err
    alone = tmp_path / "alone" / fitted.name
    alone.parent.mkdir()
    shutil.copy(fitted, alone)
    from nwb_lrconn.extension import read_results
    from nwb_lrconn.report import relate_results_to_behaviour

    results = read_results(alone)
    moved = type(results.provenance.source)(path=str(tmp_path / "gone.nwb"))
    import dataclasses

    results = dataclasses.replace(
        results, provenance=dataclasses.replace(results.provenance, source=moved)
    )
    with pytest.raises(
        FileNotFoundError, match=r"the recording of fit 'ring15' cannot be re-read"
    ):
        relate_results_to_behaviour(results, HD, nwb_path=alone)


def _outside_canvas(fig) -> list[str]:
    """Axes (with their labels, ticks, titles, legends) and figure texts drawn past the canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = fig.figure  # an Axes' figure, or the figure itself
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # runs the layout
    renderer = canvas.get_renderer()
    box = fig.bbox
    parts = [(ax.get_title() or ax.get_label(), ax) for ax in fig.axes]
    parts += [(t.get_text(), t) for t in fig.texts if t.get_text().strip()]
    out = []
    for name, artist in parts:
        extent = artist.get_tightbbox(renderer)
        if extent is None:
            continue
        if (
            extent.x0 < box.x0 - 1
            or extent.y0 < box.y0 - 1
            or extent.x1 > box.x1 + 1
            or extent.y1 > box.y1 + 1
        ):
            out.append(name)
    return out


def test_every_figure_is_drawn_quickly_and_nothing_is_clipped(fitted, tmp_path, monkeypatch):
    from nwb_lrconn import plotting
    from nwb_lrconn.extension import read_results
    from nwb_lrconn.report import load_recording, relate_results_to_behaviour, write_figures

    results = read_results(fitted)
    loaded = load_recording(results, fitted)
    behaviour = relate_results_to_behaviour(results, HD, loaded=loaded)
    import matplotlib.figure  # noqa: F401  (imports are not what is timed)
    import scipy.optimize  # noqa: F401
    import sklearn.cluster  # noqa: F401
    import sklearn.mixture  # noqa: F401

    start = time.process_time()
    paths = write_figures(results, tmp_path / "figs", behaviour=behaviour, loaded=loaded)
    cpu = time.process_time() - start
    stems = {p.stem.removeprefix("ring15_") for p in paths}
    assert stems == {
        "summary", "training", "latents", "loadings", "connectivity", "degeneracy",
        "flow_training", "gmm", "activity", "behaviour",
    }  # fmt: skip
    # CPU time, not wall time: test machines are shared. The report promises 10 s for a 15-unit
    # fit (tests/benchmarks/bench_report_figures.py measures it); twice that here leaves room
    # for slow machines and still catches the minutes a bad figure once took.
    assert cpu < 20.0, f"drawing and saving the figures took {cpu:.1f} s of CPU"

    drawn = {}
    monkeypatch.setattr(
        plotting,
        "save_figure",
        lambda fig, stem, **_: drawn.__setitem__(Path(stem).name, fig) or [],
    )
    write_figures(results, tmp_path / "unused", behaviour=behaviour, loaded=loaded)
    for name, fig in drawn.items():
        assert not _outside_canvas(fig), f"{name}: drawn past the canvas"
    # Unit ids with regions in the activity ranking, regions on the connectivity axes.
    ranking = drawn["ring15_activity"].figure.axes[0]
    labels = [t.get_text() for t in ranking.get_yticklabels()]
    assert all(" · ADn" in label or " · CA1" in label for label in labels)
    connectivity = drawn["ring15_connectivity"].figure.axes[0]
    assert "grouped by region" in connectivity.get_xlabel()
    # 15 fitted units are too few for a GMM curve: the panel says so instead of a lone star.
    gmm = drawn["ring15_gmm"].figure.axes[0]
    assert [line.get_label() for line in gmm.lines if not line.get_label().startswith("_")] == [
        "sampled units, σ=1"
    ]
    assert "fitted units: 15 are too few" in gmm.texts[0].get_text()


def test_unit_regions_come_from_a_column_or_from_the_first_electrode(tmp_path):
    from datetime import datetime, timezone

    from pynwb import NWBHDF5IO, NWBFile

    from nwb_lrconn.data import Recording
    from nwb_lrconn.report import unit_annotations

    nwbfile = NWBFile("units on electrodes", "el", datetime(2020, 1, 1, tzinfo=timezone.utc))
    group = nwbfile.create_electrode_group(
        "shank", "one shank", "brain", nwbfile.create_device("probe")
    )
    for location in ("CA1", "CA1", "ADn", "ADn"):
        nwbfile.add_electrode(location=location, group=group)
    for unit, electrodes in enumerate([[0], [2, 3], [1], [3]]):
        nwbfile.add_unit(spike_times=[0.1 * (unit + 1)], electrodes=electrodes)
    path = tmp_path / "electrodes.nwb"
    with NWBHDF5IO(str(path), "w") as nwb_io:
        nwb_io.write(nwbfile)
    recording = Recording(
        data=np.zeros((1, 2, 3)),
        mask=np.ones((1, 2), bool),
        bin_width=0.1,
        kind="spikes",
        unit_ids=np.array([10, 11, 13]),
        unit_rows=np.array([0, 1, 3]),
        trial_start_times=np.zeros(1),
    )
    labels, regions = unit_annotations(recording, path)
    assert regions == ["CA1", "ADn", "ADn"]
    assert labels == ["10 · CA1", "11 · ADn", "13 · ADn"]
    # No region anywhere: the ids alone.
    bare = tmp_path / "bare.nwb"
    from nwb_lrconn.io import write_units_nwb

    write_units_nwb(bare, [np.array([0.1])] * 4)
    assert unit_annotations(recording, bare) == (["10", "11", "13"], None)


def test_report_of_a_joint_session_lists_the_sessions_and_the_warrant_check():
    from nwb_lrconn.extension import mock_joint, mock_results
    from nwb_lrconn.report import format_report

    results = mock_joint(mock_results(), session=1)
    joint = results.joint
    text = format_report(results)
    assert "joint fit: session 2 of 3, one network of" in text
    assert f"{int(joint.n_units.sum())} units (started from session {joint.reference + 1})" in text
    rows = [line for line in text.splitlines() if "session" in line and ".nwb (" in line]
    assert [row.lstrip()[:3] for row in rows] == ["1. ", "*2.", "3. "]
    for s, row in enumerate(rows):
        assert row.endswith(joint.verdict(s))
    assert rows[2].endswith("its units' distribution is far from the others'")  # flagged last
    assert f"pooled distribution: flows; {joint.pooled_reason}" in text
    floors = [line for line in text.splitlines() if "(floor " in line]
    assert len(floors) == 3 and floors[0].strip().startswith("1. 0 ")
    assert f"note: {joint.note}" in text
