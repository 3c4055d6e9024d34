"""Small, dependency-free checks shared by every subpackage (numpy only).

Each check raises a specific exception whose message names what was expected and what was found.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "NotFittedError",
    "check_is_fitted",
    "check_positive",
    "check_positive_int",
    "check_positive_or_auto",
    "check_choice",
    "check_array",
    "make_rng",
]


class NotFittedError(ValueError, AttributeError):
    """Raised when a method needs a fitted estimator and ``fit`` has not run."""


def check_is_fitted(estimator: Any, attribute: str) -> None:
    """Raise :class:`NotFittedError` when ``estimator`` lacks the fitted ``attribute``."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"This {type(estimator).__name__} is not fitted yet: call fit(...) before using it."
        )


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking it is finite and > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r}.")
    value = float(value)
    bad = value < 0 if allow_zero else value <= 0
    if not np.isfinite(value) or bad:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; got {value!r}.")
    return value


def check_positive_or_auto(value: Any, name: str, *, allow_zero: bool = False) -> float | str:
    """Return "auto" unchanged, or ``value`` as a float after checking it is finite and > 0
    (>= 0 with ``allow_zero``)."""
    if isinstance(value, str):
        if value != "auto":
            kind = "non-negative" if allow_zero else "positive"
            raise ValueError(f"{name} must be a {kind} number or 'auto'; got {value!r}.")
        return value
    return check_positive(value, name, allow_zero=allow_zero)


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int after checking it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}.")
    return int(value)


def check_choice(value: Any, name: str, choices: tuple[str | None, ...]) -> Any:
    """Return ``value`` after checking it is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}.")
    return value


def check_array(
    value: Any,
    name: str,
    *,
    ndim: int | None = None,
    shape: tuple[int | None, ...] | None = None,
    dtype: Any = None,
    finite: bool = False,
) -> np.ndarray:
    """Convert ``value`` to an array and check its dimensions, shape and finiteness.

    Parameters
    ----------
    value : array_like
        The input.
    name : str
        Name used in error messages.
    ndim : int, optional
        Required number of dimensions.
    shape : tuple of (int or None), optional
        Required shape; ``None`` entries match any size.
    dtype : numpy dtype, optional
        Convert to this dtype.
    finite : bool, default: False
        Require every element to be finite.

    Returns
    -------
    numpy.ndarray
        The converted array.
    """
    arr = np.asarray(value, dtype=dtype)
    if shape is not None:
        ndim = len(shape)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {arr.shape}.")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, arr.shape)):
            if want is not None and want != got:
                raise ValueError(
                    f"{name} must have shape {_fmt_shape(shape)}; got {arr.shape} "
                    f"(axis {axis}: expected {want}, found {got})."
                )
    if finite and arr.size and not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite; found {n_bad} NaN or infinite value(s).")
    return arr


def _fmt_shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"


def make_rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """Return a numpy Generator from an int seed, a Generator, or None (fresh entropy)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is not None and (
        isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer))
    ):
        raise TypeError(
            f"random_state must be an int, a numpy Generator or None; got {random_state!r}."
        )
    return np.random.default_rng(random_state)
