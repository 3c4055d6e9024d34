"""The published rank-2 ground-truth networks, generators and latent simulator.

Four networks of Kim et al. (2026), N = 1000 tanh units, α = 0.1, no inputs or bias:

============  =====================================================  =======================
name          law of (m, k)                                          dynamics
============  =====================================================  =======================
quadstable    4-component Gaussian mixture, k replaced by g(m)+N(0,I)  4 stable fixed points
bistable      joint Gaussian, Cov(m, k) = [[1.2, 0], [0.8, 1.6]]       2 stable fixed points
limit_cycle   joint Gaussian, Cov(m, k) = [[1.6, 0.8], [-0.8, 1.6]]    limit cycle, r ≈ 0.97
ring          joint Gaussian, Cov(m, k) = 1.6 I                        slow ring, r ≈ 0.92
============  =====================================================  =======================

(``Cov(m, k)[a, b] = Cov(m_a, k_b)``; Var m_r = 1 and Var k_r = 4 throughout.) A heavy-tailed
network (Student-t marginals on m) completes the set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import check_array, check_choice, check_positive_int, make_rng
from ..data import LoadingDims
from .nonlinearity import phi

__all__ = [
    "NETWORK_NAMES",
    "GroundTruthNetwork",
    "default_data_dir",
    "load_published_network",
    "sample_network",
    "sample_heavy_tailed_network",
    "conditional_mean",
    "grid_initial_conditions",
    "simulate_latents",
    "phi",
]

NETWORK_NAMES = ("quadstable", "bistable", "limit_cycle", "ring")
_FILES = {
    "quadstable": "quadstable_attractors.npz",
    "bistable": "bistable_attractors.npz",
    "limit_cycle": "limit_cycle.npz",
    "ring": "ring_attractor.npz",
}
# Cov(m_a, k_b) for the Gaussian networks.
_CROSS_COV = {
    "bistable": np.array([[1.2, 0.0], [0.8, 1.6]]),
    "limit_cycle": np.array([[1.6, 0.8], [-0.8, 1.6]]),
    "ring": np.array([[1.6, 0.0], [0.0, 1.6]]),
}
_QA_M_MEAN = 0.87
_QA_K_OVER_M = 2.31 / 0.87
_QA_WITHIN_VAR = 0.25
_HEAVY_CROSS = 1.6


@dataclass(frozen=True)
class GroundTruthNetwork(LoadingDims):
    """A rank-R network with known loadings.

    Attributes
    ----------
    name : str
        Network name.
    M, K : ndarray of shape (n_units, rank)
        Input-side and output-side loadings.
    alpha : float
        Euler step Δt/τ.
    nonlinearity : str
        φ.
    """

    name: str
    M: np.ndarray
    K: np.ndarray
    alpha: float = 0.1
    nonlinearity: str = "tanh"


def default_data_dir() -> Path:
    """Return the folder of shared real data: ``$NWB_LRCONN_DATA``, else ``../shared/data``.

    The fallback is resolved relative to the current working directory's parent, which is where
    the project's checkout keeps the shared folder.
    """
    env = os.environ.get("NWB_LRCONN_DATA")
    if env:
        return Path(env)
    return (Path.cwd().parent / "shared" / "data").resolve()


def load_published_network(name: str, data_dir: str | os.PathLike | None = None):
    """Load one of the four published networks (exact loadings of the paper).

    Parameters
    ----------
    name : {"quadstable", "bistable", "limit_cycle", "ring"}
        Which network.
    data_dir : path, optional
        Folder holding ``connector-paper-networks/``; default :func:`default_data_dir`.

    Returns
    -------
    GroundTruthNetwork
        N = 1000, R = 2, α = 0.1, tanh.

    Raises
    ------
    FileNotFoundError
        When the file is absent.
    """
    check_choice(name, "name", NETWORK_NAMES)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = root / "connector-paper-networks" / _FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"Published network {name!r} not found: expected {path}. Set NWB_LRCONN_DATA to the "
            "folder that holds connector-paper-networks/."
        )
    with np.load(path) as z:
        M = np.asarray(z["MBD"], dtype=np.float64)
        K = np.asarray(z["N"], dtype=np.float64)
    return GroundTruthNetwork(name=name, M=M, K=K)


def _qa_means() -> np.ndarray:
    signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.float64)
    return _QA_M_MEAN * signs


def conditional_mean(name: str, m: np.ndarray) -> np.ndarray:
    """Analytic g(m) = E[k | m] of a ground-truth law.

    Parameters
    ----------
    name : {"quadstable", "bistable", "limit_cycle", "ring", "heavy_tailed"}
        Which law.
    m : ndarray of shape (n, 2)
        Input-side loadings.

    Returns
    -------
    ndarray of shape (n, 2)
        Conditional mean of the output-side loadings.
    """
    check_choice(name, "name", (*NETWORK_NAMES, "heavy_tailed"))
    m = check_array(m, "m", shape=(None, 2), dtype=np.float64)
    if name == "quadstable":
        means = _qa_means()
        logw = -0.5 * ((m[:, None, :] - means[None]) ** 2).sum(-1) / _QA_WITHIN_VAR
        logw -= logw.max(axis=1, keepdims=True)
        w = np.exp(logw)
        w /= w.sum(axis=1, keepdims=True)
        return w @ (_QA_K_OVER_M * means)
    if name == "heavy_tailed":
        return _HEAVY_CROSS * m
    # Gaussian with Var m = I: E[k | m] = Cov(k, m) m = Cov(m, k)ᵀ m.
    return m @ _CROSS_COV[name]


def sample_network(name: str, n_units: int = 1000, *, random_state=None) -> GroundTruthNetwork:
    """Draw a fresh network from one of the four published laws.

    Parameters
    ----------
    name : {"quadstable", "bistable", "limit_cycle", "ring"}
        Which network (the four laws described above).
    n_units : int, default: 1000
        N.
    random_state : int, numpy Generator or None
        Randomness.

    Returns
    -------
    GroundTruthNetwork
        Rank 2, α = 0.1, tanh.
    """
    check_choice(name, "name", NETWORK_NAMES)
    n_units = check_positive_int(n_units, "n_units", minimum=4)
    rng = make_rng(random_state)
    if name == "quadstable":
        comp = np.arange(n_units) % 4
        means = _qa_means()[comp]
        m = means + np.sqrt(_QA_WITHIN_VAR) * rng.standard_normal((n_units, 2))
        k = conditional_mean(name, m) + rng.standard_normal((n_units, 2))
        return GroundTruthNetwork(name=name, M=m, K=k)
    cross = _CROSS_COV[name]
    cov = np.block([[np.eye(2), cross], [cross.T, 4.0 * np.eye(2)]])
    mk = rng.multivariate_normal(np.zeros(4), cov, size=n_units, method="cholesky")
    return GroundTruthNetwork(name=name, M=mk[:, :2], K=mk[:, 2:])


def sample_heavy_tailed_network(
    n_units: int = 1000, *, df: float = 5.0, random_state=None
) -> GroundTruthNetwork:
    """Draw a network whose input-side loadings have Student-t marginals (unit variance).

    k = 1.6 m + ε with ε ~ N(0, I)·√(4 − 1.6²), so Var k_r = 4 and g(m) = 1.6 m as for the ring,
    but the tails of m (and of J) are heavy: excess kurtosis 6/(df − 4).

    Parameters
    ----------
    n_units : int, default: 1000
        N.
    df : float, default: 5.0
        Degrees of freedom of the Student-t (> 4 so the kurtosis is finite).
    random_state : int, numpy Generator or None
        Randomness.

    Returns
    -------
    GroundTruthNetwork
        Named ``"heavy_tailed"``.
    """
    n_units = check_positive_int(n_units, "n_units", minimum=4)
    if not df > 4:
        raise ValueError(f"df must be > 4 so the kurtosis is finite; got {df}.")
    rng = make_rng(random_state)
    m = rng.standard_t(df, size=(n_units, 2)) * np.sqrt((df - 2) / df)
    k = _HEAVY_CROSS * m + np.sqrt(4 - _HEAVY_CROSS**2) * rng.standard_normal((n_units, 2))
    return GroundTruthNetwork(name="heavy_tailed", M=m, K=k)


def grid_initial_conditions(n_per_side: int = 20, extent: float = 2.4) -> np.ndarray:
    """Initial latents on a square grid over [−extent, extent]², shape (n_per_side², 2)."""
    axis = np.linspace(-extent, extent, n_per_side)
    gx, gy = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def simulate_latents(
    M: np.ndarray,
    K: np.ndarray,
    initial: np.ndarray,
    n_steps: int,
    *,
    alpha: float = 0.1,
    nonlinearity: str = "tanh",
    B: np.ndarray | None = None,
    d: np.ndarray | None = None,
    inputs: np.ndarray | None = None,
    noise_std: float = 0.0,
    random_state=None,
) -> np.ndarray:
    """Simulate the latent dynamics κ(t+1) = (1−α)κ(t) + (α/N) Kᵀ φ(M κ(t) + B u(t) + d) + ξ(t).

    Cost per step is O(N·R); the N×N connectivity is never formed.

    Parameters
    ----------
    M, K : ndarray of shape (n_units, rank)
        Loadings.
    initial : ndarray of shape (n_trials, rank)
        κ(0) per trial.
    n_steps : int
        Number of time steps T (κ(0) included).
    alpha : float, default: 0.1
        Δt/τ.
    nonlinearity : str, default: "tanh"
        φ.
    B : ndarray of shape (n_units, n_inputs), optional
        Input weights.
    d : ndarray of shape (n_units,), optional
        Biases.
    inputs : ndarray of shape (n_trials, n_steps, n_inputs), optional
        u(t).
    noise_std : float, default: 0
        Standard deviation of the process noise ξ per step.
    random_state : int, numpy Generator or None
        Randomness for the process noise.

    Returns
    -------
    ndarray of shape (n_trials, n_steps, rank)
        Latent trajectories.
    """
    M = check_array(M, "M", ndim=2, dtype=np.float64)
    n_units, rank = M.shape
    K = check_array(K, "K", shape=(n_units, rank), dtype=np.float64)
    kappa = check_array(initial, "initial", shape=(None, rank), dtype=np.float64).copy()
    n_steps = check_positive_int(n_steps, "n_steps")
    rng = make_rng(random_state) if noise_std > 0 else None
    drive = np.zeros((kappa.shape[0], n_units)) if d is None else np.broadcast_to(d, (1, n_units))
    out = np.empty((kappa.shape[0], n_steps, rank))
    for t in range(n_steps):
        out[:, t] = kappa
        x = kappa @ M.T + drive
        if inputs is not None and B is not None:
            x = x + inputs[:, t] @ B.T
        kappa = (1 - alpha) * kappa + (alpha / n_units) * phi(x, nonlinearity) @ K
        if rng is not None:
            kappa = kappa + noise_std * rng.standard_normal(kappa.shape)
    return out
