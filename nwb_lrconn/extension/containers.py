"""Python classes of the ``ndx-lrconn`` neurodata types.

Every class is generated from the loaded spec with :func:`pynwb.get_class`, so the mapping of
fields stays automatic when the schema grows; three are subclassed (and registered back) to add
conversion helpers. Field names mirror the dataclasses of :mod:`nwb_lrconn.data`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from hdmf.backends.hdf5 import H5DataIO
from pynwb import get_class, register_class

from ._namespace import NAMESPACE, load_namespace

__all__ = [
    "COMPRESSION_MIN_SIZE",
    "compressed",
    "copy_array",
    "NamedArray",
    "NamedArrays",
    "MetricsTable",
    "LatentTrajectories",
    "FitProvenance",
    "LaplacePosterior",
    "DegeneracyAnalysis",
    "LoadingDistribution",
    "UnitLoadings",
    "JointSessionTable",
    "JointFitSummary",
    "LowRankRNNFit",
]

load_namespace()

COMPRESSION_MIN_SIZE = 1024
"""Arrays with at least this many elements are written gzip-compressed and chunked."""


def compressed(array: np.ndarray) -> np.ndarray | H5DataIO:
    """Wrap ``array`` for gzip compression and chunking when it is large, else return it.

    Parameters
    ----------
    array : ndarray
        Any numeric array.

    Returns
    -------
    ndarray or H5DataIO
        ``array`` itself below :data:`COMPRESSION_MIN_SIZE` elements; otherwise an ``H5DataIO``
        with gzip level 4, byte shuffling and automatic chunks.
    """
    array = np.asarray(array)
    if array.size < COMPRESSION_MIN_SIZE:
        return array
    return H5DataIO(array, compression="gzip", compression_opts=4, shuffle=True, chunks=True)


def copy_array(value) -> np.ndarray:
    """Copy an HDF5 dataset (or array, or H5DataIO) into memory; decode byte strings."""
    if isinstance(value, H5DataIO):
        value = value.data
    array = np.array(value[()] if hasattr(value, "id") else value)
    if array.dtype.kind in "OS":
        array = np.array(
            [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.ravel()],
            dtype=object,
        ).reshape(array.shape)
        array = array.astype(str)
    return array


NamedArray = get_class("NamedArray", NAMESPACE)
FitProvenance = get_class("FitProvenance", NAMESPACE)
LaplacePosterior = get_class("LaplacePosterior", NAMESPACE)
DegeneracyAnalysis = get_class("DegeneracyAnalysis", NAMESPACE)
LoadingDistribution = get_class("LoadingDistribution", NAMESPACE)
UnitLoadings = get_class("UnitLoadings", NAMESPACE)
JointSessionTable = get_class("JointSessionTable", NAMESPACE)
JointFitSummary = get_class("JointFitSummary", NAMESPACE)
# The generated classes that gain methods here (typed Any: hdmf builds them at run time).
_MetricsTableBase: Any = get_class("MetricsTable", NAMESPACE)
_NamedArraysBase: Any = get_class("NamedArrays", NAMESPACE)
_LatentTrajectoriesBase: Any = get_class("LatentTrajectories", NAMESPACE)
_LowRankRNNFitBase: Any = get_class("LowRankRNNFit", NAMESPACE)


@register_class("MetricsTable", NAMESPACE)
class MetricsTable(_MetricsTableBase):
    """Named numeric results, one row per metric (``to_dataframe()`` shows them)."""

    @classmethod
    def from_dict(cls, name: str, metrics: Mapping[str, float], description: str) -> MetricsTable:
        """Build the table from ``{metric name: value}`` (rows in sorted name order)."""
        names = sorted(metrics)
        table = cls(name=name, description=description)
        for key in names:
            table.add_row(metric=str(key), value=float(metrics[key]))
        return table

    def to_dict(self) -> dict[str, float]:
        """Return ``{metric name: value}``."""
        names = copy_array(self["metric"].data)
        values = copy_array(self["value"].data).astype(np.float64)
        return {str(k): float(v) for k, v in zip(names.tolist(), values.tolist())}


@register_class("NamedArrays", NAMESPACE)
class NamedArrays(_NamedArraysBase):
    """A dictionary of named arrays, one ``NamedArray`` dataset per key."""

    @classmethod
    def from_dict(cls, name: str, arrays: Mapping[str, np.ndarray]) -> NamedArrays:
        """Build the container from ``{key: array}`` (keys become dataset names).

        Raises
        ------
        ValueError
            When a key is empty or holds '/' (not a valid HDF5 name).
        """
        items = []
        for key, value in arrays.items():
            if not isinstance(key, str) or not key or "/" in key:
                raise ValueError(
                    f"{name}: array names must be non-empty strings without '/'; got {key!r}."
                )
            items.append(NamedArray(name=key, data=compressed(np.asarray(value))))
        return cls(name=name, named_arrays=items)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Return ``{key: array}`` with every array copied into memory, keys sorted."""
        return {key: copy_array(self.named_arrays[key].data) for key in sorted(self.named_arrays)}


@register_class("LatentTrajectories", NAMESPACE)
class LatentTrajectories(_LatentTrajectoriesBase):
    """Latent trajectories κ(t), flattened over the observed bins of all trials."""

    @classmethod
    def from_padded(
        cls,
        latents: np.ndarray,
        mask: np.ndarray,
        trial_start_times: np.ndarray,
        bin_width: float,
        *,
        name: str = "latents",
    ) -> LatentTrajectories:
        """Flatten padded latents into a time series.

        Parameters
        ----------
        latents : ndarray of shape (n_trials, n_time, rank)
            κ(t) per trial.
        mask : ndarray of shape (n_trials, n_time), bool
            Observed bins.
        trial_start_times : ndarray of shape (n_trials,)
            Seconds (session clock) of each trial's first bin.
        bin_width : float
            Seconds per bin.
        name : str, default: "latents"
            Name of the series.

        Returns
        -------
        LatentTrajectories
            Rows sorted by timestamp ``trial_start_times[trial] + bin * bin_width`` (stable).
        """
        trial, bin_ = np.nonzero(mask)
        timestamps = np.asarray(trial_start_times, np.float64)[trial] + bin_ * float(bin_width)
        order = np.argsort(timestamps, kind="stable")
        trial, bin_, timestamps = trial[order], bin_[order], timestamps[order]
        timing: dict = {"timestamps": compressed(timestamps)}
        steps = np.diff(timestamps)
        # Evenly spaced bins (e.g. contiguous windows) are stored as a rate, as NWB prefers.
        if timestamps.size > 2 and np.allclose(steps, bin_width, rtol=1e-9, atol=1e-12):
            timing = {"starting_time": float(timestamps[0]), "rate": 1.0 / float(bin_width)}
        return cls(
            name=name,
            data=compressed(np.asarray(latents, np.float64)[trial, bin_]),
            unit="a.u.",
            description="Latent states kappa(t) of the fitted low-rank RNN (canonical gauge).",
            trial_index=compressed(trial.astype(np.int64)),
            bin_index=compressed(bin_.astype(np.int64)),
            n_time=int(mask.shape[1]),
            **timing,
        )

    def to_padded(self, n_trials: int) -> tuple[np.ndarray, np.ndarray]:
        """Rebuild the padded latents and mask.

        Parameters
        ----------
        n_trials : int
            Number of trials (the flattened rows need not cover the last trials).

        Returns
        -------
        latents : ndarray of shape (n_trials, n_time, rank)
            Zero outside the mask.
        mask : ndarray of shape (n_trials, n_time), bool
        """
        data = copy_array(self.data).astype(np.float64)
        trial = copy_array(self.trial_index).astype(np.int64)
        bin_ = copy_array(self.bin_index).astype(np.int64)
        rank = data.shape[1] if data.ndim == 2 else 0
        latents = np.zeros((n_trials, int(self.n_time), rank))
        mask = np.zeros((n_trials, int(self.n_time)), dtype=bool)
        latents[trial, bin_] = data
        mask[trial, bin_] = True
        return latents, mask


@register_class("LowRankRNNFit", NAMESPACE)
class LowRankRNNFit(_LowRankRNNFitBase):
    """One low-rank RNN fit with its posterior, degeneracy report and distribution."""

    def connectivity(self) -> np.ndarray:
        """Return ``J = M Kᵀ / N`` of shape (n_units, n_units)."""
        M, K = copy_array(self.M), copy_array(self.K)
        return M @ K.T / M.shape[0]
