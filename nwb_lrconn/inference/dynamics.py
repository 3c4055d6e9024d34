"""Latent dynamics analysis: flow fields, fixed points with stability, limit cycles (numpy/scipy).

The continuous-time latent vector field of a low-rank network is

    F(κ) = −κ + (1/N) Σ_i k_i φ(m_i·κ + b_i·u + d_i),

and the Euler step of the model is κ(t+1) = κ(t) + α F(κ(t)). Flow fields and fixed points use F.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize

from .._validation import check_array, check_positive_int, make_rng
from ..model.nonlinearity import phi, phi_and_slope

__all__ = [
    "latent_velocity",
    "flow_field",
    "flow_field_rmse",
    "FixedPoint",
    "find_fixed_points",
    "LimitCycle",
    "find_limit_cycle",
]


def latent_velocity(
    kappa: np.ndarray,
    M: np.ndarray,
    K: np.ndarray,
    *,
    d: np.ndarray | None = None,
    nonlinearity: str = "tanh",
) -> np.ndarray:
    """Evaluate F(κ) = −κ + Kᵀ φ(M κ + d) / N at many points.

    Parameters
    ----------
    kappa : ndarray of shape (..., rank)
        Latent states.
    M, K : ndarray of shape (n_units, rank)
        Loadings.
    d : ndarray of shape (n_units,), optional
        Biases (inputs held at zero).
    nonlinearity : str, default: "tanh"
        φ.

    Returns
    -------
    ndarray of shape (..., rank)
        The vector field (per unit of time τ; the Euler step is α·F).
    """
    kappa = np.asarray(kappa, dtype=np.float64)
    x = kappa @ M.T
    if d is not None:
        x = x + d
    y = phi(x, nonlinearity)
    return -kappa + y @ K / M.shape[0]


def flow_field(
    M: np.ndarray,
    K: np.ndarray,
    *,
    extent: float = 2.4,
    n_grid: int = 30,
    d: np.ndarray | None = None,
    nonlinearity: str = "tanh",
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate the rank-2 flow field on a square grid over [−extent, extent]².

    Parameters
    ----------
    M, K : ndarray of shape (n_units, 2)
        Loadings.
    extent : float, default: 2.4
        Half-width of the grid.
    n_grid : int, default: 30
        Points per side.
    d : ndarray of shape (n_units,), optional
        Biases.
    nonlinearity : str, default: "tanh"
        φ.

    Returns
    -------
    points : ndarray of shape (n_grid, n_grid, 2)
        Grid points (``indexing="ij"``).
    velocity : ndarray of shape (n_grid, n_grid, 2)
        F at the grid points.
    """
    M = check_array(M, "M", shape=(None, 2), dtype=np.float64)
    n_grid = check_positive_int(n_grid, "n_grid", minimum=2)
    axis = np.linspace(-extent, extent, n_grid)
    points = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1)
    return points, latent_velocity(points, M, K, d=d, nonlinearity=nonlinearity)


def flow_field_rmse(velocity_a: np.ndarray, velocity_b: np.ndarray) -> float:
    """Root-mean-square distance between two flow fields on the same grid."""
    diff = np.asarray(velocity_a) - np.asarray(velocity_b)
    return float(np.sqrt(np.mean(np.sum(diff**2, axis=-1))))


@dataclass(frozen=True)
class FixedPoint:
    """A fixed point F(κ*) = 0 of the latent dynamics.

    Attributes
    ----------
    location : ndarray of shape (rank,)
        κ*.
    eigenvalues : ndarray of shape (rank,), complex
        Eigenvalues of the Jacobian ∂F/∂κ at κ*.
    stable : bool
        True when every eigenvalue has a negative real part.
    """

    location: np.ndarray
    eigenvalues: np.ndarray
    stable: bool


def _jacobian(kappa: np.ndarray, M, K, d, nonlinearity) -> np.ndarray:
    x = M @ kappa + (0.0 if d is None else d)
    _, slope = phi_and_slope(x, nonlinearity)
    return -np.eye(M.shape[1]) + (K * slope[:, None]).T @ M / M.shape[0]


def find_fixed_points(
    M: np.ndarray,
    K: np.ndarray,
    *,
    d: np.ndarray | None = None,
    nonlinearity: str = "tanh",
    extent: float = 2.4,
    n_starts: int = 200,
    tol: float = 1e-8,
    merge_distance: float = 1e-3,
    random_state=0,
) -> list[FixedPoint]:
    """Find the fixed points of F by Newton's method from many starting points.

    Parameters
    ----------
    M, K : ndarray of shape (n_units, rank)
        Loadings.
    d : ndarray of shape (n_units,), optional
        Biases.
    nonlinearity : str, default: "tanh"
        φ.
    extent : float, default: 2.4
        Starting points are drawn uniformly in [−extent, extent]^rank (plus the origin).
    n_starts : int, default: 200
        Number of starting points.
    tol : float, default: 1e-8
        Accept a root when ``|F(κ*)| < tol``.
    merge_distance : float, default: 1e-3
        Roots closer than this are one fixed point.
    random_state : int, numpy Generator or None, default: 0
        Randomness of the starting points.

    Returns
    -------
    list of FixedPoint
        Sorted by location (lexicographic).
    """
    M = check_array(M, "M", ndim=2, dtype=np.float64)
    K = check_array(K, "K", shape=M.shape, dtype=np.float64)
    rank = M.shape[1]
    rng = make_rng(random_state)
    starts = np.vstack([np.zeros(rank), rng.uniform(-extent, extent, (n_starts, rank))])
    found: list[np.ndarray] = []

    def fun(k):
        return latent_velocity(k, M, K, d=d, nonlinearity=nonlinearity)

    def jac(k):
        return _jacobian(k, M, K, d, nonlinearity)

    for start in starts:
        sol = optimize.root(fun, start, jac=jac, method="hybr", tol=tol * 1e-2)
        if not np.all(np.isfinite(sol.x)) or np.linalg.norm(fun(sol.x)) > tol:
            continue
        if all(np.linalg.norm(sol.x - f) > merge_distance for f in found):
            found.append(sol.x)
    found.sort(key=lambda v: [round(float(x), 6) for x in v])
    out = []
    for loc in found:
        eig = np.linalg.eigvals(jac(loc))
        out.append(FixedPoint(location=loc, eigenvalues=eig, stable=bool(np.all(eig.real < 0))))
    return out


@dataclass(frozen=True)
class LimitCycle:
    """A closed orbit of the rank-2 latent dynamics.

    Attributes
    ----------
    center : ndarray of shape (2,)
        Mean of the orbit.
    radius : float
        Mean distance of the orbit from its center.
    period : float
        Period in units of τ.
    orbit : ndarray of shape (n_points, 2)
        One period of the orbit.
    """

    center: np.ndarray
    radius: float
    period: float
    orbit: np.ndarray


def find_limit_cycle(
    M: np.ndarray,
    K: np.ndarray,
    *,
    d: np.ndarray | None = None,
    nonlinearity: str = "tanh",
    dt: float = 0.05,
    n_burn: int = 4000,
    n_record: int = 4000,
    initial: np.ndarray | None = None,
    min_speed: float = 1e-3,
) -> LimitCycle | None:
    """Integrate F from one starting point and return the limit cycle it settles on, if any.

    Parameters
    ----------
    M, K : ndarray of shape (n_units, rank)
        Loadings.
    d : ndarray of shape (n_units,), optional
        Biases.
    nonlinearity : str, default: "tanh"
        φ.
    dt : float, default: 0.05
        Integration step (units of τ).
    n_burn, n_record : int
        Steps discarded, then steps recorded.
    initial : ndarray of shape (rank,), optional
        Starting point; default (0.5, 0, …).
    min_speed : float, default: 1e-3
        Below this mean speed the trajectory has settled on a fixed point: None is returned.

    Returns
    -------
    LimitCycle or None
        The orbit, or None when the trajectory converges to a fixed point or has no period.
    """
    M = check_array(M, "M", ndim=2, dtype=np.float64)
    kappa = np.zeros(M.shape[1]) if initial is None else np.asarray(initial, float).copy()
    if initial is None:
        kappa[0] = 0.5

    def step(k):  # midpoint (RK2) step
        half = k + 0.5 * dt * latent_velocity(k, M, K, d=d, nonlinearity=nonlinearity)
        return k + dt * latent_velocity(half, M, K, d=d, nonlinearity=nonlinearity)

    for _ in range(n_burn):
        kappa = step(kappa)
    traj = np.empty((n_record, M.shape[1]))
    for i in range(n_record):
        traj[i] = kappa
        kappa = step(kappa)
    speed = np.linalg.norm(np.diff(traj, axis=0), axis=1).mean() / dt
    if speed < min_speed:
        return None
    # Period: first return to the start point's neighbourhood after leaving it.
    dist = np.linalg.norm(traj - traj[0], axis=1)
    scale = np.ptp(traj, axis=0).max()
    left = np.flatnonzero(dist > 0.5 * scale)
    if left.size == 0:
        return None
    back = np.flatnonzero((dist < 0.05 * scale) & (np.arange(n_record) > left[0]))
    if back.size == 0:
        return None
    n_period = int(back[np.argmin(dist[back[: max(1, np.searchsorted(back, back[0] + 10))]])])
    orbit = traj[:n_period]
    center = orbit.mean(axis=0)
    radius = float(np.linalg.norm(orbit - center, axis=1).mean())
    return LimitCycle(center=center, radius=radius, period=n_period * dt, orbit=orbit)
