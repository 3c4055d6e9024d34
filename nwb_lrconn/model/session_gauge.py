"""The map between two separate fits of sessions of one circuit (the joint fit's gauge match).

Two sessions fitted alone each come out in their own latent gauge; with no unit in common, the
map κ = A κ_s + c between them is pinned only by their dynamics (:func:`match_gauge`).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from ..data import Recording
from .estimator import LowRankRNNEstimator
from .lowrank import LowRankRNN
from .nonlinearity import phi

__all__ = ["match_gauge"]

_ALIGN_STARTS = 16  # starting rotations and reflections of the gauge match between two fits
_SCREEN_POINTS = 300  # latent states per fit on which every start is refined
_ALIGN_POINTS = 2000  # latent states per fit on which the best distinct solutions are polished
_ALIGN_REFINED = 3  # how many, each then tried on the two sessions' training likelihood


def match_gauge(
    reference: LowRankRNNEstimator,
    single: LowRankRNNEstimator,
    reference_rec: Recording,
    rec: Recording,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Candidate maps κ = A κ_s + c from a session's fit to the reference fit, best first.

    Under the right map each fit's flow carries the other's latents along their own course:
    A⁻¹ (Φ(A κ_s(t) + c) − c) ≈ κ_s(t + h) over the session's states and
    A Φ_s(A⁻¹ (κ(t) − c)) + c ≈ κ(t + h) over the reference's, with Φ, Φ_s the two networks'
    rollouts over h = 1/α steps (one time constant). Both directions are needed: either alone
    is met by maps that stretch the other fit's states into regions its flow never visited.
    Least squares from every starting rotation and reflection (both fits are in the canonical
    gauge, where the latents are about white) on a few hundred states; the best distinct
    solutions are then polished on more. Near-symmetric flows give several close minima.
    """
    rank = reference.model_.rank

    def residual_of(forward, backward):
        def residual(params):
            A = params[: rank * rank].reshape(rank, rank)
            c = params[rank * rank :]
            try:
                A_inv = np.linalg.inv(A)
            except np.linalg.LinAlgError:
                return np.full(forward.size + backward.size, 1e6)
            there = (forward.advance(forward.start @ A.T + c) - c) @ A_inv.T - forward.end
            back = backward.advance((backward.start - c) @ A_inv.T) @ A.T + c - backward.end
            out = np.concatenate([there.ravel(), back.ravel()])
            return np.where(np.isfinite(out), out, 1e6)

        return residual

    def courses(n_points):
        return residual_of(
            _Course(reference.model_, single.latents_, rec, rng, n_points),
            _Course(single.model_, reference.latents_, reference_rec, rng, n_points),
        )

    starts = []
    for k in range(_ALIGN_STARTS):
        if rank == 2:
            angle = np.pi * (k % 8) / 4
            Q = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            Q = Q if k < 8 else Q @ np.diag([1.0, -1.0])
        else:
            Q, _ = np.linalg.qr(rng.standard_normal((rank, rank)))
        starts.append(np.concatenate([Q.ravel(), np.zeros(rank)]))
    budget = 100 * (rank + 1) ** 2
    screen = courses(_SCREEN_POINTS)
    screened = sorted(
        (least_squares(screen, p, method="lm", max_nfev=budget) for p in starts),
        key=lambda out: out.cost,
    )
    distinct: list[np.ndarray] = []
    for out in screened:
        if all(np.abs(out.x - x).max() > 0.05 for x in distinct):
            distinct.append(out.x)
    polish = courses(_ALIGN_POINTS)
    fits = [
        least_squares(polish, x, method="lm", max_nfev=budget) for x in distinct[:_ALIGN_REFINED]
    ]
    fits.sort(key=lambda out: out.cost)
    return [(f.x[: rank * rank].reshape(rank, rank), f.x[rank * rank :]) for f in fits]


class _Course:
    """Pairs of a fit's latents h = 1/α steps apart, and a network to carry states over h.

    Numpy in float64: the least-squares solver calls :meth:`advance` thousands of times on a few
    hundred states, where torch's per-call overhead dominates.
    """

    def __init__(
        self, model: LowRankRNN, latents: np.ndarray, rec: Recording, rng, n_points: int
    ) -> None:
        self.alpha = model.alpha
        horizon = int(max(1, min(round(1 / model.alpha), rec.n_time - 1)))
        pairs = np.argwhere(rec.mask[:, horizon:] & rec.mask[:, :-horizon])
        keep = rng.choice(len(pairs), min(len(pairs), n_points), replace=False)
        pick = pairs[np.sort(keep)]
        self.start = latents[pick[:, 0], pick[:, 1]]
        self.end = latents[pick[:, 0], pick[:, 1] + horizon]
        self.size = self.end.size
        M, K, d, B = (
            getattr(model, n).detach().cpu().double().numpy() for n in ("M", "K", "d", "B")
        )
        self.M_T = np.ascontiguousarray(M.T)
        self.K = K
        self.scale = model.alpha / model.n_units
        self.nonlinearity = model.nonlinearity
        self.drives = []
        for step in range(horizon):
            drive = np.broadcast_to(d, (len(pick), len(d)))
            if rec.inputs is not None:
                drive = drive + rec.inputs[pick[:, 0], pick[:, 1] + step] @ B.T
            self.drives.append(drive)

    def advance(self, states: np.ndarray) -> np.ndarray:
        """The states after h steps of the network (inputs of the pairs' own bins)."""
        state = np.asarray(states, dtype=float)
        for drive in self.drives:
            y = phi(drive + state @ self.M_T, self.nonlinearity)
            state = (1.0 - self.alpha) * state + self.scale * (y @ self.K)
        return state
