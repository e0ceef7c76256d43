"""Cutting an ordered stream into tasks of (nearly) equal training-sample totals, an alternative to
``fomoflux.stream.chunk``'s cut by class count."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from fomoflux.errors import ConfigError, DataError


def _sample_counts(entries: Sequence[str], samples_per_entry: Mapping[str, int]) -> list[int]:
    counts = []
    for position, entry in enumerate(entries):
        if entry not in samples_per_entry:
            raise ConfigError(f"chunk_by_samples: entry {position} {entry!r} has no training-sample count")
        count = samples_per_entry[entry]
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise DataError(f"chunk_by_samples: entry {entry!r} has sample count {count!r} (need an integer >= 0)")
        counts.append(int(count))
    return counts


def _nearest_boundary(prefix: Sequence[int], target_num: int, target_den: int, low: int, high: int) -> int:
    """The index i in [low, high] whose prefix total is nearest to target_num / target_den (the earlier on a tie).

    Exact integer arithmetic: prefix[i] * den is compared with num, so no float rounding moves a cut.
    """
    best, best_gap = low, abs(prefix[low] * target_den - target_num)
    for i in range(low + 1, high + 1):
        gap = abs(prefix[i] * target_den - target_num)
        if gap < best_gap:
            best, best_gap = i, gap
        elif prefix[i] * target_den > target_num:
            break  # prefix totals only grow from here: every later gap is larger
    return best


def chunk_by_samples(entries: Sequence[str], samples_per_entry: Mapping[str, int], tasks: int) -> list[tuple[str, ...]]:
    """Cut the ordered stream into ``tasks`` contiguous, non-empty chunks of nearly equal training-sample totals.

    Cut k (k = 1..T-1) goes at the entry boundary whose running sample total is nearest to k/T of the stream's
    total (the earlier boundary on a tie), moved just enough to keep every chunk non-empty: at least one entry after
    the previous cut, and at least one entry left for each remaining task. Without that clamping each chunk's total
    is within one entry's count of total/T.

    Raises ConfigError for tasks < 1, tasks > len(entries), or an entry without a count (naming it); DataError for a
    negative count or a stream whose counts are all zero.
    """
    if isinstance(tasks, bool) or not isinstance(tasks, (int, np.integer)) or tasks < 1:
        raise ConfigError(f"chunk_by_samples: tasks must be an integer >= 1, got {tasks!r}")
    if tasks > len(entries):
        raise ConfigError(f"chunk_by_samples: a stream of {len(entries)} entries cannot be cut into {tasks} tasks")
    counts = _sample_counts(entries, samples_per_entry)
    prefix = [0]
    for count in counts:
        prefix.append(prefix[-1] + count)
    total = prefix[-1]
    if total == 0:
        raise DataError(f"chunk_by_samples: all {len(entries)} entries have 0 training samples")
    cuts = [0]
    for k in range(1, tasks):
        low = cuts[-1] + 1
        high = len(entries) - (tasks - k)
        cuts.append(_nearest_boundary(prefix, k * total, tasks, low, high))
    cuts.append(len(entries))
    return [tuple(entries[start:stop]) for start, stop in itertools.pairwise(cuts)]
