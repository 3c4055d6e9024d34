"""Several sessions of one circuit: read → check → joint fit → warrant check → pooled distribution.

Sessions recorded on different days see different units of one network. :func:`run_joint` reads
every session with the same :class:`~nwb_lrconn.config.RunConfig` read settings, checks before
any fitting that they can be fitted together (one observation kind, one bin width, the same
input channels, enough units and trials for the rank in each), fits one
:class:`~nwb_lrconn.model.joint.JointLowRankRNN`, compares each session's held-out likelihood
under the joint fit with its own separate fit (a session whose dynamics disagree is flagged,
never silently averaged), and, when the pooled-distribution stage is available, learns the
connectivity distribution on every session's units in the shared gauge. It returns one
:class:`~nwb_lrconn.data.Results` per session, each with a
:class:`~nwb_lrconn.data.JointSummary` describing the joint model.

:func:`run_joint_files` also writes one derived NWB file per session (the layout of
:func:`~nwb_lrconn.pipeline.run_file`'s derived output, so every reader of single-session results
reads it), each holding that session's units and latents in the shared gauge plus the ``joint``
group. Every output is checked before the fit; each is written atomically and no input is ever
touched.

The Laplace posterior and the degeneracy analysis are not computed for joint fits: they analyse
one network through one session's data, while here a session's K is only its share of the joint
mean-field sum. The note is kept in each file (``joint.note``) and the stored configuration has
``posterior.enabled`` false.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import RunConfig
from .data import JointSummary, LowRankFit, Recording, Results
from .pipeline import (
    Log,
    PipelineError,
    _emitter,
    _is_local,
    _missing_folders,
    _read_checked,
    _results,
    check_input,
    judge_fit,
    output_path,
    resolve_source,
)

__all__ = [
    "GAUGE_NOTE",
    "SKIPPED_NOTE",
    "check_sessions",
    "joint_summaries",
    "run_joint",
    "run_joint_files",
]

GAUGE_NOTE = (
    "every session's latents and loadings are in one canonical gauge, pinned by the shared "
    "dynamics (no unit is shared); where the flow has a symmetry (a map of the latent space "
    "carrying trajectories onto trajectories) each session is pinned only up to it"
)
SKIPPED_NOTE = (
    "the Laplace posterior and the degeneracy analysis were not computed: they are "
    "single-network analyses, and a session's K is only its share of the joint mean-field sum"
)


def _label(source: Any, index: int, recording: Recording | None = None) -> str:
    """A short name of a session for messages: the file name, the URL / DANDI path, or its
    position (in-memory sessions)."""
    if _is_local(source):
        return Path(source).name
    if recording is not None and recording.source.path:
        return recording.source.path
    if isinstance(source, str):
        return source
    return f"session {index + 1}"


def check_sessions(recordings: Sequence[Recording], labels: Sequence[str]) -> None:
    """Check that ``recordings`` can be fitted as one network, naming the session that differs.

    Raises
    ------
    PipelineError
        When two sessions differ in observation kind, bin width, or input channels.
    """
    first, name = recordings[0], labels[0]
    for rec, other in zip(recordings[1:], labels[1:]):
        for what, a, b, fix in (
            ("kind", first.kind, rec.kind, "fit sessions of one kind (spikes or calcium)"),
            ("bin width", first.bin_width, rec.bin_width, "read both with one --bin-width"),
            ("input channels", first.input_names, rec.input_names, "select the same inputs"),
        ):
            if a != b:
                raise PipelineError(
                    f"sessions {name} and {other} differ in {what} ({a!r} against {b!r}); a "
                    f"joint fit needs one network seen the same way: {fix}."
                )


def joint_summaries(
    joint, recordings: Sequence[Recording], warrant: Sequence[dict], pooled=None, *, note=""
) -> list[JointSummary]:
    """One :class:`~nwb_lrconn.data.JointSummary` per session of a fitted joint model.

    Parameters
    ----------
    joint : JointLowRankRNN
        Fitted on ``recordings``.
    recordings : sequence of Recording
        The sessions, in the order of the fit.
    warrant : sequence of dict
        :meth:`~nwb_lrconn.model.joint.JointLowRankRNN.compare_to_separate`'s rows.
    pooled : PooledDistribution, optional
        The pooled distribution (``pooled``, ``sessions``, ``dissimilarity``, ``floor``,
        ``symmetry``, ``flagged``, ``reason``); None when not computed.
    note : str, default: ""
        Stages not run, and why.

    Returns
    -------
    list of JointSummary
    """
    model = joint.model_
    network = {
        name: getattr(model, name).detach().cpu().double().numpy() for name in ("M", "K", "B", "d")
    }
    column = {key: np.array([row[key] for row in warrant]) for key in warrant[0]}
    extra: dict[str, Any] = {}
    if pooled is not None:
        extra = {
            "pooled": pooled.pooled,
            "dissimilarity": np.asarray(pooled.dissimilarity, np.float64),
            "floor": np.asarray(pooled.floor, np.float64),
            "symmetry": np.stack([np.asarray(m, np.float64) for m in pooled.symmetry]),
            "flagged": tuple(int(s) for s in pooled.flagged),
            "pooled_reason": str(pooled.reason),
        }
    return [
        JointSummary(
            session=s,
            reference=int(joint.seed_session_),
            sources=tuple(rec.source.path for rec in recordings),
            identifiers=tuple(rec.source.identifier for rec in recordings),
            n_units=np.array([rec.n_units for rec in recordings], np.int64),
            n_trials=np.array([rec.n_trials for rec in recordings], np.int64),
            joint_log_likelihood=column["joint"].astype(np.float64),
            separate_log_likelihood=column["separate"].astype(np.float64),
            difference=column["difference"].astype(np.float64),
            stderr=column["stderr"].astype(np.float64),
            worse=column["worse"].astype(bool),
            network_M=network["M"],
            network_K=network["K"],
            network_B=network["B"],
            network_d=network["d"],
            gauge_note=GAUGE_NOTE,
            note=note,
            **extra,
        )
        for s in range(len(recordings))
    ]


def _pooled_distribution(
    config: RunConfig, joint, recordings, labels, *, progress: bool, log: Log
):
    """The pooled distribution (None when the stage is off); logs the sessions it flags."""
    from .inference.pooled import pooled_distribution

    if not config.distribution.enabled:
        return None
    start = time.perf_counter()
    log("pooled connectivity distribution (every session's units, shared gauge)")
    dist = config.distribution
    pooled = pooled_distribution(
        joint,
        list(recordings),
        model=dist.model,
        n_samples=dist.n_samples,
        flow_params={**dist.estimator_kwargs(), "device": config.device, "progress": progress},
        mixture_params=dist.mixture_kwargs(),
        random_state=config.seed,
    )
    log(f"pooled distribution: {pooled.reason}")
    for s in pooled.flagged:
        others = [pooled.dissimilarity[s, o] for o in range(len(labels)) if o != s]
        log(
            f"{labels[s]}: its units' loading distribution is far from every other session's "
            f"(D {min(others):.3g} against within-session floor {pooled.floor[s]:.3g}): FLAGGED, "
            "pooling it is not warranted even where its likelihood agrees"
        )
    log(f"pooled connectivity distribution done in {time.perf_counter() - start:.1f} s")
    return pooled


def _fit_joint(config: RunConfig, recordings, labels, *, progress: bool, log: Log):
    from .model.estimator import LowRankRNNEstimator
    from .model.joint import JointLowRankRNN

    start = time.perf_counter()
    sizes = ", ".join(str(rec.n_units) for rec in recordings)
    log(f"joint fit of {len(recordings)} sessions ({sizes} units), rank {config.fit.rank}")
    estimator = LowRankRNNEstimator(
        **config.fit.estimator_kwargs(int(config.fit.rank)),
        random_state=config.seed,
        device=config.device,
        progress=progress,
    )
    try:
        joint = JointLowRankRNN(estimator).fit(list(recordings))
    except ValueError as err:  # a session the estimator cannot fit alone
        raise PipelineError(f"the joint fit cannot start: {err}") from None
    log(f"stage 1 (joint low-rank RNN fit) done in {time.perf_counter() - start:.1f} s")
    return joint, joint.compare_to_separate(list(recordings))


def _report_warrant(labels, warrant, log: Log) -> None:
    """One line per session: joint against separate held-out likelihood, and what it says.

    The likelihood half of the verdict only: the units' law is checked with the pooled
    distribution, and the final verdict (:meth:`~nwb_lrconn.data.JointSummary.verdict`) words both.
    """
    for label, row in zip(labels, warrant):
        verdict = (
            "WORSE than its own fit: its dynamics disagree with the others' (flagged)"
            if row["worse"]
            else "the likelihood agrees with pooling"
        )
        log(
            f"{label}: held-out log-likelihood {row['joint']:.5g} joint vs {row['separate']:.5g} "
            f"separate per value ({row['difference']:+.3g} ± {row['stderr']:.2g}): {verdict}"
        )


def _checked_config(config: RunConfig | None) -> RunConfig:
    config = RunConfig() if config is None else config
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig; got {type(config).__name__}.")
    if config.fit.rank == "auto":
        raise PipelineError(
            "a joint fit needs one rank; got rank='auto': choose it on one session "
            "(nwb-lrconn fit --rank auto) and pass it (CLI: --rank)."
        )
    return config


def _read_sessions(config, sources, log, cache_dir, *, checked: bool) -> list[Recording]:
    recordings = []
    for i, source in enumerate(sources):
        prefix = f"session {i + 1}/{len(sources)} ({_label(source, i)}): "

        def session_log(message: str, prefix=prefix) -> None:
            log(prefix + message)

        recordings.append(_read_checked(config, source, session_log, cache_dir, checked=checked))
    return recordings


def _resolved(sources) -> list:
    if isinstance(sources, (str, os.PathLike)) or not isinstance(sources, Sequence):
        raise TypeError(
            f"sources must be a list of NWB files (paths, URLs or DANDI references), one per "
            f"session; got {type(sources).__name__}."
        )
    sources = [resolve_source(s) for s in sources]
    if len(sources) < 2:
        raise PipelineError(
            f"a joint fit needs at least 2 sessions; got {len(sources)}: fit one session with "
            "`nwb-lrconn fit` (without --joint)."
        )
    seen: dict[str | int, int] = {}
    for i, source in enumerate(sources):
        key = os.path.realpath(source) if _is_local(source) else getattr(source, "url", source)
        key = key if isinstance(key, str) else id(key)  # in memory: the same object twice
        if key in seen:
            raise PipelineError(
                f"{_label(source, i)} is given twice (sessions {seen[key] + 1} and {i + 1}); each "
                "session of a joint fit must be a different recording."
            )
        seen[key] = i
    return sources


def _judged_fits(config, joint, recordings, log) -> list[LowRankFit]:
    """Each session's fit, refused (or kept marked failed) when worse than a trivial baseline;
    judged before any later stage runs."""
    fits = []
    for s, rec in enumerate(recordings):
        where = f"session {rec.source.path or s + 1} in the joint fit"
        fits.append(judge_fit(config, joint.session_fit(s, rec), where, log)[0])
    return fits


def _session_results(config, recordings, fits, joint, warrant, pooled, log) -> list[Results]:
    note = ""
    if config.posterior.enabled:
        note = SKIPPED_NOTE
        log(f"note: {note}")
        config = config.with_overrides(**{"posterior.enabled": False})
    summaries = joint_summaries(joint, recordings, warrant, pooled, note=note)
    return [
        _results(
            config,
            rec,
            fit,
            distribution=None if pooled is None else pooled.sessions[s],
            joint=summary,
        )
        for s, (rec, fit, summary) in enumerate(zip(recordings, fits, summaries))
    ]


def run_joint(
    config: RunConfig | None,
    sources: Sequence[Any],
    *,
    progress: bool = True,
    log: Log | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[Results]:
    """Fit several sessions of one circuit as one network; return one Results per session.

    Parameters
    ----------
    config : RunConfig, optional
        Read settings (the same for every session), the fit (one integer rank), the seed and
        the distribution stage; default ``RunConfig()``.
    sources : sequence
        Two or more sessions: NWB paths, URLs, DANDI references, open NWBFiles or Recordings.
    progress : bool, default: True
        Progress bars on the long steps.
    log : callable, optional
        Receives a one-line message per stage (the CLI prints them).
    cache_dir : path, optional
        Keep streamed bytes here (remote sources).

    Returns
    -------
    list of Results
        In the order of ``sources``; ``results.joint`` describes the joint model and the check
        that pooling each session is warranted; ``results.distribution`` is the session's own
        distribution in the shared gauge when the pooled stage ran.

    Raises
    ------
    PipelineError
        Fewer than 2 sessions, one given twice, ``rank="auto"``, sessions that differ in kind,
        bin width or inputs, or one that cannot be fitted at the rank.
    FitFailedError
        A session's joint fit is worse than a trivial baseline (and not ``keep_failed``).
    """
    config = _checked_config(config)
    log = _emitter(log)
    sources = _resolved(sources)
    recordings = _read_sessions(config, sources, log, cache_dir, checked=False)
    labels = [_label(s, i, r) for i, (s, r) in enumerate(zip(sources, recordings))]
    check_sessions(recordings, labels)
    joint, warrant = _fit_joint(config, recordings, labels, progress=progress, log=log)
    _report_warrant(labels, warrant, log)
    fits = _judged_fits(config, joint, recordings, log)
    pooled = _pooled_distribution(config, joint, recordings, labels, progress=progress, log=log)
    return _session_results(config, recordings, fits, joint, warrant, pooled, log)


def run_joint_files(
    sources: Sequence[Any],
    config: RunConfig | None = None,
    *,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Log | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Fit several sessions as one network and write one derived NWB file per session.

    Each file has the layout of :func:`~nwb_lrconn.pipeline.run_file`'s derived output (read it
    with :func:`~nwb_lrconn.extension.read_results`), plus the ``joint`` group of its fit.

    Parameters
    ----------
    sources : sequence
        Two or more NWB files: local paths, URLs or DANDI references.
    config : RunConfig, optional
        See :func:`run_joint`.
    output_dir : str or path-like, optional
        Folder of the derived files (DANDI layout below it, as
        :func:`~nwb_lrconn.pipeline.output_path`); default beside each local source.
    overwrite : bool, default: False
        Replace existing output files.
    progress, log, cache_dir
        See :func:`run_joint`.

    Returns
    -------
    list of Path
        The written files, in the order of ``sources``.

    Raises
    ------
    FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError
        Checked before fitting: missing or unreadable inputs, unwritable or existing outputs.
    PipelineError
        See :func:`run_joint`; also two sessions whose outputs would have one name.
    """
    from .extension import write_results
    from .extension._files import check_output_path

    config = _checked_config(config)
    log = _emitter(log)
    sources = _resolved(sources)
    for source in sources:
        check_input(source, cache_dir=cache_dir)
    if output_dir is not None:
        if Path(output_dir).exists() and not Path(output_dir).is_dir():
            raise NotADirectoryError(f"--output-dir {output_dir} is a file, not a folder.")
        _missing_folders(Path(output_dir) / "sub")
    recordings = _read_sessions(config, sources, log, cache_dir, checked=True)
    labels = [_label(s, i, r) for i, (s, r) in enumerate(zip(sources, recordings))]
    check_sessions(recordings, labels)
    targets = [
        output_path(config, rec, source, output_dir=output_dir)
        for rec, source in zip(recordings, sources)
    ]
    clash = _first_clash(targets)
    if clash is not None:
        i, j = clash
        raise PipelineError(
            f"sessions {labels[i]} and {labels[j]} would both be written to {targets[i]} (same "
            "subject and session id): give each session its own --output-dir run, or fix the "
            "files' session_id."
        )
    missing = []
    for target, source in zip(targets, sources):
        folders = _missing_folders(target.parent)
        missing += [f for f in folders if f not in missing]
        if not folders:
            check_output_path(
                target, overwrite=overwrite, source=source if _is_local(source) else None
            )
    joint, warrant = _fit_joint(config, recordings, labels, progress=progress, log=log)
    _report_warrant(labels, warrant, log)
    fits = _judged_fits(config, joint, recordings, log)
    pooled = _pooled_distribution(config, joint, recordings, labels, progress=progress, log=log)
    results = _session_results(config, recordings, fits, joint, warrant, pooled, log)
    for folder in missing:
        folder.mkdir(exist_ok=True)
    written = []
    for result, rec, source, target in zip(results, recordings, sources, targets):
        log(f"writing {target}")
        written.append(
            write_results(
                result,
                source,
                target,
                overwrite=overwrite,
                module_name=config.module_name,
                unit_rows=rec.unit_rows,
            )
        )
    return written


def _first_clash(targets: Sequence[Path]) -> tuple[int, int] | None:
    seen: dict[Path, int] = {}
    for j, target in enumerate(targets):
        key = target.absolute()
        if key in seen:
            return seen[key], j
        seen[key] = j
    return None
