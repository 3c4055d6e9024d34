"""LowRankRNNEstimator: ground truth at small size, sklearn contract, determinism, errors."""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import sys

import numpy as np
import pytest
import torch
from sklearn.base import clone

from nwb_lrconn._validation import NotFittedError
from nwb_lrconn.data import LowRankFit, Recording
from nwb_lrconn.inference.dynamics import (
    find_fixed_points,
    flow_field,
    flow_field_rmse,
    latent_velocity,
)
from nwb_lrconn.model.estimator import LowRankRNNEstimator, metrics_from_expected
from nwb_lrconn.model.gauge import align_latents, apply_gauge
from nwb_lrconn.model.networks import grid_initial_conditions, sample_network
from nwb_lrconn.model.simulate import simulate_calcium, simulate_rates, simulate_spikes


def _aligned_flow_rmse(est, net, truth_latents, mask):
    A, c = align_latents(est.latents_, truth_latents, mask)
    points, true_flow = flow_field(net.M, net.K)
    fitted = latent_velocity((points - c) @ np.linalg.inv(A).T, est.M_, est.K_, d=est.d_) @ A.T
    return flow_field_rmse(true_flow, fitted), A, c


@pytest.fixture(scope="module")
def quadstable_rates():
    net = sample_network("quadstable", 200, random_state=0)
    session = simulate_rates(net, initial=grid_initial_conditions(10), n_time=100)
    est = LowRankRNNEstimator(rank=2, max_epochs=25, lbfgs_rounds=5, random_state=0)
    return net, session, est.fit(session.to_recording())


def test_small_rate_fit_recovers_the_ground_truth(quadstable_rates):
    net, session, est = quadstable_rates
    assert est.metrics_["r2"] > 0.99
    assert np.nanmin(est.unit_quality_) > 0.9
    rmse, A, c = _aligned_flow_rmse(est, net, session.latents, np.ones((100, 100), bool))
    assert rmse < 0.06  # |F|_rms ≈ 0.67
    M, K, _, _, _ = apply_gauge(est.M_, est.K_, est.B_, est.d_, est.latents_, A, c)
    r2_m = 1 - np.sum((M - net.M) ** 2) / np.sum((net.M - net.M.mean(0)) ** 2)
    assert r2_m > 0.95
    stable = [fp for fp in find_fixed_points(est.M_, est.K_, d=est.d_) if fp.stable]
    assert len(stable) == 4


def test_fit_record_and_canonical_gauge(quadstable_rates):
    _, session, est = quadstable_rates
    fit = est.fit_
    assert isinstance(fit, LowRankFit)
    assert fit.M.shape == fit.K.shape == (200, 2) and fit.B.shape == (200, 0)
    assert fit.latents.shape == (100, 100, 2)
    assert fit.observation == "gaussian" and fit.alpha == pytest.approx(0.1)
    assert set(fit.train_trials) | set(fit.test_trials) == set(range(100))
    assert not set(fit.train_trials) & set(fit.test_trials)
    assert est.loss_history_.shape[1] == 2 and est.loss_history_.shape[0] >= 2
    # Canonical gauge: white latents, MᵀM diagonal descending, positive readout gains.
    pts = est.latents_.reshape(-1, 2)
    np.testing.assert_allclose(pts.T @ pts / pts.shape[0], np.eye(2), atol=1e-4)
    gram = est.M_.T @ est.M_
    assert abs(gram[0, 1]) < 1e-3 * gram[0, 0] and gram[0, 0] >= gram[1, 1]
    assert np.all(est.readout_gain_ > 0)


def test_transform_predict_score_on_new_trials(quadstable_rates):
    net, _, est = quadstable_rates
    rng = np.random.default_rng(5)
    new = simulate_rates(net, initial=rng.uniform(-2, 2, (6, 2)), n_time=100)
    rec = new.to_recording()
    latents = est.transform(rec)
    assert latents.shape == (6, 100, 2)
    A, c = align_latents(est.latents_, _truth_latents(est, net), np.ones((100, 100), bool))
    err = np.abs(latents @ A.T + c - new.latents)
    assert err.mean() < 0.05 and err.max() < 0.3
    predicted = est.predict(rec)
    r2 = metrics_from_expected(rec.data, predicted, rec.mask, "gaussian")[0]["r2"]
    assert r2 > 0.98
    reversed_in_time = dataclasses.replace(rec, data=rec.data[:, ::-1].copy())
    assert est.score(rec) > est.score(reversed_in_time) + 1.0


def _truth_latents(est, net):
    from nwb_lrconn.model.networks import simulate_latents

    return simulate_latents(net.M, net.K, grid_initial_conditions(10), 100)


def _tiny_recording(kind="rates", seed=0, n_trials=8, n_time=30, n_units=15):
    net = sample_network("limit_cycle", n_units, random_state=seed)
    initial = np.random.default_rng(seed).uniform(-2, 2, (n_trials, 2))
    if kind == "spikes":
        return simulate_spikes(net, initial=initial, n_time=n_time, random_state=seed)
    if kind == "calcium":
        return simulate_calcium(net, initial=initial, n_time=n_time, random_state=seed)
    return simulate_rates(net, initial=initial, n_time=n_time, noise_std=0.05, random_state=seed)


TINY = {"max_epochs": 3, "lbfgs_rounds": 1, "random_state": 3}


@pytest.mark.parametrize("kind", ["rates", "spikes", "calcium"])
def test_same_seed_gives_identical_numbers(kind):
    rec = _tiny_recording(kind).to_recording()
    params = {**TINY, "calcium_decay": 0.5} if kind == "calcium" else TINY
    a = LowRankRNNEstimator(**params).fit(rec)
    b = LowRankRNNEstimator(**params).fit(rec)
    for name in ("M_", "K_", "d_", "latents_", "loss_history_", "unit_quality_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.metrics_ == b.metrics_
    c = LowRankRNNEstimator(**{**params, "random_state": 4}).fit(rec)
    assert not np.array_equal(a.M_, c.M_)
    key = "bits_per_spike" if kind == "spikes" else "r2"
    assert key in a.metrics_ and np.isfinite(a.metrics_[key])


def test_unit_refit_is_kept_only_with_a_lower_held_out_loss():
    rec = _tiny_recording("spikes").to_recording()
    plain = LowRankRNNEstimator(**TINY, refit_units=False).fit(rec)
    refit = LowRankRNNEstimator(**TINY).fit(rec)
    # Same gradient phases, then one more row: the refit, at a lower held-out loss.
    n = len(plain.loss_history_)
    np.testing.assert_array_equal(refit.loss_history_[:n], plain.loss_history_)
    assert len(refit.loss_history_) == n + 1 and refit.best_epoch_ == n
    assert refit.loss_history_[-1, 1] < plain.loss_history_[plain.best_epoch_, 1]
    assert refit.metrics_["log_likelihood"] > plain.metrics_["log_likelihood"]


@pytest.mark.parametrize(("kind", "resolved"), [("spikes", 0.05), ("rates", 0.0)])
def test_auto_process_noise_is_five_percent_for_spikes_and_zero_otherwise(kind, resolved):
    rec = _tiny_recording(kind).to_recording()
    auto = LowRankRNNEstimator(**TINY).fit(rec)
    explicit = LowRankRNNEstimator(**TINY, process_noise=resolved).fit(rec)
    np.testing.assert_array_equal(auto.loss_history_, explicit.loss_history_)
    if resolved > 0:  # the noise does change the training path
        plain = LowRankRNNEstimator(**TINY, process_noise=0.0).fit(rec)
        assert not np.array_equal(auto.loss_history_[1:], plain.loss_history_[1:])


def test_fit_never_mutates_the_recording():
    rec = _tiny_recording().to_recording()
    before = {
        f.name: np.copy(getattr(rec, f.name))
        for f in dataclasses.fields(rec)
        if isinstance(getattr(rec, f.name), np.ndarray)
    }
    LowRankRNNEstimator(**TINY).fit(rec)
    for name, value in before.items():
        np.testing.assert_array_equal(getattr(rec, name), value, err_msg=name)


def test_inputs_and_bias_are_fitted():
    rec = _tiny_recording().to_recording()
    inputs = np.random.default_rng(0).standard_normal(rec.data.shape[:2] + (2,))
    rec = dataclasses.replace(rec, inputs=inputs, input_names=("a", "b"))
    est = LowRankRNNEstimator(**TINY).fit(rec)
    assert est.B_.shape == (15, 2) and est.fit_.B.shape == (15, 2)
    assert est.predict(rec).shape == rec.data.shape


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_and_tau(monkeypatch, capsys):
    rec = _tiny_recording().to_recording()
    est = LowRankRNNEstimator(**TINY, tau=0.1, progress=True).fit(rec)
    assert est.alpha_ == pytest.approx(rec.bin_width / 0.1)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here: no bar
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    LowRankRNNEstimator(**TINY, progress=True).fit(rec)
    assert "fit" in terminal.getvalue()
    terminal.truncate(0)
    LowRankRNNEstimator(**TINY).fit(rec)  # progress=False: never a bar
    assert terminal.getvalue() == ""


def test_one_log_line_per_phase_with_elapsed_time(caplog):
    rec = _tiny_recording("spikes").to_recording()
    with caplog.at_level(logging.INFO, logger="nwb_lrconn"):
        LowRankRNNEstimator(**TINY).fit(rec)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("nwb_lrconn.model")]
    phases = ["init:", "Adam:", "L-BFGS:", "unit refit:", "fit done in"]
    assert [next(i for i, line in enumerate(lines) if line.startswith(p)) for p in phases] == (
        sorted(range(len(phases)))
    ), lines
    assert len(lines) == len(phases)
    assert all(re.search(r"in \d+\.\d s", line) for line in lines), lines


def test_training_stops_when_the_held_out_loss_stops_improving():
    # 20 units × 200 windows of 10 bins: a small recording stops long before max_epochs (500).
    net = sample_network("quadstable", 20, random_state=0)
    initial = np.random.default_rng(0).uniform(-2, 2, (200, 2))
    session = simulate_spikes(net, initial=initial, n_time=10, bin_width=0.1, random_state=1)
    rec = session.to_recording()
    est = LowRankRNNEstimator(random_state=0).fit(rec)
    assert len(est.loss_history_) - 1 < 150, len(est.loss_history_)  # epochs + rounds + refit
    test = est.test_trials_
    rate = np.logaddexp(0, session.readout_gain * session.activity[test] + session.readout_offset)
    truth = metrics_from_expected(rec.data[test], 0.1 * rate, rec.mask[test], "poisson")[0]
    assert est.metrics_["bits_per_spike"] > 0.9 * truth["bits_per_spike"]


def test_hyperparameters_are_stored_verbatim():
    est = LowRankRNNEstimator(rank=3, lr=0.5, random_state=None, device="cuda")
    assert (est.rank, est.lr, est.random_state, est.device) == (3, 0.5, None, "cuda")
    assert not any(name.endswith("_") for name in vars(est))


def test_sklearn_clone_params_and_short_repr(quadstable_rates):
    est = LowRankRNNEstimator(rank=3, lr=0.5, max_epochs=7, random_state=1)
    twin = clone(est)
    assert twin is not est and twin.get_params(deep=True) == est.get_params(deep=True)
    assert repr(est) == "LowRankRNNEstimator(lr=0.5, max_epochs=7, random_state=1, rank=3)"
    assert est.set_params(tau=0.2, lr=1e-3) is est
    assert (est.tau, est.lr) == (0.2, 1e-3)
    assert LowRankRNNEstimator(**est.get_params()).get_params() == est.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'learning_rate'"):
        est.set_params(learning_rate=1.0)
    _, _, fitted = quadstable_rates
    assert len(repr(fitted)) < 120 and "array" not in repr(fitted)
    assert not hasattr(clone(fitted), "model_")


@pytest.mark.parametrize("kind", ["spikes", "rates"])
def test_a_fit_read_back_from_nwb_transforms_and_scores_like_the_original(kind, tmp_path):
    from nwb_lrconn.config import RunConfig
    from nwb_lrconn.data import Provenance, Results, SourceInfo
    from nwb_lrconn.extension import read_results, write_results

    est = LowRankRNNEstimator(**TINY, smoothing=0.03).fit(_tiny_recording(kind).to_recording())
    config = RunConfig().with_overrides(smoothing=0.03, seed=3, max_epochs=3, lbfgs_rounds=1)
    provenance = Provenance("0", config.to_json(), 3, SourceInfo(), "2026-01-01T00:00:00+00:00")
    path = write_results(Results("tiny", est.fit_, provenance), None, tmp_path / "fit.nwb")
    stored = read_results(path, "tiny")
    rebuilt = LowRankRNNEstimator.from_results(stored)
    resolved = {"alpha": est.alpha_, "observation": est.observation_}
    assert rebuilt.get_params() == {**est.get_params(), **resolved}
    new = _tiny_recording(kind, seed=1).to_recording()  # same network, other trials
    np.testing.assert_array_equal(rebuilt.transform(new), est.transform(new))
    np.testing.assert_array_equal(rebuilt.predict(new), est.predict(new))
    assert rebuilt.score(new) == est.score(new)
    np.testing.assert_array_equal(rebuilt.latents_, est.latents_)
    np.testing.assert_array_equal(rebuilt.M_, est.M_)
    assert rebuilt.metrics_ == est.metrics_ and rebuilt.best_epoch_ == est.best_epoch_
    # From the fit record alone the stored smoothing is not known: the default is used.
    assert LowRankRNNEstimator.from_results(stored.fit).smoothing is None


def test_from_results_refuses_other_objects():
    with pytest.raises(TypeError, match="needs a nwb_lrconn.data.LowRankFit or Results; got dict"):
        LowRankRNNEstimator.from_results({})


def test_unfitted_estimator_refuses_to_predict():
    rec = _tiny_recording().to_recording()
    for method in ("transform", "predict", "score"):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            getattr(LowRankRNNEstimator(), method)(rec)


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ({"rank": 40}, ValueError, "rank must be <= n_units; got rank=40 for 15"),
        ({"rank": 0}, ValueError, "rank must be >= 1"),
        ({"observation": "poisson"}, ValueError, "observation='poisson' does not fit"),
        ({"observation": "binomial"}, ValueError, "observation must be one of"),
        ({"nonlinearity": "sigmoid"}, ValueError, "nonlinearity must be one of"),
        ({"alpha": 0.1, "tau": 0.2}, ValueError, "Give alpha or tau, not both"),
        ({"tau": 0.001}, ValueError, "alpha = bin_width / tau must be <= 1"),
        ({"test_fraction": 1.0}, ValueError, "test_fraction must lie in"),
        ({"calcium_decay": 0.5}, ValueError, "calcium_decay must lie in"),
        ({"lr": "fast"}, ValueError, "lr must be a positive number or 'auto'; got 'fast'"),
        ({"lr": 0.0}, ValueError, "lr must be finite and > 0"),
        ({"max_epochs": 2.5}, TypeError, "max_epochs must be an integer"),
        ({"process_noise": "high"}, ValueError, "process_noise must be a non-negative number or"),
        ({"process_noise": -0.1}, ValueError, "process_noise must be finite and >= 0"),
        ({"tol": -0.01}, ValueError, "tol must be finite and >= 0"),
        ({"tol": None}, TypeError, "tol must be a number"),
    ],
)
def test_bad_hyperparameters(override, error, match):
    rec = _tiny_recording().to_recording()
    with pytest.raises(error, match=match):
        LowRankRNNEstimator(**{**TINY, **override}).fit(rec)


@pytest.mark.parametrize(
    ("observation", "lr", "process_noise", "expected"),
    [
        ("poisson", "auto", "auto", (2e-2, 0.05)),
        ("gaussian", "auto", "auto", (5e-3, 0.0)),
        ("calcium", "auto", "auto", (5e-3, 0.0)),
        ("poisson", 0.3, 0.0, (0.3, 0.0)),  # a caller's values are kept
    ],
)
def test_auto_settings_follow_the_observation_model(observation, lr, process_noise, expected):
    est = LowRankRNNEstimator(lr=lr, process_noise=process_noise)
    noise = est._resolve_process_noise(observation)
    config = est._train_config(observation, 0.02, 0.0, noise)
    assert (config.lr, config.process_noise) == expected


def test_bad_inputs():
    rec = _tiny_recording().to_recording()
    with pytest.raises(TypeError, match="recording must be a nwb_lrconn.data.Recording"):
        LowRankRNNEstimator().fit(rec.data)
    with pytest.raises(ValueError, match="fit needs at least 2 trials"):
        LowRankRNNEstimator(**TINY).fit(rec.select_trials(np.array([0])))
    # NaNs and empty masks are refused where a Recording is made.
    with pytest.raises(ValueError, match="must be finite"):
        dataclasses.replace(rec, data=np.full(rec.data.shape, np.nan))
    with pytest.raises(ValueError, match="without any bin"):
        dataclasses.replace(rec, mask=np.zeros(rec.mask.shape, bool))
    est = LowRankRNNEstimator(**TINY).fit(rec)
    other = _tiny_recording(n_units=12).to_recording()
    with pytest.raises(ValueError, match="this estimator was fitted on 15 and 0"):
        est.transform(other)
    spikes = _tiny_recording("spikes").to_recording()
    with pytest.raises(ValueError, match="this estimator was fitted with observation='gaussian'"):
        est.predict(spikes)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_request_without_cuda_fails_clearly():
    rec = _tiny_recording().to_recording()
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        LowRankRNNEstimator(**TINY, device="cuda").fit(rec)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_matches_cpu_fit():
    rec = _tiny_recording().to_recording()
    cpu = LowRankRNNEstimator(**TINY).fit(rec)
    gpu = LowRankRNNEstimator(**TINY, device="cuda").fit(rec)
    np.testing.assert_allclose(gpu.M_, cpu.M_, atol=1e-3)
    assert gpu.model_.M.device.type == "cuda"


def test_ragged_trials_are_masked():
    rec = _tiny_recording().to_recording()
    mask = rec.mask.copy()
    mask[::2, 20:] = False
    data = np.where(mask[..., None], rec.data, 0.0)
    ragged = dataclasses.replace(rec, data=data, mask=mask)
    est = LowRankRNNEstimator(**TINY).fit(ragged)
    assert np.all(est.latents_[~mask] == 0)
    # Garbage in the masked bins changes nothing.
    noisy = dataclasses.replace(ragged, data=np.where(mask[..., None], data, 7.0))
    est2 = LowRankRNNEstimator(**TINY).fit(noisy)
    np.testing.assert_allclose(est2.M_, est.M_, atol=1e-4)


def test_metrics_against_known_values():
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.3, (4, 50, 3)).astype(float)
    mask = np.ones((4, 50), bool)
    const = np.broadcast_to(counts.mean((0, 1)), counts.shape)
    metrics, quality = metrics_from_expected(counts, const, mask, "poisson")
    assert metrics["bits_per_spike"] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(quality, 0.0, atol=1e-9)
    y = rng.standard_normal((2, 30, 3))
    metrics, quality = metrics_from_expected(y, y, np.ones((2, 30), bool), "gaussian")
    assert metrics["r2"] == 1.0 and np.all(quality == 1.0)
    assert isinstance(Recording, type)
