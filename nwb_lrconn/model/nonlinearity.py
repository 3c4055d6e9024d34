"""The single-unit nonlinearity φ and its slope φ' in numpy (torch: :func:`.rollout.activation`).

Numpy only, so that the numpy-side modules (ground-truth networks, dynamics, plots) need no torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["phi", "phi_and_slope", "softplus_inverse"]


def phi(x: np.ndarray, nonlinearity: str = "tanh") -> np.ndarray:
    """Apply the single-unit nonlinearity φ: ``"tanh"``, ``"relu"`` or ``"softplus"``."""
    if nonlinearity == "tanh":
        return np.tanh(x)
    if nonlinearity == "relu":
        return np.maximum(x, 0.0)
    if nonlinearity == "softplus":
        return np.logaddexp(0.0, x)
    raise ValueError(f"nonlinearity must be 'tanh', 'relu' or 'softplus'; got {nonlinearity!r}.")


def phi_and_slope(x: np.ndarray, nonlinearity: str = "tanh") -> tuple[np.ndarray, np.ndarray]:
    """φ(x) and φ'(x)."""
    y = phi(x, nonlinearity)
    if nonlinearity == "tanh":
        return y, 1.0 - y**2
    if nonlinearity == "relu":
        return y, (x > 0).astype(x.dtype)
    return y, 1.0 / (1.0 + np.exp(-x))  # softplus


def softplus_inverse(y: np.ndarray) -> np.ndarray:
    """x with softplus(x) = y, for y > 0."""
    if np.ndim(y) == 0:
        return y + np.log(-np.expm1(-y))
    # The same in one array: on the spike rates of a recording (tens of millions of values) the
    # four temporaries took most of the time.
    x = np.negative(y, dtype=np.result_type(y, 1.0))
    np.expm1(x, out=x)
    np.negative(x, out=x)
    np.log(x, out=x)
    x += y
    return x
