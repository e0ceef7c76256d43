"""Datasets by release year, each one contiguous block (the reference's ``time_incremental_dschunked_k``)."""

from __future__ import annotations

from collections.abc import Sequence

from fomoflux.data.registry import DatasetSpec
from fomoflux.orderings.common import check_seed, check_unique_specs, name_hash, seeded_rng


def dataset_incremental(specs: Sequence[DatasetSpec], seed: int) -> list[str]:
    """Each dataset's ``entries()`` as one contiguous block, blocks ordered by (year, given order).

    Datasets without a year come after all dated ones, in their given order (the sort is stable). Classes inside a
    block are shuffled by a generator seeded from ``seed`` and the dataset's name, so a block's order does not
    change when other datasets are added or removed. Raises ConfigError for a dataset given twice or a bad seed.
    """
    check_seed(seed)
    check_unique_specs(specs, "dataset_incremental")
    ordered = sorted(specs, key=lambda spec: (spec.year is None, spec.year or 0))
    stream: list[str] = []
    for spec in ordered:
        block = spec.entries()
        permutation = seeded_rng(seed, name_hash(spec.name)).permutation(len(block))
        stream.extend(block[i] for i in permutation)
    return stream
