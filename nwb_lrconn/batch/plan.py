"""Planning a batch: expand inputs into sources, and cross them with ranks and seeds.

Each task of a batch is a :class:`BatchTask`: one source (local path, URL or DANDI asset) fitted
at one rank with one seed, written to its own derived NWB file. Outputs follow the DANDI layout,
``sub-<subject>/sub-<subject>_ses-<session>_desc-lrconn-rank<R>seed<S>_<modality>.nwb``, when the
source has subject and session ids, and are the same on every rerun (:func:`output_name`).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._validation import check_positive_int

if TYPE_CHECKING:
    from ..config import RunConfig

__all__ = ["BatchTask", "expand_inputs", "output_name", "plan_batch"]

_MANIFEST_SUFFIXES = (".txt", ".csv", ".tsv")


def _is_remote(source: str) -> bool:
    from ..io.streaming import is_remote

    return is_remote(source)


@dataclass(frozen=True)
class BatchTask:
    """One unit of batch work: fit one input at one rank with one seed.

    Attributes
    ----------
    input : str
        Absolute local path, URL or DANDI reference of the source NWB file.
    rank : int
        Rank R of the fit.
    seed : int
        Random seed of the run.
    output : str
        Absolute path of the output NWB file (unique to this task).
    config_json : str
        The full :class:`~nwb_lrconn.config.RunConfig` of this task as JSON (rank and seed set).
    cache_dir : str or None
        Folder keeping streamed bytes of remote inputs (shared by the tasks of a batch).
    problem : str
        Why the input cannot be fitted, found while planning ("" when it can): such a task is
        reported as failed without running.
    """

    input: str
    rank: int
    seed: int
    output: str
    config_json: str
    cache_dir: str | None = None
    problem: str = ""

    @property
    def is_remote(self) -> bool:
        """Whether the input is read over the network (a URL or a DANDI reference)."""
        return _is_remote(self.input)


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Expand files, glob patterns and manifests into a list of unique sources.

    Parameters
    ----------
    inputs : str, path, or iterable of them
        Each entry is one of: a local NWB file; a glob pattern (``data/*.nwb``, ``**`` allowed);
        a URL (``http(s)://``, ``s3://``, ...) or DANDI reference (``DANDI:000207/sub-4/...``),
        kept as is; or a manifest, a ``.txt`` file with
        one path or URL per line (blank lines and ``#`` comments ignored) or a ``.csv``/``.tsv``
        file whose ``path`` or ``url`` column (else its first column) lists them. Relative paths
        in a manifest are relative to the manifest's folder.

    Returns
    -------
    list of str
        Absolute local paths and URLs, in the order given, without duplicates.

    Raises
    ------
    FileNotFoundError
        When a file or manifest does not exist, or a glob pattern matches nothing.
    ValueError
        When nothing is left to process.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[str] = []
    for entry in inputs:
        found.extend(_expand_one(os.fspath(entry), base=Path.cwd()))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ValueError("no inputs to process: give NWB files, glob patterns, URLs or manifests.")
    return unique


def _expand_one(entry: str, *, base: Path) -> list[str]:
    entry = entry.strip()
    if _is_remote(entry):
        return [entry]
    path = Path(entry).expanduser()
    if not path.is_absolute():
        path = base / path
    if glob.has_magic(entry):
        matches = sorted(glob.glob(os.fspath(path), recursive=True))
        files = [str(Path(m).resolve()) for m in matches if Path(m).is_file()]
        if not files:
            raise FileNotFoundError(f"glob pattern {entry!r} matched no file.")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    if path.suffix.lower() in _MANIFEST_SUFFIXES:
        return _read_manifest(path)
    return [str(path.resolve())]


def _read_manifest(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        entries = [line.strip() for line in lines]
        entries = [e for e in entries if e and not e.startswith("#")]
    else:
        import pandas as pd

        table = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str)
        if table.empty or not len(table.columns):
            raise ValueError(f"manifest {path} lists no input.")
        columns = [c for c in ("path", "url") if c in table.columns]
        column = columns[0] if columns else table.columns[0]
        entries = [str(v).strip() for v in table[column].dropna()]
    out: list[str] = []
    for entry in entries:
        if glob.has_magic(entry) or not entry.lower().endswith(_MANIFEST_SUFFIXES):
            out.extend(_expand_one(entry, base=path.parent))
        else:
            raise ValueError(f"manifest {path} lists another manifest ({entry!r}); not supported.")
    return out


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:8]


def output_name(
    source: str,
    rank: int,
    seed: int,
    *,
    session: dict | None = None,
    modality: str = "ecephys",
    unique: bool = False,
) -> str:
    """Return the deterministic output path of a task, relative to the output folder.

    Parameters
    ----------
    source : str
        Absolute local path, URL or DANDI reference of the input.
    rank, seed : int
        Rank and seed of the task.
    session : dict, optional
        The source's identity (:attr:`nwb_lrconn.data.SourceInfo.session`): its
        ``subject.subject_id`` and ``session_id`` name the file.
    modality : str, default: "ecephys"
        Last entity of the name ("ophys" for calcium).
    unique : bool, default: False
        Add the first 8 hex digits of the SHA-256 of ``source`` to the description, for inputs
        whose ids (or file names) would otherwise give the same name.

    Returns
    -------
    str
        ``sub-<subject>/sub-<subject>_ses-<session>_desc-lrconn-rank<R>seed<S>_<modality>.nwb``
        with subject and session ids; otherwise ``<stem>_desc-lrconn-rank<R>seed<S>.nwb``.
    """
    from ..data import SourceInfo
    from ..extension._derived import derived_file_name

    name = f"rank{rank}seed{seed}"
    if unique:
        name = f"{_digest(source)}{name}"
    tail = source.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    info = SourceInfo(
        path=tail,
        object_path="processing/ophys" if modality == "ophys" else "units",
        session=session or {},
    )
    return derived_file_name(info, name).as_posix()


def _identities(sources: list[str], cache_dir: str | None) -> tuple[dict, dict]:
    """Check every source (the pipeline's input check) and read its session identity.

    Returns ``({source: identity}, {source: problem})``.
    """
    from ..io import open_nwb
    from ..io._identity import session_identity
    from ..pipeline import check_input

    identities, problems = {}, {}
    for source in sources:
        try:
            check_input(source, cache_dir=cache_dir)
            with open_nwb(source, cache_dir=cache_dir) as nwbfile:
                identities[source] = session_identity(nwbfile)
        except (OSError, ValueError, ImportError) as err:
            identities[source] = {}
            problems[source] = f"{type(err).__name__}: {' '.join(str(err).split())}"
    return identities, problems


def plan_batch(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    ranks: Sequence[int] | None,
    seeds: Sequence[int] | None,
    config: RunConfig,
    output_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
) -> list[BatchTask]:
    """Plan the tasks of a batch: every input × rank × seed, in that order.

    Parameters
    ----------
    inputs : str, path, or iterable of them
        See :func:`expand_inputs`.
    ranks : sequence of int or None
        Ranks to fit; None uses ``config.fit.candidate_ranks``.
    seeds : sequence of int or None
        Seeds (integers >= 0); None uses ``(config.seed,)``.
    config : RunConfig
        Base configuration; each task overrides its rank and seed.
    output_dir : str or path
        Folder of the outputs.
    cache_dir : str or path, optional
        Folder keeping streamed bytes of remote inputs.

    Returns
    -------
    list of BatchTask
        One task per (input, rank, seed); inputs that fail the pipeline's input check (not
        readable, not NWB) get tasks whose ``problem`` says why.

    Raises
    ------
    ValueError
        On an empty or repeated rank or seed list, or a seed of None.
    TypeError
        When ``config`` is not a RunConfig, or a rank or seed is not an integer.
    """
    from ..config import RunConfig

    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig; got {type(config).__name__}.")
    ranks = tuple(config.fit.candidate_ranks if ranks is None else ranks)
    seeds = batch_seeds(config, seeds)
    ranks = _check_int_list(ranks, "ranks", minimum=1)
    seeds = _check_int_list(seeds, "seeds", minimum=0)
    sources = expand_inputs(inputs)
    out_dir = Path(output_dir).expanduser().resolve()
    cache = None if cache_dir is None else str(Path(cache_dir).expanduser().resolve())
    modality = "ophys" if config.read.source == "ophys" else "ecephys"
    sessions, problems = _identities(sources, cache)

    def name(source: str, unique: bool) -> str:
        return output_name(
            source, ranks[0], seeds[0], session=sessions[source], modality=modality, unique=unique
        )

    plain = {source: name(source, False) for source in sources}
    clashing = {s for s in sources if list(plain.values()).count(plain[s]) > 1}
    tasks = []
    for source in sources:
        for rank in ranks:
            for seed in seeds:
                task_config = config.with_overrides(rank=rank, seed=seed)
                relative = output_name(
                    source,
                    rank,
                    seed,
                    session=sessions[source],
                    modality=modality,
                    unique=source in clashing,
                )
                tasks.append(
                    BatchTask(
                        input=source,
                        rank=rank,
                        seed=seed,
                        output=str(out_dir / relative),
                        config_json=task_config.to_json(),
                        cache_dir=cache,
                        problem=problems.get(source, ""),
                    )
                )
    return tasks


def batch_seeds(config: RunConfig, seeds: Sequence[int] | None) -> tuple[int, ...]:
    """``seeds``, or the configuration's one seed (batch outputs are matched by seed)."""
    if seeds is not None:
        return tuple(seeds)
    if config.seed is None:
        raise ValueError(
            "batch runs need integer seeds (outputs are matched by seed); config.seed is "
            "None: pass seeds=[...] or set seed in the configuration."
        )
    return (config.seed,)


def _check_int_list(values: tuple, name: str, *, minimum: int) -> tuple[int, ...]:
    if not values:
        raise ValueError(f"{name} must list at least one value; got an empty list.")
    checked = tuple(check_positive_int(v, f"{name} entries", minimum=minimum) for v in values)
    if len(set(checked)) != len(checked):
        raise ValueError(f"{name} must not repeat a value; got {list(checked)}.")
    return checked
