"""The maximum-entropy connectivity distribution ("Connector", Kim et al. 2026).

Two continuous normalizing flows trained by conditional flow matching (:mod:`.flows`):

- **flow A** over the per-unit input-side vector z = (m, b, d) of the stage-1 fit;
- **flow B** over the output-side loading k given z. Its targets: sets of S virtual units z_s
  are drawn from flow A, their activations Φ_{t,s} = φ(m_s·κ_t + b_s·u_t + d_s)
  are formed over the training latents, and the latent updates Y_t = κ_{t+1} − (1−α)κ_t are
  regressed onto (α/S)Φ with the ridge (maximum-entropy Gaussian prior) strength λ:

      k̂ = argmin_k ‖Y − (α/S) Φ k‖² + λ‖k‖².

Cost (what makes this fast, and scale with the data): the latent features X_t = (κ_t, u_t, 1) are
computed once and, by default, the visited states are merged into a weighted quadrature (states
closer than ``state_resolution`` standard deviations share one row, its weight the number of
merged rows), so Φ has a few thousand rows instead of n_trials·n_time; each ridge system is solved
by Cholesky in the smaller of its S×S and rows×rows forms, for ``n_target_sets`` sets of virtual
units drawn once from a pool of flow-A samples, which flow B's steps then cycle through; the
velocity networks' width and flow A's schedule follow the number of units
(:func:`auto_hidden_features`, :func:`auto_flow_steps`), and flow A stops on the log-likelihood of
held-out units. Flow B's held-out one-step prediction error is recorded every
``validation_every`` steps (and stops it only with ``keep_best``).

Which units count as "enough" for flows at all is decided in :mod:`.distribution`; below that,
:mod:`.mixture` holds the simpler model.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import qmc
from sklearn.base import BaseEstimator
from torch import Tensor

from .._validation import (
    check_array,
    check_choice,
    check_is_fitted,
    check_positive,
    check_positive_int,
    make_rng,
)
from ..config import DistributionConfig
from ..data import NONLINEARITIES, ConnectivityDistribution, LowRankFit
from ..model.rollout import activation
from .flows import VelocityMLP, flow_log_prob, flow_matching_loss, integrate_flow

__all__ = [
    "ConnectorData",
    "StateQuadrature",
    "build_state_quadrature",
    "quadrature_ridge_targets",
    "ridge_state_coefficients",
    "ConnectorEstimator",
    "varying_z_columns",
    "z_scaling",
    "auto_flow_steps",
    "auto_hidden_features",
    "connector_from_distribution",
]


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


@dataclass(frozen=True)
class StateQuadrature:
    """Visited states merged into weighted rows: Σ_t f(X_t) ≈ Σ_b w_b f(X̄_b).

    Attributes
    ----------
    features : ndarray of shape (n_rows, n_z)
        Mean features X̄_b of each group of merged states.
    update_sums : ndarray of shape (n_rows, rank)
        Sum of the updates Y_t of each group.
    weights : ndarray of shape (n_rows,)
        Number of merged states per group.
    """

    features: np.ndarray
    update_sums: np.ndarray
    weights: np.ndarray


def build_state_quadrature(
    features: np.ndarray, updates: np.ndarray, *, resolution: float | None
) -> StateQuadrature:
    """Merge visited states that fall in the same cell of a grid (exact when ``resolution=None``).

    Cells have width ``resolution`` × (standard deviation of each varying feature column). The
    ridge normal equations only need Σ_t φ_tφ_tᵀ and Σ_t φ_t Y_tᵀ, so merging states that differ
    by δ changes them by O(δ²) (features are averaged within a cell, updates summed).

    Parameters
    ----------
    features : ndarray of shape (n_states, n_z)
        X_t.
    updates : ndarray of shape (n_states, rank)
        Y_t.
    resolution : float or None
        Cell width in standard deviations; None keeps every state.

    Returns
    -------
    StateQuadrature
    """
    if resolution is None:
        return StateQuadrature(features, updates, np.ones(features.shape[0]))
    check_positive(resolution, "state_resolution")
    std = features.std(axis=0)
    free = std > 0
    key = np.floor(features[:, free] / (resolution * std[free])).astype(np.int64)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    feat = np.zeros((counts.size, features.shape[1]))
    sums = np.zeros((counts.size, updates.shape[1]))
    np.add.at(feat, inverse, features)
    np.add.at(sums, inverse, updates)
    return StateQuadrature(feat / counts[:, None], sums, counts.astype(np.float64))


def quadrature_ridge_targets(
    features: Tensor,
    update_sums: Tensor,
    weights: Tensor,
    z: Tensor,
    *,
    alpha: float,
    ridge_lambda: float,
    nonlinearity: str = "tanh",
) -> Tensor:
    """Ridge output loadings k̂ = argmin ‖Y − (α/S) Φ k‖² + λ‖k‖² of S virtual units.

    With A = diag(√w) Φ and c = λ S²/α², the solution is
    ``k̂ = (S/α) (AᵀA + cI)⁻¹ Φᵀ Y_sum = (S/α) Aᵀ (AAᵀ + cI)⁻¹ (Y_sum / √w)``; the smaller of the
    two systems is solved by Cholesky.

    Parameters
    ----------
    features : Tensor of shape (n_rows, n_z)
        State features X_t = (κ_t, u_t, 1) (quadrature rows).
    update_sums : Tensor of shape (n_rows, rank)
        Sum of Y_t per row.
    weights : Tensor of shape (n_rows,)
        Number of states per row (ones when exact).
    z : Tensor of shape (S, n_z)
        Virtual units (m, b, d).
    alpha : float
        Δt/τ.
    ridge_lambda : float
        λ.
    nonlinearity : str, default: "tanh"
        φ.

    Returns
    -------
    Tensor of shape (S, rank)
        k̂, in the dtype of ``features``.
    """
    n_virtual = z.shape[0]
    root_w = weights.sqrt()[:, None]
    phi = activation(features @ z.to(features.dtype).T, nonlinearity)  # (n_rows, S)
    a = phi * root_w
    c = ridge_lambda * n_virtual**2 / alpha**2
    if a.shape[0] >= n_virtual:
        gram = a.T @ a
        gram.diagonal().add_(c)
        chol = torch.linalg.cholesky(gram)
        k = torch.cholesky_solve(phi.T @ update_sums, chol)
    else:
        gram = a @ a.T
        gram.diagonal().add_(c)
        chol = torch.linalg.cholesky(gram)
        k = a.T @ torch.cholesky_solve(update_sums / root_w, chol)
    return (n_virtual / alpha) * k


def ridge_state_coefficients(
    features: Tensor,
    update_sums: Tensor,
    weights: Tensor,
    z_sets: list[Tensor],
    *,
    alpha: float,
    ridge_lambda: float,
    nonlinearity: str = "tanh",
) -> Tensor:
    """The ridge conditional mean as a function of z: g*(z) = Σ_b φ(X̄_b · z) β_b.

    By the push-through form of :func:`quadrature_ridge_targets`, the ridge loadings of a set of
    S virtual units are ``k̂_s = (S/α) Σ_b √w_b φ(X̄_b · z_s) u_b`` with
    ``u = (AAᵀ + cI)⁻¹ (Y_sum / √w)``: a fixed combination of the visited states' activations,
    defined for every z. Averaging the rows × rows Gram matrix AAᵀ over several sets removes the
    set-to-set jitter of finite S while keeping the ridge strength of S units (c = λS²/α²).

    Parameters
    ----------
    features, update_sums, weights : Tensor
        Quadrature rows, as for :func:`quadrature_ridge_targets`.
    z_sets : list of Tensor of shape (S, n_z)
        Sets of S virtual units drawn from p(z).
    alpha, ridge_lambda : float
        Δt/τ and λ.
    nonlinearity : str, default: "tanh"
        φ.

    Returns
    -------
    Tensor of shape (n_rows, rank)
        β, in the dtype of ``features``.
    """
    n_virtual = z_sets[0].shape[0]
    root_w = weights.sqrt()[:, None]
    gram = torch.zeros(features.shape[0], features.shape[0], dtype=features.dtype)
    for z in z_sets:
        a = activation(features @ z.to(features.dtype).T, nonlinearity) * root_w
        gram += a @ a.T
    gram /= len(z_sets)
    gram.diagonal().add_(ridge_lambda * n_virtual**2 / alpha**2)
    u = torch.cholesky_solve(update_sums / root_w, torch.linalg.cholesky(gram))
    return (n_virtual / alpha) * root_w * u


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


def auto_flow_steps(n_units: int) -> int:
    """Flow-A schedule length for ``n_steps_a="auto"``: 3 steps per unit, in [500, 3000].

    3000 (the published length) from 1000 units up; below that the schedule shortens with the
    data, and the held-out check stops it earlier when flow A starts to fit the training units
    rather than their law.

    Parameters
    ----------
    n_units : int
        Number of units N the flows learn from.

    Returns
    -------
    int
    """
    n_units = check_positive_int(n_units, "n_units")
    return int(min(3000, max(500, 3 * n_units)))


def auto_hidden_features(n_units: int) -> int:
    """Width of the velocity MLPs for ``hidden_features="auto"``: about N/8, in [32, 128].

    The nearest power of two to N/8, clipped to [32, 128]: 128 (the published width) from about
    720 units up, 64 from about 360, 32 below.

    Parameters
    ----------
    n_units : int
        Number of units N the flows learn from.

    Returns
    -------
    int
    """
    n_units = check_positive_int(n_units, "n_units")
    return int(min(128, max(32, 2 ** round(np.log2(max(n_units, 1) / 8)))))


class ConnectorEstimator(BaseEstimator):
    """Maximum-entropy connectivity distribution p(z) p(k | z) learned by two flows.

    Parameters
    ----------
    hidden_features : int or "auto", default: "auto"
        Width of the velocity MLPs; "auto" follows the number of units N (about N/8, a power of
        two between 32 and 128; see :func:`auto_hidden_features`).
    n_layers : int, default: 4
        Hidden layers of the velocity MLPs (Swish activations).
    learning_rate : float, default: 3e-3
        Initial AdamW learning rate of both flows, decayed to 0 by a cosine schedule.
    weight_decay : float, default: 1e-5
        AdamW weight decay.
    batch_size : int, default: 256
        Units per flow-A step; base draws are paired with them by minibatch optimal transport.
    n_steps_a : int or "auto", default: "auto"
        Flow-A steps (the length of its cosine schedule); "auto" is 3 per unit, between 500 and
        3000 (see :func:`auto_flow_steps`). Flow A trains on all but a ``validation_fraction``
        of the units (the others are ``held_out_units_``) and evaluates the exact
        log-likelihood of the held-out ones every ``validation_every`` steps (curve
        ``flow_a_val``, negative log-likelihood per unit).
        A state counts as worse than the best only when its held-out negative log-likelihood
        exceeds the best by more than the standard error of that held-out mean; training stops
        after ``patience`` such evaluations in a row, and the last state is kept unless it is
        worse in that sense, when the best one is restored. Later states of the schedule are
        preferred within the standard error because they are sharper, which flow B's targets
        (and the sampled networks' dynamics) favour, while the held-out likelihood of a few
        hundred units cannot tell them apart.
    n_steps_b : int, default: 1000
        Maximum flow-B steps (one ridge solve each).
    ridge_lambda : float, default: 1e-5
        λ of the ridge targets (the published runs used 1e-4, which shrinks k̂ more).
    n_virtual_units : int, default: 1000
        S, virtual units per flow-B step.
    n_target_sets : int or None, default: 20
        Sets of S virtual units whose ridge targets are solved once, before flow B trains; its
        steps cycle through them. None solves a fresh set at every step (one Cholesky solve per
        step, the dominant cost of flow B).
    ode_step : float, default: 0.05
        Step of the midpoint ODE solver (sampling and log-densities).
    state_resolution : float or None, default: 0.1
        Merge visited states closer than this many standard deviations (see
        :func:`build_state_quadrature`); None uses every state.
    pool_size : int, default: 20000
        Flow-A samples drawn once and reused as flow-B virtual units.
    validation_every : int or "auto", default: "auto"
        Steps between validations of flow A (see ``n_steps_a``) and of flow B (held-out one-step
        prediction error of the sampled σ = 0 network, relative to the variance of the
        updates); "auto" validates each flow 20 times over its schedule.
    patience : int, default: 5
        Validations in a row worse than the best (flow A, see ``n_steps_a``) or, with
        ``keep_best``, without improvement (flow B) before a flow stops early.
    keep_best : bool, default: False
        Restore flow B's state with the lowest validation error, stopping after ``patience``
        validations without improvement; False trains flow B's whole schedule and keeps its
        last state. The held-out one-step error barely separates good from poor flow-B states
        (relative errors ~1e-3), whereas the last state of the cosine schedule tracks the ridge
        conditional mean best: on the published quadstable network with true latents,
        ‖k − g(m)‖² 0.040 for the last state against 0.050 for the best-validation state.
    validation_fraction : float, default: 0.1
        Fraction of the units held out to stop flow A (at least 5, or half of them when fewer
        than 10), and of the trials held out for flow B when the data carry no test trials.
    device : str, default: "cpu"
        Torch device ("cuda" where available).
    progress : bool, default: False
        Show a tqdm progress bar.
    random_state : int or None, default: None
        Seed of every random draw of ``fit``.
    """

    def __init__(
        self,
        *,
        hidden_features: int | str = DistributionConfig.hidden_features,
        n_layers: int = DistributionConfig.n_layers,
        learning_rate: float = DistributionConfig.learning_rate,
        weight_decay: float = DistributionConfig.weight_decay,
        batch_size: int = DistributionConfig.batch_size,
        n_steps_a: int | str = DistributionConfig.n_steps_a,
        n_steps_b: int = DistributionConfig.n_steps_b,
        ridge_lambda: float = DistributionConfig.ridge_lambda,
        n_virtual_units: int = DistributionConfig.n_virtual_units,
        n_target_sets: int | None = DistributionConfig.n_target_sets,
        ode_step: float = DistributionConfig.ode_step,
        state_resolution: float | None = DistributionConfig.state_resolution,
        pool_size: int = DistributionConfig.pool_size,
        validation_every: int | str = DistributionConfig.validation_every,
        patience: int = DistributionConfig.patience,
        keep_best: bool = DistributionConfig.keep_best,
        validation_fraction: float = DistributionConfig.validation_fraction,
        device: str = "cpu",
        progress: bool = False,
        random_state: int | None = None,
    ) -> None:
        self.hidden_features = hidden_features
        self.n_layers = n_layers
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.n_steps_a = n_steps_a
        self.n_steps_b = n_steps_b
        self.ridge_lambda = ridge_lambda
        self.n_virtual_units = n_virtual_units
        self.n_target_sets = n_target_sets
        self.ode_step = ode_step
        self.state_resolution = state_resolution
        self.pool_size = pool_size
        self.validation_every = validation_every
        self.patience = patience
        self.keep_best = keep_best
        self.validation_fraction = validation_fraction
        self.device = device
        self.progress = progress
        self.random_state = random_state

    def _check_params(self) -> None:
        for name in ("hidden_features", "n_steps_a", "validation_every"):
            value = getattr(self, name)
            if value != "auto":
                if isinstance(value, str):
                    raise ValueError(
                        f"{name} must be a positive integer or 'auto'; got {value!r}."
                    )
                check_positive_int(value, name, minimum=0 if name == "n_steps_a" else 1)
        if self.n_target_sets is not None:
            check_positive_int(self.n_target_sets, "n_target_sets")
        for name in ("n_layers", "batch_size", "n_virtual_units", "pool_size", "patience"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.n_steps_b, "n_steps_b", minimum=0)
        for name in ("learning_rate", "ridge_lambda", "ode_step"):
            check_positive(getattr(self, name), name)
        check_positive(self.weight_decay, "weight_decay", allow_zero=True)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in (0, 1); got {self.validation_fraction!r}."
            )
        if self.pool_size < self.n_virtual_units:
            raise ValueError(
                f"pool_size must be >= n_virtual_units ({self.n_virtual_units}); "
                f"got {self.pool_size}."
            )
        if self.state_resolution is not None:
            check_positive(self.state_resolution, "state_resolution")

    # ------------------------------------------------------------------ fitting
    def fit(
        self, data: ConnectorData | LowRankFit, *, inputs: np.ndarray | None = None
    ) -> ConnectorEstimator:
        """Learn flow A on the units' z and flow B on ridge targets over the training latents.

        Parameters
        ----------
        data : ConnectorData or LowRankFit
            A stage-1 fit (uses M, B, d, latents, latent_mask, alpha, nonlinearity and its
            held-out trials) or :class:`ConnectorData` (e.g. true loadings and latents).
        inputs : ndarray of shape (n_trials, n_time, n_inputs), optional
            u(t), when ``data`` is a LowRankFit with inputs.

        Returns
        -------
        ConnectorEstimator
            self.
        """
        self._check_params()
        if isinstance(data, LowRankFit):
            data = ConnectorData.from_fit(data, inputs=inputs)
        elif not isinstance(data, ConnectorData):
            raise TypeError(
                f"data must be a LowRankFit or a ConnectorData; got {type(data).__name__}."
            )
        rng = make_rng(self.random_state)
        device = torch.device(self.device)
        gen = torch.Generator(device=device)
        gen.manual_seed(int(rng.integers(2**62)))
        start = time.perf_counter()
        cpu_start = time.process_time()

        self.rank_ = data.rank
        self.n_inputs_ = data.n_inputs
        self.alpha_ = data.alpha
        self.nonlinearity_ = data.nonlinearity
        self._set_standardisation_z(data.z)
        n_units = data.z.shape[0]
        auto = {
            "hidden_features": auto_hidden_features(n_units),
            "n_steps_a": auto_flow_steps(n_units),
        }
        self.hidden_features_, self.max_steps_a_ = (
            auto[name] if getattr(self, name) == "auto" else int(getattr(self, name))
            for name in ("hidden_features", "n_steps_a")
        )
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

        bar = _progress_bar(self.progress, self.max_steps_a_ + self.n_steps_b)
        try:
            curves_a, val_a = self._fit_flow_a(data.z, rng, gen, device, bar)
            t_a = time.perf_counter() - start
            curves_b, val_b = self._fit_flow_b(data, gen, device, bar)
        finally:
            if bar is not None:
                bar.close()
        self.training_curves_ = {**curves_a, **curves_b}
        self.validation_metrics_ = {**val_a, **val_b}
        self.fit_time_ = {
            "flow_a_wall_s": t_a,
            "total_wall_s": time.perf_counter() - start,
            "total_cpu_s": time.process_time() - cpu_start,
        }
        return self

    def _set_standardisation_z(self, z: np.ndarray) -> None:
        self.z_free_, self.z_mean_, self.z_std_, self.z_fill_ = z_scaling(z)

    def _z_to_flow(self, z: np.ndarray | Tensor, device: torch.device) -> Tensor:
        z = torch.as_tensor(np.asarray(z), dtype=torch.float32, device=device)
        mean = torch.as_tensor(self.z_mean_, dtype=torch.float32, device=device)
        std = torch.as_tensor(self.z_std_, dtype=torch.float32, device=device)
        free = torch.as_tensor(self.z_free_, device=device)
        return ((z - mean) / std)[:, free]

    def _z_from_flow(self, x: Tensor) -> Tensor:
        out = torch.as_tensor(self.z_fill_, dtype=x.dtype, device=x.device).repeat(x.shape[0], 1)
        free = torch.as_tensor(self.z_free_, device=x.device)
        mean = torch.as_tensor(self.z_mean_[self.z_free_], dtype=x.dtype, device=x.device)
        std = torch.as_tensor(self.z_std_[self.z_free_], dtype=x.dtype, device=x.device)
        out[:, free] = x * std + mean
        return out

    def _validation_every(self, n_steps: int) -> int:
        if self.validation_every == "auto":
            return max(1, round(n_steps / 20))
        return int(self.validation_every)

    def _new_nets(self, device: torch.device) -> None:
        n_free = int(self.z_free_.sum())
        kw = {"hidden_features": self.hidden_features_, "n_layers": self.n_layers}
        self.flow_a_ = VelocityMLP(n_free, **kw).to(device)
        self.flow_b_ = VelocityMLP(self.rank_, n_free, **kw).to(device)

    def _fit_flow_a(self, z, rng, gen, device, bar) -> tuple[dict, dict]:
        z_std = self._z_to_flow(z, device)
        n_units = z_std.shape[0]
        # At least 5 held-out units (at most half of them) so the check has a standard error.
        n_val = max(round(self.validation_fraction * n_units), min(5, n_units // 2))
        order = rng.permutation(n_units)
        self.held_out_units_ = np.sort(order[:n_val])
        order = torch.as_tensor(order, device=device)
        z_val, z_train = z_std[order[:n_val]], z_std[order[n_val:]]
        n_train = z_train.shape[0]
        log_jac = float(np.log(self.z_std_[self.z_free_]).sum())
        self._new_nets(device)
        self.flow_a_.reset_parameters(gen)
        self.flow_b_.reset_parameters(gen)
        opt = torch.optim.AdamW(
            self.flow_a_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        n_steps = self.max_steps_a_
        every = self._validation_every(n_steps)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, n_steps))
        losses, val_curve = [], []
        best, best_se, best_state, waited, last = np.inf, 0.0, None, 0, np.inf
        batch = min(self.batch_size, n_train)
        for step in range(n_steps):
            idx = torch.randperm(n_train, generator=gen, device=device)[:batch]
            loss = flow_matching_loss(self.flow_a_, z_train[idx], generator=gen, coupling="ot")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
            if (step + 1) % every == 0 or step + 1 == n_steps:
                lp = flow_log_prob(self.flow_a_, z_val, step=self.ode_step).double()
                last = log_jac - float(lp.mean())  # nats per unit, original z units
                se = float(lp.std()) / np.sqrt(n_val) if n_val > 1 else np.inf
                val_curve.append((step + 1, last))
                if last < best:
                    best, best_se, waited = last, se, 0
                    best_state = copy.deepcopy(self.flow_a_.state_dict())
                elif last > best + best_se:
                    waited += 1
                    if waited >= self.patience:
                        break
                else:
                    waited = 0
        kept = last
        if last > best + best_se:
            self.flow_a_.load_state_dict(best_state)
            kept = best
        if bar is not None:
            bar.update(n_steps - len(losses))
        self.n_steps_a_ = len(losses)
        curves = {
            "flow_a_loss": np.asarray(losses),
            "flow_a_val": np.asarray(val_curve, dtype=np.float64).reshape(-1, 2),
        }
        return curves, {"flow_a_val_nll": float(kept)}

    def _sample_z_flow(
        self, n: int, gen: torch.Generator, device: torch.device, *, quasi_random: bool = False
    ) -> Tensor:
        shape = (n, int(self.z_free_.sum()))
        if quasi_random:
            seed = int(torch.randint(2**62, (1,), generator=gen, device=device))
            u = qmc.Halton(shape[1], scramble=True, seed=np.random.default_rng(seed)).random(n)
            u = torch.as_tensor(u, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
            x0 = torch.special.ndtri(u).to(device=device, dtype=torch.float32)
        else:
            x0 = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        return integrate_flow(self.flow_a_, x0, step=self.ode_step)

    def _sample_k_flow(self, context: Tensor, gen: torch.Generator | None) -> Tensor:
        """Flow B pushed from x0 ~ N(0, I), or from the base mean x0 = 0 when ``gen`` is None."""
        shape = (context.shape[0], self.rank_)
        if gen is None:
            x0 = torch.zeros(shape, device=context.device, dtype=context.dtype)
        else:
            x0 = torch.randn(shape, generator=gen, device=context.device, dtype=context.dtype)
        return integrate_flow(self.flow_b_, x0, context=context, step=self.ode_step)

    def _fit_flow_b(self, data: ConnectorData, gen, device, bar) -> tuple[dict, dict]:
        f64 = torch.float64
        feats, updates = data.transitions(self.train_trials_)
        quad = build_state_quadrature(feats, updates, resolution=self.state_resolution)
        q_feat = torch.as_tensor(quad.features, dtype=f64, device=device)
        q_sums = torch.as_tensor(quad.update_sums, dtype=f64, device=device)
        q_w = torch.as_tensor(quad.weights, dtype=f64, device=device)
        val_feats, val_updates = data.transitions(self.test_trials_)
        val_feat = torch.as_tensor(val_feats, dtype=f64, device=device)
        val_y = torch.as_tensor(val_updates, dtype=f64, device=device)
        val_var = ((val_y - val_y.mean(0)) ** 2).sum(1).mean()

        n_s = self.n_virtual_units
        with torch.no_grad():
            pool = self._sample_z_flow(self.pool_size, gen, device)
        pool_z = self._z_from_flow(pool).to(f64)

        def targets(idx: Tensor) -> Tensor:
            return quadrature_ridge_targets(
                q_feat,
                q_sums,
                q_w,
                pool_z[idx],
                alpha=self.alpha_,
                ridge_lambda=self.ridge_lambda,
                nonlinearity=self.nonlinearity_,
            )

        def draw() -> Tensor:
            return torch.randperm(self.pool_size, generator=gen, device=device)[:n_s]

        n_sets = self.n_target_sets
        bank_idx = [draw() for _ in range(1 if n_sets is None else n_sets)]
        bank_k = [targets(idx) for idx in bank_idx]
        k0 = bank_k[0]
        self.k_mean_ = k0.mean(0).cpu().numpy()
        self.k_std_ = k0.std(0).clamp_min(1e-12).cpu().numpy()
        k_mean = torch.as_tensor(self.k_mean_, dtype=f64, device=device)
        k_std = torch.as_tensor(self.k_std_, dtype=f64, device=device)

        val_idx = draw()
        val_phi = activation(val_feat @ pool_z[val_idx].T, self.nonlinearity_)

        opt = torch.optim.AdamW(
            self.flow_b_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, self.n_steps_b))
        every = self._validation_every(self.n_steps_b)
        losses, val_curve = [], []
        best, best_state, waited = np.inf, None, 0
        for step in range(self.n_steps_b):
            if n_sets is None:
                idx = bank_idx[0] if step == 0 else draw()
                k_hat = k0 if step == 0 else targets(idx)
            else:
                idx, k_hat = bank_idx[step % n_sets], bank_k[step % n_sets]
            x1 = ((k_hat - k_mean) / k_std).float()
            loss = flow_matching_loss(self.flow_b_, x1, context=pool[idx], generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
            if (step + 1) % every == 0 or step + 1 == self.n_steps_b:
                k = self._sample_k_flow(pool[val_idx], None).to(f64) * k_std + k_mean
                pred = (self.alpha_ / n_s) * val_phi @ k
                val = float((((val_y - pred) ** 2).sum(1).mean() / val_var).item())
                val_curve.append((step + 1, val))
                if val < best:
                    best, waited = val, 0
                    if self.keep_best:
                        best_state = copy.deepcopy(self.flow_b_.state_dict())
                elif self.keep_best:
                    waited += 1
                    if waited >= self.patience:
                        break
        if best_state is not None:
            self.flow_b_.load_state_dict(best_state)
        kept = best if self.keep_best or not val_curve else val_curve[-1][1]
        self.n_steps_b_ = len(losses)
        self.n_quadrature_rows_ = int(q_w.numel())
        curves = {
            "flow_b_loss": np.asarray(losses),
            "flow_b_val": np.asarray(val_curve, dtype=np.float64).reshape(-1, 2),
        }
        return curves, {"flow_b_val_relative_error": float(kept)}

    # ------------------------------------------------------------------ using the fit
    def _generator(self, random_state) -> tuple[torch.Generator, torch.device]:
        device = next(self.flow_a_.parameters()).device
        gen = torch.Generator(device=device)
        gen.manual_seed(int(make_rng(random_state).integers(2**62)))
        return gen, device

    def sample(
        self,
        n_units: int,
        *,
        sigma: float = 0.0,
        core: bool = True,
        quasi_random: bool = True,
        random_state: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw a network of any size: z ~ flow A, k = flow B(z) + σ·ε.

        The max-entropy law is p(z) N(k; g*(z), σ²I) with g* the ridge conditional mean. Flow B
        learns the ridge targets of finite sets of S virtual units, whose set-to-set jitter is an
        artefact of finite S, not part of that law; by default (``core=True``) k is therefore
        flow B's transport of the base mean (x0 = 0), a deterministic function of z that tracks
        g*(z) (on the published quadstable network with true latents, mean ‖k − g(m)‖² 0.048
        instead of 0.123 for x0 ~ N(0, I)).

        Parameters
        ----------
        n_units : int
            Number of units to draw.
        sigma : float, default: 0.0
            Isotropic spread added to k (the unidentifiable part); 0 gives the identifiable core.
        core : bool, default: True
            Push flow B's base mean x0 = 0 (the centre g*(z)); False draws x0 ~ N(0, I) and keeps
            flow B's finite-S jitter in k.
        quasi_random : bool, default: True
            Draw flow A's base points as a scrambled Halton sequence mapped to N(0, I); False
            draws i.i.d. normals. Either way every unit is distributed as p(z), but quasi-random
            units cover p(z) more evenly, so what a network averages over its units (its flow
            field, attractors, silencing) carries less finite-N noise: on the published
            limit-cycle network, 1000 i.i.d. units with z ~ flow A and k = g_true(m) give cycle
            radii 0.88–0.98 across seeds (truth 0.954), quasi-random ones 0.93–0.94.
        random_state : int or None
            Seed of the draw.

        Returns
        -------
        z : ndarray of shape (n_units, rank + n_inputs + 1)
            (m, b, d) per unit.
        k : ndarray of shape (n_units, rank)
            Output-side loadings.
        """
        check_is_fitted(self, "flow_a_")
        n_units = check_positive_int(n_units, "n_units")
        sigma = check_positive(sigma, "sigma", allow_zero=True)
        gen, device = self._generator(random_state)
        x = self._sample_z_flow(n_units, gen, device, quasi_random=bool(quasi_random))
        k = self._sample_k_flow(x, None if core else gen).to(torch.float64).cpu().numpy()
        k = k * self.k_std_ + self.k_mean_
        if sigma > 0:
            eps = torch.randn(k.shape, generator=gen, device=device, dtype=torch.float64)
            k = k + sigma * eps.cpu().numpy()
        return self._z_from_flow(x).to(torch.float64).cpu().numpy(), k

    def core_k(self, z: np.ndarray) -> np.ndarray:
        """Output loadings of the identifiable core at given z: flow B's image of its base mean.

        Parameters
        ----------
        z : ndarray of shape (n, rank + n_inputs + 1)
            (m, b, d).

        Returns
        -------
        ndarray of shape (n, rank)
            What :meth:`sample` returns for k at σ = 0 with ``core=True``, for these z.
        """
        check_is_fitted(self, "flow_a_")
        z = check_array(z, "z", shape=(None, self.z_free_.size), dtype=np.float64)
        x = self._z_to_flow(z, next(self.flow_b_.parameters()).device)
        k = self._sample_k_flow(x, None).to(torch.float64).cpu().numpy()
        return k * self.k_std_ + self.k_mean_

    def log_prob_z(self, z: np.ndarray) -> np.ndarray:
        """Exact log-density of z under flow A (over the varying columns of z, in nats).

        Parameters
        ----------
        z : ndarray of shape (n, rank + n_inputs + 1)
            (m, b, d).

        Returns
        -------
        ndarray of shape (n,)
        """
        check_is_fitted(self, "flow_a_")
        z = check_array(z, "z", shape=(None, self.z_free_.size), dtype=np.float64)
        x = self._z_to_flow(z, next(self.flow_a_.parameters()).device)
        lp = flow_log_prob(self.flow_a_, x, step=self.ode_step).to(torch.float64).cpu().numpy()
        return lp - np.log(self.z_std_[self.z_free_]).sum()

    def log_prob(self, z: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Exact log-density of (z, k) under the learned flows, log p_A(z) + log p_B(k | z).

        p_B is flow B's full conditional law (x0 ~ N(0, I), i.e. ``sample(core=False)`` at
        σ = 0), whose spread is the finite-S jitter of the ridge targets. Constant columns of z
        (e.g. d when every bias is 0) are not modelled: the density is over the varying columns
        of z, with the constant ones ignored.

        Parameters
        ----------
        z : ndarray of shape (n, rank + n_inputs + 1)
            (m, b, d).
        k : ndarray of shape (n, rank)
            Output-side loadings.

        Returns
        -------
        ndarray of shape (n,)
            Log-densities in nats (with respect to Lebesgue measure on the original units).
        """
        check_is_fitted(self, "flow_a_")
        n_z = self.z_free_.size
        z = check_array(z, "z", shape=(None, n_z), dtype=np.float64)
        k = check_array(k, "k", shape=(z.shape[0], self.rank_), dtype=np.float64)
        device = next(self.flow_a_.parameters()).device
        x = self._z_to_flow(z, device)
        y = torch.as_tensor((k - self.k_mean_) / self.k_std_, dtype=torch.float32, device=device)
        lp_a = flow_log_prob(self.flow_a_, x, step=self.ode_step)
        lp_b = flow_log_prob(self.flow_b_, y, context=x, step=self.ode_step)
        log_jac = np.log(self.z_std_[self.z_free_]).sum() + np.log(self.k_std_).sum()
        return (lp_a + lp_b).to(torch.float64).cpu().numpy() - log_jac

    def to_distribution(
        self, n_samples: int = 1000, sigma: float = 0.0, *, random_state: int | None = None
    ) -> ConnectivityDistribution:
        """Export the flows, their training curves and a drawn sample as plain arrays.

        Parameters
        ----------
        n_samples : int, default: 1000
            Units drawn into ``samples_z`` / ``samples_k``.
        sigma : float, default: 0.0
            Spread on k of the drawn sample (recorded as ``sigma``); the sample is drawn by
            :meth:`sample` with its defaults (k centred on the core).
        random_state : int or None
            Seed of the drawn sample.

        Returns
        -------
        ConnectivityDistribution
        """
        check_is_fitted(self, "flow_a_")
        z, k = self.sample(n_samples, sigma=sigma, random_state=random_state)
        architecture = {
            "kind": "connector-cfm",
            "velocity_net": "mlp",
            "activation": "swish",
            "hidden_features": self.hidden_features_,
            "n_layers": self.n_layers,
            "ode_solver": "midpoint",
            "ode_step": self.ode_step,
            "time_convention": "t=0 noise, t=1 data",
            "rank": self.rank_,
            "n_inputs": self.n_inputs_,
            "alpha": self.alpha_,
            "nonlinearity": self.nonlinearity_,
            "z_free": self.z_free_.tolist(),
            "z_mean": self.z_mean_.tolist(),
            "z_std": self.z_std_.tolist(),
            "z_fill": self.z_fill_.tolist(),
            "k_mean": self.k_mean_.tolist(),
            "k_std": self.k_std_.tolist(),
            "estimator_params": self.get_params(),
        }
        json.dumps(architecture)  # must be JSON-serialisable
        return ConnectivityDistribution(
            flow_a_parameters=_state_to_numpy(self.flow_a_),
            flow_b_parameters=_state_to_numpy(self.flow_b_),
            architecture=architecture,
            sigma=float(sigma),
            ridge_lambda=float(self.ridge_lambda),
            n_virtual_units=int(self.n_virtual_units),
            training_curves={k_: np.asarray(v) for k_, v in self.training_curves_.items()},
            samples_z=z,
            samples_k=k,
            validation_metrics=dict(self.validation_metrics_),
        )


def _state_to_numpy(net: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: t.detach().cpu().numpy().copy() for name, t in net.state_dict().items()}


def _progress_bar(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Connector", unit="step")


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
    est.rank_ = int(arch["rank"])
    est.n_inputs_ = int(arch["n_inputs"])
    est.alpha_ = float(arch["alpha"])
    est.nonlinearity_ = arch["nonlinearity"]
    est.z_free_ = np.asarray(arch["z_free"], dtype=bool)
    est.z_mean_ = np.asarray(arch["z_mean"], dtype=np.float64)
    est.z_std_ = np.asarray(arch["z_std"], dtype=np.float64)
    est.z_fill_ = np.asarray(arch["z_fill"], dtype=np.float64)
    est.k_mean_ = np.asarray(arch["k_mean"], dtype=np.float64)
    est.k_std_ = np.asarray(arch["k_std"], dtype=np.float64)
    est.hidden_features_ = int(arch["hidden_features"])
    est._new_nets(torch.device(device))
    pairs = ((est.flow_a_, dist.flow_a_parameters), (est.flow_b_, dist.flow_b_parameters))
    for net, stored in pairs:
        net.load_state_dict({name: torch.as_tensor(value) for name, value in stored.items()})
    est.training_curves_ = {k: np.asarray(v) for k, v in dist.training_curves.items()}
    est.validation_metrics_ = dict(dist.validation_metrics)
    return est
