"""Learning-rate schedules of one task update (BENCHMARK.md, "Learning-rate schedules").

Notation: S steps per task, W = ceil(warmup_fraction·S) warmup steps (0.1 by default), η0 the base lr,
η_min = min_lr_ratio·η0 (1e-3 by default), t the 0-based task index, n the 0-based step within the task.
Every schedule is a function of (S, W, η0, η_min, t, n) and its own options only — never of the number of tasks T,
which a task update is not told (a stream may grow later without invalidating the tasks already trained).

Two conventions run through all of them, both those of the FiF cosine:

- linear warmup ``warm(n; peak) = peak · (n + 1) / W`` for n < W: step 0 already trains, step W−1 reaches the peak;
- a decay phase over D steps that starts after step k0 evaluates step n at progress (n − k0 + 1) / D, so the first
  decay step has already moved and the last step lands exactly on the end value.

With ``cos_seg(p; a, b) = b + ½(1 + cos(π·p))·(a − b)`` (p clipped to [0, 1]):

``cosine`` (default) — warmup, then cosine decay to η_min, restarted every task::

    n <  W:  warm(n; η0)
    n >= W:  cos_seg((n − W + 1) / (S − W); η0, η_min)

``constant`` — warm(n; η0) for n < W (option ``warmup=False`` skips it), then η0.

The cross-task and infinite schedules (``meta_cosine``, ``dynamic_recovery``, ``rsqrt`` and its ``rsqrt_continued``
/ ``rsqrt_autoregressive`` / ``rsqrt_recovered`` variants, ``wsd``) are defined exactly in their class docstrings;
those formulas are what tests/unit/test_schedule.py checks.

Common behaviour: ``lr(step)`` for step ≥ S returns the last step's value lr(S − 1) (what an over-long caller
sees is the end of the schedule, not an extrapolation); a negative step, or any step of a schedule with S = 0,
raises ValueError. Bad settings (W > S, a warmup_fraction outside [0, 1], a cooldown or decay fraction outside
[0, 1] or one that does not fit beside the warmup) raise ConfigError naming the schedule, the option and the value
when the schedule is built, i.e. in :func:`make_schedule` before any training step.

Schedules are small dataclasses behind a registry by name: ``@register_schedule("name")`` on an
:class:`LRSchedule` subclass that implements :meth:`LRSchedule.value`, then ``make_schedule("name", ...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from fomoflux.errors import ConfigError
from fomoflux.registry import Registry

__all__ = [
    "cosine_with_warmup",
    "warmup_steps",
    "meta_peak",
    "LRSchedule",
    "CosineSchedule",
    "ConstantSchedule",
    "MetaCosineSchedule",
    "DynamicRecoverySchedule",
    "RsqrtSchedule",
    "RsqrtContinuedSchedule",
    "RsqrtAutoregressiveSchedule",
    "RsqrtRecoveredSchedule",
    "WSDSchedule",
    "register_schedule",
    "make_schedule",
    "available_schedules",
]

DECAY_SHAPES = ("linear", "cosine", "sqrt")


def _fraction_of_steps(total_steps: int, fraction: float) -> int:
    # round() first so that float noise cannot add a step: 0.1 * 70 is 7.000000000000001, whose ceil would be 8
    return min(total_steps, math.ceil(round(fraction * total_steps, 9)))


def warmup_steps(total_steps: int, fraction: float = 0.1) -> int:
    """W = ceil(fraction · total_steps), robust to float noise (ceil(0.1·70) is 7, not 8)."""
    if total_steps < 0:
        raise ConfigError(f"total_steps must be >= 0, got {total_steps}")
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"warmup fraction must lie in [0, 1], got {fraction}")
    return _fraction_of_steps(total_steps, fraction)


def _warmup(step: int, warmup: int, peak: float) -> float:
    """warm(n; peak) = peak · (n + 1) / W."""
    return peak * ((step + 1) / warmup)  # the ratio first, so that step W − 1 gives the peak bit for bit


def _cosine_segment(progress: float, start: float, end: float) -> float:
    """cos_seg(p; a, b) = b + ½(1 + cos(π·p))·(a − b), with p clipped to [0, 1] (past the end it stays at b)."""
    progress = min(max(progress, 0.0), 1.0)
    return end + 0.5 * (1.0 + math.cos(math.pi * progress)) * (start - end)


def _rsqrt_decay(step: int, warmup: int, peak: float, floor: float) -> float:
    """floor + sqrt(W / (n + 1)) · (peak − floor): equals the peak at n = W − 1, where the warmup ends."""
    return floor + math.sqrt(warmup / (step + 1)) * (peak - floor)


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """The FiF cosine schedule with linear warmup (module docstring); steps past the end keep the last step's value
    (η_min whenever the task has a decay phase)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if total_steps > 0:
        step = min(step, total_steps - 1)
    if step < warmup_steps:
        return _warmup(step, warmup_steps, base_lr)
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return min_lr
    return _cosine_segment((step - warmup_steps + 1) / decay_steps, base_lr, min_lr)


def meta_peak(task_index: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """The autoregressive meta-schedule's peak of task t, with D = S − W decay steps per task::

        η_max(0) = η0
        η_max(t) = cos_seg((t·D + 1) / ((t + 1)·D); η0, η_min)    for t >= 1

    i.e. the value that one cosine from η0 to η_min stretched over the decay phases of tasks 0..t would have at
    task t's first decay step. With D = 0 (the task is all warmup) no cosine ever advances and the peak stays η0.
    """
    if task_index < 0:
        raise ValueError(f"task_index must be >= 0, got {task_index}")
    decay_steps = total_steps - warmup_steps
    if task_index == 0 or decay_steps <= 0:
        return base_lr
    progress = (task_index * decay_steps + 1) / ((task_index + 1) * decay_steps)
    return _cosine_segment(progress, base_lr, min_lr)


@dataclass
class LRSchedule:
    """One task's learning rate per step.

    Every schedule receives the same context; subclasses add their own options as further dataclass fields with
    defaults, check them in :meth:`validate` and implement :meth:`value` for 0 <= n < S. ``num_tasks`` is kept
    for callers that know it, but no built-in schedule reads it (module docstring).
    """

    total_steps: int
    base_lr: float
    warmup_steps: int
    min_lr: float
    task_index: int = 0
    num_tasks: int | None = None

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int) or self.total_steps < 0:
            raise self.bad("total_steps", self.total_steps, "must be an integer >= 0")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise self.bad("warmup_steps", self.warmup_steps, "must be an integer >= 0")
        if self.warmup_steps > self.total_steps:
            raise self.bad("warmup_steps", self.warmup_steps, f"exceeds the task's {self.total_steps} steps")
        if not self.base_lr > 0:
            raise self.bad("lr", self.base_lr, "must be > 0")
        if not 0 <= self.min_lr <= self.base_lr:
            raise self.bad("min_lr", self.min_lr, f"must lie in [0, lr = {self.base_lr}]")
        if isinstance(self.task_index, bool) or not isinstance(self.task_index, int) or self.task_index < 0:
            raise self.bad("task_index", self.task_index, "must be an integer >= 0")
        self.validate()

    def bad(self, option: str, value: Any, why: str) -> ConfigError:
        """The ConfigError for a bad setting, naming this schedule, the option and the value."""
        return ConfigError(f"lr schedule {self.name or type(self).__name__!r}: {option} {why}, got {value!r}")

    def validate(self) -> None:
        """Check the schedule's own options (raise :meth:`bad`)."""

    def value(self, step: int) -> float:  # pragma: no cover - interface
        """The lr of step ``step``, 0 <= step < S."""
        raise NotImplementedError

    def lr(self, step: int) -> float:
        """The lr of step ``step``; steps past the end keep the last step's value (module docstring)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if self.total_steps == 0:
            raise ValueError(f"lr schedule {self.name!r} has no steps (total_steps = 0)")
        return self.value(min(step, self.total_steps - 1))

    def __call__(self, step: int) -> float:
        return self.lr(step)

    def _fraction_option(self, option: str) -> int:
        """Coerce the fraction option ``option`` to float, check it lies in [0, 1], return its ceil(fraction·S)."""
        fraction = getattr(self, option)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise self.bad(option, fraction, "must be a fraction of the task's steps in [0, 1]")
        setattr(self, option, float(fraction))
        return _fraction_of_steps(self.total_steps, fraction)


SCHEDULES: Registry[type[LRSchedule]] = Registry("lr schedule", base=LRSchedule)


def register_schedule(name: str) -> Callable[[type[LRSchedule]], type[LRSchedule]]:
    """Class decorator: make an :class:`LRSchedule` subclass available under ``name``."""
    return SCHEDULES.register(name)


def available_schedules() -> list[str]:
    return SCHEDULES.names()


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
    """Build the schedule ``name``; W = ceil(warmup_fraction·S), η_min = min_lr_ratio·η0.

    Unknown name or option, or a bad value (module docstring) → ConfigError naming schedule, option and value.
    """
    cls = SCHEDULES.get(name)
    if not base_lr > 0:
        raise ConfigError(f"lr schedule {name!r}: lr must be > 0, got {base_lr!r}")
    if not 0 <= min_lr_ratio <= 1:
        raise ConfigError(f"lr schedule {name!r}: min_lr_ratio must lie in [0, 1], got {min_lr_ratio!r}")
    if not 0 <= warmup_fraction <= 1:
        raise ConfigError(f"lr schedule {name!r}: warmup_fraction must lie in [0, 1], got {warmup_fraction!r}")
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 0:
        raise ConfigError(f"lr schedule {name!r}: total_steps must be an integer >= 0, got {total_steps!r}")
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


# -- per-task schedules ------------------------------------------------------------------------------------------------
@register_schedule("cosine")
@dataclass
class CosineSchedule(LRSchedule):
    """Linear warmup + cosine decay to η_min, restarted every task (the FiF default; module docstring)."""

    def value(self, step: int) -> float:
        return cosine_with_warmup(step, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr)


@register_schedule("constant")
@dataclass
class ConstantSchedule(LRSchedule):
    """η0 at every step; with ``warmup=True`` (default) the same linear warmup over the first W steps first."""

    warmup: bool = True

    def validate(self) -> None:
        if not isinstance(self.warmup, bool):
            raise self.bad("warmup", self.warmup, "must be true or false")

    def value(self, step: int) -> float:
        if self.warmup and step < self.warmup_steps:
            return _warmup(step, self.warmup_steps, self.base_lr)
        return self.base_lr


@register_schedule("wsd")
@dataclass
class WSDSchedule(LRSchedule):
    """Warmup-stable-decay. With K = ceil(decay·S) decay steps starting at n_d = S − K and p = (n − n_d + 1)/K::

        n <  W:          warm(n; η0)
        W <= n < n_d:    η0
        n >= n_d:        linear: η0 − p·(η0 − η_min)
                         cosine: cos_seg(p; η0, η_min)
                         sqrt:   η0 − sqrt(p)·(η0 − η_min)       (the "1 − sqrt" cooldown)

    Options: ``decay`` (fraction of S, default 0.2, W + K <= S), ``decay_shape`` (default "linear").
    Non-increasing after the warmup; with decay > 0 the last step is exactly η_min (decay = 0: constant η0).
    """

    decay: float = 0.2
    decay_shape: str = "linear"

    def validate(self) -> None:
        decay_steps = self._fraction_option("decay")
        if self.warmup_steps + decay_steps > self.total_steps:
            raise self.bad("decay", self.decay, f"leaves no room beside the {self.warmup_steps} warmup steps: "
                           f"{decay_steps} decay + {self.warmup_steps} warmup > {self.total_steps} steps")
        if self.decay_shape not in DECAY_SHAPES:
            raise self.bad("decay_shape", self.decay_shape, f"must be one of {', '.join(DECAY_SHAPES)}")

    @property
    def decay_steps(self) -> int:
        return _fraction_of_steps(self.total_steps, self.decay)

    def value(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(step, self.warmup_steps, self.base_lr)
        decay_start = self.total_steps - self.decay_steps
        if step < decay_start:
            return self.base_lr
        progress = (step - decay_start + 1) / self.decay_steps
        span = self.base_lr - self.min_lr
        if self.decay_shape == "linear":
            return self.base_lr - progress * span
        if self.decay_shape == "cosine":
            return _cosine_segment(progress, self.base_lr, self.min_lr)
        return self.base_lr - math.sqrt(progress) * span


# -- cross-task cosine schedules -------------------------------------------------------------------------------------
@register_schedule("meta_cosine")
@dataclass
class MetaCosineSchedule(LRSchedule):
    """The autoregressive meta-schedule: the cosine's shape with a per-task peak η_max(t) (:func:`meta_peak`)::

        n <  W:  warm(n; η_max(t))
        n >= W:  cos_seg((n − W + 1) / (S − W); η_max(t), η_min)

    η_max(0) = η0 (task 0 is the plain cosine); η_max(t) = cos_seg((t·D + 1)/((t + 1)·D); η0, η_min) with
    D = S − W, non-increasing in t (for S = 1420: ≈ 0.5 η0 at t = 1; at t = 19 0.00615 of the way from η_min
    to η0, i.e. 0.0071 η0 with η_min = 1e-3 η0 and 0.006 η0 with η_min = 0). Non-increasing after the warmup; every task ends exactly at η_min.
    """

    @property
    def peak(self) -> float:
        return meta_peak(self.task_index, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr)

    def value(self, step: int) -> float:
        return cosine_with_warmup(step, self.total_steps, self.warmup_steps, self.peak, self.min_lr)


@register_schedule("dynamic_recovery")
@dataclass
class DynamicRecoverySchedule(LRSchedule):
    """Re-warm each task to the tail of ONE global cosine from η0 to η_min over G = (t + 1)·S steps.

    The global cosine indexes steps g = t·S + n like the task cosine does (step g at progress (g + 1)/G), so
    ``c(g) = cos_seg((g + 1) / G; η0, η_min)`` and::

        n <  W:  warm(n; c(t·S + W))           (from 0 up to the cosine's value at the first post-warmup step)
        n >= W:  c(t·S + n)

    Steps W − 1 and W share the peak c(t·S + W) (continuous, then non-increasing); the last step of every task is
    exactly η_min. Task t's decay covers the last (S − W)/((t + 1)·S) of the cosine, so later tasks re-warm to
    lower peaks and decay less. When W = S the first post-warmup step lies past the cosine's end and the peak is η_min.
    """

    @property
    def peak(self) -> float:
        return self.global_cosine(self.task_index * self.total_steps + self.warmup_steps)

    def global_cosine(self, global_step: int) -> float:
        span = (self.task_index + 1) * self.total_steps
        return _cosine_segment((global_step + 1) / span, self.base_lr, self.min_lr)

    def value(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(step, self.warmup_steps, self.peak)
        return self.global_cosine(self.task_index * self.total_steps + step)


# -- infinite (rsqrt) schedules --------------------------------------------------------------------------------------
@dataclass
class _RsqrtCooldown(LRSchedule):
    """The shared part of the rsqrt family: an uncooled curve u(n) per variant, then the cooldown.

    With C = ceil(cooldown·S) cooldown steps starting at n_c = S − C::

        n <  n_c:  u(n)
        n >= n_c:  u(n_c) · (S − n) / C

    a straight line from the curve's own value at the first cooldown step (no jump) to 0 at n = S, the end of the
    task. The line reaches 0 after the last step rather than at it, so every one of the S steps trains (the last at
    u(n_c)/C); a step at lr 0 would be wasted compute. Options: ``cooldown`` (fraction of S, default 0.1);
    W + C <= S, and W >= 1 whenever S >= 1 (the decay sqrt(W/(n + 1)) is scaled by the warmup length).
    """

    cooldown: float = 0.1

    def validate(self) -> None:
        cooldown_steps = self._fraction_option("cooldown")
        if self.warmup_steps + cooldown_steps > self.total_steps:
            raise self.bad("cooldown", self.cooldown, f"leaves no room beside the {self.warmup_steps} warmup steps: "
                           f"{cooldown_steps} cooldown + {self.warmup_steps} warmup > {self.total_steps} steps")
        if self.total_steps > 0 and self.warmup_steps == 0:
            raise self.bad("warmup_steps", self.warmup_steps,
                           "must be >= 1: the rsqrt decay sqrt(W/(n+1)) is scaled by the warmup (warmup_fraction > 0)")

    @property
    def cooldown_steps(self) -> int:
        return _fraction_of_steps(self.total_steps, self.cooldown)

    def uncooled(self, step: int) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def continued(self, global_step: int) -> float:
        """r(g): one infinite rsqrt over the global step g = t·S + n, warmup only over g < W (task 0)."""
        if global_step < self.warmup_steps:
            return _warmup(global_step, self.warmup_steps, self.base_lr)
        return _rsqrt_decay(global_step, self.warmup_steps, self.base_lr, self.min_lr)

    def value(self, step: int) -> float:
        cooldown_start = self.total_steps - self.cooldown_steps
        if step < cooldown_start:
            return self.uncooled(step)
        return self.uncooled(cooldown_start) * (self.total_steps - step) / self.cooldown_steps


@register_schedule("rsqrt")
@dataclass
class RsqrtSchedule(_RsqrtCooldown):
    """The infinite (reciprocal square root) schedule, restarted every task, then the cooldown of the family::

        u(n) = warm(n; η0)                              n <  W
        u(n) = η_min + sqrt(W / (n + 1)) · (η0 − η_min)  n >= W

    The offset n + 1 (not n) makes the decay branch equal η0 at n = W − 1, exactly where the warmup peaks, so the
    curve is continuous and strictly decreasing after the peak (and never divides by zero); it is the "+1" of the
    cosine's progress (n − W + 1)/(S − W). Cooldown: :class:`_RsqrtCooldown` (u(n_c)·(S − n)/C over the last
    C steps).
    """

    def uncooled(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(step, self.warmup_steps, self.base_lr)
        return _rsqrt_decay(step, self.warmup_steps, self.base_lr, self.min_lr)


@register_schedule("rsqrt_continued")
@dataclass
class RsqrtContinuedSchedule(_RsqrtCooldown):
    """One infinite rsqrt across the stream, with the global step g = t·S + n (every task has S steps, W warmup)::

        u(n) = r(t·S + n),   r(g) = warm(g; η0) for g < W,  η_min + sqrt(W / (g + 1)) · (η0 − η_min) for g >= W

    so only task 0 warms up; each task then cools down to 0 over its last C steps and the next task resumes the
    rsqrt at its own global position (a jump from u(n_c)/C up to r(t·S)). Task 0 equals ``rsqrt``.
    """

    def uncooled(self, step: int) -> float:
        return self.continued(self.task_index * self.total_steps + step)


@register_schedule("rsqrt_autoregressive")
@dataclass
class RsqrtAutoregressiveSchedule(_RsqrtCooldown):
    """The rsqrt shape inside each task with the meta-schedule's peak η_max(t) (:func:`meta_peak`)::

        u(n) = warm(n; η_max(t))                                 n <  W
        u(n) = η_min + sqrt(W / (n + 1)) · (η_max(t) − η_min)     n >= W

    then the family's cooldown. Task 0 equals ``rsqrt``; later tasks peak lower, by the same factors as meta_cosine.
    """

    @property
    def peak(self) -> float:
        return meta_peak(self.task_index, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr)

    def uncooled(self, step: int) -> float:
        peak = self.peak
        if step < self.warmup_steps:
            return _warmup(step, self.warmup_steps, peak)
        return _rsqrt_decay(step, self.warmup_steps, peak, self.min_lr)


@register_schedule("rsqrt_recovered")
@dataclass
class RsqrtRecoveredSchedule(_RsqrtCooldown):
    """Re-warm every task to the continued rsqrt r(g) (see ``rsqrt_continued``), then follow it::

        u(n) = warm(n; r(t·S + W))    n <  W   (up to r's value at the task's first post-warmup step)
        u(n) = r(t·S + n)             n >= W

    then the family's cooldown. As in ``dynamic_recovery``, steps W − 1 and W share the peak; unlike
    ``rsqrt_continued`` no task starts with a jump (each ramps up from (1/W)·r(t·S + W)).
    """

    @property
    def peak(self) -> float:
        return self.continued(self.task_index * self.total_steps + self.warmup_steps)

    def uncooled(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(step, self.warmup_steps, self.peak)
        return self.continued(self.task_index * self.total_steps + step)
