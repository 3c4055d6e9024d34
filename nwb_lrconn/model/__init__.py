"""The low-rank RNN of nwb_lrconn: the torch module, observation models, fitting and simulators.

Public names are imported lazily (on first access), so ``nwb_lrconn.model.networks`` stays a
numpy-only import:

- :class:`~nwb_lrconn.model.estimator.LowRankRNNEstimator` (fit / transform / predict / score);
- :class:`~nwb_lrconn.model.joint.JointLowRankRNN` (one network from several sessions);
- :class:`~nwb_lrconn.model.lowrank.LowRankRNN` (the ``nn.Module``);
- :func:`~nwb_lrconn.model.gauge.canonical_gauge`, :func:`~nwb_lrconn.model.gauge.align_latents`,
  :func:`~nwb_lrconn.model.gauge.apply_gauge`;
- :func:`~nwb_lrconn.model.simulate.simulate_rates`, ``simulate_spikes``, ``simulate_calcium``;
- the ground-truth networks of :mod:`nwb_lrconn.model.networks`.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LowRankRNNEstimator": "estimator",
    "metrics_from_expected": "estimator",
    "JointLowRankRNN": "joint",
    "SessionFit": "joint",
    "LowRankRNN": "lowrank",
    "canonical_gauge": "gauge",
    "align_latents": "gauge",
    "apply_gauge": "gauge",
    "SimulatedSession": "simulate",
    "simulate_rates": "simulate",
    "simulate_spikes": "simulate",
    "simulate_calcium": "simulate",
    "GroundTruthNetwork": "networks",
    "load_published_network": "networks",
    "sample_network": "networks",
    "grid_initial_conditions": "networks",
    "sample_heavy_tailed_network": "networks",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
