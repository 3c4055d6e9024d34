"""Command-line interface: ``nwb-lrconn fit | report | demo | inspect | batch``.

A thin adapter over :mod:`nwb_lrconn.pipeline`: flags map onto
:class:`~nwb_lrconn.config.RunConfig` fields (defaults < ``--config`` file < flags), the work
is done by the same functions the tutorials call, and bad input gives a one-line error and a
non-zero exit code, never a traceback (``--debug`` shows it). Exit codes: 0 success, 1 error in
the input or the run, 2 bad usage, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig

__all__ = ["main", "build_parser"]

PROG = "nwb-lrconn"

_EPILOG = """\
examples:
  nwb-lrconn inspect session.nwb
  nwb-lrconn fit session.nwb --units units --bin-width 0.02 --trials trials --rank 2
  nwb-lrconn fit session.nwb --bin-width 0.05 --window 2 --epochs epochs:wake --rank auto
  nwb-lrconn fit fly.nwb --ophys processing/ophys/Fluorescence/EPG --trials trials --rank 2
  nwb-lrconn fit session.nwb --config run.toml --out fits/session_rank2.nwb --seed 1
  nwb-lrconn fit session.nwb --output-dir derivatives/ --rank 2
  nwb-lrconn report sub-1_ses-1_desc-lrconn_ecephys.nwb --figures figures/
  nwb-lrconn demo --out demo/
  nwb-lrconn batch sessions/*.nwb --ranks 1 2 3 --seeds 0 1 --output-dir fits/
  nwb-lrconn fit day1.nwb day2.nwb day3.nwb --joint --rank 2 -o fits/

The output of `fit` is a new, small NWB file holding only the results, with the source's
subject and session identity and links to the source objects (named in the DANDI layout,
sub-<subject>_ses-<session>_desc-lrconn_<modality>.nwb). --copy-source writes a full copy of the
source plus the results instead; --in-place adds the results to the source itself. No mode ever
changes anything in the source but the added results group. With --joint, several sessions of
one circuit (different units, same bin width and inputs) are fitted as one network: one derived
file per session, each with a 'joint' group that names the sessions and checks, per session,
that the joint fit predicts its held-out data as well as its own fit.
"""


class CLIError(Exception):
    """A user-facing error with a one-line message (raised inside commands)."""


# ------------------------------------------------------------------------------------- parser
def _ranks(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,2,3; got {text!r}"
        ) from None


def _rank(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto'; got {text!r}"
        ) from None


def _where(text: str) -> str | tuple:
    from .io.selection import parse_where

    try:
        return parse_where(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _epochs(text: str) -> str | tuple[str, str]:
    table, sep, label = text.partition(":")
    return (table, label) if sep else table


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``nwb-lrconn`` (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Low-rank RNN connectivity from NWB recordings, what the data determine, "
        "and the maximum-entropy distribution over connectivity.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    fit = sub.add_parser(
        "fit",
        help="fit an NWB recording and write the results into NWB",
        description="Read spikes (Units) or calcium (RoiResponseSeries) from IN, fit a low-rank "
        "RNN, compute its posterior, degeneracies and connectivity distribution, and write "
        "everything into a new NWB file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument(
        "input",
        metavar="IN",
        nargs="*",
        help="NWB file: a path, a URL, or a DANDI asset (DANDI:000207/sub-4/...nwb, "
        "dandi://DANDI/000207/..., a dandiarchive.org or API URL); several with --joint",
    )
    fit.add_argument(
        "--joint",
        action="store_true",
        help="fit several sessions IN... of one circuit as one network (one output per session)",
    )
    _add_dandi(fit)
    fit.set_defaults(usage=fit)
    src = fit.add_mutually_exclusive_group()
    src.add_argument(
        "--units", metavar="PATH", nargs="?", const="units", help="Units table path (default)"
    )
    src.add_argument(
        "--ophys", metavar="SERIES", nargs="?", const="", help="fit calcium traces of SERIES"
    )
    src.add_argument(
        "--sorting",
        action="store_true",
        help="IN is a spikeinterface sorting folder saved with sorting.save(); needs --out",
    )
    fit.add_argument("--rank", type=_rank, help="rank R, or 'auto' to pick among --ranks")
    fit.add_argument("--ranks", type=_ranks, help="ranks tried by --rank auto (e.g. 1,2,3)")
    fit.add_argument("--bin-width", type=float, metavar="S", help="bin width in seconds")
    fit.add_argument("--trials", metavar="TABLE", help="TimeIntervals table of the trials")
    fit.add_argument("--event", metavar="COLUMN", help="align trials on this column")
    fit.add_argument(
        "--event-window",
        type=float,
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="seconds before and after --event (or the trial start)",
    )
    fit.add_argument(
        "--window", type=float, metavar="S", help="cut continuous data into windows of S seconds"
    )
    fit.add_argument(
        "--epochs",
        type=_epochs,
        metavar="TABLE[:LABEL]",
        help="only these epochs, e.g. epochs:wake",
    )
    fit.add_argument(
        "--unit-ids", type=_ranks, metavar="IDS", help="comma-separated unit or ROI ids"
    )
    fit.add_argument(
        "--where",
        type=_where,
        action="append",
        metavar="FILTER",
        help="keep units/ROIs by a column: location==ADn, 'quality in good,mua', iscell "
        "(repeat to combine; see `nwb-lrconn inspect`)",
    )
    fit.add_argument(
        "--all-rois",
        action="store_true",
        help="calcium: keep every ROI, not only those an iscell column calls cells",
    )
    fit.add_argument(
        "--normalize",
        choices=("auto", "zscore", "dff", "none"),
        help="calcium normalisation per ROI (default auto: z-score)",
    )
    out = fit.add_mutually_exclusive_group()
    out.add_argument(
        "--out", metavar="OUT.nwb", help="output file (default: DANDI-style name beside IN)"
    )
    out.add_argument(
        "--output-dir",
        "-o",
        metavar="DIR",
        help="write DIR/sub-<subject>/sub-..._desc-lrconn_*.nwb",
    )
    out.add_argument("--in-place", action="store_true", help="add the results to IN itself")
    fit.add_argument(
        "--copy-source",
        action="store_true",
        help="write a full copy of IN plus the results (instead of a small derived file)",
    )
    fit.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output file, or (--in-place) a fit of the same name",
    )
    fit.add_argument("--name", help="name of the fit group (default lrconn_fit)")
    fit.add_argument("--config", metavar="FILE", help="TOML or JSON run configuration")
    fit.add_argument("--seed", type=int, help="random seed (default 0)")
    fit.add_argument("--device", help="torch device, e.g. cpu or cuda")
    fit.add_argument("--max-epochs", type=int, metavar="N", help="stage-1 epoch limit")
    fit.add_argument("--no-posterior", action="store_true", help="skip posterior and degeneracy")
    fit.add_argument(
        "--keep-failed",
        action="store_true",
        help="write a fit that is worse than a trivial baseline (marked failed) instead of "
        "stopping",
    )
    fit.add_argument(
        "--no-distribution", action="store_true", help="skip the connectivity distribution"
    )
    _add_common(fit)

    report = sub.add_parser(
        "report",
        help="summarise every fit stored in an NWB file (and draw figures)",
        description="Print a readable summary of every stored fit: fit quality, constrained and "
        "degenerate directions and what they mean, distribution checks.",
    )
    report.add_argument("input", metavar="OUT.nwb", help="NWB file holding results")
    report.add_argument("--figures", metavar="DIR", help="write PNG and PDF figures into DIR")
    report.add_argument("--name", help="only this fit")
    report.add_argument("--module", default="lrconn", help="processing module (default lrconn)")
    report.add_argument(
        "--behaviour",
        metavar="SERIES",
        help="relate the latents to this TimeSeries of the source file on held-out trials, e.g. "
        "processing/behavior/CompassDirection/head_direction (an angle when its unit is "
        "radians or degrees)",
    )
    _add_common(report)

    demo = sub.add_parser(
        "demo",
        help="synthetic ring attractor end to end (simulate, NWB, fit, report, figures)",
        description="Simulate Poisson spikes from a ring-attractor network, write them to NWB, "
        "fit, compute posterior, degeneracy and distribution, write the results and report.",
    )
    demo.add_argument("--out", metavar="DIR", default="nwb_lrconn_demo", help="output folder")
    demo.add_argument("--quick", action="store_true", help="tiny sizes (seconds, for tests)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    _add_common(demo)

    inspect = sub.add_parser("inspect", help="list what an NWB file holds that can be fitted")
    inspect.add_argument(
        "input", metavar="IN", nargs="?", help="NWB file: a path, a URL, or a DANDI asset"
    )
    _add_dandi(inspect)
    inspect.set_defaults(usage=inspect)
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_common(inspect, progress=False)

    _add_batch_parser(sub)
    return parser


def _add_dandi(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("DANDI input (instead of IN; needs nwb-lrconn[dandi])")
    group.add_argument("--dandiset", metavar="ID", help="dandiset id, e.g. 000207")
    group.add_argument("--asset", metavar="PATH", help="asset path, e.g. sub-4/sub-4_ses-4.nwb")
    group.add_argument("--dandiset-version", metavar="V", help="dandiset version (default draft)")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="keep streamed bytes in DIR so reruns download nothing (or $NWB_LRCONN_CACHE_DIR)",
    )


def _input(args: argparse.Namespace) -> Any:
    """IN, or the DANDI asset named by --dandiset/--asset (resolved once)."""
    dandi = [args.dandiset, args.asset, args.dandiset_version]
    if args.input is not None:
        if any(v is not None for v in dandi):
            raise CLIError("give IN or --dandiset/--asset, not both")
        return args.input
    if args.dandiset is None or args.asset is None:
        raise CLIError("give an input file IN, or a DANDI asset with --dandiset ID --asset PATH")
    from .io import resolve_dandi

    return resolve_dandi(dandiset=args.dandiset, asset=args.asset, version=args.dandiset_version)


def _add_common(parser: argparse.ArgumentParser, *, progress: bool = True) -> None:
    if progress:
        parser.add_argument("--quiet", action="store_true", help="no progress bars or messages")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


# ------------------------------------------------------------------------------------ helpers
log = logging.getLogger("nwb_lrconn")


class _Elapsed(logging.Formatter):
    """``[nwb-lrconn]   12.3 s  message``: seconds since the command started."""

    def __init__(self) -> None:
        super().__init__()
        self.start = time.perf_counter()

    def format(self, record: logging.LogRecord) -> str:
        elapsed = time.perf_counter() - self.start
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"[{PROG}] {elapsed:6.1f} s  {level}{record.getMessage()}"


def _log_to_stderr(args: argparse.Namespace) -> logging.Handler:
    """Show the package's messages on stderr: stages (INFO), or only warnings with --quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Elapsed())
    quiet, debug = getattr(args, "quiet", False), getattr(args, "debug", False)
    log.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    log.addHandler(handler)
    return handler


def _config_from_args(args: argparse.Namespace) -> RunConfig:
    config = RunConfig.from_file(args.config) if args.config else RunConfig()
    overrides: dict[str, Any] = {}
    if args.units is not None:
        overrides.update(source="units", units_path=args.units)
    if args.ophys is not None:
        overrides.update(source="ophys", series_path=args.ophys or None)
        if args.bin_width is None and config.read.source != "ophys":
            overrides["bin_width"] = None  # native frame period unless --bin-width
    if args.sorting:
        overrides["source"] = "sorting"
    flag_to_key = {
        "rank": "rank",
        "ranks": "ranks",
        "bin_width": "bin_width",
        "trials": "trials",
        "event": "event",
        "event_window": "window",
        "window": "window_length",
        "epochs": "epochs",
        "unit_ids": "unit_ids",
        "name": "name",
        "seed": "seed",
        "device": "device",
        "max_epochs": "max_epochs",
    }
    for flag, key in flag_to_key.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    if args.where:
        overrides["where"] = args.where[0] if len(args.where) == 1 else tuple(args.where)
    if args.all_rois:
        overrides["cells_only"] = False
    if args.normalize is not None:
        overrides["normalize"] = None if args.normalize == "none" else args.normalize
    if args.keep_failed:
        overrides["keep_failed"] = True
    if args.no_posterior:
        overrides["posterior.enabled"] = False
    if args.no_distribution:
        overrides["distribution.enabled"] = False
    return config.with_overrides(**overrides)


def _load_sorting(path: str) -> Any:
    try:
        import spikeinterface.core as si
    except ImportError:
        raise CLIError(
            "--sorting needs spikeinterface: pip install nwb-lrconn[spikeinterface]"
        ) from None
    if not Path(path).exists():
        raise FileNotFoundError(f"sorting folder not found: {path}")
    return si.load(path)


# Library keywords named in error messages, and the flags that set them.
_FLAG_HINTS = {
    "series_path=": "--ophys SERIES",
    "trials=": "--trials TABLE",
    "window_length": "--window S",
    "bin_width": "--bin-width S",
}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        text = exc.args[0]
    elif isinstance(exc, OSError) and exc.strerror and exc.errno is not None:
        text = exc.strerror  # our OSErrors carry the whole message; drop "[Errno N]"
        if exc.filename and str(exc.filename) not in text:
            text = f"{text}: {exc.filename}"
    else:
        text = str(exc)
    text = " ".join(str(text).split()) or type(exc).__name__
    flags = [
        flag for key, flag in _FLAG_HINTS.items() if key in text and flag.split()[0] not in text
    ]
    if flags:
        text += f" (CLI: {', '.join(flags)})"
    return text


# ----------------------------------------------------------------------------------- commands
def _cmd_fit(args: argparse.Namespace) -> int:
    from . import pipeline

    config = _config_from_args(args)
    progress = not args.quiet
    start = time.perf_counter()
    if args.joint:
        return _fit_joint(args, config, start)
    if len(args.inputs) > 1:
        raise CLIError(
            f"{len(args.inputs)} inputs given: fit several sessions of one circuit as one network "
            f"with --joint, or each on its own with `{PROG} batch`"
        )
    if args.in_place and args.copy_source:
        raise CLIError("--copy-source and --in-place exclude each other: choose one")
    mode = "in-place" if args.in_place else "copy" if args.copy_source else "derived"
    if config.read.source == "sorting":
        if not args.out or mode != "derived" or args.input is None:
            raise CLIError("--sorting reads a sorting folder IN and writes a new file: give --out")
        from .extension import write_results
        from .extension._files import check_output_path

        output = check_output_path(args.out, overwrite=args.overwrite)
        results = pipeline.run(config, _load_sorting(args.input), progress=progress)
        write_results(
            results, None, output, overwrite=args.overwrite, module_name=config.module_name
        )
    else:
        output = pipeline.run_file(
            _input(args),
            args.out,
            config,
            mode=mode,
            output_dir=args.output_dir,
            overwrite=args.overwrite,
            progress=progress,
            cache_dir=args.cache_dir,
        )
        from .extension import read_results

        results = read_results(output, config.name, module_name=config.module_name)
    fit = results.fit
    keys = ("log_likelihood", "bits_per_spike", "r2")
    quality = ", ".join(f"{k} {fit.metrics[k]:.4g}" for k in keys if k in fit.metrics)
    print(
        f"wrote fit '{results.name}' ({fit.n_units} units, rank {fit.rank}; held-out {quality}) "
        f"to {output} in {time.perf_counter() - start:.1f} s; next: {PROG} report {output}"
    )
    return 0


def _fit_joint(args: argparse.Namespace, config: RunConfig, start: float) -> int:
    """``fit IN IN ... --joint``: one network over several sessions, one output per session."""
    from .extension import read_results
    from .pipeline_joint import run_joint_files

    excluded = {
        "--out": args.out,
        "--in-place": args.in_place,
        "--copy-source": args.copy_source,
        "--sorting": args.sorting,
        "--dandiset": args.dandiset,
        "--asset": args.asset,
    }
    for flag, value in excluded.items():
        if value:
            raise CLIError(
                f"--joint writes one derived file per session: leave out {flag} (choose the "
                "folder with --output-dir; name DANDI assets as inputs DANDI:<id>/<path>)"
            )
    if len(args.inputs) < 2:
        raise CLIError(
            f"--joint needs at least 2 sessions; got {len(args.inputs)}: give every session's "
            "file, or leave out --joint to fit one"
        )
    outputs = run_joint_files(
        args.inputs,
        config,
        output_dir=args.output_dir,
        overwrite=args.overwrite,
        progress=not args.quiet,
        cache_dir=args.cache_dir,
    )
    first = read_results(outputs[0], config.name, module_name=config.module_name)
    joint = first.joint
    if joint is None:  # run_joint_files wrote it; a missing group is a bug, not bad input
        raise RuntimeError(f"{outputs[0]} was written without its joint group.")
    print(
        f"wrote joint fit '{first.name}' of {joint.n_sessions} sessions "
        f"({int(joint.n_units.sum())} units, rank {first.fit.rank}) in "
        f"{time.perf_counter() - start:.1f} s; held-out log-likelihood per value, joint vs own:"
    )
    for s, output in enumerate(outputs):
        verdict = joint.verdict(s)
        print(
            f"  {Path(joint.sources[s]).name}: {joint.joint_log_likelihood[s]:.4g} vs "
            f"{joint.separate_log_likelihood[s]:.4g} ({joint.difference[s]:+.3g} ± "
            f"{joint.stderr[s]:.2g}) {verdict} -> {output}"
        )
    print(f"next: {PROG} report {outputs[0]}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .extension import list_results, read_results
    from .pipeline import check_input
    from .report import format_report, load_recording, relate_results_to_behaviour, write_figures

    check_input(args.input)
    names = list_results(args.input, module_name=args.module)
    if not names:
        raise CLIError(
            f"{args.input} holds no fits in processing module {args.module!r}; run "
            f"`{PROG} fit` first (or pass --module)."
        )
    if args.name is not None:
        if args.name not in names:
            raise CLIError(f"no fit named {args.name!r} in {args.input}; found {names}")
        names = [args.name]
    for name in names:
        results = read_results(args.input, name, module_name=args.module)
        loaded = load_recording(results, args.input) if args.behaviour or args.figures else None
        behaviour = None
        if args.behaviour:
            behaviour = relate_results_to_behaviour(
                results, args.behaviour, nwb_path=args.input, loaded=loaded
            )
        print(format_report(results, behaviour=behaviour))
        if args.figures:
            paths = write_figures(
                results, args.figures, nwb_path=args.input, behaviour=behaviour, loaded=loaded
            )
            print(f"  figures: {len(paths)} files in {args.figures}")
        print()
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .io import inspect_nwb
    from .pipeline import check_input, resolve_source

    source = resolve_source(_input(args))
    check_input(source, cache_dir=args.cache_dir)
    summary = inspect_nwb(source, cache_dir=args.cache_dir)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
        return 0
    label = args.input or f"--dandiset {args.dandiset} --asset {args.asset}"
    print(summary.to_text(label, prog=PROG))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    from .demo import run_demo

    output = run_demo(
        args.out,
        quick=args.quick,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    print((output.parent / "report.txt").read_text(encoding="utf-8"))
    print(f"demo finished in {time.perf_counter() - start:.1f} s; results in {output}")
    return 0


_BATCH_EPILOG = """examples:
  nwb-lrconn batch sessions/*.nwb --output-dir results --ranks 1 2 3 --seeds 0 1
  nwb-lrconn batch manifest.txt --output-dir results --config run.toml --n-workers 8
  nwb-lrconn batch manifest.csv --output-dir results --scheduler tcp://10.0.0.5:8786 --gpu
  nwb-lrconn batch days/*.nwb --joint --ranks 2 --output-dir results

Rerunning the same command skips every finished output; failed tasks are listed in the summary
(results/summary.csv) and rerun next time.
"""


def _add_batch_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``batch`` subcommand (many files × ranks × seeds on Dask).

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``parser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The ``batch`` parser.
    """
    parser = subparsers.add_parser(
        "batch",
        help="fit many NWB files × ranks × seeds on Dask (resumable)",
        description="Fit every input at every rank with every seed on a Dask cluster, one "
        "output NWB file per task, and write a summary table. Inputs are NWB files, glob "
        "patterns, URLs, or manifests (.txt with one path/URL per line, .csv with a 'path' or "
        "'url' column).",
        epilog=_BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", help="NWB files, globs, URLs or manifests")
    parser.add_argument("--output-dir", "-o", required=True, help="folder of the outputs")
    parser.add_argument("--ranks", type=int, nargs="+", help="ranks (default: from config)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: config seed)")
    parser.add_argument("--config", help="run configuration (.toml or .json)")
    parser.add_argument("--device", help="torch device, e.g. cuda (default: from config)")
    parser.add_argument("--scheduler", help="address of an existing Dask scheduler")
    parser.add_argument("--n-workers", type=int, default=2, help="embedded workers (default 2)")
    parser.add_argument("--threads-per-worker", type=int, default=1, help="default 1")
    parser.add_argument(
        "--memory-limit",
        default="auto",
        help="per embedded worker, e.g. 4GB, or none (default auto)",
    )
    parser.add_argument("--task-memory", help="memory each task reserves, e.g. 2GB")
    parser.add_argument(
        "--gpu", action="store_true", help="run tasks on GPU workers (resource GPU=1, cuda)"
    )
    parser.add_argument("--retries", type=int, default=1, help="retries per task (default 1)")
    parser.add_argument("--summary", default="summary.csv", help="summary file name")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace outputs that do not match their task"
    )
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="keep streamed bytes of remote inputs in DIR"
    )
    parser.add_argument(
        "--joint",
        action="store_true",
        help="the inputs are sessions of one circuit: fit them as one network per rank and "
        "seed, in this process (one output per session, summary rows with the warrant check)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _cmd_batch(args: argparse.Namespace) -> int:
    """Run the ``batch`` subcommand: 0 when every task finished or was skipped, 1 when some
    failed (listed in the summary) or the input is bad (one line on stderr)."""
    from .batch import run_batch, select_ranks

    config = RunConfig() if args.config is None else RunConfig.from_file(args.config)
    resources: dict[str, float] = {}
    if args.task_memory is not None:
        from dask.utils import parse_bytes

        resources["MEMORY"] = float(parse_bytes(args.task_memory))
    device = args.device
    if args.gpu:
        resources["GPU"] = 1
        device = device or "cuda"
    if device is not None:
        config = config.with_overrides(device=device)
    if args.joint:
        return _batch_joint(args, config)
    table = run_batch(
        args.inputs,
        ranks=args.ranks,
        seeds=args.seeds,
        config=config,
        output_dir=args.output_dir,
        scheduler=args.scheduler,
        n_workers=args.n_workers,
        threads_per_worker=args.threads_per_worker,
        memory_limit=None if args.memory_limit.lower() == "none" else args.memory_limit,
        resources=resources or None,
        retries=args.retries,
        summary=args.summary,
        overwrite=args.overwrite,
        progress=not args.quiet,
        cache_dir=args.cache_dir,
    )
    n_failed = _batch_counts(table, args, "task(s)")
    for row in select_ranks(table).itertuples():
        if row.n_seeds:
            print(
                f"{row.file}: rank {row.rank} (held-out log-likelihood {row.log_likelihood:.4g})"
            )
    return 1 if n_failed else 0


def _batch_counts(table, args: argparse.Namespace, what: str) -> int:
    """Print the batch's counts by status and its failed rows; return how many failed."""
    counts = table["status"].value_counts()
    n_failed = int(counts.get("failed", 0))
    print(
        f"{len(table)} {what}: {int(counts.get('done', 0))} done, "
        f"{int(counts.get('skipped', 0))} skipped, {n_failed} failed; summary in "
        f"{Path(args.output_dir) / args.summary}"
    )
    for row in table[table["status"] == "failed"].itertuples():
        print(f"failed: {row.file} rank={row.rank} seed={row.seed}: {row.error}", file=sys.stderr)
    return n_failed


def _batch_joint(args: argparse.Namespace, config: RunConfig) -> int:
    """``batch --joint``: every input a session of one network, per rank and seed."""
    from .batch import run_joint_batch

    if args.scheduler is not None:
        raise CLIError(
            "--joint fits one network over every session in this process: leave out --scheduler"
        )
    table = run_joint_batch(
        args.inputs,
        ranks=args.ranks,
        seeds=args.seeds,
        config=config,
        output_dir=args.output_dir,
        summary=args.summary,
        overwrite=args.overwrite,
        progress=not args.quiet,
        cache_dir=args.cache_dir,
    )
    n_failed = _batch_counts(table, args, "session fit(s) in joint runs")
    for row in table[table["status"] != "failed"].itertuples():
        print(
            f"{row.file} rank={row.rank} seed={row.seed}: held-out {row.joint_log_likelihood:.4g} "
            f"joint vs {row.separate_log_likelihood:.4g} own ({row.joint_minus_separate:+.3g} ± "
            f"{row.stderr:.2g}) {row.verdict}"
        )
    return 1 if n_failed else 0


_COMMANDS = {
    "fit": _cmd_fit,
    "report": _cmd_report,
    "inspect": _cmd_inspect,
    "demo": _cmd_demo,
    "batch": _cmd_batch,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nwb-lrconn`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "fit":  # IN... : one input, or several with --joint
            args.inputs = args.input
            args.input = args.inputs[0] if args.inputs else None
        named = getattr(args, "input", "") is not None or getattr(args, "dandiset", None)
        if args.command in ("fit", "inspect") and not named:
            if getattr(args, "asset", None) is not None:
                args.usage.error("--asset PATH needs --dandiset ID (or give an input file IN)")
            args.usage.error("the following arguments are required: IN (or --dandiset/--asset)")
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0)
    command = _COMMANDS[args.command]
    previous = _handle_sigterm()
    handler = _log_to_stderr(args)
    try:
        return command(args)
    except _Terminated:
        print(f"{PROG}: terminated (SIGTERM); nothing was left half-written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # every failure becomes one line; --debug shows the traceback
        if getattr(args, "debug", False):
            raise
        print(f"{PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every ``finally`` cleans up."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _handle_sigterm():
    """Treat SIGTERM like Ctrl-C (only possible from the main thread); return the old handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":
    sys.exit(main())
