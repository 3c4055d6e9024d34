"""The connectivity distribution of one network seen through several sessions (stage 3, joint).

A joint fit (:class:`~nwb_lrconn.model.joint.JointLowRankRNN`) places every session's units in
one network and one gauge. From it, :func:`pooled_distribution` learns the distribution of the
union of the sessions' units (``pooled``) and of each session's units alone (``sessions``), each
with the model :func:`.fit_distribution` chooses for its number of units, and measures how far
the sessions' distributions lie apart against how far two halves of one session's units do.

**Gauge symmetry.** Without shared units the joint fit ties the sessions' latent coordinates
together only through the flow. Where the flow has a symmetry S (orthogonal, F(S κ) = S F(κ),
e.g. a quarter turn of the four attractors of a square), a session may sit in the network turned
by S at almost no cost in likelihood: its latents S κ, its loadings S m and S k. Pooled as they
are, such sessions would smear the distribution over turned copies of itself (unless its law
shares the symmetry, as the square's does, when the turn does not matter). Before pooling,
each session is therefore turned back: among the candidate maps (below) under which the joint
flow is invariant on the session's visited states and inputs (:func:`flow_asymmetry` at most
:data:`SYMMETRY_TOLERANCE`), the one that brings the session's (m, k) closest to the reference
session's (Sinkhorn divergence; m and k each scaled by the reference's RMS, which keeps the cost
invariant under orthogonal maps) is applied, if it at least halves that distance, to the session
as the gauge map A = S of
:func:`~nwb_lrconn.model.gauge.apply_gauge`: m → S m, k → S k, κ → S κ, b and d unchanged.

What the turn keeps: every potential m·κ, the session's own block of J = M Kᵀ/N
(M_s Sᵀ (K_s Sᵀ)ᵀ = M_s K_sᵀ) and, since F is S-invariant, the latents as trajectories of the
network. What it changes: the blocks of J that link the session's units to other sessions'
(M_s Sᵀ K_tᵀ), which recordings of disjoint units cannot pin beyond the symmetry; the turn picks
them so that the sessions' units follow one law, the premise of pooling them at all. A map that
is not a symmetry of the flow is never applied, however much closer it brings the loadings: the
session's latents would no longer follow the network's dynamics, and the distribution learned
from them (k is read off the latent dynamics) would describe neither.

Candidates are the signed permutations (rank 2: the square's eight symmetries) up to rank 4 and
the sign flips of the axes above; continuous symmetries (a ring's rotations) are not searched:
their turns leave a rotation-invariant law unchanged anyway. Finer candidates would not help:
a small rotation is always nearly a symmetry (its asymmetry grows with the angle), so only maps
far apart can be told from each other by the flow.

**Ridge strength of the pooled fit.** The conditional mean of k given z is learned from ridge
targets, the fit of the latent updates summed over every visited state with a penalty λ on the
virtual units' k (:func:`~nwb_lrconn.inference.connector.ridge.quadrature_ridge_targets`). The
union of n sessions holds n sessions' states under one sum, so at the same λ it is regularised
n times more weakly than each session's own distribution. The error in the latent updates is
not independent noise that more states average away: the latents are the joint network's own
trajectories, and what the ridge fits beyond the true law is the fitted flow's own error, the
same in every session. The pooled fit therefore uses n·λ: its objective is the mean of the
sessions' objectives, regularised exactly as each session's own, so that the pooled and the
per-session distributions are compared at equal strength (recorded as the pooled
distribution's ``ridge_lambda``).

**Dissimilarity.** Between the distributions A and B of two sessions, in the shared gauge,
D(A, B) = ½ [D(A → B) + D(B → A)] with D(A → B) =
:func:`~nwb_lrconn.inference.metrics.connectivity_dissimilarity` (Sinkhorn divergence between
their drawn z = (m, b, d), plus the mean ‖g_A(z) − k‖² of A's conditional mean on B's drawn
units). Its **floor** for a session is D between the distributions learned from two random
halves of its units (the same model family, the same latents): what finite units alone put
between two estimates of one law. Halves hold half the units, so the floor is, if anything,
above the D expected between two whole sessions of one network. A session is **flagged** when
its D to even the nearest other session exceeds :data:`FLAG_RATIO` times the larger floor of the
two; with two sessions both are flagged together (nothing tells which one differs).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_is_fitted, check_positive_int, make_rng
from ..config import DistributionConfig
from ..data import ConnectivityDistribution, Recording
from ..model.gauge import apply_gauge
from ..model.joint import JointLowRankRNN
from .connector import ConnectorData
from .distribution import distribution_estimator, fit_distribution
from .dynamics import latent_velocity
from .metrics import connectivity_dissimilarity, sinkhorn_divergence

__all__ = [
    "FLAG_RATIO",
    "SYMMETRY_TOLERANCE",
    "PooledDistribution",
    "candidate_symmetries",
    "dissimilarity_matrix",
    "flag_sessions",
    "flow_asymmetry",
    "pooled_distribution",
    "session_symmetries",
]

# Largest flow_asymmetry of a map S on a session's visited states for S to count as a symmetry
# of the joint flow. Measured (tests/benchmarks/bench_joint.py --distribution) on the quadstable
# network fitted from 3 sessions of 200 units: −I 0.005, the quarter turns 0.06, while the four
# reflections of the canonical axes, which are not symmetries of that square as it lies in the
# fitted frame, measure 0.16; the tolerance sits between them. With 3 sessions of 20 units the
# levels blur (−I 0.07–0.08, reflections 0.09–0.16, quarter turns 0.3): a finite network is
# only nearly symmetric, and a map accepted there may be slightly off the flow (at most 10% of
# the recurrent drive).
SYMMETRY_TOLERANCE = 0.1
# A session is flagged when its D to the nearest other session exceeds this many times the
# larger of the two floors. Measured (tests/benchmarks/bench_joint.py --distribution, 3
# sessions of 200 units): sessions of one quadstable network 0.46 (rates) and 0.9–1.0
# (spikes); a session of the bistable network among them 96 (rates) and 26 (spikes), of the
# limit-cycle network 6.9 (rates), while the two quadstable sessions beside it, whose joint
# fit it distorts, reach 1.7.
FLAG_RATIO = 3.0
_STATES = 500  # visited states per session on which the flow's invariance is measured
# A turn is applied only when it at least halves the loadings' distance to the reference's:
# where the law shares the symmetry (the square's law and its quarter turns, any law of an odd
# network and −I), the distances of the turns differ by noise alone, and a turn picked on noise
# would only move the session away from the gauge the joint fit gave it (measured:
# tests/benchmarks/bench_joint.py --distribution prints each session's residual turn).
_TURN_GAIN = 0.5


@dataclass(frozen=True)
class PooledDistribution:
    """Connectivity distributions of a joint fit: pooled over its sessions and per session.

    Attributes
    ----------
    pooled : ConnectivityDistribution
        Learned from every session's units together (z = (m, b, d) in the shared gauge, each
        session turned by its ``symmetry``) and every session's latents, with the ridge λ
        multiplied by the number of sessions (module docstring).
    sessions : tuple of ConnectivityDistribution
        Each session's own, from its units and latents only, in the same gauge and chosen by the
        same rule (:func:`.choose_distribution_model`).
    dissimilarity : ndarray of shape (n_sessions, n_sessions)
        D between the session distributions (module docstring; same units as the Sinkhorn
        divergence of z plus a mean squared distance of k). Symmetric, zero diagonal; NaN where
        a session's distribution was skipped.
    floor : ndarray of shape (n_sessions,)
        D between the distributions of two random halves of each session's units; NaN where a
        half has too few units for a distribution.
    symmetry : tuple of ndarray of shape (rank, rank)
        Per session, the orthogonal map S applied to its loadings and latents before pooling
        (the identity for the reference session and where no symmetry of the flow halved the
        distance of its loadings to the reference's).
    flagged : tuple of int
        Sessions whose D to the nearest other session exceeds :data:`FLAG_RATIO` times the
        larger of the two floors.
    reason : str
        Which model the pooled distribution is and why (as ``pooled.reason``).
    reference : int
        The session the others are turned towards (the joint fit's reference).
    asymmetry : ndarray of shape (n_sessions,)
        Relative RMS of F(S κ, u) − S F(κ, u) of the applied S on each session's visited states
        (0 for the identity; at most :data:`SYMMETRY_TOLERANCE`).
    """

    pooled: ConnectivityDistribution
    sessions: tuple[ConnectivityDistribution, ...]
    dissimilarity: np.ndarray
    floor: np.ndarray
    symmetry: tuple[np.ndarray, ...]
    flagged: tuple[int, ...]
    reason: str
    reference: int = 0
    asymmetry: np.ndarray | None = None


def pooled_distribution(
    joint: JointLowRankRNN,
    recordings,
    *,
    model: str = DistributionConfig.model,
    n_samples: int = DistributionConfig.n_samples,
    flow_params: dict[str, Any] | None = None,
    mixture_params: dict[str, Any] | None = None,
    random_state: int | None = None,
) -> PooledDistribution:
    """Pooled and per-session connectivity distributions of a joint fit, and their distances.

    Parameters
    ----------
    joint : JointLowRankRNN
        A fitted joint model.
    recordings : list of Recording
        The recordings given to ``joint.fit`` (their inputs u(t) enter the distributions).
    model : {"auto", "flows", "gmm", "gaussian"}, default: "auto"
        See :func:`.choose_distribution_model`; applied to the pooled units and to each
        session's alike.
    n_samples : int, default: 1000
        Units drawn into each distribution (and compared by D).
    flow_params, mixture_params : dict, optional
        As in :func:`.fit_distribution`.
    random_state : int or None
        Seed of the fits, the draws and the halves of the floors.

    Returns
    -------
    PooledDistribution

    Raises
    ------
    TypeError
        When ``joint`` is not a JointLowRankRNN or ``recordings`` not a list of Recordings.
    ValueError
        When ``recordings`` are not the sessions of ``joint`` (count, units or trials differ).
    """
    if not isinstance(joint, JointLowRankRNN):
        raise TypeError(f"joint must be a fitted JointLowRankRNN; got {type(joint).__name__}.")
    check_is_fitted(joint, "model_")
    recordings = _check_sessions(joint, recordings)
    n_samples = check_positive_int(n_samples, "n_samples")
    rng = make_rng(random_state)
    symmetry, asymmetry = _symmetries(joint, recordings, rng)
    parts = [
        _session_data(joint, view, rec, S)
        for view, rec, S in zip(joint.sessions_, recordings, symmetry)
    ]
    fit: dict[str, Any] = {
        "model": model,
        "n_samples": n_samples,
        "flow_params": flow_params,
        "mixture_params": mixture_params,
    }

    def seed() -> int:
        return int(rng.integers(2**31))

    pooled = fit_distribution(_union(parts), **_pooled_ridge(fit, len(parts)), random_state=seed())
    sessions = tuple(fit_distribution(p, **fit, random_state=seed()) for p in parts)
    D = dissimilarity_matrix(sessions)
    floor = np.array(
        [_floor(p, dist, fit, rng) for p, dist in zip(parts, sessions)], dtype=np.float64
    )
    return PooledDistribution(
        pooled=pooled,
        sessions=sessions,
        dissimilarity=D,
        floor=floor,
        symmetry=symmetry,
        flagged=flag_sessions(D, floor),
        reason=f"{pooled.reason} (pooled over {len(parts)} sessions)",
        reference=int(joint.seed_session_),
        asymmetry=asymmetry,
    )


def _pooled_ridge(fit: dict[str, Any], n_sessions: int) -> dict[str, Any]:
    """``fit`` with both models' ridge λ multiplied by ``n_sessions`` (module docstring)."""
    scaled = dict(fit)
    for key in ("flow_params", "mixture_params"):
        params = dict(fit[key] or {})
        params["ridge_lambda"] = n_sessions * params.get(
            "ridge_lambda", DistributionConfig.ridge_lambda
        )
        scaled[key] = params
    return scaled


# ---------------------------------------------------------------------- gauge symmetry
def candidate_symmetries(rank: int) -> list[np.ndarray]:
    """The orthogonal maps tried as symmetries of a rank-``rank`` flow, the identity first.

    Parameters
    ----------
    rank : int
        R.

    Returns
    -------
    list of ndarray of shape (rank, rank)
        The signed permutations up to rank 4 (rank 2: the square's eight symmetries, rotations
        by multiples of 90° and four reflections); above, the sign flips of the axes.
    """
    rank = check_positive_int(rank, "rank")
    signs = [np.array(v, np.float64) for v in itertools.product((1.0, -1.0), repeat=rank)]
    orders = list(itertools.permutations(range(rank))) if rank <= 4 else [tuple(range(rank))]
    return [np.eye(rank)[list(order)] * sign[:, None] for order in orders for sign in signs]


def flow_asymmetry(S: np.ndarray, states: np.ndarray, M, K, d, drive=None, nonlinearity="tanh"):
    """RMS of F(S κ, u) − S F(κ, u) over ``states``, relative: 0 for a symmetry of the flow.

    Parameters
    ----------
    S : ndarray of shape (rank, rank)
        Candidate map.
    states : ndarray of shape (n, rank)
        Latent states κ.
    M, K : ndarray of shape (n_units, rank)
        The network's loadings.
    d : ndarray of shape (n_units,)
        Biases.
    drive : ndarray of shape (n, n_units), optional
        B u of each state's bin (held, like d, through the map).
    nonlinearity : str, default: "tanh"
        φ.

    Returns
    -------
    float
        ‖F(S κ) − S F(κ)‖ / ‖F(κ) + κ‖ (root mean squares over the states), the error against
        the recurrent drive.
    """
    bias = d if drive is None else drive + d
    flow = latent_velocity(states, M, K, d=bias, nonlinearity=nonlinearity)
    turned = latent_velocity(states @ S.T, M, K, d=bias, nonlinearity=nonlinearity)
    # The leak −κ is equivariant under every orthogonal S, so only the recurrent drive
    # F(κ) + κ can break a symmetry; it is also the scale: F itself vanishes at the attractors,
    # where trajectories spend most of their time, the recurrent drive does not.
    scale = max(float(np.sqrt(np.mean((flow + states) ** 2))), 1e-12)
    return float(np.sqrt(np.mean((turned - flow @ S.T) ** 2))) / scale


def session_symmetries(
    joint: JointLowRankRNN, recordings, *, random_state: int | None = None
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The gauge symmetry that turns each session of a joint fit back onto the reference's.

    Parameters
    ----------
    joint : JointLowRankRNN
        A fitted joint model.
    recordings : list of Recording
        The recordings given to ``joint.fit`` (their inputs enter the flow).
    random_state : int or None
        Seed of the visited states on which the flow's invariance is measured.

    Returns
    -------
    symmetry : tuple of ndarray of shape (rank, rank)
        Per session, the orthogonal S to apply (m → S m, k → S k, κ → S κ); the identity for
        the reference session (``joint.seed_session_``).
    asymmetry : ndarray of shape (n_sessions,)
        :func:`flow_asymmetry` of each applied S on the session's visited states.

    Raises
    ------
    TypeError, ValueError
        As :func:`pooled_distribution`.
    """
    if not isinstance(joint, JointLowRankRNN):
        raise TypeError(f"joint must be a fitted JointLowRankRNN; got {type(joint).__name__}.")
    check_is_fitted(joint, "model_")
    return _symmetries(joint, _check_sessions(joint, recordings), make_rng(random_state))


def _symmetries(joint, recordings, rng) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    reference = int(joint.seed_session_)
    symmetry, asymmetry = [], []
    for s, (view, rec) in enumerate(zip(joint.sessions_, recordings)):
        if s == reference:
            S, error = np.eye(joint.model_.rank), 0.0
        else:
            S, error = _resolve_symmetry(joint, view, rec, joint.sessions_[reference], rng)
        symmetry.append(S)
        asymmetry.append(error)
    return tuple(symmetry), np.asarray(asymmetry, dtype=np.float64)


def _resolve_symmetry(joint, view, rec: Recording, reference, rng) -> tuple[np.ndarray, float]:
    """The symmetry S of the joint flow that brings ``view``'s (m, k) closest to the reference's.

    Returns S and its :func:`flow_asymmetry` on the session's visited states.
    """
    net = {n: getattr(joint.model_, n).detach().cpu().double().numpy() for n in ("M", "K", "d")}
    B = joint.model_.B.detach().cpu().double().numpy()
    visited = np.argwhere(view.latent_mask)
    pick = visited[np.sort(rng.choice(len(visited), min(len(visited), _STATES), replace=False))]
    states = view.latents[pick[:, 0], pick[:, 1]]
    drive = None if rec.inputs is None else rec.inputs[pick[:, 0], pick[:, 1]] @ B.T
    scale_m = np.sqrt(np.mean(reference.M**2))
    scale_k = max(np.sqrt(np.mean(reference.K**2)), 1e-12)
    target = np.concatenate([reference.M / scale_m, reference.K / scale_k], axis=1)
    identity, *others = candidate_symmetries(view.M.shape[1])
    loadings = np.concatenate([view.M / scale_m, view.K / scale_k], axis=1)
    best = (sinkhorn_divergence(loadings, target), identity, 0.0)
    stay = _TURN_GAIN * best[0]
    for S in others:
        error = flow_asymmetry(
            S, states, net["M"], net["K"], net["d"], drive, joint.model_.nonlinearity
        )
        if error > SYMMETRY_TOLERANCE:
            continue
        turned = np.concatenate([view.M @ S.T / scale_m, view.K @ S.T / scale_k], axis=1)
        distance = sinkhorn_divergence(turned, target)
        if distance < min(best[0], stay):
            best = (distance, S, error)
    return best[1], best[2]


# ---------------------------------------------------------------------- connector data
def _session_data(joint, view, rec: Recording, S: np.ndarray) -> ConnectorData:
    """A session's units and latents in the shared gauge, turned by S."""
    M, _, B, d, latents = apply_gauge(view.M, view.K, view.B, view.d, view.latents, S)
    latents[~view.latent_mask] = 0.0
    has_inputs = B.shape[1] > 0
    return ConnectorData(
        z=np.concatenate([M, B, d[:, None]], axis=1),
        latents=latents,
        latent_mask=view.latent_mask,
        alpha=joint.alpha_,
        nonlinearity=joint.model_.nonlinearity,
        inputs=rec.inputs.astype(np.float64) if has_inputs and rec.inputs is not None else None,
        test_trials=view.test_trials if view.test_trials.size else None,
    )


def _union(parts: list[ConnectorData]) -> ConnectorData:
    """Every session's units, and every session's trials padded to a common length."""
    n_time = max(p.latents.shape[1] for p in parts)

    def padded(array, fill):
        width = [(0, 0), (0, n_time - array.shape[1])] + [(0, 0)] * (array.ndim - 2)
        return np.pad(array, width, constant_values=fill)

    offsets = np.cumsum([0] + [p.latents.shape[0] for p in parts])
    tests = [p.test_trials + o for p, o in zip(parts, offsets) if p.test_trials is not None]
    first = parts[0]
    return ConnectorData(
        z=np.concatenate([p.z for p in parts]),
        latents=np.concatenate([padded(p.latents, 0.0) for p in parts]),
        latent_mask=np.concatenate([padded(p.latent_mask, False) for p in parts]),
        alpha=first.alpha,
        nonlinearity=first.nonlinearity,
        inputs=None
        if first.inputs is None
        else np.concatenate([padded(p.inputs, 0.0) for p in parts]),
        test_trials=np.concatenate(tests) if tests else None,
    )


# ---------------------------------------------------------------------- dissimilarity
def dissimilarity_matrix(dists) -> np.ndarray:
    """Symmetric D between every pair of distributions (module docstring); NaN where skipped.

    Parameters
    ----------
    dists : sequence of ConnectivityDistribution
        Distributions in one gauge.

    Returns
    -------
    ndarray of shape (n, n)
    """
    estimators = [None if d.model == "skipped" else distribution_estimator(d) for d in dists]
    n = len(dists)
    D = np.zeros((n, n))
    for a, b in itertools.combinations(range(n), 2):
        D[a, b] = D[b, a] = _pair_dissimilarity(dists[a], dists[b], estimators[a], estimators[b])
    for a in range(n):
        if estimators[a] is None:
            D[a, :] = D[:, a] = np.nan
    return D


def _pair_dissimilarity(dist_a, dist_b, est_a, est_b) -> float:
    if est_a is None or est_b is None:
        return float("nan")
    there = connectivity_dissimilarity(
        dist_a.samples_z, dist_b.samples_z, dist_b.samples_k, est_a.core_k
    )
    back = connectivity_dissimilarity(
        dist_b.samples_z, dist_a.samples_z, dist_a.samples_k, est_b.core_k
    )
    return 0.5 * (there + back)


def _floor(data: ConnectorData, dist, fit: dict, rng) -> float:
    """D between the distributions of two random halves of ``data``'s units."""
    if dist.model == "skipped":
        return float("nan")
    family = "flows" if dist.model == "flows" else fit["model"]
    family = "gmm" if family == "auto" else family
    order = rng.permutation(data.z.shape[0])
    halves = []
    for part in np.array_split(order, 2):
        if part.size < 2:
            return float("nan")
        half = ConnectorData(
            z=data.z[np.sort(part)],
            latents=data.latents,
            latent_mask=data.latent_mask,
            alpha=data.alpha,
            nonlinearity=data.nonlinearity,
            inputs=data.inputs,
            test_trials=data.test_trials,
        )
        fitted = fit_distribution(
            half, **{**fit, "model": family}, random_state=int(rng.integers(2**31))
        )
        if fitted.model == "skipped":
            return float("nan")
        halves.append(fitted)
    return float(dissimilarity_matrix(halves)[0, 1])


def flag_sessions(dissimilarity: np.ndarray, floor: np.ndarray) -> tuple[int, ...]:
    """Sessions whose D to the nearest other session exceeds FLAG_RATIO × the larger floor.

    Parameters
    ----------
    dissimilarity : ndarray of shape (n, n)
        D between sessions.
    floor : ndarray of shape (n,)
        Each session's floor.

    Returns
    -------
    tuple of int
        Flagged sessions (never one with a NaN floor or D).
    """
    n = len(floor)
    flagged = []
    for s in range(n):
        ratios = [
            dissimilarity[s, t] / np.maximum(np.maximum(floor[s], floor[t]), 1e-12)
            for t in range(n)
            if t != s
        ]
        if ratios and all(np.isfinite(ratios)) and min(ratios) > FLAG_RATIO:
            flagged.append(s)
    return tuple(flagged)


# ---------------------------------------------------------------------- validation
def _check_sessions(joint: JointLowRankRNN, recordings) -> list[Recording]:
    n = len(joint.sessions_)
    if isinstance(recordings, Recording) or not isinstance(recordings, list | tuple):
        raise TypeError(
            f"recordings must be the list of {n} Recordings given to the joint fit; got "
            f"{type(recordings).__name__}."
        )
    if len(recordings) != n:
        raise ValueError(
            f"recordings must be the {n} recordings given to the joint fit; got "
            f"{len(recordings)}. Pass them all, in the order of the fit."
        )
    for s, (rec, view) in enumerate(zip(recordings, joint.sessions_)):
        if not isinstance(rec, Recording):
            raise TypeError(f"recordings[{s}] must be a Recording; got {type(rec).__name__}.")
        if not np.array_equal(rec.unit_ids, view.unit_ids) or rec.mask.shape != (
            view.latent_mask.shape
        ):
            raise ValueError(
                f"recordings[{s}] is not session {s} of the joint fit: it has {rec.n_units} "
                f"units and {rec.n_trials} trials × {rec.n_time} bins, the session "
                f"{len(view.unit_ids)} units and {view.latent_mask.shape[0]} trials × "
                f"{view.latent_mask.shape[1]} bins (or other unit ids). Pass the recordings in "
                "the order of the fit."
            )
    return list(recordings)
