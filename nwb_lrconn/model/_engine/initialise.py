"""Data-driven initialisation of a low-rank RNN fit (numpy, float64 where it matters).

1. *Linearise*: map each observation back to a target potential x̂_i(t). Spike counts are
   smoothed in time and turned into rates; the readout gain/offset are set from each unit's
   mean and spread; φ is inverted on the readout's range (exactly, when the data already lie in
   φ's range, e.g. noiseless tanh rates).
2. *Input-side loadings and latents*: regress x̂ on the inputs and a constant (B, d); PCA of the
   residual gives M (loadings) and κ (scores, whitened).
3. *Output-side loadings*: ridge regression of the latent updates κ(t+1) − (1−α)κ(t) on
   (α/N) φ(x̂(t)) gives K (the dynamics that best explain the PCA trajectories).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from ..nonlinearity import phi, softplus_inverse
from .unit_refit import refit_output_loadings

__all__ = ["Linearizer", "fit_linearizer", "initial_loadings", "encode_initial"]

# Largest |φ(x̂)| kept when inverting tanh, by observation model. Smoothed spike rates of units
# that saturate sit at their floor or ceiling for much of a trial; a clip at 0.97 caps their x̂
# at 2.1, the initial network then runs far less saturated than the data, and the fit settles in
# a compressed solution that the truth beats on the training likelihood. On the 500-unit
# Poisson spike fits of the benchmarks a clip closer to 1 lowers the stage-1 flow-field error up
# to 0.9995; beyond it the magnitudes of weakly tuned units drift.
# Continuous data carry Gaussian noise on the readout scale, which arctanh near ±1 would blow up.
_TANH_CLIP = {"poisson": 0.9995, "gaussian": 0.97, "calcium": 0.97}


_TRUNCATE = 4.0  # the smoothing kernel's radius in standard deviations (gaussian_filter1d's)


def smooth_counts(data: np.ndarray, mask: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Gaussian smoothing along time within each trial, renormalised at masked edges."""
    if sigma_bins <= 0:
        return data
    w = mask.astype(np.float64)[..., None]
    num = gaussian_filter1d(data * w, sigma_bins, axis=1, mode="constant", truncate=_TRUNCATE)
    den = gaussian_filter1d(
        np.broadcast_to(w, data.shape[:2] + (1,)),
        sigma_bins,
        axis=1,
        mode="constant",
        truncate=_TRUNCATE,
    )
    return num / np.maximum(den, 1e-12)


@dataclass(frozen=True)
class Linearizer:
    """Map observations to target potentials x̂ (see module docstring).

    Attributes
    ----------
    observation : str
        Observation model.
    nonlinearity : str
        φ.
    bin_width : float
        Δt in seconds.
    smooth_bins : float
        Gaussian smoothing width (bins) applied to spike counts.
    gain, offset : ndarray of shape (n_units,)
        Readout g, c: the readout target is (u − c)/g ≈ φ(x).
    rate_floor : float
        Smallest rate (1/s) used before inverting softplus.
    """

    observation: str
    nonlinearity: str
    bin_width: float
    smooth_bins: float
    gain: np.ndarray
    offset: np.ndarray
    rate_floor: float = 0.1

    def readout_target(self, data: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Return u: the observations on the scale of the readout g φ(x) + c.

        It depends on neither the gain nor the offset.
        """
        if self.observation != "poisson":
            return data
        rate = smooth_counts(data, mask, self.smooth_bins) / self.bin_width
        return softplus_inverse(np.maximum(rate, self.rate_floor, out=rate))

    def potentials(
        self, data: np.ndarray, mask: np.ndarray, *, target: np.ndarray | None = None
    ) -> np.ndarray:
        """Return the target potentials x̂, shape like ``data``.

        ``target``, the data's :meth:`readout_target` when already computed, saves computing it.
        """
        if target is None:
            target = self.readout_target(data, mask)
        p = (target - self.offset) / self.gain
        if self.nonlinearity == "tanh":
            lim = 1.0 - 1e-6 if np.all(self.gain == 1.0) else _TANH_CLIP[self.observation]
            return np.arctanh(np.clip(p, -lim, lim))
        p = np.maximum(p, 0.05)
        return p if self.nonlinearity == "relu" else softplus_inverse(p)

    def first_potentials(self, data: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The target potentials of each trial's first bin, shape (n_trials, n_units).

        Those of :meth:`potentials`, computed from the bins the smoothing kernel reaches from
        the first one (its radius is that of ``gaussian_filter1d``) rather than whole trials.
        """
        reach = 1
        if self.observation == "poisson" and self.smooth_bins > 0:
            reach = int(_TRUNCATE * self.smooth_bins + 0.5) + 1
        return self.potentials(data[:, :reach], mask[:, :reach])[:, 0]


def fit_linearizer(
    data: np.ndarray,
    mask: np.ndarray,
    *,
    observation: str,
    nonlinearity: str,
    bin_width: float,
    smooth_bins: float,
    target: np.ndarray | None = None,
) -> Linearizer:
    """Choose the readout gain/offset from the per-unit spread of the (training) data.

    ``target``, the data's :meth:`Linearizer.readout_target` when already computed, saves
    computing it.
    """
    base = Linearizer(observation, nonlinearity, bin_width, smooth_bins, np.ones(1), np.zeros(1))
    if target is None:
        target = base.readout_target(data, mask)
    u = target[mask]  # (n_obs, n_units)
    mean, std = u.mean(axis=0), np.maximum(u.std(axis=0), 1e-6)
    if observation == "gaussian" and nonlinearity == "tanh" and np.all(np.abs(u) < 1.0):
        gain, offset = np.ones_like(mean), np.zeros_like(mean)  # data already in tanh's range
    elif nonlinearity == "tanh":
        # Signal spread: for spikes, remove the Poisson variance left after smoothing (a Gaussian
        # kernel of σ bins leaves λ/(2√π σ) per bin², λ in counts per bin). A saturating tanh
        # has a standard deviation of about 0.8, hence the gain.
        var = std**2
        if observation == "poisson" and smooth_bins > 0:
            counts = data[mask].mean(axis=0)
            var = var - counts / (2 * np.sqrt(np.pi) * smooth_bins) / bin_width**2
        gain = np.sqrt(np.maximum(var, 0.1 * std**2)) / 0.8
        offset = mean
    else:
        gain, offset = std, mean - 1.5 * std
    return Linearizer(observation, nonlinearity, bin_width, smooth_bins, gain, offset)


def initial_loadings(
    potentials: np.ndarray,
    mask: np.ndarray,
    inputs: np.ndarray | None,
    *,
    rank: int,
    alpha: float,
    nonlinearity: str,
    rng: np.random.Generator,
    ridge: float = 1e-3,
    max_rows: int = 20000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA / regression initialisation of (M, K, B, d) and per-trial κ(0).

    Parameters
    ----------
    potentials : ndarray of shape (n_trials, n_time, n_units)
        Target potentials x̂ of the training trials.
    mask : ndarray of shape (n_trials, n_time), bool
        Observed bins.
    inputs : ndarray of shape (n_trials, n_time, n_inputs) or None
        u(t).
    rank : int
        R.
    alpha : float
        Δt/τ.
    nonlinearity : str
        φ.
    rng : numpy Generator
        Picks the subsample of bins used for the PCA and the regression.
    ridge : float, default: 1e-3
        Ridge strength of the K regression, relative to the mean diagonal of ΦᵀΦ.
    max_rows : int, default: 20000
        At most this many bins (PCA) and bin pairs (regression) are used.

    Returns
    -------
    M, K : ndarray of shape (n_units, rank)
    B : ndarray of shape (n_units, n_inputs)
    d : ndarray of shape (n_units,)
    initial : ndarray of shape (n_trials, rank)
        κ at each trial's first bin.
    """
    n_trials, n_time, n_units = potentials.shape
    n_inputs = 0 if inputs is None else inputs.shape[2]
    obs = np.argwhere(mask)  # (n_obs, 2) trial and bin of every observed bin
    pick = np.sort(rng.choice(obs.shape[0], min(obs.shape[0], max_rows), replace=False))
    X = potentials[obs[pick, 0], obs[pick, 1]]
    design = np.ones((X.shape[0], 1 + n_inputs))
    if inputs is not None:
        design[:, 1:] = inputs[obs[pick, 0], obs[pick, 1]]
    coef, *_ = np.linalg.lstsq(design, X, rcond=None)  # (1 + n_inputs, n_units)
    d, B = coef[0], coef[1:].T
    sub = X - design @ coef
    cov = sub.T @ sub / sub.shape[0]
    evals, evecs = np.linalg.eigh(cov)
    V = evecs[:, ::-1][:, :rank]
    V = V * np.where(V[np.argmax(np.abs(V), axis=0), np.arange(rank)] < 0, -1.0, 1.0)
    scale = np.sqrt(np.maximum(evals[::-1][:rank], 1e-12))
    M = V * scale  # x ≈ κ Mᵀ with κ white
    kappa = (potentials @ V - d @ V) / scale  # (n_trials, n_time, rank)
    if inputs is not None:
        kappa = kappa - (inputs @ (B.T @ V)) / scale
    # K from the latent updates over consecutive observed bins.
    pairs = np.argwhere(mask[:, 1:] & mask[:, :-1])  # (trial, t) with t and t + 1 observed
    pick = np.sort(rng.choice(pairs.shape[0], min(pairs.shape[0], max_rows), replace=False))
    trial, t = pairs[pick, 0], pairs[pick, 1]
    now, nxt = kappa[trial, t], kappa[trial, t + 1]
    x_now = now @ M.T + d
    if inputs is not None:
        x_now = x_now + inputs[trial, t] @ B.T
    phi_now = phi(x_now, nonlinearity)
    K = refit_output_loadings(
        *(torch.from_numpy(np.ascontiguousarray(a)) for a in (now, nxt, phi_now)),
        alpha=alpha,
        ridge=ridge,
    ).numpy()
    return M, K, B, d, kappa[:, 0]


def encode_initial(
    potentials0: np.ndarray, M: np.ndarray, B: np.ndarray, d: np.ndarray, inputs0=None
) -> np.ndarray:
    """Least-squares κ(0) from first-bin target potentials: x̂(0) ≈ M κ + B u(0) + d.

    Parameters
    ----------
    potentials0 : ndarray of shape (n_trials, n_units)
        Target potentials at each trial's first bin.
    M : ndarray of shape (n_units, rank)
    B : ndarray of shape (n_units, n_inputs)
    d : ndarray of shape (n_units,)
    inputs0 : ndarray of shape (n_trials, n_inputs), optional

    Returns
    -------
    ndarray of shape (n_trials, rank)
    """
    target = potentials0 - d
    if inputs0 is not None and B.shape[1] > 0:
        target = target - inputs0 @ B.T
    sol, *_ = np.linalg.lstsq(M, target.T, rcond=None)
    return sol.T
