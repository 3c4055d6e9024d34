"""Small valid inputs for tests and demos: random Results and core-NWB source files."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__, data
from .._validation import check_choice, check_positive_int, make_rng

__all__ = [
    "mock_results",
    "mock_joint",
    "mock_units_nwb",
    "mock_ophys_nwb",
    "UNITS_TABLE",
    "OPHYS_SERIES",
]

UNITS_TABLE = "units"
"""Path of the Units table in :func:`mock_units_nwb` files."""
OPHYS_SERIES = "processing/ophys/Fluorescence/RoiResponseSeries"
"""Path of the RoiResponseSeries in :func:`mock_ophys_nwb` files."""
OPHYS_TABLE = "processing/ophys/ImageSegmentation/rois_RoiResponseSeries"
"""Path of the PlaneSegmentation in :func:`mock_ophys_nwb` files."""


def _spd(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.standard_normal((n, n))
    return a @ a.T / n + np.eye(n)


def mock_results(
    n_units: int = 8,
    rank: int = 2,
    n_trials: int = 3,
    n_time: int = 20,
    *,
    with_posterior: bool = True,
    with_degeneracy: bool = True,
    with_distribution: bool = True,
    structure: str = "dense",
    random_state: int | np.random.Generator | None = 0,
    n_inputs: int = 1,
    observation: str = "poisson",
    name: str = "fit",
    source: data.SourceInfo | None = None,
) -> data.Results:
    """Build valid :class:`~nwb_lrconn.data.Results` filled with random numbers.

    Parameters
    ----------
    n_units, rank, n_trials, n_time : int
        Sizes; the last trial is ragged (its final quarter is masked out).
    with_posterior, with_degeneracy, with_distribution : bool, default: True
        Include the optional parts.
    structure : {"dense", "blocks"}, default: "dense"
        Storage of the posterior covariance.
    random_state : int, Generator or None, default: 0
        Seed.
    n_inputs : int, default: 1
        Columns of B (may be 0).
    observation : {"gaussian", "poisson", "calcium"}, default: "poisson"
        Observation model of the fit.
    name : str, default: "fit"
        ``Results.name``.
    source : SourceInfo, optional
        Provenance source (e.g. pointing at a :func:`mock_units_nwb` file); default empty.

    Returns
    -------
    Results
        Unit ids and rows are ``0 .. n_units - 1`` (as in the mock source tables).
    """
    for value, label in ((n_units, "n_units"), (rank, "rank"), (n_trials, "n_trials")):
        check_positive_int(value, label)
    check_positive_int(n_time, "n_time", minimum=4)
    check_positive_int(n_inputs, "n_inputs", minimum=0)
    check_choice(structure, "structure", ("dense", "blocks"))
    rng = make_rng(random_state)
    bin_width = 0.02
    mask = np.ones((n_trials, n_time), dtype=bool)
    mask[-1, n_time - n_time // 4 :] = False
    latents = rng.standard_normal((n_trials, n_time, rank)) * mask[..., None]
    M, K = rng.standard_normal((n_units, rank)), 2 * rng.standard_normal((n_units, rank))
    B, d = rng.standard_normal((n_units, n_inputs)), 0.1 * rng.standard_normal(n_units)
    fit = data.LowRankFit(
        M=M,
        K=K,
        B=B,
        d=d,
        readout_gain=rng.uniform(0.5, 2.0, n_units),
        readout_offset=rng.standard_normal(n_units),
        noise_std=rng.uniform(0.1, 1.0, n_units),
        rank=rank,
        nonlinearity="tanh",
        alpha=0.1,
        bin_width=bin_width,
        observation=observation,
        latents=latents,
        latent_mask=mask,
        trial_start_times=1.0 + np.arange(n_trials) * (n_time + 5) * bin_width,
        loss_history=np.cumsum(rng.uniform(0, 1, (30, 2)), axis=0)[::-1],
        metrics={"log_likelihood": float(rng.normal()), "bits_per_spike": 0.25},
        unit_quality=rng.uniform(0, 1, n_units),
        train_trials=np.arange(max(n_trials - 1, 1)),
        test_trials=np.arange(max(n_trials - 1, 1), n_trials),
        unit_ids=np.arange(n_units),
        calcium_decay=0.9 if observation == "calcium" else 0.0,
        unit_rows=np.arange(n_units),
    )
    layout = (
        data.ParameterBlock("M", (n_units, rank)),
        data.ParameterBlock("K", (n_units, rank)),
        data.ParameterBlock("B", (n_units, n_inputs)),
        data.ParameterBlock("d", (n_units,)),
    )
    n_params = sum(block.size for block in layout)
    posterior = degeneracy = distribution = None
    if with_posterior:
        per_unit = 2 * rank + n_inputs + 1
        offsets = np.cumsum([0] + [block.size for block in layout])
        unit_indices = np.stack(
            [
                np.concatenate(
                    [
                        offsets[0] + i * rank + np.arange(rank),
                        offsets[1] + i * rank + np.arange(rank),
                        offsets[2] + i * n_inputs + np.arange(n_inputs),
                        [offsets[3] + i],
                    ]
                )
                for i in range(n_units)
            ]
        ).astype(np.int64)
        n_eig = min(5, n_params)
        dense = structure == "dense"
        posterior = data.PosteriorCovariance(
            mean=np.concatenate([M.ravel(), K.ravel(), B.ravel(), d]),
            layout=layout,
            prior_precision=1.0,
            observation=observation,
            structure=structure,
            eigenvalues=np.sort(rng.uniform(0, 100, n_eig))[::-1],
            eigenvectors=np.linalg.qr(rng.standard_normal((n_params, n_eig)))[0],
            covariance=_spd(rng, n_params) if dense else None,
            unit_indices=None if dense else unit_indices,
            unit_blocks=None if dense else np.stack([_spd(rng, per_unit) for _ in M]),
        )
    if with_degeneracy:
        n_gauge = rank * rank
        n_constrained = (n_params - n_gauge) // 2
        degeneracy = data.DegeneracyReport(
            spectrum=np.sort(rng.uniform(0, 10, n_params - n_gauge))[::-1],
            gauge_basis=np.linalg.qr(rng.standard_normal((n_params, n_gauge)))[0],
            n_constrained=n_constrained,
            n_degenerate=n_params - n_gauge - n_constrained,
            n_gauge=n_gauge,
            n_total=n_params,
            threshold=1.0,
            threshold_rule="constrained when data precision > prior precision",
            phi_singular_values=np.sort(rng.uniform(0, 5, n_units))[::-1],
            phi_effective_rank=min(n_units, 3),
            identifiable=False,
            verdict="K is determined only up to its conditional mean.",
            unit_scores=rng.uniform(0, 1, n_units),
        )
    if with_distribution:
        n_z, width = rank + n_inputs + 1, 16

        def flow(n_in: int, n_out: int) -> dict[str, np.ndarray]:
            return {
                "net.0.weight": rng.standard_normal((width, n_in + 1)).astype(np.float32),
                "net.0.bias": rng.standard_normal(width).astype(np.float32),
                "net.2.weight": rng.standard_normal((n_out, width)).astype(np.float32),
                "net.2.bias": rng.standard_normal(n_out).astype(np.float32),
                "log_scale": np.array(rng.standard_normal(), dtype=np.float32),
            }

        distribution = data.ConnectivityDistribution(
            flow_a_parameters=flow(n_z, n_z),
            flow_b_parameters=flow(n_z + rank, rank),
            architecture={"n_z": n_z, "rank": rank, "hidden": [width], "activation": "silu"},
            sigma=0.5,
            ridge_lambda=1e-4,
            n_virtual_units=1000,
            training_curves={
                "flow_a_loss": rng.uniform(0, 1, 50),
                "flow_b_loss": rng.uniform(0, 1, 50),
                "flow_b_val": np.column_stack([np.arange(0, 50, 10), rng.uniform(0, 1, 5)]),
            },
            samples_z=rng.standard_normal((64, n_z)),
            samples_k=rng.standard_normal((64, rank)),
            validation_metrics={"sinkhorn_w2": 0.05, "g_error": 0.01},
        )
    provenance = data.Provenance(
        software_version=__version__,
        config_json=json.dumps({"rank": rank, "bin_width": bin_width, "seed": 0}),
        random_seed=random_state if isinstance(random_state, int) else None,
        source=source if source is not None else data.SourceInfo(),
        created="2026-01-01T00:00:00+00:00",
    )
    return data.Results(
        name=name,
        fit=fit,
        provenance=provenance,
        posterior=posterior,
        degeneracy=degeneracy,
        distribution=distribution,
    )


def mock_joint(
    results: data.Results,
    *,
    n_sessions: int = 3,
    session: int = 0,
    with_pooled: bool = True,
    random_state: int | np.random.Generator | None = 0,
) -> data.Results:
    """``results`` as session ``session`` of a random joint fit of ``n_sessions`` sessions.

    The other sessions get random sizes; ``results``' units are the network's rows of
    ``session``. With ``with_pooled`` the summary also holds a pooled distribution (a copy of
    ``results.distribution``, which must then be set), a dissimilarity matrix, floors, maps and
    one flagged session.
    """
    check_positive_int(n_sessions, "n_sessions", minimum=2)
    rng = make_rng(random_state)
    fit = results.fit
    sizes = rng.integers(2, 9, n_sessions)
    sizes[session] = fit.n_units
    offset = int(sizes[:session].sum())
    total = int(sizes.sum())

    def network(own: np.ndarray) -> np.ndarray:
        whole = rng.standard_normal((total, *own.shape[1:]))
        whole[offset : offset + fit.n_units] = own
        return whole

    pooled: dict = {}
    if with_pooled:
        if results.distribution is None:
            raise ValueError("mock_joint(with_pooled=True) needs results with a distribution.")
        dissimilarity = rng.uniform(0, 1, (n_sessions, n_sessions))
        pooled = {
            "pooled": results.distribution,
            "dissimilarity": (dissimilarity + dissimilarity.T) * (1 - np.eye(n_sessions)),
            "floor": rng.uniform(0, 0.5, n_sessions),
            "symmetry": np.repeat(np.eye(fit.rank)[None], n_sessions, axis=0),
            "flagged": (n_sessions - 1,),
            "pooled_reason": "flows on every session's units; the last session is far",
        }
    joint = rng.normal(-1.0, 0.1, n_sessions)
    separate = joint + rng.normal(0, 0.01, n_sessions)
    summary = data.JointSummary(
        session=session,
        reference=int(np.argmax(sizes)),
        sources=tuple(f"session{s}.nwb" for s in range(n_sessions)),
        identifiers=tuple(f"id-{s}" for s in range(n_sessions)),
        n_units=sizes.astype(np.int64),
        n_trials=rng.integers(3, 10, n_sessions).astype(np.int64),
        joint_log_likelihood=joint,
        separate_log_likelihood=separate,
        difference=joint - separate,
        stderr=np.full(n_sessions, 0.003),
        worse=joint - separate < -0.006,
        network_M=network(fit.M),
        network_K=network(fit.K),
        network_B=network(fit.B),
        network_d=network(fit.d),
        gauge_note="one canonical gauge for every session, up to symmetries of the flow",
        note="posterior and degeneracy are not computed for joint fits",
        **pooled,
    )
    return dataclasses.replace(results, joint=summary)


_MOCK_SESSION = {
    "session_id": "session1",
    "experimenter": ["Doe, Jane"],
    "lab": "Mock lab",
    "institution": "Mock institute",
    "experiment_description": "Synthetic recording for nwb_lrconn tests.",
    "keywords": ["synthetic", "nwb_lrconn"],
    "subject": {
        "subject_id": "mouse1",
        "species": "Mus musculus",
        "sex": "F",
        "age": "P90D",
        "description": "Synthetic subject.",
    },
}
_MOCK_START = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


def mock_units_nwb(
    path: str | Path,
    n_units: int = 8,
    *,
    duration: float = 10.0,
    identifier: str | None = None,
    random_state: int | np.random.Generator | None = 0,
) -> Path:
    """Write a small NWB file with a Units table of Poisson spike trains and a trials table.

    Parameters
    ----------
    path : str or Path
        File to create.
    n_units : int, default: 8
        Units (ids ``0 .. n_units - 1``), 2–20 Hz.
    duration : float, default: 10.0
        Session length in seconds; five trials tile it.
    identifier : str, optional
        ``NWBFile.identifier`` (a fresh UUID by default).
    random_state : int, Generator or None, default: 0
        Seed.

    Returns
    -------
    Path
        ``path``.
    """
    from ..io import write_units_nwb

    check_positive_int(n_units, "n_units")
    rng = make_rng(random_state)
    edges = np.linspace(0, duration, 6)
    trains = [
        np.sort(rng.uniform(0, duration, rng.poisson(rate * duration)))
        for rate in rng.uniform(2, 20, n_units)
    ]
    return write_units_nwb(
        path,
        trains,
        trials=np.column_stack([edges[:-1], edges[1:]]),
        identifier=identifier or str(uuid.uuid4()),
        session_start_time=_MOCK_START,
        resolution=1 / 30000,
        description="Mock spike-sorted units.",
        metadata=_MOCK_SESSION,
        overwrite=True,
    )


def mock_ophys_nwb(
    path: str | Path,
    n_rois: int = 8,
    *,
    n_frames: int = 200,
    rate: float = 10.0,
    identifier: str | None = None,
    random_state: int | np.random.Generator | None = 0,
) -> Path:
    """Write a small NWB file with a PlaneSegmentation and its ΔF/F RoiResponseSeries.

    The objects live at :data:`OPHYS_TABLE` and :data:`OPHYS_SERIES`.

    Parameters
    ----------
    path : str or Path
        File to create.
    n_rois : int, default: 8
        ROIs (ids ``0 .. n_rois - 1``).
    n_frames : int, default: 200
        Frames of the series.
    rate : float, default: 10.0
        Frame rate in Hz.
    identifier : str, optional
        ``NWBFile.identifier`` (a fresh UUID by default).
    random_state : int, Generator or None, default: 0
        Seed.

    Returns
    -------
    Path
        ``path``.
    """
    from ..io import write_ophys_nwb

    check_positive_int(n_rois, "n_rois")
    rng = make_rng(random_state)
    return write_ophys_nwb(
        path,
        rng.standard_normal((n_frames, n_rois)).astype(np.float32),
        rate=rate,
        identifier=identifier or str(uuid.uuid4()),
        session_start_time=_MOCK_START,
        unit="n.a.",
        description="Mock two-photon calcium imaging.",
        metadata=_MOCK_SESSION,
        overwrite=True,
    )
