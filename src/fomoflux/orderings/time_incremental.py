"""Year groups in order, the classes of same-year datasets interleaved (the reference's
``time_incremental_rsagg_k``)."""

from __future__ import annotations

from collections.abc import Sequence

from fomoflux.data.registry import DatasetSpec
from fomoflux.errors import ConfigError
from fomoflux.orderings.common import check_seed, check_unique_specs, seeded_rng


def time_incremental(specs: Sequence[DatasetSpec], seed: int) -> list[str]:
    """Year groups in ascending order; inside a group, the classes of all its datasets interleaved by one shuffle.

    Each group is shuffled by a generator seeded from ``seed`` and the year, so a year's order does not change when
    datasets of other years are added. Raises ConfigError for a dataset without a year (naming it), a dataset given
    twice, or a bad seed.
    """
    check_seed(seed)
    check_unique_specs(specs, "time_incremental")
    undated = [spec.name for spec in specs if spec.year is None]
    if undated:
        raise ConfigError(f"time_incremental: dataset(s) {undated} have no release year (DatasetSpec.year)")
    groups: dict[int, list[str]] = {}
    for spec in specs:
        groups.setdefault(int(spec.year), []).extend(spec.entries())
    stream: list[str] = []
    for year in sorted(groups):
        group = groups[year]
        permutation = seeded_rng(seed, year).permutation(len(group))
        stream.extend(group[i] for i in permutation)
    return stream
