"""Counter-based random numbers: a value per (seed, purpose, counter) that never depends on what else is drawn.

Bounded buffers, validation splits and other per-sample choices need a random key for each sample that stays the
same whichever job asks and whatever other samples exist, so that a choice made in one task is the same choice in
the next. SplitMix64 (Steele, Lea & Flood 2014) over a hashed seed gives that, vectorised with numpy.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import polars as pl

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def seed_key(seed: int, purpose: str) -> int:
    """A 64-bit key: the first 8 bytes (little-endian) of blake2b(``fomoflux.<purpose>:<seed>``).

    Hashing the seed (instead of using it as the key) keeps the streams of nearby seeds, and of different purposes,
    unrelated."""
    digest = hashlib.blake2b(f"fomoflux.{purpose}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def splitmix64(key: int | np.ndarray, counters: np.ndarray) -> np.ndarray:
    """SplitMix64 output for each counter c: mix(key + (c + 1) * GAMMA), as uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(key, dtype=np.uint64) + (counters.astype(np.uint64) + np.uint64(1)) * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def sample_hashes(rows: pl.DataFrame, seed: int, purpose: str) -> np.ndarray:
    """A uint64 per manifest row that depends only on (seed, purpose, dataset, sample index): not on the row's
    position, task or class, so a sample keeps its key as a stream grows or other datasets are added."""
    import polars as pl

    keys = {name: seed_key(seed, f"{purpose}:{name}") for name in rows["dataset"].unique().to_list()}
    dataset_keys = rows["dataset"].replace_strict(keys, return_dtype=pl.UInt64).to_numpy()
    # Indices are sample numbers (>= 0); reinterpreting as uint64 keeps any int64 distinct anyway.
    indices = rows["index"].cast(pl.Int64).to_numpy().view(np.uint64)
    return splitmix64(dataset_keys, indices)


def step_seed(seed: int, task_index: int, step: int, salt: str = "task-update") -> int:
    """The 63-bit seed of one training step's generator: a hash of (salt, seed, task_index, step)."""
    digest = hashlib.blake2b(f"{salt}:{seed}:{task_index}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)
