"""The previous structured posterior ("blocks" before the exact coupling), kept for comparison.

This is the form the package used before its structured posterior carried the cross-unit
coupling: the exact per-unit diagonal blocks F_i of the Gauss–Newton matrix (κ(0) profiled, the
readout held) plus the leading eigenpairs (Λ, U) of the output-side block F_KK, with precision
``Π = P⊥(blockdiag(D_i + λI) + U Λ Uᵀ)P⊥ + λ P_G`` and ``D_i = F_i − (U Λ Uᵀ)_ii``. It ignores how
cross-unit changes of M compensate changes of K. ``bench_posterior.py`` runs it side by side
with the current forms; nothing in the package imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import Tensor

from nwb_lrconn.data import LowRankFit, Recording
from nwb_lrconn.inference.curvature import flatten_parameters
from nwb_lrconn.inference.degeneracy import assess_richness
from nwb_lrconn.model.rollout import activation, latent_rollout

_DTYPE = torch.float64
_DENSE_EIGEN_LIMIT = 2048


@dataclass(frozen=True)
class Linearisation:
    """The quantities of a fit that every curvature product needs (float64 tensors).

    Attributes
    ----------
    M, K : Tensor of shape (n_units, rank)
        Loadings.
    B : Tensor of shape (n_units, n_inputs)
        Input weights (n_inputs may be 0).
    d : Tensor of shape (n_units,)
        Biases.
    alpha : float
        Euler step Δt/τ.
    nonlinearity : str
        φ.
    latents : Tensor of shape (n_trials, n_time, rank)
        κ(t) rolled out from the fit's κ(0).
    inputs : Tensor of shape (n_trials, n_time, n_inputs)
        u(t) (zero-width when there are no inputs).
    phi, slope : Tensor of shape (n_trials, n_time, n_units)
        φ(x) and φ'(x) along the rollout.
    weight : Tensor of shape (n_trials, n_time, n_units)
        ω, the Fisher weight on the potentials (zero outside the mask).
    transition : Tensor of shape (n_trials, n_time, rank, rank)
        ``A(t) = ∂κ(t+1)/∂κ(t) = (1−α) I + (α/N) Kᵀ diag(φ'(x(t))) M``.
    gram : Tensor of shape (n_trials, n_time, rank, rank)
        ``G(t) = Mᵀ diag(ω(t)) M``, the Fisher weight carried back onto κ(t).
    """

    M: Tensor
    K: Tensor
    B: Tensor
    d: Tensor
    alpha: float
    nonlinearity: str
    latents: Tensor
    inputs: Tensor
    phi: Tensor
    slope: Tensor
    weight: Tensor
    transition: Tensor
    gram: Tensor

    @property
    def n_units(self) -> int:
        """N."""
        return self.M.shape[0]

    @property
    def rank(self) -> int:
        """R."""
        return self.M.shape[1]

    @property
    def n_inputs(self) -> int:
        """Number of input channels."""
        return self.B.shape[1]

    @property
    def n_params(self) -> int:
        """Length of θ = (M, K, B, d)."""
        return self.n_units * (2 * self.rank + self.n_inputs + 1)


def _slope(x: Tensor, y: Tensor, nonlinearity: str) -> Tensor:
    if nonlinearity == "tanh":
        return 1.0 - y**2
    if nonlinearity == "relu":
        return (x > 0).to(x.dtype)
    return torch.sigmoid(x)  # softplus


def linearise(fit: LowRankFit, recording: Recording) -> Linearisation:
    """Roll a fit out from its κ(0) and collect φ, φ' and the Fisher weights ω (float64).

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
    with torch.no_grad():
        latents, x = latent_rollout(
            M,
            K,
            B,
            d,
            initial,
            n_time,
            alpha=fit.alpha,
            nonlinearity=fit.nonlinearity,
            inputs=inputs,
        )
        phi = activation(x, fit.nonlinearity)
        slope = _slope(x, phi, fit.nonlinearity)
        del x
        gain = torch.as_tensor(fit.readout_gain, dtype=_DTYPE)
        if fit.observation == "poisson":
            eta = gain * phi + torch.as_tensor(fit.readout_offset, dtype=_DTYPE)
            soft = torch.nn.functional.softplus(eta).clamp_min(torch.finfo(_DTYPE).tiny)
            w = fit.bin_width * torch.sigmoid(eta) ** 2 / soft
            del eta, soft
        else:
            w = (1.0 / torch.as_tensor(fit.noise_std, dtype=_DTYPE) ** 2).expand_as(phi)
        mask = torch.as_tensor(recording.mask, dtype=_DTYPE)[:, :, None]
        weight = w * (gain * slope) ** 2 * mask
        n_trials, n_time, rank = latents.shape
        outer_km = (K[:, :, None] * M[:, None, :]).reshape(n_units, rank * rank)
        outer_mm = (M[:, :, None] * M[:, None, :]).reshape(n_units, rank * rank)
        shape = (n_trials, n_time, rank, rank)
        transition = (fit.alpha / n_units) * (slope.reshape(-1, n_units) @ outer_km).reshape(shape)
        transition += (1 - fit.alpha) * torch.eye(rank, dtype=_DTYPE)
        gram = (weight.reshape(-1, n_units) @ outer_mm).reshape(shape)
    return Linearisation(
        M=M,
        K=K,
        B=B,
        d=d,
        alpha=float(fit.alpha),
        nonlinearity=fit.nonlinearity,
        latents=latents,
        inputs=inputs,
        phi=phi,
        slope=slope,
        weight=weight,
        transition=transition,
        gram=gram,
    )


def _split(theta: Tensor, n_units: int, rank: int, n_inputs: int):
    nr, nd = n_units * rank, n_units * n_inputs
    M = theta[..., :nr].reshape(*theta.shape[:-1], n_units, rank)
    K = theta[..., nr : 2 * nr].reshape(*theta.shape[:-1], n_units, rank)
    B = theta[..., 2 * nr : 2 * nr + nd].reshape(*theta.shape[:-1], n_units, n_inputs)
    d = theta[..., 2 * nr + nd :]
    return M, K, B, d


def _flat(M: Tensor, K: Tensor, B: Tensor, d: Tensor) -> Tensor:
    lead = M.shape[:-2]
    return torch.cat(
        [M.reshape(*lead, -1), K.reshape(*lead, -1), B.reshape(*lead, -1), d.reshape(*lead, -1)],
        dim=-1,
    )


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


@dataclass(frozen=True)
class InitialStateTerms:
    """The per-trial blocks needed to profile κ(0) out of the Fisher matrix.

    Attributes
    ----------
    cross : Tensor of shape (n_trials, rank, n_params)
        ``F_κₙθ``: row a of trial n is the Fisher cross term of κₙ(0)_a with θ.
    pinv : Tensor of shape (n_trials, rank, rank)
        Pseudo-inverse of ``F_κₙκₙ``.
    """

    cross: Tensor
    pinv: Tensor


def initial_state_terms(lin: Linearisation, *, chunk_elements: int = 2**24) -> InitialStateTerms:
    """Compute the per-trial Fisher blocks of κ(0): ``F_κₙθ`` and ``F_κₙκₙ⁺``.

    The R tangents of κ(0) propagate as ``Q(t+1) = A(t) Q(t)``; their pull-back runs in latent
    space (``λ(t) = G(t) Q(t) + A(t)ᵀ λ(t+1)``) and is spread onto the units by batched matrix
    products, a chunk of trials at a time. Cost O(n_trials · n_time · n_units · rank²).

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    chunk_elements : int, default: 2**24
        Memory bound (entries) of the per-chunk temporaries.

    Returns
    -------
    InitialStateTerms
        The cross terms and the pseudo-inverted initial-state blocks.
    """
    n_trials, n_time, n_units = lin.phi.shape
    R, D = lin.rank, lin.n_inputs
    c = lin.alpha / n_units
    A, G = lin.transition, lin.gram
    Q = lin.latents.new_empty(n_trials, n_time, R, R)  # ∂κ(t)/∂κ(0), columns = tangents
    q = torch.eye(R, dtype=_DTYPE).expand(n_trials, R, R)
    for t in range(n_time):
        Q[:, t] = q
        q = A[:, t] @ q
    lam = lin.latents.new_zeros(n_trials, n_time, R, R)  # cotangent on κ(t), per column
    nxt = lin.latents.new_zeros(n_trials, R, R)
    for t in reversed(range(n_time)):
        nxt = G[:, t] @ Q[:, t] + (A[:, t].transpose(1, 2) @ nxt if t + 1 < n_time else 0.0)
        lam[:, t] = nxt
    lam_next = torch.zeros_like(lam)
    lam_next[:, :-1] = lam[:, 1:]  # λ(t+1), zero after the last bin
    chunk = max(1, chunk_elements // (n_time * R * n_units))
    parts = []
    for start in range(0, n_trials, chunk):
        sl = slice(start, start + chunk)
        n_c = lam[sl].shape[0]
        # c̃(t)[a, j] = ω_j(t) m_j·Q(t)e_a + (α/N) φ'_j(t) k_j·λ(t+1)e_a: (n_c, T, R_cols, N)
        ct = lin.weight[sl, :, None, :] * (Q[sl].transpose(2, 3) @ lin.M.T)
        ct += c * lin.slope[sl, :, None, :] * (lam_next[sl].transpose(2, 3) @ lin.K.T)
        ct = ct.permute(0, 2, 3, 1).reshape(n_c, R * n_units, n_time)  # (n_c, R_cols·N, T)
        gM = (ct @ lin.latents[sl]).reshape(n_c, R, n_units, R)
        gB = (ct @ lin.inputs[sl]).reshape(n_c, R, n_units, D)
        gd = ct.sum(-1).reshape(n_c, R, n_units)
        lam_flat = lam_next[sl].reshape(n_c, n_time, R * R)  # [r, a]
        gK = c * (lin.phi[sl].transpose(1, 2) @ lam_flat).reshape(n_c, n_units, R, R)
        gK = gK.permute(0, 3, 1, 2)  # (n_c, R_cols, N, R)
        parts.append(_flat(gM, gK, gB, gd))
    cross = torch.cat(parts)  # (n, R_cols, P)
    f_kk = lam[:, 0]
    f_kk = 0.5 * (f_kk + f_kk.transpose(1, 2))
    return InitialStateTerms(cross=cross, pinv=torch.linalg.pinv(f_kk, hermitian=True))


def output_block_matvec(lin: Linearisation, terms: InitialStateTerms, v: Tensor) -> Tensor:
    """Return F_KK v, the output-side block of the profiled Fisher matrix applied to δK.

    A change δK only enters through the latent update, so the product runs in latent space:
    ``a = Φ δK``, ``δκ(t+1) = A(t) δκ(t) + (α/N) a(t)``, ``λ(t) = G(t) δκ(t) + A(t)ᵀ λ(t+1)``,
    ``F_KK v = (α/N) Φᵀ λ(· + 1)`` (two products with the state matrix, O(n_trials · n_time ·
    n_units · rank) each), then the κ(0) profile correction.

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    terms : InitialStateTerms
        From :func:`initial_state_terms`.
    v : Tensor of shape (n_units · rank,) or (n_units · rank, n_vectors)
        δK flattened in C order (one column per vector).

    Returns
    -------
    Tensor of the shape of ``v``
        ``F_KK v``.
    """
    n_trials, n_time, N = lin.phi.shape
    R = lin.rank
    c = lin.alpha / N
    vec = v.reshape(N, R, -1)
    n_vec = vec.shape[-1]
    a = (lin.phi.reshape(-1, N) @ vec.reshape(N, R * n_vec)).reshape(n_trials, n_time, R, n_vec)
    dk = lin.latents.new_zeros(n_trials, n_time, R, n_vec)
    for t in range(n_time - 1):
        dk[:, t + 1] = lin.transition[:, t] @ dk[:, t] + c * a[:, t]
    lam = lin.latents.new_zeros(n_trials, n_time, R, n_vec)
    nxt = lin.latents.new_zeros(n_trials, R, n_vec)
    for t in reversed(range(n_time)):
        nxt = lin.gram[:, t] @ dk[:, t] + (
            lin.transition[:, t].transpose(1, 2) @ nxt if t + 1 < n_time else 0.0
        )
        lam[:, t] = nxt
    phi_prev = lin.phi[:, :-1].reshape(-1, N)
    out = c * (phi_prev.T @ lam[:, 1:].reshape(-1, R * n_vec)).reshape(N * R, n_vec)
    cross = terms.cross[:, :, N * R : 2 * N * R]  # (n, R_cols, N·R)
    z = terms.pinv @ torch.einsum("nap,pv->nav", cross, vec.reshape(N * R, -1))
    out -= torch.einsum("nap,nav->pv", cross, z)
    return out.reshape(v.shape)


def _unit_blocks_chunk(lin: Linearisation, roots: Tensor, units: slice) -> Tensor:
    """Diagonal blocks of F_θθ (no profile correction) for the units in ``units``.

    With ẽ(t) = (κ(t), 0_R, u(t), 1) the direct derivative of x_i(t) and ``ℓ_i(t) = m_iᵀ S_i(t)``
    the latent one, ``Fᵢ = Σ ω_i (ẽ ẽᵀ + ẽ ℓᵀ + ℓ ẽᵀ) + Σ S_iᵀ G S_i``.
    """
    n_trials, n_time, N = lin.phi.shape
    R, Din = lin.rank, lin.n_inputs
    p = 2 * R + Din + 1
    c = lin.alpha / N
    M, K = lin.M[units], lin.K[units]
    n_u = M.shape[0]
    ebar = lin.latents.new_zeros(n_trials, n_time, p)
    ebar[..., :R] = lin.latents
    ebar[..., 2 * R : 2 * R + Din] = lin.inputs
    ebar[..., -1] = 1.0
    weight = lin.weight[:, :, units]
    # Σ_t ω ẽ ẽᵀ in one product over all (trial, time) pairs.
    outer = (ebar[..., :, None] * ebar[..., None, :]).reshape(-1, p * p)
    blocks = (weight.reshape(-1, n_u).T @ outer).reshape(n_u, p, p)
    k_columns = lin.latents.new_zeros(R, 1, p)
    k_columns[torch.arange(R), 0, R + torch.arange(R)] = c
    S = lin.latents.new_zeros(n_trials, R, n_u, p)  # ∂κ_r(t)/∂θ_i[p]
    mt = M.T[None, :, :, None]
    for t in range(n_time):
        lat = (S * mt).sum(1)  # (n, n_u, p)
        cross = torch.einsum("nip,nq->ipq", weight[:, t, :, None] * lat, ebar[:, t])
        blocks += cross + cross.transpose(1, 2)
        Z = torch.bmm(roots[:, t], S.view(n_trials, R, n_u * p)).view(n_trials * R, n_u, p)
        blocks += torch.einsum("kip,kiq->ipq", Z, Z)
        if t + 1 < n_time:
            ks = c * lin.slope[:, t, None, units] * K.T  # (n, R, n_u): (α/N) φ'(x_i) k_i
            forcing = ks[..., None] * ebar[:, t, None, None, :]
            forcing += lin.phi[:, t, None, units, None] * k_columns
            S = torch.baddbmm(
                forcing.reshape(n_trials, R, n_u * p),
                lin.transition[:, t],
                S.view(n_trials, R, n_u * p),
            ).view(n_trials, R, n_u, p)
    return blocks


def unit_diagonal_blocks(
    lin: Linearisation, terms: InitialStateTerms, *, unit_chunk_elements: int = 2**19
) -> Tensor:
    """Return the exact per-unit diagonal blocks of the profiled Fisher matrix.

    Block i is F restricted to unit i's parameters (m_i, k_i, b_i, d_i) (the order of
    :func:`unit_indices`). It is computed by the forward sensitivity recursion of
    ``S_i(t) = ∂κ(t)/∂θ_i``,

        S_i(t+1) = A(t) S_i(t) + D_i(t),   A(t) = (1−α) I + (α/N) Kᵀ diag(φ'(x(t))) M,

    vectorised over trials and units (batched matrix products), then the κ(0) profile
    correction is subtracted. Cost O(n_trials · n_time · n_units · R · p²) with p = 2R + D + 1;
    memory O(n_trials · n_units · R · p).

    Parameters
    ----------
    lin : Linearisation
        Where to linearise.
    terms : InitialStateTerms
        From :func:`initial_state_terms`.
    unit_chunk_elements : int, default: 2**19
        Size (entries) of the sensitivity array of one chunk of units.

    Returns
    -------
    Tensor of shape (n_units, p, p)
        Symmetric positive semi-definite blocks.
    """
    n_trials, n_time, N = lin.phi.shape
    R, Din = lin.rank, lin.n_inputs
    p = 2 * R + Din + 1
    evals, evecs = torch.linalg.eigh(lin.gram)
    roots = (evecs * evals.clamp_min(0.0).sqrt()[..., None, :]).transpose(-1, -2)  # Lᵀ, G = L Lᵀ
    # Units are processed in chunks small enough for the sensitivities to stay in cache.
    size = max(1, unit_chunk_elements // (n_trials * R * p))
    roots = roots.contiguous()
    blocks = torch.cat(
        [_unit_blocks_chunk(lin, roots, slice(i, i + size)) for i in range(0, N, size)]
    )
    idx = torch.as_tensor(unit_indices(N, R, Din))
    cross = terms.cross[:, :, idx]  # (n, R, N, p)
    blocks -= torch.einsum("naip,nab,nbiq->ipq", cross, terms.pinv, cross)
    return 0.5 * (blocks + blocks.transpose(1, 2))


def previous_blocks(fit: LowRankFit, recording: Recording, prior_precision: float = 1.0) -> dict:
    """Run the previous structured posterior and degeneracy counts; return what they report.

    Returns
    -------
    dict
        ``unit_covariance`` (n_units, p, p), ``variance`` (n_params,), ``unit_scores``,
        ``n_constrained``, ``logdet`` (log det of the covariance), ``phi_rank``.
    """
    lam = prior_precision
    n_units, rank, n_inputs = fit.n_units, fit.rank, fit.B.shape[1]
    lin = linearise(fit, recording)
    terms = initial_state_terms(lin)
    blocks = unit_diagonal_blocks(lin, terms).numpy()
    index = unit_indices(n_units, rank, n_inputs)
    n_params = index.size
    sub = np.arange(n_units * rank, 2 * n_units * rank)
    n_sub = sub.size
    if n_sub <= _DENSE_EIGEN_LIMIT:
        eye = torch.eye(n_sub, dtype=torch.float64)
        F_sub = torch.cat(
            [output_block_matvec(lin, terms, eye[:, i : i + 256]) for i in range(0, n_sub, 256)],
            dim=1,
        ).numpy()
        evals, vecs = np.linalg.eigh(0.5 * (F_sub + F_sub.T))
        evals, vecs = evals[::-1], vecs[:, ::-1]
    else:
        k = min(2 * rank + 8, n_sub - 1)
        operator = LinearOperator(
            (n_sub, n_sub),
            matvec=lambda v: output_block_matvec(
                lin, terms, torch.from_numpy(np.array(v))
            ).numpy(),
            dtype=np.float64,
        )
        v0 = np.random.default_rng(0).standard_normal(n_sub)
        evals, vecs = eigsh(operator, k=k, which="LA", v0=v0, tol=1e-6)
        order = np.argsort(evals)[::-1]
        evals, vecs = evals[order], vecs[:, order]
    evecs = np.zeros((n_params, evals.size))
    evecs[sub] = vecs
    lowrank = np.einsum("ipa,a,iqa->ipq", evecs[index], np.clip(evals, 0.0, None), evecs[index])
    residual = blocks - lowrank
    w, v = np.linalg.eigh(0.5 * (residual + residual.transpose(0, 2, 1)))
    d_blocks = np.einsum("ipa,ia,iqa->ipq", v, np.clip(w, 0.0, None), v)
    unit_cov = np.linalg.inv(d_blocks + lam * np.eye(d_blocks.shape[1]))  # (D_i + λ)⁻¹
    # The posterior of the previous PosteriorSampler: S = (A + λI)⁻¹ by Woodbury with
    # A + λI = blockdiag(D_i + λ) + W Wᵀ, then the gauge correction.
    W = evecs * np.sqrt(np.clip(evals, 0.0, None))

    def apply_unit(b, x):
        out = np.empty_like(x)
        out[index] = np.einsum("ipq,iq...->ip...", b, x[index])
        return out

    dinv_w = apply_unit(unit_cov, W)
    cap_chol = linalg.cholesky(np.eye(W.shape[1]) + W.T @ dinv_w, lower=True)

    def solve_s(rhs):
        y = apply_unit(unit_cov, rhs)
        return y - dinv_w @ linalg.cho_solve((cap_chol, True), W.T @ y)

    G = linalg.orth(gauge_directions(fit.M, fit.K, n_inputs))
    SG = solve_s(G)
    gsg_chol = linalg.cholesky(G.T @ SG, lower=True)
    z = linalg.solve_triangular(cap_chol, dinv_w.T, lower=True).T
    zg = linalg.solve_triangular(gsg_chol, SG.T, lower=True).T
    marg = (
        unit_cov
        - np.einsum("ipa,iqa->ipq", z[index], z[index])
        - np.einsum("ipa,iqa->ipq", zg[index], zg[index])
        + np.einsum("ipa,iqa->ipq", G[index], G[index]) / lam
    )
    variance = np.empty(n_params)
    variance[index] = np.einsum("ipp->ip", marg)
    d_chol = np.linalg.cholesky(d_blocks + lam * np.eye(d_blocks.shape[1]))
    logdet_prec = 2.0 * np.sum(np.log(np.diagonal(d_chol, axis1=1, axis2=2)))
    logdet_prec += 2.0 * np.sum(np.log(np.diag(cap_chol)))
    logdet_prec += 2.0 * np.sum(np.log(np.diag(gsg_chol)))
    logdet_prec += G.shape[1] * np.log(lam)
    n_constrained = int(np.count_nonzero(np.clip(w, 0.0, None) > lam))
    n_constrained += int(np.count_nonzero(evals > lam))
    n_constrained = min(n_constrained, n_params - rank**2)
    k_var = np.einsum("ipp->ip", marg)[:, rank : 2 * rank]
    richness = assess_richness(
        fit.latents, recording.mask, fit.M, B=fit.B, d=fit.d, inputs=recording.inputs,
        nonlinearity=fit.nonlinearity,
    )  # fmt: skip
    return {
        "unit_covariance": marg,
        "variance": variance,
        "unit_scores": np.clip(1.0 - k_var.mean(axis=1) * lam, 0.0, 1.0),
        "n_constrained": n_constrained,
        "logdet": -float(logdet_prec),
        "phi_rank": richness.phi_effective_rank,
    }
