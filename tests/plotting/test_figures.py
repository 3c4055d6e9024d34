"""Figures: content checks (panels, labels with units, data drawn), not only existence."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nwb_lrconn.inference.dynamics import find_fixed_points
from nwb_lrconn.plotting import (
    cluster_order,
    expected_activity,
    fixed_point_visits,
    latent_extent,
    plot_connectivity,
    plot_degeneracy_spectrum,
    plot_dissimilarity,
    plot_fitted_activity,
    plot_flow_training,
    plot_gmm_curves,
    plot_latent_dynamics,
    plot_loadings,
    plot_summary,
    plot_training_curves,
    save_figure,
)


def test_training_curves_mark_the_best_held_out_epoch(results):
    ax = plot_training_curves(results.fit)
    train, held, best = ax.lines
    np.testing.assert_allclose(train.get_ydata(), results.fit.loss_history[:, 0])
    np.testing.assert_allclose(held.get_ydata(), results.fit.loss_history[:, 1])
    assert best.get_xdata()[0] == np.argmin(results.fit.loss_history[:, 1])
    assert ax.get_xlabel().startswith("epoch") and "nats" in ax.get_ylabel()


def test_flow_training_draws_every_curve(results):
    ax = plot_flow_training(results.distribution)
    assert sorted(line.get_label() for line in ax.lines) == sorted(
        results.distribution.training_curves
    )
    assert ax.get_yscale() == "log"


def test_fitted_activity_average_view_of_a_perfect_fit_overlays_the_data(results, recording):
    fit = results.fit
    fig = plot_fitted_activity(fit, recording, n_units=3)
    ranking, *axes = fig.axes
    assert len(axes) == 3
    best_units = np.argsort(-fit.unit_quality)[:3]
    held_out = recording.data[fit.test_trials].mean(axis=0)
    for ax, unit in zip(axes, best_units):
        observed, fitted = ax.lines
        np.testing.assert_allclose(fitted.get_ydata(), held_out[:, unit], atol=1e-12)
        np.testing.assert_allclose(observed.get_ydata(), fitted.get_ydata(), atol=1e-12)
        assert ax.get_ylabel() == "rate (a.u.)"
        rank = int(np.flatnonzero(np.argsort(-fit.unit_quality) == unit)[0]) + 1
        assert ax.get_title(loc="left").startswith(f"unit {recording.unit_ids[unit]}: held-out R²")
        assert ax.get_title(loc="left").endswith(f"(rank {rank} of 60)")
    n_held = len(fit.test_trials)
    assert axes[-1].get_xlabel() == (
        f"time from trial start (s); mean ± s.e.m. over {n_held} held-out trials"
    )
    np.testing.assert_allclose(axes[0].lines[0].get_xdata()[1], recording.bin_width)
    # The ranking panel: the 30 best units, best on top, the shown ones in red.
    ticks = dict(zip((t.get_text() for t in ranking.get_yticklabels()), ranking.get_yticks()))
    assert len(ticks) == 30
    assert ticks[str(recording.unit_ids[best_units[0]])] == max(ticks.values())
    red = [b for b in ranking.patches if b.get_facecolor()[0] - b.get_facecolor()[1] > 0.3]
    assert len(red) == 3
    assert "30 best of 60" in ranking.get_title()


def test_fitted_activity_span_view_follows_session_time(results, recording):
    import dataclasses

    fit = results.fit
    length = recording.n_time * recording.bin_width
    tiled = dataclasses.replace(
        recording, trial_start_times=100.0 + np.arange(recording.n_trials) * length
    )
    fig = plot_fitted_activity(
        fit, tiled, n_units=2, span=5.0, smooth_bins=3, unit_labels=[f"u{i}" for i in range(60)]
    )
    _, first, second = fig.axes
    observed, fitted = first.lines
    np.testing.assert_allclose(observed.get_ydata(), fitted.get_ydata(), atol=1e-12)
    time = observed.get_xdata()
    assert time[0] >= 100.0 and time[-1] - time[0] <= 5.0
    np.testing.assert_allclose(np.diff(time), recording.bin_width, rtol=1e-9)
    # The held-out windows are shaded and the span holds as many of them as possible.
    assert len(first.patches) >= 1
    assert second.get_xlabel().startswith("session time (s); held-out windows shaded; 0.06-s")
    assert first.get_title(loc="left").startswith("unit u")
    with pytest.raises(ValueError, match=r"view must be one of"):
        plot_fitted_activity(fit, tiled, view="psth")


def test_tiles_time_tells_windows_from_event_aligned_trials(recording):
    import dataclasses

    from nwb_lrconn.plotting import tiles_time

    assert not tiles_time(recording)  # 0.6-s trials starting every second
    length = recording.n_time * recording.bin_width
    tiled = dataclasses.replace(
        recording, trial_start_times=np.arange(recording.n_trials) * length
    )
    assert tiles_time(tiled)


def test_expected_activity_poisson_rates_are_softplus_of_the_readout(results):
    fit = results.fit
    import dataclasses

    poisson = dataclasses.replace(fit, observation="poisson")
    rates = expected_activity(poisson, 0)
    np.testing.assert_allclose(rates, np.logaddexp(0, np.tanh(fit.latents[0] @ fit.M.T)))


def test_fitted_activity_rejects_another_recording(results, recording):
    other = recording.select_trials(np.arange(2))
    wrong = type(other)(
        data=other.data[..., :5],
        mask=other.mask,
        bin_width=0.02,
        kind="rates",
        unit_ids=np.arange(5),
        unit_rows=np.arange(5),
        trial_start_times=np.zeros(2),
    )
    with pytest.raises(ValueError, match=r"recording has 5 units but the fit has 60"):
        plot_fitted_activity(results.fit, wrong)


def test_latent_dynamics_marks_the_fixed_points_the_analysis_finds(results):
    fit = results.fit
    ax = plot_latent_dynamics(fit, n_trials=5)
    assert len(ax.collections) == 1  # the flow-field quiver
    assert len(ax.images) == 1  # the visited-state density
    markers = {line.get_label(): line for line in ax.lines if line.get_label().endswith("point")}
    extent = latent_extent(fit)
    expected = find_fixed_points(fit.M, fit.K, d=fit.d, extent=extent)
    stable = np.array([fp.location for fp in expected if fp.stable])
    unstable = np.array([fp.location for fp in expected if not fp.stable])
    assert len(stable) == 2 and len(unstable) >= 1  # bistable: two attractors and a saddle
    drawn = markers["stable fixed point"]
    np.testing.assert_allclose(np.c_[drawn.get_xdata(), drawn.get_ydata()], stable)
    drawn = markers["unstable fixed point"]
    np.testing.assert_allclose(np.c_[drawn.get_xdata(), drawn.get_ydata()], unstable)
    assert drawn.get_markerfacecolor() == "none"
    trajectories = [line for line in ax.lines if line.get_label().startswith("_")]
    assert len(trajectories) == 5
    assert ax.get_xlabel() == "latent κ₁ (a.u.)" and ax.get_ylabel() == "latent κ₂ (a.u.)"
    np.testing.assert_allclose(ax.get_xlim(), [-extent, extent])
    # Each fixed point is lettered; the legend gives its visit count.
    visits = fixed_point_visits(fit, expected, 0.1 * extent)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["stable fixed point", "unstable fixed point"]
    for letter, fp, count in zip("ABCDEFG", expected, visits):
        kind = "stable" if fp.stable else "unstable"
        assert f"{letter}: {kind}, {count} trials" in legend
    assert sorted(t.get_text() for t in ax.texts) == list("ABCDEFG"[: len(expected)])
    assert f"of {fit.latents.shape[0]}" in ax.get_title()


def test_fixed_point_visits_count_trials_passing_close(results):
    from nwb_lrconn.inference.dynamics import FixedPoint

    fit = results.fit
    start = fit.latents[:, 0, :]  # every trial passes through its own start
    points = [
        FixedPoint(location=start[0], eigenvalues=np.array([-1.0, -1.0]), stable=True),
        FixedPoint(location=np.array([50.0, 50.0]), eigenvalues=np.ones(2), stable=False),
    ]
    visits = fixed_point_visits(fit, points, radius=1e-9)
    near = np.linalg.norm(fit.latents - start[0], axis=-1).min(axis=1) <= 1e-9
    assert visits.tolist() == [int(near.sum()), 0] and visits[0] >= 1
    assert fixed_point_visits(fit, [], radius=1.0).size == 0


def test_latent_extent_ignores_outlying_bins(results):
    import dataclasses

    fit = results.fit
    latents = fit.latents.copy()
    latents[0, 0] = [50.0, -50.0]  # one wild bin
    wild = dataclasses.replace(fit, latents=latents)
    assert latent_extent(wild) == pytest.approx(latent_extent(fit), rel=0.05)
    assert latent_extent(fit) == pytest.approx(
        1.3 * np.percentile(np.abs(fit.latents[..., :2]), 99)
    )


def test_latent_dynamics_uses_given_fixed_points_and_handles_rank_one(truth, fit_factory):
    net, latents = truth
    fit = fit_factory(net, latents)
    ax = plot_latent_dynamics(fit, fixed_points=[])
    assert not [line for line in ax.lines if line.get_label().endswith("point")]
    ax = plot_latent_dynamics(fit_factory(net, latents, rank=1), n_trials=3)
    assert len(ax.lines) == 3 and not ax.collections and not ax.images
    assert ax.get_xlabel() == "time from trial start (s)"


def test_loadings_one_panel_per_rank_with_fitted_and_sampled(results):
    fig = plot_loadings(results.fit, results.distribution)
    assert len(fig.axes) == 2
    for r, ax in enumerate(fig.axes):
        sampled, fitted = ax.collections
        np.testing.assert_allclose(
            fitted.get_offsets(), np.c_[results.fit.M[:, r], results.fit.K[:, r]]
        )
        np.testing.assert_allclose(
            sampled.get_offsets()[:, 1], results.distribution.samples_k[:, r]
        )
        assert ax.get_xlabel() == f"input loading m{r + 1} (a.u.)"
    assert fig.axes[0].get_legend() is not None
    assert len(plot_loadings(results.fit).axes[0].collections) == 1


def test_degeneracy_spectrum_splits_at_the_threshold(degeneracy_factory):
    report = degeneracy_factory(threshold=1.0)
    ax = plot_degeneracy_spectrum(report)
    constrained, degenerate = ax.collections
    assert len(constrained.get_offsets()) == report.n_constrained
    assert np.all(constrained.get_offsets()[:, 1] > 1.0)
    assert np.all(degenerate.get_offsets()[:, 1] <= 1.0)
    (threshold,) = ax.lines
    assert threshold.get_ydata()[0] == 1.0
    assert f"{report.n_constrained} constrained" in ax.get_title()
    assert ax.get_yscale() == "log" and "1/variance" in ax.get_ylabel()
    # The fixture's spectrum holds 50 of the 56 non-gauge directions.
    assert (
        ax.get_xlabel() == "eigen-direction (sorted)\nthe 50 computed of 56; the counts cover all"
    )
    assert [t.get_text() for t in ax.get_yticklabels() if t.get_text()][:2] == ["10⁻⁵", "10⁻⁴"]


def test_cluster_order_groups_the_quadstable_populations():
    from nwb_lrconn.model.networks import sample_network

    net = sample_network("quadstable", 200, random_state=0)
    order, labels = cluster_order(net.M, n_clusters=4)
    population = np.arange(200) % 4
    assert sorted(order.tolist()) == list(range(200))
    # The clusters recover the planted populations (they overlap a little: means ±0.87, sd 0.5).
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(population, labels) > 0.6
    assert np.all(np.diff(labels[order]) >= 0)


def test_connectivity_image_is_the_reordered_matrix(results):
    fit = results.fit
    ax = plot_connectivity(fit, n_clusters=2)
    image = ax.images[0].get_array()
    order, _ = cluster_order(np.hstack([fit.M, fit.K]), n_clusters=2)
    np.testing.assert_allclose(image, fit.connectivity()[np.ix_(order, order)])
    assert len(ax.figure.axes) == 2  # image + colour bar
    assert ax.get_xlabel() == "presynaptic 60 units (grouped by cluster)"
    assert not ax.get_xticks().size  # 60 units: too many to name


def test_connectivity_names_units_and_groups_them_by_region(results):
    import dataclasses

    fit = dataclasses.replace(
        results.fit,
        M=results.fit.M[:12],
        K=results.fit.K[:12],
        B=np.zeros((12, 0)),
        d=np.zeros(12),
        readout_gain=np.ones(12),
        readout_offset=np.zeros(12),
        noise_std=np.ones(12),
        unit_quality=np.ones(12),
        unit_ids=np.arange(12) + 100,
    )
    regions = ["CA1", "ADn", "ADn"] * 4
    ax = plot_connectivity(fit, regions=regions)
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    np.testing.assert_array_equal(ax.get_xticks(), np.arange(12))  # integer positions
    # ADn (sorted first) then CA1, each block one region.
    assert [regions[int(t) - 100] for t in ticks] == ["ADn"] * 8 + ["CA1"] * 4
    assert ax.get_xlabel() == "presynaptic unit id (grouped by region, then cluster)"
    image = ax.images[0].get_array()
    order = [int(t) - 100 for t in ticks]
    np.testing.assert_allclose(image, fit.connectivity()[np.ix_(order, order)])
    secondary = [c for c in ax.child_axes]
    names = [t.get_text() for c in secondary for t in c.get_xticklabels() + c.get_yticklabels()]
    assert names.count("ADn") >= 1 and names.count("CA1") >= 1
    labelled = plot_connectivity(fit, unit_labels=[f"n{i}" for i in range(12)])
    assert all(t.get_text().startswith("n") for t in labelled.get_yticklabels())


def test_dissimilarity_matrix_normalised_and_annotated():
    matrix = np.array([[0.1, 2.0], [1.0, 0.2]])
    ax = plot_dissimilarity(matrix, row_labels=["true A", "true B"], col_labels=["A", "B"])
    np.testing.assert_allclose(ax.images[0].get_array(), matrix / 2.0)
    assert [t.get_text() for t in ax.texts] == ["0.05", "1.00", "0.50", "0.10"]
    with pytest.raises(ValueError, match=r"matrix must have shape \(3, 3\)"):
        plot_dissimilarity(matrix, row_labels=["a", "b", "c"])


def test_gmm_curves_mark_the_best_component_count():
    ks = np.arange(1, 7)
    ax = plot_gmm_curves({"sampled": (ks, -((ks - 4.0) ** 2)), "baseline": (ks, -ks * 1.0)})
    assert ax.lines[1].get_xdata()[0] == 4 and ax.lines[3].get_xdata()[0] == 1
    assert ax.get_xlabel() == "number of mixture components"
    with pytest.raises(ValueError, match=r"curve 'bad': n_components and log_likelihood"):
        plot_gmm_curves({"bad": (ks, ks[:3])})
    ax = plot_gmm_curves({"sampled": (ks, -ks * 1.0)}, notes=["fitted units: 15 are too few"])
    assert [t.get_text() for t in ax.texts] == ["fitted units: 15 are too few"]


def test_summary_has_six_panels_and_saves_png_and_pdf(results, tmp_path):
    fig = plot_summary(results)
    titled = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(titled) == 6
    text = fig.axes[5].texts[0].get_text()
    assert "60 units, rank 2" in text and "constrained" in text
    paths = save_figure(fig, tmp_path / "sub" / "summary")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_importing_plotting_does_not_import_matplotlib():
    code = "import sys, nwb_lrconn.plotting; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_latent_behaviour_figure_shows_the_plane_the_decoding_and_the_scores(results, recording):
    from nwb_lrconn.inference.behaviour import relate_to_behaviour
    from nwb_lrconn.plotting import plot_latent_behaviour

    fit = results.fit
    angle = np.arctan2(fit.latents[..., 1], fit.latents[..., 0])
    report = relate_to_behaviour(fit, recording, angle, variable="a/b/heading", unit="radians")
    fig = plot_latent_behaviour(fit, report)
    plane, decoded, scores, colorbar = fig.axes
    np.testing.assert_allclose(plane.collections[0].get_offsets(), fit.latents.reshape(-1, 2))
    np.testing.assert_allclose(
        plane.collections[0].get_array(), np.degrees(angle).ravel(), atol=1e-9
    )
    assert colorbar.get_ylabel() == "heading (deg)"
    points = decoded.lines[0]
    held = np.isfinite(report.decoded[..., 0])
    np.testing.assert_allclose(points.get_xdata(), np.degrees(angle[held]), atol=1e-9)
    np.testing.assert_allclose(points.get_ydata(), np.degrees(report.decoded[held, 0]))
    assert decoded.get_title().startswith(f"held-out: circular R² {report.scores['latent']:.3f}")
    widths = [bar.get_width() for bar in scores.patches]
    np.testing.assert_allclose(widths, list(report.scores.values()))
    assert [t.get_text() for t in scores.get_yticklabels()][0] == "latent"
    assert fig.get_suptitle().startswith("the latent angle reaches")


def test_summary_of_a_joint_session_draws_the_whole_networks_flow(monkeypatch):
    import nwb_lrconn.plotting.summary as summary
    from nwb_lrconn.extension import mock_joint, mock_results

    results = mock_joint(mock_results(), session=1)
    drawn = []
    monkeypatch.setattr(summary, "plot_latent_dynamics", lambda fit, **kw: drawn.append(fit))
    summary.plot_summary(results)
    (dynamics,) = drawn
    joint = results.joint
    np.testing.assert_array_equal(dynamics.M, joint.network_M)
    np.testing.assert_array_equal(dynamics.K, joint.network_K)
    np.testing.assert_array_equal(dynamics.d, joint.network_d)
    np.testing.assert_array_equal(dynamics.latents, results.fit.latents)
    np.testing.assert_array_equal(dynamics.M[joint.units], results.fit.M)  # the session's rows
