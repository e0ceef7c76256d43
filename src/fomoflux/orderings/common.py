"""What every ordering shares: input checks and seeded generators, and sorting entries by a per-entry score."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from fomoflux.data.registry import DatasetSpec
from fomoflux.errors import ConfigError, DataError


def check_seed(seed: int) -> int:
    """The seed as an int; a negative or non-integer seed is a ConfigError (numpy's SeedSequence needs >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"ordering seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def seeded_rng(seed: int, *salt: int) -> np.random.Generator:
    """A generator for ``seed`` alone (same stream as ``default_rng(seed)``) or for ``seed`` mixed with ``salt``.

    The salt goes into numpy's SeedSequence as further entropy words rather than being added to the seed, so two
    different (seed, salt) pairs never collide the way ``seed + salt`` could.
    """
    seed = check_seed(seed)
    return np.random.default_rng([seed, *salt] if salt else seed)


def name_hash(name: str) -> int:
    """A stable 64-bit hash of a dataset name (Python's ``hash()`` is salted per process, so it is unusable here)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def check_unique(entries: Sequence[str], where: str) -> list[str]:
    """The entries as a list; an entry given twice is a ConfigError naming it (a stream holds each class once)."""
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        if entry in seen:
            raise ConfigError(f"{where}: entry {position} {entry!r} occurs twice")
        seen.add(entry)
    return list(entries)


def check_unique_specs(specs: Sequence[DatasetSpec], where: str) -> None:
    names = [spec.name for spec in specs]
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise ConfigError(f"{where}: dataset(s) given more than once: {dupes}")


def seeded_ranks(count: int, seed: int) -> np.ndarray:
    """A seeded random rank per position, used as the tie-break key of the sorted orderings."""
    return seeded_rng(seed).permutation(count)


def entry_scores(
    entries: Sequence[str], values: Mapping[str, float], what: str, where: str, *, allow_negative: bool
) -> np.ndarray:
    """``values[entry]`` per entry as float64.

    Raises ConfigError for an entry without a value (naming it); DataError for a NaN value, or a negative one unless
    ``allow_negative``.
    """
    out = np.empty(len(entries), dtype=np.float64)
    for position, entry in enumerate(entries):
        if entry not in values:
            raise ConfigError(f"{where}: entry {position} {entry!r} has no {what}")
        value = float(values[entry])
        if math.isnan(value) or (value < 0 and not allow_negative):
            need = "a number" if allow_negative else "a number >= 0"
            raise DataError(f"{where}: entry {entry!r} has {what} {values[entry]!r} (need {need})")
        out[position] = value
    return out


def sorted_by_key(entries: list[str], keys: np.ndarray, seed: int) -> list[str]:
    """Entries by ascending ``keys``, equal keys in a seeded random order."""
    ties = seeded_ranks(len(entries), seed)
    order = np.lexsort((ties, keys))  # the last key is the primary one
    return [entries[i] for i in order]
