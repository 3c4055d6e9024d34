"""Stage 3 as one call: pick the connectivity-distribution model the number of units warrants.

- fewer units than the varying columns of z = (m, b, d) plus 2: **skipped** (no covariance can be
  estimated, with a unit left to check it on);
- fewer than :data:`MIN_UNITS_FOR_FLOWS`: a maximum-entropy **Gaussian** or small Gaussian
  mixture over z with a linear-Gaussian k | z (:class:`.MixtureConnectorEstimator`);
- otherwise the two **flows** of :class:`.ConnectorEstimator`.

The result records which model was used and why (``ConnectivityDistribution.model`` and
``.reason``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_choice
from ..config import DistributionConfig
from ..data import DISTRIBUTION_CHOICES, ConnectivityDistribution, LowRankFit
from .connector import (
    ConnectorData,
    ConnectorEstimator,
    connector_from_distribution,
    varying_z_columns,
)
from .connector.base import as_connector_data
from .mixture import MixtureConnectorEstimator, mixture_from_distribution

__all__ = [
    "MIN_UNITS_FOR_FLOWS",
    "choose_distribution_model",
    "fit_distribution",
    "distribution_estimator",
]

# Where flows learned from N units start to beat a Gaussian of their moments in log-likelihood of
# z on held-out units of the same network: the smallest N measured from which they do so on every
# non-Gaussian law tried (the clustered published network, and a heavy-tailed one), in
# tests/benchmarks/study_distribution_size.py. Below it the cross-validated mixture was as good
# as the flows or better there, on z and on the sampled networks' flow field alike.
MIN_UNITS_FOR_FLOWS = 500


def choose_distribution_model(n_units: int, n_free: int, model: str = "auto") -> tuple[str, str]:
    """The model the distribution stage uses, and a one-line reason.

    Parameters
    ----------
    n_units : int
        Units N of the fit.
    n_free : int
        Varying columns of z = (m, b, d).
    model : {"auto", "flows", "gmm", "gaussian"}, default: "auto"
        Requested model; "auto" uses flows from :data:`MIN_UNITS_FOR_FLOWS` units and a
        Gaussian mixture (the number of components cross-validated) below.

    Returns
    -------
    model : {"flows", "gmm", "gaussian", "skipped"}
        "gmm" may still end as one component, which the fitted result records as "gaussian".
    reason : str
    """
    check_choice(model, "model", DISTRIBUTION_CHOICES)
    if n_units < n_free + 2:
        return "skipped", (
            f"{n_units} units are too few for a distribution over the {n_free} varying "
            f"column(s) of z = (m, b, d): a covariance with one unit left to check it needs "
            f"{n_free + 2}"
        )
    if model != "auto":
        return model, f"requested (distribution.model = {model!r}) for {n_units} units"
    if n_units < MIN_UNITS_FOR_FLOWS:
        return "gmm", (
            f"{n_units} units < {MIN_UNITS_FOR_FLOWS}: too few for flows to beat a Gaussian "
            "of the units' moments on held-out units, so the maximum-entropy Gaussian "
            "(mixture) is used"
        )
    return "flows", f"{n_units} units >= {MIN_UNITS_FOR_FLOWS}: enough for flows"


def fit_distribution(
    data: ConnectorData | LowRankFit,
    *,
    model: str = DistributionConfig.model,
    n_samples: int = DistributionConfig.n_samples,
    sigma: float = 0.0,
    flow_params: dict[str, Any] | None = None,
    mixture_params: dict[str, Any] | None = None,
    inputs: np.ndarray | None = None,
    random_state: int | None = None,
) -> ConnectivityDistribution:
    """Fit the connectivity distribution with the model the data warrant.

    Parameters
    ----------
    data : ConnectorData or LowRankFit
        What the distribution is learned from.
    model : {"auto", "flows", "gmm", "gaussian"}, default: "auto"
        See :func:`choose_distribution_model`.
    n_samples : int, default: 1000
        Units drawn into the result.
    sigma : float, default: 0.0
        Spread on k of the drawn units.
    flow_params : dict, optional
        Keywords of :class:`.ConnectorEstimator` (``random_state`` excluded).
    mixture_params : dict, optional
        Keywords of :class:`.MixtureConnectorEstimator` (``random_state`` and
        ``n_components`` excluded).
    inputs : ndarray of shape (n_trials, n_time, n_inputs), optional
        u(t), when ``data`` is a LowRankFit with inputs.
    random_state : int or None
        Seed of the fit and of the drawn units.

    Returns
    -------
    ConnectivityDistribution
        With ``model`` and ``reason`` set; empty arrays when skipped.
    """
    data = as_connector_data(data, inputs=inputs)
    n_units, n_free = data.z.shape[0], int(varying_z_columns(data.z).sum())
    chosen, reason = choose_distribution_model(n_units, n_free, model)
    if chosen == "skipped":
        return _skipped(data, reason)
    if chosen == "flows":
        estimator: Any = ConnectorEstimator(**(flow_params or {}), random_state=random_state)
    else:
        n_components = 1 if chosen == "gaussian" else "auto"
        estimator = MixtureConnectorEstimator(
            **(mixture_params or {}), n_components=n_components, random_state=random_state
        )
    dist = estimator.fit(data).to_distribution(n_samples, sigma, random_state=random_state)
    return _with_reason(dist, reason)


def _with_reason(dist: ConnectivityDistribution, reason: str) -> ConnectivityDistribution:
    from dataclasses import replace

    if dist.model == "gaussian" and not reason.startswith("requested"):
        reason += " (one component: more did not raise the cross-validated likelihood)"
    return replace(dist, reason=reason)


def _skipped(data: ConnectorData, reason: str) -> ConnectivityDistribution:
    return ConnectivityDistribution(
        flow_a_parameters={},
        flow_b_parameters={},
        architecture={"kind": "skipped", "rank": data.rank, "n_inputs": data.n_inputs},
        sigma=0.0,
        ridge_lambda=0.0,
        n_virtual_units=0,
        training_curves={},
        samples_z=np.zeros((0, data.z.shape[1])),
        samples_k=np.zeros((0, data.rank)),
        validation_metrics={},
        model="skipped",
        reason=reason,
    )


def distribution_estimator(
    dist: ConnectivityDistribution,
) -> ConnectorEstimator | MixtureConnectorEstimator:
    """Rebuild the fitted estimator (flows or mixture) from a stored distribution.

    Parameters
    ----------
    dist : ConnectivityDistribution
        E.g. read back from an NWB file.

    Returns
    -------
    ConnectorEstimator or MixtureConnectorEstimator
        Ready for ``sample`` and ``log_prob``.

    Raises
    ------
    ValueError
        When the distribution was skipped (the message carries its reason).
    """
    if not isinstance(dist, ConnectivityDistribution):
        raise TypeError(f"dist must be a ConnectivityDistribution; got {type(dist).__name__}.")
    if dist.model == "skipped":
        raise ValueError(
            f"the distribution was skipped, there is nothing to rebuild: {dist.reason}."
        )
    if dist.model == "flows":
        return connector_from_distribution(dist)
    return mixture_from_distribution(dist)
