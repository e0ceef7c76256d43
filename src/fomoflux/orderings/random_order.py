"""The seeded random ordering (the reference's ``random_sequence_k`` streams)."""

from __future__ import annotations

from collections.abc import Sequence

from fomoflux.orderings.common import check_unique, seeded_rng


def random_order(entries: Sequence[str], seed: int) -> list[str]:
    """A seeded permutation of ``entries`` (``numpy.random.default_rng(seed).permutation``).

    Raises ConfigError for a negative seed or an entry given twice.
    """
    pool = check_unique(entries, "random_order")
    permutation = seeded_rng(seed).permutation(len(pool))
    return [pool[i] for i in permutation]
