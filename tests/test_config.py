"""Run configuration: validation messages, JSON/TOML round trips, overrides."""

from __future__ import annotations

import json
from contextlib import nullcontext as does_not_raise

import pytest

from nwb_lrconn.config import (
    DistributionConfig,
    FitConfig,
    PosteriorConfig,
    ReadConfig,
    RunConfig,
)


@pytest.mark.parametrize(
    ("override", "expectation"),
    [
        ({}, does_not_raise()),
        ({"source": "lfp"}, pytest.raises(ValueError, match=r"read.source must be one of")),
        ({"bin_width": 0.0}, pytest.raises(ValueError, match=r"read.bin_width must be finite")),
        (
            {"bin_width": "20ms"},
            pytest.raises(TypeError, match=r"read.bin_width must be a number"),
        ),
        ({"bin_width": None}, pytest.raises(ValueError, match=r"only ophys sources may keep")),
        ({"source": "ophys", "bin_width": None}, does_not_raise()),
        (
            {"units_path": ""},
            pytest.raises(TypeError, match=r"read.units_path must be a non-empty"),
        ),
        ({"window": (0.1,)}, pytest.raises(ValueError, match=r"read.window must be a pair")),
        (
            {"trials": "trials", "event": "go", "window": (0.5, -1.0)},
            pytest.raises(ValueError, match=r"must span a positive duration"),
        ),
        (
            {"trials": "trials", "event": "go"},
            pytest.raises(ValueError, match=r"read.event needs read.window"),
        ),
        (
            {"event": "go", "window": (0.5, 1.0)},
            pytest.raises(ValueError, match=r"need read.trials"),
        ),
        ({"window": (0.5, 1.0)}, pytest.raises(ValueError, match=r"need read.trials")),
        ({"trials": "trials", "window": (0.5, 1.0)}, does_not_raise()),
        ({"trials": "trials", "window_length": 2.0}, does_not_raise()),
        (
            {"trials": "trials", "epochs": "epochs"},
            pytest.raises(ValueError, match=r"cannot be combined with read.epochs"),
        ),
        ({"epochs": ("epochs", "wake")}, does_not_raise()),
        ({"epochs": ("epochs",)}, pytest.raises(ValueError, match=r"read.epochs must be a table")),
        ({"epochs": ""}, pytest.raises(TypeError, match=r"read.epochs must be a non-empty")),
        ({"where": "good"}, does_not_raise()),
        ({"where": [("a", ">=", 1), ("b", "in", [1, 2])]}, does_not_raise()),
        (
            {"inputs": ("acquisition/x", "")},
            pytest.raises(TypeError, match=r"read.inputs entries"),
        ),
        ({"time_range": (5.0, 1.0)}, pytest.raises(ValueError, match=r"start < stop")),
        ({"unit_ids": (1, -2)}, pytest.raises(ValueError, match=r"read.unit_ids entries must be")),
        ({"where": ("quality", "~", "good")}, pytest.raises(ValueError, match=r"read.where must")),
        ({"normalize": "dff"}, pytest.raises(ValueError, match=r"read.normalize applies to")),
        ({"normalize": "minmax"}, pytest.raises(ValueError, match=r"read.normalize must be one")),
        ({"min_spikes": -1}, pytest.raises(ValueError, match=r"read.min_spikes must be >= 0")),
        (
            {"source": "sorting", "trials": "trials"},
            pytest.raises(ValueError, match=r"read.trials is not available for source='sorting'"),
        ),
    ],
)
def test_read_config_validation(override, expectation):
    with expectation:
        ReadConfig(**override)


@pytest.mark.parametrize(
    ("override", "expectation"),
    [
        ({}, does_not_raise()),
        ({"rank": "auto"}, does_not_raise()),
        ({"rank": "best"}, pytest.raises(ValueError, match=r"positive integer or 'auto'")),
        ({"rank": 0}, pytest.raises(ValueError, match=r"fit.rank must be >= 1")),
        ({"rank": 2.5}, pytest.raises(TypeError, match=r"fit.rank must be an integer")),
        ({"ranks": ()}, pytest.raises(ValueError, match=r"fit.ranks must list at least one")),
        ({"ranks": (1, 1)}, pytest.raises(ValueError, match=r"must not repeat")),
        ({"observation": "bernoulli"}, pytest.raises(ValueError, match=r"fit.observation must")),
        ({"nonlinearity": "sigmoid"}, pytest.raises(ValueError, match=r"fit.nonlinearity must")),
        ({"tau": -1.0}, pytest.raises(ValueError, match=r"fit.tau must be finite and > 0")),
        ({"max_epochs": 0}, pytest.raises(ValueError, match=r"fit.max_epochs must be >= 1")),
        ({"lr": 0.0}, pytest.raises(ValueError, match=r"fit.lr must be finite")),
        ({"lr": "auto"}, does_not_raise()),
        ({"lr": "fast"}, pytest.raises(ValueError, match=r"fit.lr must be a positive number or")),
        ({"test_fraction": 1.0}, pytest.raises(ValueError, match=r"must be in \(0, 1\)")),
        ({"patience": 0}, pytest.raises(ValueError, match=r"fit.patience must be >= 1")),
        ({"tol": -0.1}, pytest.raises(ValueError, match=r"fit.tol must be finite and >= 0")),
        ({"tol": "auto"}, pytest.raises(TypeError, match=r"fit.tol must be a number")),
        ({"tol": 0.0}, does_not_raise()),
        ({"alpha": 0.2, "tau": 0.1}, pytest.raises(ValueError, match=r"fit.alpha or fit.tau")),
        ({"alpha": 1.5}, pytest.raises(ValueError, match=r"fit.alpha must be in \(0, 1\]")),
        ({"batch_size": 0}, pytest.raises(ValueError, match=r"fit.batch_size must be >= 1")),
        ({"batch_size": None}, does_not_raise()),
        ({"weight_decay": -1.0}, pytest.raises(ValueError, match=r"fit.weight_decay must be")),
        ({"process_noise": -1.0}, pytest.raises(ValueError, match=r"fit.process_noise must be")),
        (
            {"process_noise": "high"},
            pytest.raises(ValueError, match=r"fit.process_noise must be a non-negative number or"),
        ),
        ({"process_noise": 0.02}, does_not_raise()),
        ({"calcium_decay": 1.0}, pytest.raises(ValueError, match=r"calcium_decay must be in")),
        ({"smoothing": 0.0}, pytest.raises(ValueError, match=r"fit.smoothing must be finite")),
    ],
)
def test_fit_config_validation(override, expectation):
    with expectation:
        FitConfig(**override)


def test_estimator_kwargs_match_the_estimator_signature():
    import inspect

    from nwb_lrconn.model.estimator import LowRankRNNEstimator

    kwargs = FitConfig(rank="auto", tau=0.1).estimator_kwargs(3)
    params = inspect.signature(LowRankRNNEstimator).parameters
    assert set(kwargs) <= set(params)
    assert kwargs["rank"] == 3 and kwargs["tau"] == 0.1
    # Defaults and keywords agree with the estimator's: see test_config_parity.py.


def test_distribution_keywords_round_trip(tmp_path):
    section = {
        "model": "gmm",
        "max_components": 2,
        "hidden_features": 64,
        "n_steps_a": "auto",
        "validation_every": 10,
        "n_target_sets": 5,
        "patience": 3,
    }
    config = RunConfig(distribution=DistributionConfig(**section))
    assert RunConfig.from_json(config.to_json()) == config
    assert config.to_dict()["distribution"]["model"] == "gmm"
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[distribution]\nmodel = "gaussian"\nhidden_features = "auto"\nn_steps_a = 600\n'
    )
    loaded = RunConfig.from_file(toml).distribution
    assert (loaded.model, loaded.hidden_features, loaded.n_steps_a) == ("gaussian", "auto", 600)
    assert RunConfig().with_overrides(model="flows").distribution.model == "flows"
    kwargs = config.distribution.estimator_kwargs()
    assert "model" not in kwargs and "max_components" not in kwargs
    assert kwargs["hidden_features"] == 64 and kwargs["n_target_sets"] == 5


def test_candidate_ranks_are_sorted_and_follow_rank():
    assert FitConfig(rank=3).candidate_ranks == (3,)
    assert FitConfig(rank="auto", ranks=(3, 1, 2)).candidate_ranks == (1, 2, 3)


@pytest.mark.parametrize(
    ("cls", "override", "expectation"),
    [
        (
            PosteriorConfig,
            {"enabled": 1},
            pytest.raises(TypeError, match=r"must be true or false"),
        ),
        (
            PosteriorConfig,
            {"prior_precision": 0},
            pytest.raises(ValueError, match=r"posterior.prior_precision must be finite"),
        ),
        (
            PosteriorConfig,
            {"structure": "sparse"},
            pytest.raises(ValueError, match=r"posterior.structure must be one of"),
        ),
        (
            PosteriorConfig,
            {"n_eigenpairs": 0},
            pytest.raises(ValueError, match=r"posterior.n_eigenpairs must be >= 1"),
        ),
        (
            DistributionConfig,
            {"sigma": -0.1},
            pytest.raises(ValueError, match=r"distribution.sigma must be finite and >= 0"),
        ),
        (DistributionConfig, {"sigma": 0.0}, does_not_raise()),
        (
            DistributionConfig,
            {"keep_best": "yes"},
            pytest.raises(TypeError, match=r"distribution.keep_best must be true or false"),
        ),
        (
            DistributionConfig,
            {"n_virtual_units": 1},
            pytest.raises(ValueError, match=r"distribution.n_virtual_units must be >= 2"),
        ),
        (
            DistributionConfig,
            {"n_steps_a": 0},
            pytest.raises(ValueError, match=r"distribution.n_steps_a must be >= 1"),
        ),
        (
            DistributionConfig,
            {"ode_step": 2.0},
            pytest.raises(ValueError, match=r"distribution.ode_step must be in \(0, 1\]"),
        ),
        (
            DistributionConfig,
            {"ridge_lambda": 0.0},
            pytest.raises(ValueError, match=r"distribution.ridge_lambda must be finite"),
        ),
        (
            DistributionConfig,
            {"model": "flow"},
            pytest.raises(
                ValueError, match=r"distribution.model must be one of \['auto', 'flows'"
            ),
        ),
        (
            DistributionConfig,
            {"hidden_features": "wide"},
            pytest.raises(
                ValueError, match=r"distribution.hidden_features must be a positive integer or"
            ),
        ),
        (
            DistributionConfig,
            {"validation_every": 0},
            pytest.raises(ValueError, match=r"distribution.validation_every must be >= 1; got 0"),
        ),
        (
            DistributionConfig,
            {"n_steps_a": 2.5},
            pytest.raises(TypeError, match=r"distribution.n_steps_a must be an integer"),
        ),
        (
            DistributionConfig,
            {"n_target_sets": 0},
            pytest.raises(ValueError, match=r"distribution.n_target_sets must be >= 1; got 0"),
        ),
        (
            DistributionConfig,
            {"max_components": 0},
            pytest.raises(ValueError, match=r"distribution.max_components must be >= 1; got 0"),
        ),
        (
            DistributionConfig,
            {"pool_size": 500},
            pytest.raises(
                ValueError, match=r"distribution.pool_size must be >= distribution.n_vi"
            ),
        ),
        (DistributionConfig, {"model": "gaussian", "hidden_features": 32}, does_not_raise()),
    ],
)
def test_stage_config_validation(cls, override, expectation):
    with expectation:
        cls(**override)


@pytest.mark.parametrize(
    ("override", "expectation"),
    [
        ({"seed": -1}, pytest.raises(ValueError, match=r"seed must be >= 0")),
        ({"seed": None}, does_not_raise()),
        ({"device": "tpu"}, pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda'")),
        ({"device": "cuda:1"}, does_not_raise()),
        ({"name": "a/b"}, pytest.raises(ValueError, match=r"name must not contain '/'")),
        ({"read": {"bin_width": 0.1}}, pytest.raises(TypeError, match=r"must be a ReadConfig")),
    ],
)
def test_run_config_validation(override, expectation):
    with expectation:
        RunConfig(**override)


def _rich_config() -> RunConfig:
    return RunConfig(
        read=ReadConfig(
            bin_width=0.05,
            trials="trials",
            window_length=0.5,
            event="start_time",
            window=(0.0, 2.0),
            unit_ids=(3, 1),
            where=(("quality", "in", ("good", "mua")), ("snr", ">=", 2.0)),
            inputs=("stimulus/clicks",),
        ),
        fit=FitConfig(rank="auto", ranks=(2, 1)),
        posterior=PosteriorConfig(prior_precision=2.0, structure="blocks"),
        distribution=DistributionConfig(enabled=False, sigma=0.0),
        seed=7,
        name="hd_rank_auto",
    )


def test_json_round_trip_is_exact():
    config = _rich_config()
    text = config.to_json()
    assert json.loads(text)["read"]["window"] == [0.0, 2.0]
    assert RunConfig.from_json(text) == config
    assert RunConfig.from_dict(config.to_dict()) == config


def test_from_file_toml_and_json(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'seed = 3\nname = "demo"\n[read]\nbin_width = 0.01\ntrials = "trials"\n'
        '[fit]\nrank = "auto"\nranks = [1, 2]\n[distribution]\nenabled = false\n'
    )
    config = RunConfig.from_file(toml)
    assert (config.seed, config.name, config.read.bin_width) == (3, "demo", 0.01)
    assert config.fit.candidate_ranks == (1, 2)
    assert config.distribution.enabled is False
    assert config.posterior == PosteriorConfig()
    as_json = tmp_path / "run.json"
    as_json.write_text(config.to_json(indent=2))
    assert RunConfig.from_file(as_json) == config


@pytest.mark.parametrize(
    ("name", "content", "expectation"),
    [
        ("run.yaml", "seed: 1", pytest.raises(ValueError, match=r"must end in .toml or .json")),
        ("run.toml", "seed = = 1", pytest.raises(ValueError, match=r"cannot parse configuration")),
        ("run.json", '{"sead": 1}', pytest.raises(ValueError, match=r"unknown configuration key")),
        (
            "run.toml",
            "[fit]\nrnak = 2\n",
            pytest.raises(ValueError, match=r"unknown key\(s\) \['rnak'\] in section \[fit\]"),
        ),
        ("run.toml", "fit = 2\n", pytest.raises(TypeError, match=r"section \[fit\] must be a")),
        ("run.json", "[1, 2]", pytest.raises(TypeError, match=r"must be a mapping")),
        ("run.toml", "[fit]\nrank = 0\n", pytest.raises(ValueError, match=r"fit.rank must be")),
    ],
)
def test_from_file_errors(tmp_path, name, content, expectation):
    path = tmp_path / name
    path.write_text(content)
    with expectation:
        RunConfig.from_file(path)


def test_from_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"configuration file not found: .*nope.toml"):
        RunConfig.from_file(tmp_path / "nope.toml")


def test_with_overrides_routes_flat_and_dotted_keys():
    base = RunConfig()
    new = base.with_overrides(
        rank=4, bin_width=0.01, seed=9, device="cuda", **{"posterior.enabled": False}
    )
    assert (new.fit.rank, new.read.bin_width, new.seed, new.device) == (4, 0.01, 9, "cuda")
    assert new.posterior.enabled is False and new.distribution.enabled is True
    assert base == RunConfig()  # frozen: the original is untouched
    assert base.with_overrides() == base


@pytest.mark.parametrize(
    ("keys", "expectation"),
    [
        ({"rnak": 2}, pytest.raises(ValueError, match=r"unknown configuration key 'rnak'")),
        (
            {"fit.nope": 2},
            pytest.raises(ValueError, match=r"unknown configuration key 'fit.nope'"),
        ),
        ({"enabled": False}, pytest.raises(ValueError, match=r"'enabled' is ambiguous")),
        ({"rank": -3}, pytest.raises(ValueError, match=r"fit.rank must be >= 1")),
    ],
)
def test_with_overrides_errors(keys, expectation):
    with expectation:
        RunConfig().with_overrides(**keys)


def test_reader_kwargs_per_source():
    units = ReadConfig(bin_width=0.02, trials="trials", unit_ids=(1, 2)).reader_kwargs()
    assert units == {
        "bin_width": 0.02,
        "trials": "trials",
        "units_path": "units",
        "unit_ids": [1, 2],
        "min_spikes": 1,
    }
    ophys = ReadConfig(source="ophys", bin_width=None, series_path="a/b", normalize="zscore")
    assert ophys.reader_kwargs() == {"series_path": "a/b", "normalize": "zscore"}
    sorting = ReadConfig(source="sorting", bin_width=0.01, window_length=1.0)
    assert sorting.reader_kwargs() == {"bin_width": 0.01, "window_length": 1.0, "min_spikes": 1}
    ophys = ReadConfig(source="ophys", time_range=(1.0, 2.0)).reader_kwargs()
    assert ophys["time_range"] == (1.0, 2.0)


@pytest.mark.parametrize("source", ["units", "ophys", "sorting"])
def test_reader_kwargs_are_accepted_by_the_readers(source):
    import inspect

    from nwb_lrconn import io

    reader = {"units": io.read_units, "ophys": io.read_ophys, "sorting": io.read_sorting}[source]
    config = ReadConfig(
        source=source,
        trials=None if source == "sorting" else "trials",
        where=("quality", "==", "good") if source == "units" else None,
        event=None if source == "sorting" else "go",
        window=None if source == "sorting" else (0.1, 0.5),
        window_length=1.0,
        unit_ids=(1,),
        time_range=(0.0, 10.0),
        inputs=None if source == "sorting" else ("stimulus/x",),
        normalize="zscore" if source == "ophys" else None,
    )
    assert set(config.reader_kwargs()) <= set(inspect.signature(reader).parameters)
