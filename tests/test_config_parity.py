"""Each hyperparameter lives once: a config section carries exactly the keywords it configures."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from nwb_lrconn.config import DistributionConfig, FitConfig, PosteriorConfig, RunConfig

# Keywords that no config section carries: RunConfig's seed and device supply them, and progress
# follows the command line.
RUN_LEVEL = {"random_state", "device", "progress"}
# Keywords of what a section configures that are not hyperparameters.
NOT_HYPERPARAMETERS = {
    "posterior": {"fit", "recording"},
    # the data, and the two dicts this section fills
    "distribution": {"data", "inputs", "flow_params", "mixture_params"},
}
# Keywords a section holds without a counterpart: whether the stage runs, the ranks tried by
# rank="auto", and the mixture's component count, which distribution.model sets.
SECTION_ONLY = {
    "fit": {"ranks"},
    "posterior": {"enabled"},
    "distribution": {"enabled", "n_components"},
}
# Defaults that differ on purpose from the library's, with the reason in the section's docstring.
RUN_DEFAULTS = {("distribution", "sigma"): (1.0, 0.0)}


def _configured():
    from nwb_lrconn.inference.connector import ConnectorEstimator
    from nwb_lrconn.inference.distribution import fit_distribution
    from nwb_lrconn.inference.laplace import laplace_posterior
    from nwb_lrconn.inference.mixture import MixtureConnectorEstimator
    from nwb_lrconn.model.estimator import LowRankRNNEstimator

    return {
        "fit": (FitConfig, [LowRankRNNEstimator]),
        "posterior": (PosteriorConfig, [laplace_posterior]),
        "distribution": (
            DistributionConfig,
            [fit_distribution, ConnectorEstimator, MixtureConnectorEstimator],
        ),
    }


def _keywords(targets) -> dict[str, inspect.Parameter]:
    out: dict[str, inspect.Parameter] = {}
    for target in targets:
        for name, param in inspect.signature(target).parameters.items():
            out.setdefault(name, param)
    return out


@pytest.mark.parametrize("section", ["fit", "posterior", "distribution"])
def test_section_carries_exactly_the_keywords_it_configures(section):
    cls, targets = _configured()[section]
    keywords = set(_keywords(targets)) - RUN_LEVEL - NOT_HYPERPARAMETERS.get(section, set())
    fields = {f.name for f in dataclasses.fields(cls)}
    assert sorted(keywords - fields - SECTION_ONLY[section]) == [], "missing from the config"
    assert sorted(fields - keywords - SECTION_ONLY[section]) == [], "configures nothing"


@pytest.mark.parametrize("section", ["fit", "posterior", "distribution"])
def test_defaults_are_the_library_defaults(section):
    cls, targets = _configured()[section]
    params = _keywords(targets)
    for f in dataclasses.fields(cls):
        if f.name in params:
            library = params[f.name].default
            expected = RUN_DEFAULTS.get((section, f.name), (library, library))
            assert (f.default, library) == expected, f"{section}.{f.name}"


def test_every_keyword_reaches_what_it_configures_from_a_toml_file(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        "[fit]\nlbfgs_rounds = 0\nrefit_units = false\n"
        '[posterior]\nreadout = "held"\nbudget_s = 5.0\ncoupling_tol = 1e-3\n'
        "max_coupling_rank = 12\n"
        "[distribution]\nstate_resolution = 0.2\nweight_decay = 0.0\n"
        'validation_fraction = 0.25\ncovariance_type = "diag"\nn_folds = 3\n'
    )
    config = RunConfig.from_file(toml)
    assert RunConfig.from_json(config.to_json()) == config
    stored = config.to_dict()
    assert stored["fit"]["lbfgs_rounds"] == 0 and stored["posterior"]["readout"] == "held"
    fit = config.fit.estimator_kwargs(2)
    assert (fit["lbfgs_rounds"], fit["refit_units"]) == (0, False)
    posterior = config.posterior.posterior_kwargs()
    assert posterior["budget_s"] == 5.0 and posterior["max_coupling_rank"] == 12
    assert posterior["coupling_tol"] == 1e-3
    flows = config.distribution.estimator_kwargs()
    mixture = config.distribution.mixture_kwargs()
    for kwargs in (flows, mixture):
        assert kwargs["state_resolution"] == 0.2 and kwargs["validation_fraction"] == 0.25
    assert flows["weight_decay"] == 0.0
    assert (mixture["covariance_type"], mixture["n_folds"]) == ("diag", 3)
    assert DistributionConfig(n_target_sets=3).mixture_kwargs()["n_target_sets"] == 3


@pytest.mark.parametrize(
    ("cls", "override", "error", "match"),
    [
        (FitConfig, {"lbfgs_rounds": -1}, ValueError, r"fit.lbfgs_rounds must be >= 0; got -1"),
        (FitConfig, {"refit_units": 1}, TypeError, r"fit.refit_units must be true or false"),
        (PosteriorConfig, {"readout": "free"}, ValueError, r"posterior.readout must be one of"),
        (PosteriorConfig, {"budget_s": 0.0}, ValueError, r"posterior.budget_s must be finite"),
        (PosteriorConfig, {"coupling_tol": -1.0}, ValueError, r"posterior.coupling_tol must"),
        (
            PosteriorConfig,
            {"max_coupling_rank": 0},
            ValueError,
            r"posterior.max_coupling_rank must be >= 1; got 0",
        ),
        (
            DistributionConfig,
            {"state_resolution": 0.0},
            ValueError,
            r"distribution.state_resolution must be finite and > 0",
        ),
        (
            DistributionConfig,
            {"weight_decay": -1.0},
            ValueError,
            r"distribution.weight_decay must be finite and >= 0",
        ),
        (
            DistributionConfig,
            {"validation_fraction": 1.0},
            ValueError,
            r"distribution.validation_fraction must be in \(0, 1\); got 1.0",
        ),
        (
            DistributionConfig,
            {"covariance_type": "tied"},
            ValueError,
            r"distribution.covariance_type must be one of",
        ),
        (DistributionConfig, {"n_folds": 0}, ValueError, r"distribution.n_folds must be >= 1"),
    ],
)
def test_new_keywords_are_validated(cls, override, error, match):
    with pytest.raises(error, match=match):
        cls(**override)


def test_optional_keywords_accept_none():
    assert DistributionConfig(state_resolution=None).estimator_kwargs()["state_resolution"] is None
    assert PosteriorConfig(max_coupling_rank=None, max_dense_params=None).enabled
