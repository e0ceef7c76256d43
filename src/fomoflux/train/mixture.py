"""How one contrastive batch is split between the data sources of a task update (BENCHMARK.md, "One task update").

Sources, in their fixed order: ``pretrain`` (the pretraining replay pool), ``update`` (the current task),
``buffer`` (every training sample of all previous tasks). The ratios λ sum to 1.

1. Every source gets ``int(B·λ)``; the rounding remainder is handed out one sample at a time, in source order,
   to the sources with λ > 0 (paper: B = 512, 0.33 / 0.34 / 0.33 → 169 / 175 / 168).
2. A source that has no samples — the buffer at task 0 always, any source passed as None / empty — gives its
   count away: split equally among the remaining sources with λ > 0 (odd remainder again in source order).
   With the default three sources that is the paper's task-0 rule: the buffer's 168 go half to update, half to
   pretraining (→ 253 / 259 / 0). If no source with λ > 0 is left, the share goes equally to whatever sources
   do have samples; if none has, ConfigError.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from fomoflux.errors import ConfigError

SOURCES: tuple[str, ...] = ("pretrain", "update", "buffer")

__all__ = ["SOURCES", "validate_ratios", "source_batch_sizes"]


def validate_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """All three sources' ratios (missing ones are 0); names, signs and the sum are checked (ConfigError)."""
    unknown = sorted(set(ratios) - set(SOURCES))
    if unknown:
        raise ConfigError(f"mixture: unknown source {unknown[0]!r}; sources are {', '.join(SOURCES)}")
    out = {name: float(ratios.get(name, 0.0)) for name in SOURCES}
    for name, value in out.items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"mixture: ratio of {name!r} must be a finite number >= 0, got {value}")
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"mixture: ratios must sum to 1, got {total:g} ({out})")
    return out


def _split_evenly(count: int, recipients: list[str], into: dict[str, int]) -> None:
    share, rest = divmod(count, len(recipients))
    for i, name in enumerate(recipients):
        into[name] += share + (1 if i < rest else 0)


def source_batch_sizes(
    batch_size: int,
    ratios: Mapping[str, float],
    task_index: int,
    available: Collection[str] | None = None,
) -> dict[str, int]:
    """Per-source sample counts of one batch (module docstring); the values sum to ``batch_size``.

    ``available``: the sources that have samples (None: all three). The buffer is never available at task 0.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if task_index < 0:
        raise ConfigError(f"task_index must be >= 0, got {task_index}")
    lam = validate_ratios(ratios)
    has_data = set(SOURCES) if available is None else set(available)
    if task_index == 0:
        has_data.discard("buffer")

    positive = [name for name in SOURCES if lam[name] > 0]
    counts = {name: int(batch_size * lam[name] + 1e-9) for name in SOURCES}
    remainder = batch_size - sum(counts.values())
    for i in range(remainder):
        counts[positive[i % len(positive)]] += 1

    missing = [name for name in positive if name not in has_data]
    if missing:
        freed = sum(counts[name] for name in missing)
        for name in missing:
            counts[name] = 0
        recipients = [name for name in positive if name in has_data] or [name for name in SOURCES if name in has_data]
        if not recipients:
            raise ConfigError(
                f"mixture: none of the sources with a ratio > 0 ({', '.join(positive)}) has samples "
                f"at task {task_index}"
            )
        _split_evenly(freed, recipients, counts)
    return counts
