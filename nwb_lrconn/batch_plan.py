"""Planning a batch: expand inputs into sources, and cross them with ranks and seeds.

Each task of a batch is a :class:`BatchTask`: one source (local path or URL) fitted at one rank
with one seed, written to its own output file whose name is a deterministic function of the three
(:func:`output_name`).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ._validation import check_positive_int

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = ["BatchTask", "expand_inputs", "output_name", "plan_batch", "is_url"]

_MANIFEST_SUFFIXES = (".txt", ".csv", ".tsv")
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(source: str) -> bool:
    """Whether ``source`` is a URL (``scheme://...``) rather than a local path."""
    return bool(_URL_RE.match(source))


@dataclass(frozen=True)
class BatchTask:
    """One unit of batch work: fit one input at one rank with one seed.

    Attributes
    ----------
    input : str
        Absolute local path or URL of the source NWB file.
    rank : int
        Rank R of the fit.
    seed : int
        Random seed of the run.
    output : str
        Absolute path of the output NWB file (unique to this task).
    config_json : str
        The full :class:`~nwb_lrconn.config.RunConfig` of this task as JSON (rank and seed set).
    """

    input: str
    rank: int
    seed: int
    output: str
    config_json: str

    @property
    def is_url(self) -> bool:
        """Whether the input is a URL (``scheme://...``) rather than a local file."""
        return is_url(self.input)


def expand_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Expand files, glob patterns and manifests into a list of unique sources.

    Parameters
    ----------
    inputs : str, path, or iterable of them
        Each entry is one of: a local NWB file; a glob pattern (``data/*.nwb``, ``**`` allowed);
        a URL (``http(s)://``, ``s3://``, ...), kept as is; or a manifest, a ``.txt`` file with
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
    if _URL_RE.match(entry):
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


def output_name(source: str, rank: int, seed: int) -> str:
    """Return the deterministic output file name of a task.

    Parameters
    ----------
    source : str
        Absolute local path or URL of the input (as returned by :func:`expand_inputs`).
    rank, seed : int
        Rank and seed of the task.

    Returns
    -------
    str
        ``<stem>_<digest>_rank<rank>_seed<seed>.nwb``, where ``stem`` is the input's file name
        without ``.nwb`` (characters other than letters, digits, ``.``, ``_`` and ``-`` replaced
        by ``_``) and ``digest`` the first 8 hex digits of the SHA-256 of ``source``, so two
        inputs with the same file name never share an output.
    """
    tail = source.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    stem = re.sub(r"\.nwb$", "", tail, flags=re.IGNORECASE)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).strip("._") or "input"
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:8]
    return f"{stem}_{digest}_rank{rank}_seed{seed}.nwb"


def plan_batch(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    ranks: Sequence[int] | None,
    seeds: Sequence[int] | None,
    config: RunConfig,
    output_dir: str | os.PathLike,
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

    Returns
    -------
    list of BatchTask
        One task per (input, rank, seed).

    Raises
    ------
    ValueError
        On an empty or repeated rank or seed list, or a seed of None.
    TypeError
        When ``config`` is not a RunConfig, or a rank or seed is not an integer.
    """
    from .config import RunConfig

    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig; got {type(config).__name__}.")
    ranks = tuple(config.fit.candidate_ranks if ranks is None else ranks)
    if seeds is None:
        if config.seed is None:
            raise ValueError(
                "batch runs need integer seeds (outputs are matched by seed); config.seed is "
                "None: pass seeds=[...] or set seed in the configuration."
            )
        seeds = (config.seed,)
    seeds = tuple(seeds)
    ranks = _check_int_list(ranks, "ranks", minimum=1)
    seeds = _check_int_list(seeds, "seeds", minimum=0)
    sources = expand_inputs(inputs)
    out_dir = Path(output_dir).expanduser().resolve()
    tasks = []
    for source in sources:
        for rank in ranks:
            for seed in seeds:
                task_config = config.with_overrides(rank=rank, seed=seed)
                tasks.append(
                    BatchTask(
                        input=source,
                        rank=rank,
                        seed=seed,
                        output=str(out_dir / output_name(source, rank, seed)),
                        config_json=task_config.to_json(),
                    )
                )
    return tasks


def _check_int_list(values: tuple, name: str, *, minimum: int) -> tuple[int, ...]:
    if not values:
        raise ValueError(f"{name} must list at least one value; got an empty list.")
    checked = tuple(check_positive_int(v, f"{name} entries", minimum=minimum) for v in values)
    if len(set(checked)) != len(checked):
        raise ValueError(f"{name} must not repeat a value; got {list(checked)}.")
    return checked
