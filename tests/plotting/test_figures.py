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


def test_fitted_activity_of_a_perfect_fit_overlays_the_data(results, recording):
    fit = results.fit
    fig = plot_fitted_activity(fit, recording, n_units=3)
    axes = fig.axes
    assert len(axes) == 3
    trial = int(fit.test_trials[0])
    best_units = np.argsort(-fit.unit_quality)[:3]
    for ax, unit in zip(axes, best_units):
        observed, fitted = ax.lines
        np.testing.assert_allclose(fitted.get_ydata(), recording.data[trial, :, unit], atol=1e-12)
        np.testing.assert_allclose(observed.get_ydata(), fitted.get_ydata(), atol=1e-12)
        assert ax.get_ylabel() == "rate (a.u.)"
        assert f"unit {recording.unit_ids[unit]}" in ax.get_title()
    assert axes[-1].get_xlabel() == f"time from held-out trial {trial} start (s)"
    np.testing.assert_allclose(axes[0].lines[0].get_xdata()[1], recording.bin_width)


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
    markers = {line.get_label(): line for line in ax.lines if line.get_label().endswith("point")}
    expected = find_fixed_points(fit.M, fit.K, d=fit.d, extent=latent_extent(fit))
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
    np.testing.assert_allclose(ax.get_xlim(), [-latent_extent(fit), latent_extent(fit)])


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
    assert len(ax.lines) == 3 and not ax.collections
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
    assert ax.get_xlabel() == "eigen-direction (sorted; the 50 computed of 56; counts cover all)"


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
    assert "presynaptic" in ax.get_xlabel()


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
