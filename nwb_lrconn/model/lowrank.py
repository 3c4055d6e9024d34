"""The low-rank RNN as a torch module (pure math; training lives in :mod:`._engine`).

    x_i(t)   = m_i·κ(t) + b_i·u(t) + d_i                       (potential of unit i)
    κ(t+1)   = (1 − α) κ(t) + (α/N) Σ_i k_i φ(x_i(t)) + ξ(t)   (Euler step, α = Δt/τ)

The forward pass is the latent rollout (:func:`~nwb_lrconn.model.rollout.rollout_activity`), O(N·R)
per step; the dense connectivity J = M Kᵀ/N is formed only by :meth:`LowRankRNN.connectivity`.
The observation readout (per-unit gain g_i and offset c_i) and the observation noise scale live
here too, so one module holds every parameter of a fit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data import LoadingDimsWithInputs
from .rollout import activation, rollout_activity

__all__ = ["LowRankRNN"]


class LowRankRNN(LoadingDimsWithInputs, nn.Module):
    """Rank-R recurrent network of N units in latent form.

    Parameters
    ----------
    n_units : int
        N.
    rank : int
        R.
    n_inputs : int, default: 0
        D_u, the number of external input channels.
    alpha : float, default: 0.1
        Euler step Δt/τ.
    nonlinearity : {"tanh", "relu", "softplus"}, default: "tanh"
        φ.
    dtype : torch dtype, default: torch.float32
        Dtype of the parameters.

    Attributes
    ----------
    M, K : Parameter of shape (n_units, rank)
        Input-side and output-side loadings.
    B : Parameter of shape (n_units, n_inputs)
        External-input weights.
    d : Parameter of shape (n_units,)
        Biases inside φ.
    readout_gain, readout_offset : Parameter of shape (n_units,)
        Affine readout g_i φ(x_i) + c_i (the Poisson rate is its softplus, per second).
    log_noise_std : Parameter of shape (n_units,)
        Log of the Gaussian / calcium observation noise standard deviation.

    Notes
    -----
    Parameters start at zero (M, K, B, d, offset, log noise) and one (gain); the estimator sets
    them from data before training. The module holds no data and no randomness.
    """

    def __init__(
        self,
        n_units: int,
        rank: int,
        *,
        n_inputs: int = 0,
        alpha: float = 0.1,
        nonlinearity: str = "tanh",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        activation(torch.zeros(1), nonlinearity)  # validates the name
        self.alpha = float(alpha)
        self.nonlinearity = nonlinearity
        self.M = nn.Parameter(torch.zeros(n_units, rank, dtype=dtype))
        self.K = nn.Parameter(torch.zeros(n_units, rank, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(n_units, n_inputs, dtype=dtype))
        self.d = nn.Parameter(torch.zeros(n_units, dtype=dtype))
        self.readout_gain = nn.Parameter(torch.ones(n_units, dtype=dtype))
        self.readout_offset = nn.Parameter(torch.zeros(n_units, dtype=dtype))
        self.log_noise_std = nn.Parameter(torch.zeros(n_units, dtype=dtype))

    def forward(
        self,
        initial: Tensor,
        n_time: int,
        *,
        inputs: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Roll the dynamics forward from κ(0).

        Parameters
        ----------
        initial : Tensor of shape (n_trials, rank)
            κ(0) per trial.
        n_time : int
            Number of bins T.
        inputs : Tensor of shape (n_trials, n_time, n_inputs), optional
            u(t); required when the module has inputs.
        noise : Tensor of shape (n_trials, n_time - 1, rank), optional
            Process noise ξ(t).

        Returns
        -------
        latents : Tensor of shape (n_trials, n_time, rank)
            κ(t).
        activity : Tensor of shape (n_trials, n_time, n_units)
            φ(x(t)), the unit activations.
        """
        B, inputs = self.input_weights(inputs, n_time)
        return rollout_activity(
            self.M,
            self.K,
            B,
            self.d,
            initial,
            n_time,
            alpha=self.alpha,
            nonlinearity=self.nonlinearity,
            inputs=inputs,
            noise=noise,
        )

    def input_weights(
        self, inputs: Tensor | None, n_time: int
    ) -> tuple[Tensor | None, Tensor | None]:
        """(B, u) for the rollout: both None for a network without inputs; u required otherwise."""
        if self.n_inputs == 0:
            return None, None
        if inputs is None:
            raise ValueError(
                f"This network has {self.n_inputs} input channel(s); pass inputs of shape "
                f"(n_trials, {n_time}, {self.n_inputs})."
            )
        return self.B, inputs

    def readout(self, activity: Tensor) -> Tensor:
        """Return the affine readout g_i φ(x_i) + c_i, same shape as ``activity``."""
        return self.readout_gain * activity + self.readout_offset

    def connectivity(self) -> Tensor:
        """Return the dense connectivity J = M Kᵀ / N, shape (n_units, n_units).

        Never used by the forward pass; for inspection only.
        """
        return self.M @ self.K.T / self.n_units
