"""nwb_lrconn: low-rank RNN connectivity from NWB recordings, and what the data determine.

The verbs a user needs live here, imported on first use so that ``import nwb_lrconn`` loads no
torch, pynwb or matplotlib::

    import nwb_lrconn

    path = nwb_lrconn.run_file("session.nwb", config=nwb_lrconn.RunConfig())
    results = nwb_lrconn.read_results(path)

The model, its gauge and what the data can determine are described in :mod:`nwb_lrconn.model`
(``help(nwb_lrconn.model)``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "read_units": "nwb_lrconn.io",
    "read_ophys": "nwb_lrconn.io",
    "RunConfig": "nwb_lrconn.config",
    "run": "nwb_lrconn.pipeline",
    "run_file": "nwb_lrconn.pipeline",
    "run_joint": "nwb_lrconn.pipeline_joint",
    "run_joint_files": "nwb_lrconn.pipeline_joint",
    "LowRankRNNEstimator": "nwb_lrconn.model",
    "laplace_posterior": "nwb_lrconn.inference.laplace",
    "compute_degeneracy": "nwb_lrconn.inference.degeneracy",
    "ConnectorEstimator": "nwb_lrconn.inference.connector",
    "write_results": "nwb_lrconn.extension",
    "read_results": "nwb_lrconn.extension",
    "run_batch": "nwb_lrconn.batch",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nwb_lrconn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
