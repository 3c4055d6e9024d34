"""The connectivity distribution for few units: a Gaussian (mixture) over z, Gaussian k | z.

Below a few hundred units a flow over z learns the units rather than their law, so
:class:`MixtureConnectorEstimator` replaces the two flows of :mod:`.connector` by:

- p(z) = Σ_c π_c N(z; μ_c, Σ_c) over the varying columns of z = (m, b, d). One component is the
  Gaussian with the units' mean and covariance (the maximum-entropy law of those moments), or
  with their variances only (diagonal, fewer parameters); more components are tried only when
  there are enough units; the kind and number kept are those with the best cross-validated
  held-out log-likelihood;
- k | z ~ N(g*(z), Ψ), with g* the ridge conditional mean that flow B's targets are drawn from
  (:func:`.ridge_state_coefficients`): S virtual units drawn from p(z) are regressed onto the
  latent updates exactly as for flow B, and the ridge solution, a fixed combination
  g*(z) = Σ_b φ(X̄_b · z) β_b of the visited states' activations, is kept as a function of z
  (its rows × rows Gram matrix averaged over ``n_target_sets`` sets). It is linear in those
  features, not in z: a map linear in z cannot carry dynamics such as several attractors,
  whatever the number of units. Ψ is the spread of one set's ridge targets about g*.

g* plays the part of flow B's core; nothing about k is learned from the N units themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import logsumexp, ndtri
from scipy.stats import qmc

from .._validation import (
    check_choice,
    check_is_fitted,
    check_positive,
    check_positive_int,
    make_rng,
)
from ..config import DistributionConfig
from ..data import ConnectivityDistribution, LowRankFit
from ..model.rollout import activation
from .connector import (
    ConnectorData,
    build_state_quadrature,
    quadrature_ridge_targets,
    ridge_state_coefficients,
)
from .connector.base import DistributionEstimatorBase, as_connector_data

__all__ = ["MixtureConnectorEstimator", "max_mixture_components", "mixture_from_distribution"]

_LOG_2PI = np.log(2 * np.pi)
# Full covariances, or diagonal ones (fewer parameters, which few units can favour).
_COVARIANCE_TYPES = ("full", "diag")
# g*(z) needs a rows × rows Cholesky: coarser state quadrature beyond this many rows.
_MAX_STATE_ROWS = 2000


def max_mixture_components(n_units: int, n_free: int, limit: int) -> int:
    """Largest number of full-covariance components worth trying on ``n_units`` units.

    Each component has n_free means, n_free (n_free + 1) / 2 covariances and a weight; a
    component is tried only with at least two units per parameter.

    Parameters
    ----------
    n_units : int
        Units N.
    n_free : int
        Varying columns of z.
    limit : int
        Upper bound (``max_components``).

    Returns
    -------
    int
        At least 1.
    """
    per_component = n_free + n_free * (n_free + 1) // 2 + 1
    return int(max(1, min(limit, n_units // (2 * per_component))))


def _gaussian_log_pdf(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, (x - mean).T)
    log_det = 2 * np.log(np.diag(chol)).sum()
    return -0.5 * ((sol**2).sum(0) + log_det + x.shape[1] * _LOG_2PI)


class MixtureConnectorEstimator(DistributionEstimatorBase):
    """Gaussian-mixture p(z) with Gaussian p(k | z) around the ridge conditional mean.

    Parameters
    ----------
    n_components : int or "auto", default: "auto"
        Components of the mixture over z; "auto" tries 1 up to ``max_components`` (fewer when
        there are few units, see :func:`max_mixture_components`). Full and diagonal
        covariances are tried alike, and the pair with the best cross-validated held-out
        log-likelihood is kept (curves ``z_cv_nll_full`` and ``z_cv_nll_diag``).
    covariance_type : {"auto", "full", "diag"}, default: "auto"
        Covariances of the components; "auto" lets the cross-validation choose.
    max_components : int, default: 4
        Most components tried by "auto".
    n_folds : int, default: 5
        Folds of the cross-validation over units (fewer when there are fewer units).
    ridge_lambda : float, default: 1e-5
        λ of the ridge targets (as for flow B).
    n_virtual_units : int, default: 1000
        S, virtual units per set of ridge targets.
    n_target_sets : int, default: 20
        Sets of S virtual units whose ridge Gram matrices are averaged for g*.
    state_resolution : float or None, default: 0.1
        Merge visited states closer than this many standard deviations (as for flow B).
    validation_fraction : float, default: 0.1
        Fraction of trials held out for the one-step check when the data carry no test trials.
    random_state : int or None, default: None
        Seed of every random draw of ``fit``.
    """

    _fitted_attribute = "state_coefficients_"

    def __init__(
        self,
        *,
        n_components: int | str = "auto",
        covariance_type: str = DistributionConfig.covariance_type,
        max_components: int = DistributionConfig.max_components,
        n_folds: int = DistributionConfig.n_folds,
        ridge_lambda: float = DistributionConfig.ridge_lambda,
        n_virtual_units: int = DistributionConfig.n_virtual_units,
        n_target_sets: int = DistributionConfig.n_target_sets,
        state_resolution: float | None = DistributionConfig.state_resolution,
        validation_fraction: float = DistributionConfig.validation_fraction,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.max_components = max_components
        self.n_folds = n_folds
        self.ridge_lambda = ridge_lambda
        self.n_virtual_units = n_virtual_units
        self.n_target_sets = n_target_sets
        self.state_resolution = state_resolution
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _check_params(self) -> None:
        if self.n_components != "auto":
            if isinstance(self.n_components, str):
                raise ValueError(
                    "n_components must be a positive integer or 'auto'; "
                    f"got {self.n_components!r}."
                )
            check_positive_int(self.n_components, "n_components")
        check_choice(self.covariance_type, "covariance_type", ("auto", *_COVARIANCE_TYPES))
        for name in ("max_components", "n_target_sets"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.n_folds, "n_folds", minimum=2)
        check_positive_int(self.n_virtual_units, "n_virtual_units", minimum=2)
        check_positive(self.ridge_lambda, "ridge_lambda")
        self._check_shared_params()

    # ------------------------------------------------------------------ fitting
    def fit(
        self, data: ConnectorData | LowRankFit, *, inputs: np.ndarray | None = None
    ) -> MixtureConnectorEstimator:
        """Fit the mixture over z and the linear-Gaussian conditional of k.

        Parameters
        ----------
        data : ConnectorData or LowRankFit
            As for :meth:`.ConnectorEstimator.fit`.
        inputs : ndarray of shape (n_trials, n_time, n_inputs), optional
            u(t), when ``data`` is a LowRankFit with inputs.

        Returns
        -------
        MixtureConnectorEstimator
            self.

        Raises
        ------
        ValueError
            When there are fewer units than varying columns of z plus 2 (no covariance, or
            no unit left to check it on).
        """
        self._check_params()
        data = as_connector_data(data, inputs=inputs)
        rng = make_rng(self.random_state)
        self._set_data_attributes(data)
        x = self._to_standard(data.z)
        n_units, n_free = x.shape
        if n_units < n_free + 2:
            raise ValueError(
                f"{n_units} units cannot fit a Gaussian over the {n_free} varying columns of "
                f"z = (m, b, d): it needs at least {n_free + 2}."
            )
        self._fit_z(x, rng)
        self._fit_k(data, rng)
        return self

    def _to_standard(self, z: np.ndarray) -> np.ndarray:
        return ((z - self.z_mean_) / self.z_std_)[:, self.z_free_]

    def _from_standard(self, x: np.ndarray) -> np.ndarray:
        z = np.tile(self.z_fill_, (x.shape[0], 1))
        z[:, self.z_free_] = x * self.z_std_[self.z_free_] + self.z_mean_[self.z_free_]
        return z

    def _fit_z(self, x: np.ndarray, rng: np.random.Generator) -> None:
        from threadpoolctl import threadpool_limits

        # EM on a few small matrices: BLAS threads only add their start-up and spin cost.
        with threadpool_limits(1, user_api="blas"):
            self._fit_mixture(x, rng)

    def _fit_mixture(self, x: np.ndarray, rng: np.random.Generator) -> None:
        from sklearn.mixture import GaussianMixture
        from sklearn.model_selection import KFold

        n_units, n_free = x.shape
        if self.n_components == "auto":
            counts = list(
                range(1, max_mixture_components(n_units, n_free, self.max_components) + 1)
            )
        else:
            counts = [int(self.n_components)]
        seed = int(rng.integers(2**31))
        folds = list(KFold(min(self.n_folds, n_units), shuffle=True, random_state=seed).split(x))

        def mixture(n: int, kind: str) -> GaussianMixture:
            return GaussianMixture(
                n, covariance_type=kind, n_init=1 if n == 1 else 3, random_state=seed
            )

        log_jac = self._z_log_jacobian()
        kinds = _COVARIANCE_TYPES if self.covariance_type == "auto" else (self.covariance_type,)
        curves: dict[str, list] = {kind: [] for kind in kinds}
        for kind in kinds:
            for n in counts:
                scores = [mixture(n, kind).fit(x[tr]).score_samples(x[te]) for tr, te in folds]
                curves[kind].append((n, log_jac - float(np.concatenate(scores).mean())))
        self.z_cv_curves_ = {
            f"z_cv_nll_{kind}": np.asarray(c, dtype=np.float64) for kind, c in curves.items()
        }
        best_nll, n_best, kind_best = min(
            (nll, int(n), kind) for kind, c in curves.items() for n, nll in c
        )
        gm = mixture(n_best, kind_best).fit(x)
        self.n_components_, self.covariance_type_, self.z_cv_nll_ = n_best, kind_best, best_nll
        self.weights_ = gm.weights_.copy()
        self.means_ = gm.means_.copy()
        cov = gm.covariances_
        self.covariances_ = (
            cov.copy() if kind_best == "full" else np.stack([np.diag(c) for c in cov])
        )

    def _draw_z(
        self, n: int, rng: np.random.Generator, *, quasi_random: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Standardised draws x and their components (quasi-random: scrambled Halton)."""
        n_free, several = self.means_.shape[1], self.n_components_ > 1
        if quasi_random:
            u = qmc.Halton(n_free + several, scramble=True, seed=rng).random(n)
            u = np.clip(u, 1e-12, 1 - 1e-12)
            comp = np.zeros(n, dtype=np.int64)
            if several:  # the first coordinate picks the component, the others the point
                comp = np.searchsorted(np.cumsum(self.weights_)[:-1], u[:, 0], side="right")
            eps = ndtri(u[:, several:])
        else:
            comp = rng.choice(self.n_components_, size=n, p=self.weights_)
            eps = rng.standard_normal((n, n_free))
        chol = np.linalg.cholesky(self.covariances_)
        x = self.means_[comp] + np.einsum("nij,nj->ni", chol[comp], eps)
        return x, comp

    def _fit_k(self, data: ConnectorData, rng: np.random.Generator) -> None:
        self._split_trials(data, rng)
        feats, updates = data.transitions(self.train_trials_)
        resolution = self.state_resolution
        quad = build_state_quadrature(feats, updates, resolution=resolution)
        while quad.weights.size > _MAX_STATE_ROWS:
            resolution = 1.5 * (resolution or 0.05)
            quad = build_state_quadrature(feats, updates, resolution=resolution)
        f, y, w = (
            torch.as_tensor(a, dtype=torch.float64)
            for a in (quad.features, quad.update_sums, quad.weights)
        )
        kw: dict[str, Any] = {"alpha": self.alpha_, "ridge_lambda": self.ridge_lambda}
        kw["nonlinearity"] = self.nonlinearity_
        z_sets = [
            torch.as_tensor(self._from_standard(self._draw_z(self.n_virtual_units, rng)[0]))
            for _ in range(self.n_target_sets)
        ]
        self.state_features_ = quad.features
        self.state_coefficients_ = ridge_state_coefficients(f, y, w, z_sets, **kw).numpy()
        # The spread of one set's own ridge targets about g*: flow B's finite-S jitter.
        k_set = quadrature_ridge_targets(f, y, w, z_sets[0], **kw).numpy()
        resid = k_set - self._ridge_mean(z_sets[0].numpy())
        self.residual_covariance_ = np.atleast_2d(np.cov(resid.T)) + 1e-12 * np.eye(self.rank_)
        self.validation_metrics_ = {
            "z_cv_nll": self.z_cv_nll_,
            "n_components": float(self.n_components_),
            "diagonal_covariance": float(self.covariance_type_ == "diag"),
            "k_val_relative_error": self._one_step_error(data, rng),
        }

    def _ridge_mean(self, z: np.ndarray) -> np.ndarray:
        """g*(z) = Σ_b φ(X̄_b · z) β_b for z in original units."""
        phi = activation(torch.as_tensor(z @ self.state_features_.T), self.nonlinearity_)
        return phi.numpy() @ self.state_coefficients_

    def _one_step_error(self, data: ConnectorData, rng: np.random.Generator) -> float:
        """Held-out one-step prediction error of S sampled core units, relative to Var(Y)."""
        feats, updates = data.transitions(self.test_trials_)
        z = self._from_standard(self._draw_z(self.n_virtual_units, rng)[0])
        k = self._ridge_mean(z)
        phi = activation(torch.as_tensor(feats @ z.T), self.nonlinearity_).numpy()
        pred = (self.alpha_ / z.shape[0]) * phi @ k
        var = ((updates - updates.mean(0)) ** 2).sum(1).mean()
        err = ((updates - pred) ** 2).sum(1).mean()
        return float(err / var if var > 0 else err)  # held-out trials at rest: no scale

    # ------------------------------------------------------------------ the fitted law
    def _log_resp(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log π_c N(x; μ_c, Σ_c) per component, and the log-density log p(x)."""
        parts = np.stack(
            [
                np.log(self.weights_[c]) + _gaussian_log_pdf(x, self.means_[c], cov)
                for c, cov in enumerate(self.covariances_)
            ],
            axis=1,
        )
        return parts, logsumexp(parts, axis=1)

    def sample(
        self,
        n_units: int,
        *,
        sigma: float = 0.0,
        core: bool = True,
        quasi_random: bool = True,
        random_state: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw a network of any size: z ~ the mixture, k = g*(z) + σ·ε.

        Parameters
        ----------
        n_units : int
            Number of units to draw.
        sigma : float, default: 0.0
            Isotropic spread added to k; 0 gives the identifiable core.
        core : bool, default: True
            k = g*(z), the ridge conditional mean; False adds the spread Ψ of one set's ridge
            targets about it (flow B's finite-S jitter).
        quasi_random : bool, default: True
            Draw components and base points from a scrambled Halton sequence (even coverage
            of p(z)); False draws them i.i.d.
        random_state : int or None
            Seed of the draw.

        Returns
        -------
        z : ndarray of shape (n_units, rank + n_inputs + 1)
            (m, b, d) per unit.
        k : ndarray of shape (n_units, rank)
            Output-side loadings.
        """
        check_is_fitted(self, self._fitted_attribute)
        n_units = check_positive_int(n_units, "n_units")
        sigma = check_positive(sigma, "sigma", allow_zero=True)
        rng = make_rng(random_state)
        x, _ = self._draw_z(n_units, rng, quasi_random=bool(quasi_random))
        z = self._from_standard(x)
        k = self._ridge_mean(z)
        if not core:
            chol = np.linalg.cholesky(self.residual_covariance_)
            k = k + rng.standard_normal(k.shape) @ chol.T
        if sigma > 0:
            k = k + sigma * rng.standard_normal(k.shape)
        return z, k

    def core_k(self, z: np.ndarray) -> np.ndarray:
        """Output loadings of the identifiable core at given z: the ridge conditional mean g*(z).

        Parameters
        ----------
        z : ndarray of shape (n, rank + n_inputs + 1)
            (m, b, d).

        Returns
        -------
        ndarray of shape (n, rank)
        """
        z = self._check_z(z)
        return self._ridge_mean(z)

    def log_prob_z(self, z: np.ndarray) -> np.ndarray:
        """Log-density of z under the mixture (over the varying columns of z, in nats).

        Parameters
        ----------
        z : ndarray of shape (n, rank + n_inputs + 1)
            (m, b, d).

        Returns
        -------
        ndarray of shape (n,)
        """
        z = self._check_z(z)
        return self._log_resp(self._to_standard(z))[1] - self._z_log_jacobian()

    def log_prob(self, z: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Log-density log p(z) + log N(k; g*(z), Ψ), over the varying columns of z (nats).

        Parameters
        ----------
        z : ndarray of shape (n, rank + n_inputs + 1)
            (m, b, d).
        k : ndarray of shape (n, rank)
            Output-side loadings.

        Returns
        -------
        ndarray of shape (n,)
        """
        z, k = self._check_zk(z, k)
        log_pk = _gaussian_log_pdf(
            k - self._ridge_mean(z), np.zeros(self.rank_), self.residual_covariance_
        )
        return self.log_prob_z(z) + log_pk

    def to_distribution(
        self, n_samples: int = 1000, sigma: float = 0.0, *, random_state: int | None = None
    ) -> ConnectivityDistribution:
        """Export the mixture and a drawn sample as plain arrays.

        The mixture over z is stored in ``flow_a_parameters`` (``weights``, ``means``,
        ``covariances``, in the standardised space of the varying columns) and the conditional
        in ``flow_b_parameters`` (``state_features`` X̄_b, ``state_coefficients`` β_b and
        ``residual_covariance`` Ψ).

        Parameters
        ----------
        n_samples : int, default: 1000
            Units drawn into ``samples_z`` / ``samples_k``.
        sigma : float, default: 0.0
            Spread on k of the drawn sample.
        random_state : int or None
            Seed of the drawn sample.

        Returns
        -------
        ConnectivityDistribution
            ``model`` "gaussian" (one component) or "gmm".
        """
        check_is_fitted(self, self._fitted_attribute)
        architecture = {
            "kind": "connector-gmm",
            "n_components": self.n_components_,
            "covariance_type": self.covariance_type_,
            **self._data_architecture(),
        }
        return self._export(
            n_samples,
            sigma,
            random_state,
            architecture=architecture,
            flow_a_parameters={
                "weights": self.weights_.copy(),
                "means": self.means_.copy(),
                "covariances": self.covariances_.copy(),
            },
            flow_b_parameters={
                "state_features": self.state_features_.copy(),
                "state_coefficients": self.state_coefficients_.copy(),
                "residual_covariance": self.residual_covariance_.copy(),
            },
            training_curves={name: c.copy() for name, c in self.z_cv_curves_.items()},
            model="gaussian" if self.n_components_ == 1 else "gmm",
        )


def mixture_from_distribution(dist: ConnectivityDistribution) -> MixtureConnectorEstimator:
    """Rebuild a fitted :class:`MixtureConnectorEstimator` from the stored arrays alone.

    Parameters
    ----------
    dist : ConnectivityDistribution
        With ``architecture["kind"] == "connector-gmm"``.

    Returns
    -------
    MixtureConnectorEstimator
        Ready for ``sample`` and ``log_prob``.
    """
    if not isinstance(dist, ConnectivityDistribution):
        raise TypeError(f"dist must be a ConnectivityDistribution; got {type(dist).__name__}.")
    arch = dist.architecture
    if arch.get("kind") != "connector-gmm":
        raise ValueError(f"architecture kind must be 'connector-gmm'; got {arch.get('kind')!r}.")
    est = MixtureConnectorEstimator(**arch["estimator_params"])
    est._restore_data_attributes(dist)
    est.n_components_ = int(arch["n_components"])
    for name in ("weights", "means", "covariances"):
        setattr(est, f"{name}_", np.asarray(dist.flow_a_parameters[name], dtype=np.float64))
    for name in ("state_features", "state_coefficients", "residual_covariance"):
        setattr(est, f"{name}_", np.asarray(dist.flow_b_parameters[name], dtype=np.float64))
    est.covariance_type_ = arch["covariance_type"]
    est.z_cv_curves_ = {
        n: np.asarray(c, dtype=np.float64) for n, c in dist.training_curves.items()
    }
    est.z_cv_nll_ = float(dist.validation_metrics["z_cv_nll"])
    return est
