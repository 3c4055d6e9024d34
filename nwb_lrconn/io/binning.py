"""Regular time bins inside a set of intervals (trials or windows), and binning onto them.

Convention: trial ``i`` covers ``[starts[i], stops[i])`` in seconds (session clock). Its bins are
``[starts[i] + k·bin_width, starts[i] + (k+1)·bin_width)`` for ``k = 0 … n_bins[i] − 1``; every bin
is half-open. When a trial's length is not a multiple of ``bin_width`` the remainder is a partial
bin: ``partial_bin="drop"`` leaves it out (all bins have the same width, as a model of counts per
Δt expects), ``partial_bin="keep"`` keeps it as a last, shorter bin ending at ``stops[i]`` (so that
no event inside the trial is lost). Trials are padded at the end to the longest one and masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_choice, check_positive

__all__ = [
    "BinGrid",
    "make_grid",
    "assign_to_bins",
    "bin_events",
    "bin_samples",
    "PARTIAL_BIN",
    "MAX_VALUES",
]

PARTIAL_BIN = ("drop", "keep")
MAX_VALUES = 250_000_000
"""Most values (trials x bins x units) a binned recording may hold: 2 GB in float64."""
_EPS = 1e-9  # relative slack when dividing a length by the bin width


@dataclass(frozen=True)
class BinGrid:
    """Bins of ``n_trials`` intervals on a common (n_trials, n_time) layout.

    Attributes
    ----------
    starts : ndarray of shape (n_trials,)
        Start of each trial's first bin [s].
    stops : ndarray of shape (n_trials,)
        End of each trial's last bin [s].
    n_bins : ndarray of shape (n_trials,), int
        Number of bins of each trial (>= 1).
    bin_width : float
        Width of a full bin [s].
    source_index : ndarray of shape (n_trials,), int
        Index of each trial in the intervals the grid was made from (intervals shorter than a
        bin may have been left out).
    """

    starts: np.ndarray
    stops: np.ndarray
    n_bins: np.ndarray
    bin_width: float
    source_index: np.ndarray

    @property
    def n_trials(self) -> int:
        """Number of trials."""
        return self.starts.size

    @property
    def n_time(self) -> int:
        """Number of bins of the longest trial."""
        return int(self.n_bins.max())

    @property
    def mask(self) -> np.ndarray:
        """Bool array of shape (n_trials, n_time): True on the bins of each trial."""
        return np.arange(self.n_time)[None, :] < self.n_bins[:, None]

    def edges(self, trial: int) -> np.ndarray:
        """Bin edges of ``trial``, shape (n_bins[trial] + 1,), seconds."""
        n = int(self.n_bins[trial])
        out = self.starts[trial] + self.bin_width * np.arange(n + 1)
        out[-1] = self.stops[trial]
        return out

    def centers(self) -> np.ndarray:
        """Bin centres, shape (n_trials, n_time), seconds (NaN on padded bins)."""
        out = np.full((self.n_trials, self.n_time), np.nan)
        for i in range(self.n_trials):
            e = self.edges(i)
            out[i, : e.size - 1] = 0.5 * (e[:-1] + e[1:])
        return out


def make_grid(
    starts: np.ndarray,
    stops: np.ndarray,
    bin_width: float,
    *,
    partial_bin: str = "drop",
    n_units: int = 1,
) -> BinGrid:
    """Lay regular bins over intervals.

    Parameters
    ----------
    starts, stops : array_like of shape (n_trials,)
        Interval bounds in seconds, ``stops > starts``.
    bin_width : float
        Bin width in seconds (> 0).
    partial_bin : {"drop", "keep"}, default: "drop"
        What to do with the remainder of an interval shorter than one bin (module docstring).
    n_units : int, default: 1
        Units that will be binned on the grid (for the size check).

    Returns
    -------
    BinGrid
        Intervals shorter than one bin (``partial_bin="drop"``) are left out;
        ``source_index`` says which intervals were kept.

    Raises
    ------
    ValueError
        When ``bin_width`` is not > 0, is longer than every interval, no interval is left, or
        the binned data would hold more than :data:`MAX_VALUES` values.
    """
    bin_width = check_positive(bin_width, "bin_width")
    check_choice(partial_bin, "partial_bin", PARTIAL_BIN)
    starts = np.asarray(starts, dtype=np.float64).reshape(-1)
    stops = np.asarray(stops, dtype=np.float64).reshape(-1)
    if starts.size == 0:
        raise ValueError("No interval to bin: the selection of trials/windows is empty.")
    lengths = stops - starts
    longest = float(lengths.max())
    if bin_width > longest * (1 + _EPS):
        raise ValueError(
            f"bin_width={bin_width} s is longer than the data: the longest interval lasts "
            f"{longest:.6g} s."
        )
    ratio = lengths / bin_width
    size = float(lengths.size) * float(ratio.max()) * max(int(n_units), 1)
    if size > MAX_VALUES:  # checked before any array of that size is made
        raise ValueError(
            f"bin_width={bin_width:g} s gives {lengths.size} trials x {ratio.max():.3g} bins x "
            f"{n_units} units = {size:.3g} values, more than the {MAX_VALUES:.3g} allowed "
            f"({MAX_VALUES * 8 / 1e9:.0f} GB); choose a larger bin width (CLI: --bin-width) or "
            "shorter trials/windows."
        )
    n_full = np.floor(ratio + _EPS).astype(np.int64)
    if partial_bin == "keep":
        n_bins = np.where(ratio - n_full > _EPS, n_full + 1, n_full)
        ends = np.where(n_bins > n_full, stops, starts + n_full * bin_width)
    else:
        n_bins = n_full
        ends = starts + n_full * bin_width
    keep = n_bins >= 1
    return BinGrid(starts[keep], ends[keep], n_bins[keep], bin_width, np.flatnonzero(keep))


def assign_to_bins(times: np.ndarray, grid: BinGrid) -> tuple[np.ndarray, np.ndarray]:
    """Find the bin of every time stamp.

    Parameters
    ----------
    times : ndarray of shape (n_events,)
        Times in seconds, in any order.
    grid : BinGrid
        The bins.

    Returns
    -------
    event_index : ndarray of int
        Index into ``times`` of each (event, bin) pair.
    flat_bin : ndarray of int
        ``trial * grid.n_time + bin`` of each pair. An event inside two overlapping trials
        appears twice; an event outside every trial does not appear.
    """
    times = np.asarray(times, dtype=np.float64)
    order = np.argsort(grid.starts, kind="stable")
    s, e = grid.starts[order], grid.stops[order]
    if np.all(e[:-1] <= s[1:]):
        return _assign_disjoint(times, grid, order)
    return _assign_overlapping(times, grid)


def _assign_disjoint(
    times: np.ndarray, grid: BinGrid, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    # One searchsorted over the concatenated edges of all (sorted, disjoint) trials; positions
    # that land on a trial's last edge fall in the gap before the next trial and are discarded.
    edges = [grid.edges(i) for i in order]
    all_edges = np.concatenate(edges)
    sizes = np.array([x.size for x in edges])
    trial_of = np.repeat(order, sizes)
    bin_of = np.arange(all_edges.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    valid = bin_of < np.repeat(sizes - 1, sizes)
    flat_bin = np.concatenate([[-1], np.where(valid, trial_of * grid.n_time + bin_of, -1)])
    hit = flat_bin[np.searchsorted(all_edges, times, side="right")]  # position + 1
    event_index = np.flatnonzero(hit >= 0)
    return event_index, hit[event_index]


def _assign_overlapping(times: np.ndarray, grid: BinGrid) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    idx, flat = [], []
    for i in range(grid.n_trials):
        edges = grid.edges(i)
        lo, hi = np.searchsorted(sorted_times, [edges[0], edges[-1]], side="left")
        b = np.searchsorted(edges, sorted_times[lo:hi], side="right") - 1
        idx.append(order[lo:hi])
        flat.append(i * grid.n_time + b)
    return np.concatenate(idx), np.concatenate(flat)


def bin_events(times: np.ndarray, labels: np.ndarray, n_labels: int, grid: BinGrid) -> np.ndarray:
    """Count events per bin and label (spikes per unit, clicks per channel).

    Parameters
    ----------
    times : ndarray of shape (n_events,)
        Event times in seconds.
    labels : ndarray of shape (n_events,), int
        Channel of each event, in ``[0, n_labels)``.
    n_labels : int
        Number of channels.
    grid : BinGrid
        The bins.

    Returns
    -------
    ndarray of shape (n_trials, n_time, n_labels), float64
        Counts; 0 on padded bins.
    """
    index, flat = assign_to_bins(times, grid)
    size = grid.n_trials * grid.n_time * n_labels
    counts = np.bincount(flat * n_labels + np.asarray(labels)[index], minlength=size)
    return counts.astype(np.float64, copy=False).reshape(grid.n_trials, grid.n_time, n_labels)


def bin_samples(
    values: np.ndarray, times: np.ndarray, grid: BinGrid, *, reduce: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Average regularly or irregularly sampled values into bins.

    Parameters
    ----------
    values : ndarray of shape (n_samples, n_channels)
        Samples; NaN samples are ignored.
    times : ndarray of shape (n_samples,)
        Sample times in seconds.
    grid : BinGrid
        The bins.
    reduce : {"mean", "circmean"}, default: "mean"
        Arithmetic mean, or circular mean of angles in radians (result in (-π, π]).

    Returns
    -------
    binned : ndarray of shape (n_trials, n_time, n_channels)
        Mean per bin; NaN where a bin holds no valid sample and on padded bins.
    n_samples : ndarray of shape (n_trials, n_time, n_channels), int
        Number of valid samples averaged in each bin.
    """
    check_choice(reduce, "reduce", ("mean", "circmean"))
    values = np.asarray(values, dtype=np.float64)
    index, flat = assign_to_bins(times, grid)
    n_ch = values.shape[1]
    size = grid.n_trials * grid.n_time
    shape = (grid.n_trials, grid.n_time, n_ch)
    out = np.full(shape, np.nan)
    counts = np.zeros(shape, dtype=np.int64)
    for c in range(n_ch):
        v = values[index, c]
        good = np.isfinite(v)
        n = np.bincount(flat[good], minlength=size)
        if reduce == "mean":
            total = np.bincount(flat[good], weights=v[good], minlength=size)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = total / n
        else:
            cos = np.bincount(flat[good], weights=np.cos(v[good]), minlength=size)
            sin = np.bincount(flat[good], weights=np.sin(v[good]), minlength=size)
            mean = np.arctan2(sin, cos)
        mean[n == 0] = np.nan
        out[..., c] = mean.reshape(shape[:2])
        counts[..., c] = n.reshape(shape[:2])
    return out, counts
