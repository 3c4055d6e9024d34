"""Curvature of the low-rank RNN likelihood at a fit: the pieces of its Gauss–Newton matrix.

Everything here is linearised at a fit, in float64. The model maps the parameters
θ = (M, K, B, d), the per-trial initial states κ(0) and the readout (gain g, offset c) to the
observation parameters

    x_i(t) = m_i·κ(t) + b_i·u(t) + d_i,   κ(t+1) = (1−α) κ(t) + (α/N) Σ_i k_i φ(x_i(t)),
    η_i(t) = g_i φ(x_i(t)) + c_i.

The Fisher information of one observation with respect to η is ``w = 1/σ_i²`` (Gaussian, calcium)
or ``w = Δt σ(η)² / softplus(η)`` (Poisson counts of rate Δt·softplus(η)); it is zero outside the
recording's mask. The Fisher / generalised Gauss–Newton (GGN) matrix is ``JᵀWJ`` with J the
Jacobian of η.

Structure used throughout: a tangent of unit i's own parameters moves η_i *directly*, and every
tangent of θ moves the shared latent trajectory, ``δκ(t+1) = A(t) δκ(t) + f(t)`` with the
latent forcing ``f(t) = (α/N) [Kᵀ (φ'(t) ⊙ δx(t)) + δKᵀ φ(t)]`` (δx the direct part of the
potentials' tangent), which moves every unit through ``ψ_i m_i·δκ(t)`` (ψ_i = g_i φ'_i). So

    J = D + L̃,   D block-diagonal over units,   L̃ = (η-tangent of δκ) ∘ (propagation) ∘ C,

where C maps θ to the forcing. With ``G(t) = Mᵀ diag(w ψ²) M`` the Fisher weight carried onto
κ(t), the latent-mediated part ``L̃ᵀWL̃`` only needs products in latent space plus products with
the state matrices Φ and Φ' (C and Cᵀ), and ``DᵀWL̃`` only needs weighted sums of ``m_i·δκ``.

Nuisance parameters (documented convention):

- the per-trial initial states κ(0) have a flat prior and are **profiled out**: the matrix over
  the remaining parameters is the Schur complement over κ(0) (one R×R block per trial). This
  makes the R² gauge directions (δM = −M E, δK = K Eᵀ, δκ = E κ) exact null vectors;
- the readout (gain, offset) is either **marginalised** (it joins each unit's parameters with the
  same Gaussian prior as θ and is integrated out) or **held** at its fitted value;
- the observation noise is orthogonal to the mean parameters in the Fisher metric (Gaussian) or
  absent (Poisson), so holding it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data import LoadingDimsWithInputs, LowRankFit, ParameterBlock, Recording
from ..model.rollout import activation, activation_slope, latent_rollout

__all__ = [
    "Linearisation",
    "linearise",
    "parameter_layout",
    "flatten_parameters",
    "unit_indices",
    "gauge_directions",
    "direct_blocks",
    "initial_state_tangents",
    "initial_state_cross",
    "latent_forcing",
    "latent_forcing_adjoint",
    "propagate",
    "backpropagate",
    "gram_roots",
    "direct_cross",
    "latent_gram",
    "dense_joint_fisher",
]

_DTYPE = torch.float64
_CHUNK = 2**22  # entries of the largest per-chunk temporary


@dataclass(frozen=True)
class Linearisation(LoadingDimsWithInputs):
    """The quantities of a fit that every curvature product needs (float64 tensors).

    Attributes
    ----------
    M, K : Tensor of shape (n_units, rank)
        Loadings.
    B : Tensor of shape (n_units, n_inputs)
        Input weights (n_inputs may be 0).
    d : Tensor of shape (n_units,)
        Biases.
    gain : Tensor of shape (n_units,)
        Readout gains g.
    alpha : float
        Euler step Δt/τ.
    latents : Tensor of shape (n_trials, n_time, rank)
        κ(t) rolled out from the fit's κ(0).
    inputs : Tensor of shape (n_trials, n_time, n_inputs)
        u(t) (zero-width when there are no inputs).
    phi, slope : Tensor of shape (n_trials, n_time, n_units)
        φ(x) and φ'(x) along the rollout.
    eta_weight : Tensor of shape (n_trials, n_time, n_units)
        w, the Fisher weight of η (zero outside the mask).
    transition : Tensor of shape (n_trials, n_time, rank, rank)
        ``A(t) = ∂κ(t+1)/∂κ(t) = (1−α) I + (α/N) Kᵀ diag(φ'(x(t))) M``.
    gram : Tensor of shape (n_trials, n_time, rank, rank)
        ``G(t) = Mᵀ diag(w ψ²) M`` with ψ = g φ'(x): the Fisher weight carried onto κ(t).
    """

    M: Tensor
    K: Tensor
    B: Tensor
    d: Tensor
    gain: Tensor
    alpha: float
    latents: Tensor
    inputs: Tensor
    phi: Tensor
    slope: Tensor
    eta_weight: Tensor
    transition: Tensor
    gram: Tensor

    @property
    def n_params(self) -> int:
        """Length of θ = (M, K, B, d)."""
        return self.n_units * (2 * self.rank + self.n_inputs + 1)

    def trial_chunks(self, width: int) -> list[slice]:
        """Slices of trials such that one chunk times ``width`` stays under a fixed size."""
        n_trials, n_time, n_units = self.phi.shape
        size = max(1, _CHUNK // max(1, n_time * max(n_units, width)))
        return [slice(i, i + size) for i in range(0, n_trials, size)]

    def features(self, trials: slice) -> Tensor:
        """ẽ(t) = (κ(t), u(t), 1) for a chunk of trials, shape (n_c, n_time, R + n_inputs + 1)."""
        lat, inp = self.latents[trials], self.inputs[trials]
        return torch.cat([lat, inp, torch.ones_like(lat[..., :1])], dim=-1)

    def weights(self, trials: slice) -> tuple[Tensor, Tensor]:
        """ω = w ψ² and ρ = w ψ (ψ = g φ') for a chunk of trials, each (n_c, n_time, n_units)."""
        psi = self.gain * self.slope[trials]
        rho = self.eta_weight[trials] * psi
        return rho * psi, rho


def linearise(fit: LowRankFit, recording: Recording) -> Linearisation:
    """Roll a fit out from its κ(0) and collect φ, φ' and the Fisher weights (float64).

    Parameters
    ----------
    fit : LowRankFit
        The fit; its κ(0) (``fit.latents[:, 0]``) seeds the rollout.
    recording : Recording
        The recording it was fitted to (mask and inputs are used; the Fisher does not depend
        on the observed values).

    Returns
    -------
    Linearisation
        The cached quantities.

    Raises
    ------
    ValueError
        When the fit and the recording disagree in shape, or the observation model has an
        indicator kernel (``calcium_decay > 0``), which is not supported.
    """
    n_trials, n_time, n_units = recording.data.shape
    if fit.n_units != n_units or fit.latents.shape[:2] != (n_trials, n_time):
        raise ValueError(
            f"fit and recording disagree: the fit has {fit.n_units} units and latents of shape "
            f"{fit.latents.shape[:2]} (n_trials, n_time); the recording has {n_units} units and "
            f"{(n_trials, n_time)}."
        )
    if fit.B.shape[1] != recording.n_inputs:
        raise ValueError(
            f"fit.B has {fit.B.shape[1]} input columns but the recording has "
            f"{recording.n_inputs} input channels."
        )
    if fit.calcium_decay > 0:
        raise ValueError(
            "The Laplace posterior supports calcium observations without an indicator kernel "
            f"only (calcium_decay = 0); got calcium_decay={fit.calcium_decay}."
        )
    M, K, B, d = (torch.as_tensor(a, dtype=_DTYPE) for a in (fit.M, fit.K, fit.B, fit.d))
    if recording.inputs is None:
        inputs = torch.zeros(n_trials, n_time, 0, dtype=_DTYPE)
    else:
        inputs = torch.as_tensor(recording.inputs, dtype=_DTYPE)
    initial = torch.as_tensor(fit.latents[:, 0], dtype=_DTYPE)
    gain = torch.as_tensor(fit.readout_gain, dtype=_DTYPE)
    with torch.no_grad():
        latents, x = latent_rollout(
            M, K, B, d, initial, n_time, alpha=fit.alpha, nonlinearity=fit.nonlinearity,
            inputs=inputs,
        )  # fmt: skip
        phi = activation(x, fit.nonlinearity)
        slope = activation_slope(phi, fit.nonlinearity)
        del x
        mask = torch.as_tensor(recording.mask, dtype=_DTYPE)
        rank = M.shape[1]
        outer_km = (K[:, :, None] * M[:, None, :]).reshape(n_units, rank * rank)
        outer_mm = (M[:, :, None] * M[:, None, :]).reshape(n_units, rank * rank)
        transition = torch.empty(n_trials, n_time, rank, rank, dtype=_DTYPE)
        gram = torch.empty_like(transition)
        eta_weight = torch.empty_like(phi)
        offset = torch.as_tensor(fit.readout_offset, dtype=_DTYPE)
        inv_var = 1.0 / torch.as_tensor(fit.noise_std, dtype=_DTYPE) ** 2
        step = max(1, _CHUNK // (n_time * n_units))
        for start in range(0, n_trials, step):  # trial chunks keep the temporaries small
            tr = slice(start, start + step)
            if fit.observation == "poisson":
                eta = gain * phi[tr] + offset
                soft = torch.nn.functional.softplus(eta).clamp_min_(torch.finfo(_DTYPE).tiny)
                w = eta.sigmoid_().square_().div_(soft).mul_(fit.bin_width)
            else:
                w = inv_var.expand_as(phi[tr]).clone()
            eta_weight[tr] = w.mul_(mask[tr, :, None])
            shape = (-1, n_time, rank, rank)
            transition[tr] = (slope[tr].reshape(-1, n_units) @ outer_km).reshape(shape)
            omega = (gain * slope[tr]).square_().mul_(eta_weight[tr])
            gram[tr] = (omega.reshape(-1, n_units) @ outer_mm).reshape(shape)
        transition.mul_(fit.alpha / n_units).add_((1 - fit.alpha) * torch.eye(rank, dtype=_DTYPE))
    return Linearisation(
        M=M, K=K, B=B, d=d, gain=gain, alpha=float(fit.alpha), latents=latents, inputs=inputs,
        phi=phi, slope=slope, eta_weight=eta_weight, transition=transition, gram=gram,
    )  # fmt: skip


def parameter_layout(n_units: int, rank: int, n_inputs: int) -> tuple[ParameterBlock, ...]:
    """Return the layout of θ = (M, K, B, d): blocks of shapes (N, R), (N, R), (N, D), (N,)."""
    return (
        ParameterBlock("M", (n_units, rank)),
        ParameterBlock("K", (n_units, rank)),
        ParameterBlock("B", (n_units, n_inputs)),
        ParameterBlock("d", (n_units,)),
    )


def flatten_parameters(M, K, B, d) -> np.ndarray:
    """Concatenate (M, K, B, d), each in C order, into θ of shape (n_params,)."""
    return np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in (M, K, B, d)])


def unit_indices(n_units: int, rank: int, n_inputs: int) -> np.ndarray:
    """Return, per unit, the positions in θ of its parameters (m_i, k_i, b_i, d_i).

    Returns
    -------
    ndarray of shape (n_units, 2·rank + n_inputs + 1), int
        Row i lists unit i's entries in the order m_i (R), k_i (R), b_i (D), d_i (1).
    """
    i = np.arange(n_units)[:, None]
    r = np.arange(rank)[None]
    c = np.arange(n_inputs)[None]
    nr = n_units * rank
    return np.hstack(
        [
            i * rank + r,
            nr + i * rank + r,
            2 * nr + i * n_inputs + c,
            2 * nr + n_units * n_inputs + i,
        ]
    ).astype(np.int64)


def gauge_directions(M: np.ndarray, K: np.ndarray, n_inputs: int) -> np.ndarray:
    """Return the R² gauge directions of θ, one per generator E = e_a e_bᵀ.

    Column ``a·R + b`` is the θ-tangent (δM = −M E, δK = K Eᵀ, δB = 0, δd = 0) of the
    transformation κ → (I + εE) κ, which leaves every trajectory unchanged.

    Parameters
    ----------
    M, K : ndarray of shape (n_units, rank)
        Loadings.
    n_inputs : int
        Number of input columns of B.

    Returns
    -------
    ndarray of shape (n_params, rank²)
        Unnormalised directions (not orthogonalised).
    """
    M = np.asarray(M, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    n_units, rank = M.shape
    cols = []
    for a in range(rank):
        for b in range(rank):
            E = np.zeros((rank, rank))
            E[a, b] = 1.0
            zero_b, zero_d = np.zeros((n_units, n_inputs)), np.zeros(n_units)
            cols.append(flatten_parameters(-M @ E, K @ E.T, zero_b, zero_d))
    return np.stack(cols, axis=1)


def _unit_width(lin: Linearisation, readout: bool) -> int:
    return 2 * lin.rank + lin.n_inputs + 1 + (2 if readout else 0)


def direct_blocks(lin: Linearisation, *, readout: bool) -> Tensor:
    """Return ``DᵢᵀWDᵢ``, the per-unit Fisher of the direct derivatives of η_i.

    Per unit the parameters are ordered (m_i, k_i, b_i, d_i[, g_i, c_i]); the direct derivative
    of η_i(t) is (ψ κ(t), 0, ψ u(t), ψ[, φ_i(t), 1]) with ψ = g_i φ'_i(t).

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    readout : bool
        Append the readout gain and offset to each unit's parameters.

    Returns
    -------
    Tensor of shape (n_units, p, p)
        Symmetric positive semi-definite blocks, p = 2R + D + 1 (+ 2 with the readout).
    """
    N, R = lin.n_units, lin.rank
    q = R + lin.n_inputs + 1
    dir_idx = torch.cat([torch.arange(R), torch.arange(2 * R, 2 * R + q - R)])
    p = _unit_width(lin, readout)
    out = lin.M.new_zeros(N, p, p)
    for tr in lin.trial_chunks(q * q):
        e = lin.features(tr).reshape(-1, q)
        omega, rho = (a.reshape(-1, N) for a in lin.weights(tr))
        ee = omega.T @ (e[:, :, None] * e[:, None, :]).reshape(-1, q * q)
        out[:, dir_idx[:, None], dir_idx[None, :]] += ee.reshape(N, q, q)
        if readout:
            w, phi = lin.eta_weight[tr].reshape(-1, N), lin.phi[tr].reshape(-1, N)
            gain_cross = (rho * phi).T @ e  # Σ w ψ φ ẽ
            offset_cross = rho.T @ e
            out[:, dir_idx, p - 2] += gain_cross
            out[:, p - 2, dir_idx] += gain_cross
            out[:, dir_idx, p - 1] += offset_cross
            out[:, p - 1, dir_idx] += offset_cross
            out[:, p - 2, p - 2] += (w * phi**2).sum(0)
            out[:, p - 2, p - 1] += (w * phi).sum(0)
            out[:, p - 1, p - 2] += (w * phi).sum(0)
            out[:, p - 1, p - 1] += w.sum(0)
    return out


def propagate(lin: Linearisation, forcing: Tensor, initial: Tensor | None = None) -> Tensor:
    """Return latent tangents ``δκ(t+1) = A(t) δκ(t) + f(t)``, δκ(0) = ``initial`` (or 0).

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    forcing : Tensor of shape (n_trials, n_time, rank, n_vec)
        f(t); the last time step is not used.
    initial : Tensor of shape (n_trials, rank, n_vec), optional
        δκ(0).

    Returns
    -------
    Tensor of shape (n_trials, n_time, rank, n_vec)
        δκ(t).
    """
    n_trials, n_time = forcing.shape[:2]
    out = torch.empty_like(forcing)
    out[:, 0] = 0.0 if initial is None else initial
    for t in range(n_time - 1):
        A = lin.transition[:, t].to(forcing.dtype)
        out[:, t + 1] = torch.baddbmm(forcing[:, t], A, out[:, t])
    return out


def backpropagate(lin: Linearisation, cotangent: Tensor) -> Tensor:
    """Adjoint of :func:`propagate`: ``μ(t) = c(t) + A(t)ᵀ μ(t+1)``.

    ``μ(t+1)`` is the cotangent of the forcing f(t) and ``μ(0)`` that of δκ(0).

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    cotangent : Tensor of shape (n_trials, n_time, rank, n_vec)
        c(t), cotangents of δκ(t).

    Returns
    -------
    Tensor of shape (n_trials, n_time, rank, n_vec)
        μ(t).
    """
    n_time = cotangent.shape[1]
    out = torch.empty_like(cotangent)
    out[:, -1] = cotangent[:, -1]
    for t in reversed(range(n_time - 1)):
        A = lin.transition[:, t].transpose(1, 2).to(cotangent.dtype)
        out[:, t] = torch.baddbmm(cotangent[:, t], A, out[:, t + 1])
    return out


def gram_roots(lin: Linearisation) -> Tensor:
    """Return L(t) with ``G(t) = L(t) L(t)ᵀ``, shape (n_trials, n_time, rank, rank)."""
    evals, evecs = torch.linalg.eigh(lin.gram)
    return evecs * evals.clamp_min(0.0).sqrt()[..., None, :]


def _split(V: Tensor, N: int, R: int, D: int):
    nr, nd = N * R, N * D
    b = V.shape[1]
    return (
        V[:nr].reshape(N, R, b),
        V[nr : 2 * nr].reshape(N, R, b),
        V[2 * nr : 2 * nr + nd].reshape(N, D, b),
        V[2 * nr + nd :].reshape(N, 1, b),
    )


def latent_forcing(lin: Linearisation, V: Tensor) -> Tensor:
    """Return the latent forcing ``f = C v`` of θ-directions (columns of V).

    ``f(t) = (α/N) [Σ_j k_j φ'_j(t) (ẽ(t)·δθ_j) + Σ_j φ_j(t) δk_j]`` with ẽ = (κ, u, 1) acting
    on (δm_j, δb_j, δd_j). Computed with two products with the state matrices per trial chunk,
    in the dtype of V.

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    V : Tensor of shape (n_params, n_vec)
        θ-directions in the layout of :func:`parameter_layout`.

    Returns
    -------
    Tensor of shape (n_trials, n_time, rank, n_vec)
        f(t) (the last time step is computed but unused by :func:`propagate`).
    """
    n_trials, n_time, N = lin.phi.shape
    R, D = lin.rank, lin.n_inputs
    q, b, dtype = R + D + 1, V.shape[1], V.dtype
    dM, dK, dB, dd = _split(V, N, R, D)
    theta_dir = torch.cat([dM, dB, dd], dim=1)  # (N, q, b)
    K = lin.K.to(dtype)
    Z = (K[:, :, None, None] * theta_dir[:, None]).reshape(N, R * q * b)
    dK = dK.reshape(N, R * b)
    c = lin.alpha / N
    out = V.new_empty(n_trials, n_time, R, b)
    for tr in lin.trial_chunks(R * q * b):
        e = lin.features(tr).to(dtype).reshape(-1, q)
        slope = lin.slope[tr].to(dtype).reshape(-1, N)
        phi = lin.phi[tr].to(dtype).reshape(-1, N)
        direct = (slope @ Z).reshape(-1, R, q, b)
        f = torch.einsum("srqb,sq->srb", direct, e) + (phi @ dK).reshape(-1, R, b)
        out[tr] = (c * f).reshape(-1, n_time, R, b)
    return out


def latent_forcing_adjoint(lin: Linearisation, cotangent: Tensor) -> Tensor:
    """Return ``Cᵀ μ``: pull cotangents of the forcing back onto θ (adjoint of
    :func:`latent_forcing`).

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    cotangent : Tensor of shape (n_trials, n_time, rank, n_vec)
        μ̄(t), the cotangent of f(t) (the last time step must be zero or is ignored).

    Returns
    -------
    Tensor of shape (n_params, n_vec)
        In the layout of :func:`parameter_layout`, in the dtype of ``cotangent``.
    """
    n_trials, n_time, N = lin.phi.shape
    R, D = lin.rank, lin.n_inputs
    q, b, dtype = R + D + 1, cotangent.shape[-1], cotangent.dtype
    grad_dir = cotangent.new_zeros(N, q * R * b)
    grad_k = cotangent.new_zeros(N, R * b)
    for tr in lin.trial_chunks(R * q * b):
        mu = cotangent[tr].clone()
        mu[:, -1] = 0.0
        mu = mu.reshape(-1, R, b)
        e = lin.features(tr).to(dtype).reshape(-1, q)
        slope = lin.slope[tr].to(dtype).reshape(-1, N)
        phi = lin.phi[tr].to(dtype).reshape(-1, N)
        grad_dir += slope.T @ (e[:, :, None, None] * mu[:, None]).reshape(-1, q * R * b)
        grad_k += phi.T @ mu.reshape(-1, R * b)
    c = lin.alpha / N
    K = lin.K.to(dtype)
    theta_dir = c * torch.einsum("jqrb,jr->jqb", grad_dir.reshape(N, q, R, b), K)
    return torch.cat(
        [
            theta_dir[:, :R].reshape(N * R, b),
            c * grad_k.reshape(N * R, b),
            theta_dir[:, R : R + D].reshape(N * D, b),
            theta_dir[:, -1],
        ]
    )


def direct_cross(lin: Linearisation, tangents: Tensor, *, readout: bool) -> Tensor:
    """Return ``DᵀW (ψ m·δκ)``: the Fisher cross terms of the direct derivatives with latent
    tangents.

    Entry (i, a, v) is ``Σ_t w_i(t) ∂_a η_i(t) ψ_i(t) m_i·δκ_v(t)`` with ∂_a η_i the direct
    derivative of :func:`direct_blocks`.

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    tangents : Tensor of shape (n_trials, n_time, rank, n_vec)
        Latent tangents δκ_v(t).
    readout : bool
        Include the readout gain and offset rows.

    Returns
    -------
    Tensor of shape (n_units, p, n_vec)
        Per-unit rows in the order of :func:`direct_blocks` (the k_i rows are zero).
    """
    N, R, D = lin.n_units, lin.rank, lin.n_inputs
    q, b = R + D + 1, tangents.shape[-1]
    p = _unit_width(lin, readout)
    rows = (q + (2 if readout else 0)) * R * b
    acc = tangents.new_zeros(N, rows)
    for tr in lin.trial_chunks(rows):
        tau = tangents[tr].reshape(-1, R * b)
        e = lin.features(tr).reshape(-1, q)
        omega, rho = (a.reshape(-1, N) for a in lin.weights(tr))
        parts = [omega.T @ (e[:, :, None] * tau[:, None, :]).reshape(-1, q * R * b)]
        if readout:
            phi = lin.phi[tr].reshape(-1, N)
            parts += [(rho * phi).T @ tau, rho.T @ tau]
        acc += torch.cat(parts, dim=1)
    acc = torch.einsum("iarb,ir->iab", acc.reshape(N, -1, R, b), lin.M)
    out = tangents.new_zeros(N, p, b)
    out[:, :R] = acc[:, :R]
    out[:, 2 * R : 2 * R + D + 1] = acc[:, R:q]
    if readout:
        out[:, -2:] = acc[:, q:]
    return out


def latent_gram(
    lin: Linearisation, left: Tensor, right: Tensor, trials: slice = slice(None)
) -> Tensor:
    """Return ``Σ_t left_n(t)ᵀ G(t) right_n(t)`` for each trial n of ``trials``.

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    left : Tensor of shape (n_c, n_time, rank, a)
    right : Tensor of shape (n_c, n_time, rank, b)
    trials : slice, default: all
        The trials ``left`` and ``right`` belong to.

    Returns
    -------
    Tensor of shape (n_c, a, b)
        One matrix per trial.
    """
    return torch.einsum("ntra,ntrs,ntsb->nab", left, lin.gram[trials], right)


def initial_state_tangents(lin: Linearisation) -> Tensor:
    """Return ``Q(t) = ∂κ(t)/∂κ(0)`` per trial, shape (n_trials, n_time, rank, rank)."""
    n_trials, n_time, _ = lin.latents.shape
    R = lin.rank
    zero = lin.latents.new_zeros(n_trials, n_time, R, R)
    eye = torch.eye(R, dtype=_DTYPE).expand(n_trials, R, R)
    return propagate(lin, zero, eye)


def initial_state_cross(lin: Linearisation, Q: Tensor, *, readout: bool) -> Tensor:
    """Return the Fisher cross terms of κₙ(0) with the direct derivatives of every unit.

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    Q : Tensor of shape (n_trials, n_time, rank, rank)
        From :func:`initial_state_tangents`.
    readout : bool
        Include the readout rows.

    Returns
    -------
    Tensor of shape (n_trials, rank, n_units, p)
        Entry (n, c, i, a) is the cross term of κₙ(0)_c with unit i's parameter a.
    """
    n_trials, n_time, N = lin.phi.shape
    R, D = lin.rank, lin.n_inputs
    q = R + D + 1
    p = _unit_width(lin, readout)
    out = lin.M.new_zeros(n_trials, R, N, p)
    for tr in lin.trial_chunks(R * (q + 2)):
        n = Q[tr].shape[0]
        mq = Q[tr].transpose(2, 3) @ lin.M.T  # (n, T, R, N): m_i·Q(t)e_c
        omega, rho = lin.weights(tr)
        # Σ_t m_i·Q(t)e_c · ω_i(t) ẽ_a(t): one batched product per trial.
        left = (mq * omega[:, :, None, :]).reshape(n, n_time, R * N).transpose(1, 2)
        part = torch.bmm(left, lin.features(tr)).reshape(n, R, N, q)
        out[tr, :, :, :R] = part[..., :R]
        out[tr, :, :, 2 * R : 2 * R + D + 1] = part[..., R:]
        if readout:
            rho_mq = mq * rho[:, :, None, :]
            out[tr, :, :, -2] = (rho_mq * lin.phi[tr, :, None, :]).sum(1)
            out[tr, :, :, -1] = rho_mq.sum(1)
    return out


def _sensitivities(lin: Linearisation, trials: slice) -> Tensor:
    """∂κ(t)/∂θ_j[a] for a chunk of trials, shape (n_c, n_time, rank, n_units, 2R + D + 1)."""
    n_time, N = lin.phi.shape[1:]
    R, D = lin.rank, lin.n_inputs
    q, p = R + D + 1, 2 * R + D + 1
    c = lin.alpha / N
    e = lin.features(trials)
    n = e.shape[0]
    S = e.new_zeros(n, n_time, R, N, p)
    dir_idx = torch.cat([torch.arange(R), torch.arange(2 * R, p)])
    for t in range(n_time - 1):
        forcing = e.new_zeros(n, R, N, p)
        ks = c * lin.slope[trials, t, None, :] * lin.K.T  # (n, R, N)
        forcing[..., dir_idx] = ks[..., None] * e[:, t, None, None, :q]
        for r in range(R):
            forcing[:, r, :, R + r] = c * lin.phi[trials, t]
        S[:, t + 1] = (lin.transition[trials, t] @ S[:, t].reshape(n, R, N * p)).reshape(
            n, R, N, p
        ) + forcing
    return S


def dense_joint_fisher(lin: Linearisation, *, readout: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Return the exact Fisher matrix over (θ[, readout]) and κ(0), before profiling.

    The sensitivities ``S(t) = ∂κ(t)/∂θ`` of every parameter are propagated per trial chunk;
    cost O(n_trials · n_time · (rank · P² + n_units · p · P)) for P = len(θ).

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    readout : bool
        Append the readout gain and offset of every unit.

    Returns
    -------
    F_units : Tensor of shape (n_units · p, n_units · p)
        Over the per-unit parameters, unit by unit in the order of :func:`direct_blocks`.
    cross : Tensor of shape (n_trials, rank, n_units · p)
        Cross terms with κₙ(0).
    f_kk : Tensor of shape (n_trials, rank, rank)
        Fisher of κₙ(0).
    """
    n_trials, n_time, N = lin.phi.shape
    R, D = lin.rank, lin.n_inputs
    p0 = 2 * R + D + 1
    p = _unit_width(lin, readout)
    P = N * p0
    F = lin.M.new_zeros(N, p, N, p)
    idx = torch.arange(N)
    F[idx, :, idx, :] = direct_blocks(lin, readout=readout)
    Q = initial_state_tangents(lin)
    cross = initial_state_cross(lin, Q, readout=readout)
    roots = gram_roots(lin)
    size = max(1, _CHUNK // (n_time * R * P))
    for start in range(0, n_trials, size):
        tr = slice(start, start + size)
        S = _sensitivities(lin, tr).reshape(-1, n_time, R, P)
        n = S.shape[0]
        Z = (roots[tr].transpose(-1, -2) @ S).reshape(-1, P)
        F[:, :p0, :, :p0] += (Z.T @ Z).reshape(N, p0, N, p0)
        cross[tr, :, :, :p0] += latent_gram(lin, Q[tr], S, tr).reshape(n, R, N, p0)
        # Direct rows against every sensitivity: Σ_t w ∂η_i ψ_i m_i·S(t).
        y = direct_cross_dense(lin, S, tr, readout=readout)  # (N, p, P)
        y = y.reshape(N, p, N, p0)
        F[:, :, :, :p0] += y
        F[:, :p0, :, :] += y.permute(2, 3, 0, 1)
    f_kk = latent_gram(lin, Q, Q)
    return F.reshape(N * p, N * p), cross.reshape(n_trials, R, N * p), f_kk


def direct_cross_dense(lin: Linearisation, S: Tensor, trials: slice, *, readout: bool) -> Tensor:
    """:func:`direct_cross` for the sensitivities of one trial chunk (all θ at once)."""
    N, R, D = lin.n_units, lin.rank, lin.n_inputs
    q = R + D + 1
    n, n_time, _, P = S.shape
    e = lin.features(trials).reshape(-1, q)
    omega, rho = (a.reshape(-1, N) for a in lin.weights(trials))
    cols = [omega[:, :, None] * e[:, None, :]]
    if readout:
        cols += [(rho * lin.phi[trials].reshape(-1, N))[:, :, None], rho[:, :, None]]
    weights = torch.cat(cols, dim=2)  # (S, N, q[+2])
    out = S.new_zeros(N, weights.shape[2], P)
    step = max(1, _CHUNK // (N * P))
    flat = S.reshape(-1, R, P)
    for s in range(0, flat.shape[0], step):
        ms = torch.einsum("ir,srP->isP", lin.M, flat[s : s + step])  # m_i·S(t)
        out += torch.bmm(weights[s : s + step].permute(1, 2, 0), ms)
    p = _unit_width(lin, readout)
    full = S.new_zeros(N, p, P)
    full[:, :R] = out[:, :R]
    full[:, 2 * R : 2 * R + D + 1] = out[:, R:q]
    if readout:
        full[:, -2:] = out[:, q:]
    return full
