"""Learning-rate schedules of one task update (BENCHMARK.md, "Learning-rate schedules").

Notation: S steps per task, W = ceil(0.1·S) warmup steps, η0 the base lr, η_min = 1e-3·η0, n the 0-based step.

The default, ``cosine``, is linear warmup then cosine decay, restarted every task::

    n <  W:  η0 · (n + 1) / W
    n >= W:  η_min + ½ (1 + cos(π (n − W + 1) / (S − W))) (η0 − η_min)

so step 0 already trains (η0/W), step W−1 reaches η0 and the last step S−1 ends exactly at η_min.

Schedules are small objects with ``lr(step) -> float`` behind a registry by name, so the per-task and cross-task
schedules of the paper (meta-schedule, dynamic recovery, rsqrt, WSD) plug in later without touching the loop:
``@register_schedule("name")`` on an :class:`LRSchedule` subclass, then ``make_schedule("name", ...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from fomoflux.errors import ConfigError

__all__ = [
    "cosine_with_warmup",
    "warmup_steps",
    "LRSchedule",
    "CosineSchedule",
    "ConstantSchedule",
    "register_schedule",
    "make_schedule",
    "available_schedules",
]


def warmup_steps(total_steps: int, fraction: float = 0.1) -> int:
    """W = ceil(fraction · total_steps), robust to float noise (ceil(0.1·70) is 7, not 8)."""
    if total_steps < 0:
        raise ConfigError(f"total_steps must be >= 0, got {total_steps}")
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"warmup fraction must lie in [0, 1], got {fraction}")
    return min(total_steps, math.ceil(round(fraction * total_steps, 9)))


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """The FiF cosine schedule with linear warmup (module docstring); steps past the end stay at ``min_lr``."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0 or step >= total_steps:
        return min_lr
    progress = (step - warmup_steps + 1) / decay_steps
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


_SCHEDULES: dict[str, type["LRSchedule"]] = {}


@dataclass
class LRSchedule:
    """One task's learning rate per step.

    Every schedule receives the same context (so cross-task schedules can use ``task_index`` / ``num_tasks``);
    subclasses add their own options as further dataclass fields with defaults and implement :meth:`lr`.
    """

    total_steps: int
    base_lr: float
    warmup_steps: int
    min_lr: float
    task_index: int = 0
    num_tasks: int | None = None

    name: ClassVar[str] = ""

    def lr(self, step: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        return self.lr(step)


def register_schedule(name: str) -> Callable[[type[LRSchedule]], type[LRSchedule]]:
    def decorate(cls: type[LRSchedule]) -> type[LRSchedule]:
        if name in _SCHEDULES and _SCHEDULES[name] is not cls:
            raise ValueError(f"schedule {name!r} is registered twice ({_SCHEDULES[name].__name__}, {cls.__name__})")
        cls.name = name
        _SCHEDULES[name] = cls
        return cls

    return decorate


def available_schedules() -> list[str]:
    return sorted(_SCHEDULES)


def make_schedule(
    name: str,
    *,
    total_steps: int,
    base_lr: float,
    warmup_fraction: float = 0.1,
    min_lr_ratio: float = 1e-3,
    task_index: int = 0,
    num_tasks: int | None = None,
    **options: Any,
) -> LRSchedule:
    """Build the schedule ``name``; W = ceil(warmup_fraction·S), η_min = min_lr_ratio·η0. Unknown name or option → ConfigError."""
    cls = _SCHEDULES.get(name)
    if cls is None:
        raise ConfigError(f"unknown lr schedule {name!r}; known: {', '.join(available_schedules())}")
    if base_lr <= 0:
        raise ConfigError(f"lr must be > 0, got {base_lr}")
    if min_lr_ratio < 0 or min_lr_ratio > 1:
        raise ConfigError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
    own = {f for f in cls.__dataclass_fields__} - set(LRSchedule.__dataclass_fields__)
    unknown = sorted(set(options) - own)
    if unknown:
        raise ConfigError(f"lr schedule {name!r} has no option {unknown[0]!r}; its options: {sorted(own) or 'none'}")
    return cls(
        total_steps=total_steps,
        base_lr=base_lr,
        warmup_steps=warmup_steps(total_steps, warmup_fraction),
        min_lr=min_lr_ratio * base_lr,
        task_index=task_index,
        num_tasks=num_tasks,
        **options,
    )


@register_schedule("cosine")
@dataclass
class CosineSchedule(LRSchedule):
    """Linear warmup + cosine decay to η_min, restarted every task (the FiF default)."""

    def lr(self, step: int) -> float:
        return cosine_with_warmup(step, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr)


@register_schedule("constant")
@dataclass
class ConstantSchedule(LRSchedule):
    """η0 at every step; with ``warmup=True`` (default) the same linear warmup over the first W steps first."""

    warmup: bool = True

    def lr(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.warmup and step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        return self.base_lr
