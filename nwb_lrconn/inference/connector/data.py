"""What Connector learns from: per-unit z = (m, b, d), the latent trajectories, and z's scaling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..._validation import (
    check_array,
    check_choice,
    check_positive,
)
from ...data import NONLINEARITIES, LowRankFit

__all__ = ["ConnectorData", "varying_z_columns", "z_scaling"]


@dataclass(frozen=True)
class ConnectorData:
    """What Connector learns from: per-unit z = (m, b, d) and the latent trajectories.

    Attributes
    ----------
    z : ndarray of shape (n_units, rank + n_inputs + 1)
        Rows ``(m_i, b_i, d_i)`` in the canonical gauge.
    latents : ndarray of shape (n_trials, n_time, rank)
        κ(t) per trial.
    latent_mask : ndarray of shape (n_trials, n_time), bool
        True where κ(t) is valid; a transition t → t+1 is used when both bins are valid.
    alpha : float
        Euler step Δt/τ.
    nonlinearity : {"tanh", "relu", "softplus"}
        φ.
    inputs : ndarray of shape (n_trials, n_time, n_inputs), optional
        u(t); required when z has input columns.
    test_trials : ndarray of int, optional
        Held-out trials (validation of flow B); None lets the estimator draw its own split.
    """

    z: np.ndarray
    latents: np.ndarray
    latent_mask: np.ndarray
    alpha: float
    nonlinearity: str = "tanh"
    inputs: np.ndarray | None = None
    test_trials: np.ndarray | None = None

    def __post_init__(self) -> None:
        latents = check_array(
            self.latents, "ConnectorData.latents", ndim=3, dtype=np.float64, finite=True
        )
        n_trials, n_time, rank = latents.shape
        n_inputs = 0 if self.inputs is None else np.shape(self.inputs)[-1]
        z = check_array(
            self.z,
            "ConnectorData.z",
            shape=(None, rank + n_inputs + 1),
            dtype=np.float64,
            finite=True,
        )
        mask = check_array(
            self.latent_mask, "ConnectorData.latent_mask", shape=(n_trials, n_time), dtype=bool
        )
        if self.inputs is not None:
            inputs = check_array(
                self.inputs,
                "ConnectorData.inputs",
                shape=(n_trials, n_time, None),
                dtype=np.float64,
                finite=True,
            )
            object.__setattr__(self, "inputs", inputs)
        check_positive(self.alpha, "ConnectorData.alpha")
        check_choice(self.nonlinearity, "ConnectorData.nonlinearity", NONLINEARITIES)
        if self.test_trials is not None:
            test = np.asarray(self.test_trials, dtype=np.int64)
            if test.ndim != 1 or np.any(test < 0) or np.any(test >= n_trials):
                raise ValueError(
                    f"ConnectorData.test_trials must be trial indices in [0, {n_trials}); "
                    f"got {self.test_trials!r}."
                )
            object.__setattr__(self, "test_trials", test)
        if z.shape[0] < 2:
            raise ValueError(f"ConnectorData.z needs at least 2 units; got {z.shape[0]}.")
        if not np.any(mask[:, :-1] & mask[:, 1:]):
            raise ValueError("ConnectorData.latent_mask leaves no transition t → t+1.")
        object.__setattr__(self, "z", z)
        object.__setattr__(self, "latents", latents)
        object.__setattr__(self, "latent_mask", mask)
        object.__setattr__(self, "alpha", float(self.alpha))

    @property
    def rank(self) -> int:
        """Rank R."""
        return self.latents.shape[2]

    @property
    def n_inputs(self) -> int:
        """Number of input channels D_u."""
        return self.z.shape[1] - self.rank - 1

    @classmethod
    def from_fit(cls, fit: LowRankFit, *, inputs: np.ndarray | None = None) -> ConnectorData:
        """Build from a stage-1 fit: z = (M, B, d), its latents, mask, α, φ and held-out trials.

        Parameters
        ----------
        fit : LowRankFit
            The stage-1 fit.
        inputs : ndarray of shape (n_trials, n_time, n_inputs), optional
            u(t) of the fitted recording; required when ``fit.B`` has columns.

        Returns
        -------
        ConnectorData
        """
        if not isinstance(fit, LowRankFit):
            raise TypeError(f"fit must be a LowRankFit; got {type(fit).__name__}.")
        if fit.B.shape[1] > 0 and inputs is None:
            raise ValueError(
                f"fit has {fit.B.shape[1]} input channel(s) (B has {fit.B.shape[1]} columns): "
                "pass the recording's inputs."
            )
        z = np.concatenate([fit.M, fit.B, fit.d[:, None]], axis=1)
        test = fit.test_trials if fit.test_trials.size else None
        return cls(
            z=z,
            latents=fit.latents,
            latent_mask=fit.latent_mask,
            alpha=fit.alpha,
            nonlinearity=fit.nonlinearity,
            inputs=inputs if fit.B.shape[1] > 0 else None,
            test_trials=test,
        )

    @classmethod
    def from_loadings(
        cls,
        M: np.ndarray,
        latents: np.ndarray,
        *,
        alpha: float,
        nonlinearity: str = "tanh",
        B: np.ndarray | None = None,
        d: np.ndarray | None = None,
        inputs: np.ndarray | None = None,
        latent_mask: np.ndarray | None = None,
        test_trials: np.ndarray | None = None,
    ) -> ConnectorData:
        """Build from known loadings and latents (the ground-truth path).

        Parameters
        ----------
        M : ndarray of shape (n_units, rank)
            Input-side loadings.
        latents : ndarray of shape (n_trials, n_time, rank)
            κ(t) per trial.
        alpha : float
            Δt/τ.
        nonlinearity : str, default: "tanh"
            φ.
        B : ndarray of shape (n_units, n_inputs), optional
            Input weights (with ``inputs``).
        d : ndarray of shape (n_units,), optional
            Biases; zeros by default.
        inputs : ndarray of shape (n_trials, n_time, n_inputs), optional
            u(t).
        latent_mask : ndarray of shape (n_trials, n_time), optional
            All True by default.
        test_trials : ndarray of int, optional
            Held-out trials.

        Returns
        -------
        ConnectorData
        """
        M = check_array(M, "M", ndim=2, dtype=np.float64)
        n_units = M.shape[0]
        B = np.zeros((n_units, 0)) if B is None else check_array(B, "B", shape=(n_units, None))
        d = np.zeros(n_units) if d is None else check_array(d, "d", shape=(n_units,))
        latents = np.asarray(latents, dtype=np.float64)
        mask = np.ones(latents.shape[:2], bool) if latent_mask is None else latent_mask
        return cls(
            z=np.concatenate([M, B, d[:, None]], axis=1),
            latents=latents,
            latent_mask=mask,
            alpha=alpha,
            nonlinearity=nonlinearity,
            inputs=inputs,
            test_trials=test_trials,
        )

    def transitions(self, trials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latent features and updates of every valid transition of ``trials``.

        Returns
        -------
        features : ndarray of shape (n_rows, rank + n_inputs + 1)
            X_t = (κ_t, u_t, 1), so that the potential of a unit is ``X_t · z``.
        updates : ndarray of shape (n_rows, rank)
            Y_t = κ_{t+1} − (1 − α) κ_t.
        """
        trials = np.asarray(trials, dtype=np.int64)
        lat = self.latents[trials]
        valid = self.latent_mask[trials, :-1] & self.latent_mask[trials, 1:]
        kappa = lat[:, :-1][valid]
        updates = lat[:, 1:][valid] - (1 - self.alpha) * kappa
        parts = [kappa]
        if self.inputs is not None:
            parts.append(self.inputs[trials, :-1][valid])
        parts.append(np.ones((kappa.shape[0], 1)))
        return np.concatenate(parts, axis=1), updates


def varying_z_columns(z: np.ndarray) -> np.ndarray:
    """Columns of z that vary across units (constant ones, e.g. d ≡ 0, are not modelled).

    Parameters
    ----------
    z : ndarray of shape (n_units, n_z)
        Rows (m, b, d).

    Returns
    -------
    ndarray of bool, shape (n_z,)
    """
    mean, std = z.mean(axis=0), z.std(axis=0)
    return std > 1e-12 * (1 + np.abs(mean))


def z_scaling(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardisation of z used by the distribution models: x = ((z − mean) / std)[free].

    Parameters
    ----------
    z : ndarray of shape (n_units, n_z)
        Rows (m, b, d).

    Returns
    -------
    free : ndarray of bool, shape (n_z,)
        Varying columns (:func:`varying_z_columns`).
    mean, std : ndarray of shape (n_z,)
        Column means and standard deviations (0 and 1 on constant columns).
    fill : ndarray of shape (n_z,)
        Value of each constant column (0 on varying ones).

    Raises
    ------
    ValueError
        When every column is constant.
    """
    free = varying_z_columns(z)
    if not free.any():
        raise ValueError("Every column of z is constant: there is no distribution to learn.")
    mean, std = z.mean(axis=0), z.std(axis=0)
    return free, np.where(free, mean, 0.0), np.where(free, std, 1.0), np.where(free, 0.0, mean)
