"""A fitted :class:`~.estimator.ConnectorEstimator` rebuilt from its stored arrays."""

from __future__ import annotations

import numpy as np
import torch

from ...data import ConnectivityDistribution
from .estimator import ConnectorEstimator

__all__ = ["connector_from_distribution"]


def connector_from_distribution(
    dist: ConnectivityDistribution, *, device: str = "cpu"
) -> ConnectorEstimator:
    """Rebuild a fitted :class:`ConnectorEstimator` from the stored arrays alone.

    Parameters
    ----------
    dist : ConnectivityDistribution
        E.g. read back from an NWB file.
    device : str, default: "cpu"
        Where to put the flows.

    Returns
    -------
    ConnectorEstimator
        Ready for ``sample`` and ``log_prob`` (samples and log-densities match the original's).
    """
    if not isinstance(dist, ConnectivityDistribution):
        raise TypeError(f"dist must be a ConnectivityDistribution; got {type(dist).__name__}.")
    arch = dist.architecture
    if arch.get("kind") != "connector-cfm":
        raise ValueError(f"architecture kind must be 'connector-cfm'; got {arch.get('kind')!r}.")
    params = dict(arch["estimator_params"])
    params["device"] = device
    est = ConnectorEstimator(**params)
    est._restore_data_attributes(dist)
    est.k_mean_ = np.asarray(arch["k_mean"], dtype=np.float64)
    est.k_std_ = np.asarray(arch["k_std"], dtype=np.float64)
    est.hidden_features_ = int(arch["hidden_features"])
    est._new_nets(torch.device(device))
    pairs = ((est.flow_a_, dist.flow_a_parameters), (est.flow_b_, dist.flow_b_parameters))
    for net, stored in pairs:
        net.load_state_dict({name: torch.as_tensor(value) for name, value in stored.items()})
    est.training_curves_ = {k: np.asarray(v) for k, v in dist.training_curves.items()}
    return est
