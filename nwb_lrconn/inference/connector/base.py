"""What the two distribution models share: their input, the scaling of z and the stored record.

:class:`.ConnectorEstimator` (two flows) and :class:`~nwb_lrconn.inference.mixture.
MixtureConnectorEstimator` (a Gaussian mixture) learn the same law p(z) p(k | z) from the same
:class:`.ConnectorData`; this base class holds what does not depend on how the law is modelled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ..._validation import check_array, check_is_fitted, check_positive
from ...data import ConnectivityDistribution, LowRankFit
from .data import ConnectorData, z_scaling

__all__ = ["DistributionEstimatorBase", "as_connector_data"]


def as_connector_data(
    data: ConnectorData | LowRankFit, *, inputs: np.ndarray | None = None
) -> ConnectorData:
    """``data`` as :class:`.ConnectorData` (a stage-1 fit is converted with its ``inputs``).

    Parameters
    ----------
    data : ConnectorData or LowRankFit
        What a distribution is learned from.
    inputs : ndarray of shape (n_trials, n_time, n_inputs), optional
        u(t), when ``data`` is a LowRankFit with inputs.

    Returns
    -------
    ConnectorData
    """
    if isinstance(data, LowRankFit):
        return ConnectorData.from_fit(data, inputs=inputs)
    if not isinstance(data, ConnectorData):
        raise TypeError(
            f"data must be a LowRankFit or a ConnectorData; got {type(data).__name__}."
        )
    return data


class DistributionEstimatorBase(BaseEstimator):
    """Base of the connectivity-distribution estimators (not used on its own).

    Subclasses define ``validation_fraction``, ``state_resolution``, ``ridge_lambda`` and
    ``n_virtual_units`` hyperparameters, a ``sample`` method and ``_fitted_attribute``, the
    attribute that exists once the estimator is fitted.
    """

    _fitted_attribute: str

    validation_fraction: float
    state_resolution: float | None
    ridge_lambda: float
    n_virtual_units: int
    sample: Callable[..., tuple[np.ndarray, np.ndarray]]

    def _check_shared_params(self) -> None:
        if self.state_resolution is not None:
            check_positive(self.state_resolution, "state_resolution")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1); got {self.validation_fraction!r}."
            )

    def _set_data_attributes(self, data: ConnectorData) -> None:
        """Rank, inputs, α, φ and the scaling of z, as fitted attributes."""
        self.rank_, self.n_inputs_ = data.rank, data.n_inputs
        self.alpha_, self.nonlinearity_ = data.alpha, data.nonlinearity
        self.z_free_, self.z_mean_, self.z_std_, self.z_fill_ = z_scaling(data.z)

    def _split_trials(self, data: ConnectorData, rng: np.random.Generator) -> None:
        """Held-out trials: the data's own, else a ``validation_fraction`` drawn from ``rng``."""
        n_trials = data.latents.shape[0]
        if data.test_trials is not None and data.test_trials.size:
            test = np.unique(data.test_trials)
        else:
            n_test = max(1, round(self.validation_fraction * n_trials))
            test = np.sort(rng.permutation(n_trials)[:n_test])
        train = np.setdiff1d(np.arange(n_trials), test)
        if train.size == 0:
            raise ValueError(f"No training trials left: all {n_trials} trial(s) are held out.")
        self.train_trials_, self.test_trials_ = train, test

    def _check_z(self, z: np.ndarray) -> np.ndarray:
        """``z`` checked against the fit: (n, rank + n_inputs + 1) floats."""
        check_is_fitted(self, self._fitted_attribute)
        return check_array(z, "z", shape=(None, self.z_free_.size), dtype=np.float64)

    def _check_zk(self, z: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``z`` as in :meth:`_check_z` and ``k`` of shape (n, rank)."""
        z = self._check_z(z)
        return z, check_array(k, "k", shape=(z.shape[0], self.rank_), dtype=np.float64)

    def _z_log_jacobian(self) -> float:
        """log |det| of the standardisation of z's varying columns."""
        return float(np.log(self.z_std_[self.z_free_]).sum())

    def _data_architecture(self) -> dict[str, Any]:
        return {
            "rank": self.rank_,
            "n_inputs": self.n_inputs_,
            "alpha": self.alpha_,
            "nonlinearity": self.nonlinearity_,
            "z_free": self.z_free_.tolist(),
            "z_mean": self.z_mean_.tolist(),
            "z_std": self.z_std_.tolist(),
            "z_fill": self.z_fill_.tolist(),
        }

    def _restore_data_attributes(self, dist: ConnectivityDistribution) -> None:
        """Inverse of :meth:`_data_architecture`, plus the stored validation metrics."""
        arch = dist.architecture
        self.rank_, self.n_inputs_ = int(arch["rank"]), int(arch["n_inputs"])
        self.alpha_, self.nonlinearity_ = float(arch["alpha"]), arch["nonlinearity"]
        self.z_free_ = np.asarray(arch["z_free"], dtype=bool)
        for name in ("z_mean", "z_std", "z_fill"):
            setattr(self, f"{name}_", np.asarray(arch[name], dtype=np.float64))
        self.validation_metrics_ = dict(dist.validation_metrics)

    def _export(
        self,
        n_samples: int,
        sigma: float,
        random_state: int | None,
        *,
        architecture: dict[str, Any],
        flow_a_parameters: dict[str, np.ndarray],
        flow_b_parameters: dict[str, np.ndarray],
        training_curves: dict[str, np.ndarray],
        model: str = "flows",
    ) -> ConnectivityDistribution:
        """The record of the fit, with ``n_samples`` units drawn by ``sample``."""
        z, k = self.sample(n_samples, sigma=sigma, random_state=random_state)
        architecture = {**architecture, "estimator_params": self.get_params()}
        json.dumps(architecture)  # must be JSON-serialisable
        return ConnectivityDistribution(
            flow_a_parameters=flow_a_parameters,
            flow_b_parameters=flow_b_parameters,
            architecture=architecture,
            sigma=float(sigma),
            ridge_lambda=float(self.ridge_lambda),
            n_virtual_units=int(self.n_virtual_units),
            training_curves=training_curves,
            samples_z=z,
            samples_k=k,
            validation_metrics=dict(self.validation_metrics_),
            model=model,
        )
