"""Training curves of the stage-1 fit and of the connectivity-distribution flows."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import ConnectivityDistribution, LowRankFit
from ._common import log_scale, new_axes

__all__ = ["plot_training_curves", "plot_flow_training"]


def plot_training_curves(fit: LowRankFit, *, ax: Any = None) -> Any:
    """Plot the training and held-out negative log-likelihood per epoch.

    Parameters
    ----------
    fit : LowRankFit
        Uses ``loss_history`` of shape (n_rows, 2): training and held-out loss per value, row 0
        being the initialisation.
    ax : matplotlib Axes, optional
        Where to draw; default a new figure.

    Returns
    -------
    matplotlib Axes
        Two lines (training, held-out) and a marker at the best held-out epoch.
    """
    ax = new_axes(ax)
    history = np.asarray(fit.loss_history, dtype=float).reshape(len(fit.loss_history), -1)
    epochs = np.arange(history.shape[0])
    ax.plot(epochs, history[:, 0], color="C0", label="training")
    if history.shape[1] > 1:
        held_out = history[:, 1]
        ax.plot(epochs, held_out, color="C1", label="held-out")
        if np.isfinite(held_out).any():
            best = int(np.nanargmin(held_out))
            ax.plot(epochs[best], held_out[best], "o", color="C1", label="best (kept)")
    ax.set_xlabel("epoch (0 = initialisation)")
    ax.set_ylabel("negative log-likelihood per value (nats)")
    ax.set_title(f"stage-1 fit, rank {fit.rank}")
    ax.legend(frameon=False)
    return ax


def plot_flow_training(distribution: ConnectivityDistribution, *, ax: Any = None) -> Any:
    """Plot the flow-matching losses of the connectivity-distribution flows.

    Parameters
    ----------
    distribution : ConnectivityDistribution
        Uses every 1-D array in ``training_curves`` (one line each, against the step) and
        (step, value) pairs for 2-D arrays with two columns.
    ax : matplotlib Axes, optional
        Where to draw.

    Returns
    -------
    matplotlib Axes
        One line per training curve, log-scaled loss.
    """
    ax = new_axes(ax)
    for name, curve in sorted(distribution.training_curves.items()):
        curve = np.asarray(curve, dtype=float)
        if curve.ndim == 1 and curve.size:
            ax.plot(np.arange(1, curve.size + 1), curve, label=name)
        elif curve.ndim == 2 and curve.shape[1] == 2 and curve.size:
            ax.plot(curve[:, 0], curve[:, 1], "o-", ms=3, label=name)
    log_scale(ax, "y")
    ax.set_xlabel("training step")
    ax.set_ylabel("flow-matching loss")
    ax.set_title("connectivity distribution")
    ax.legend(frameon=False)
    return ax
