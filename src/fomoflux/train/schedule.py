"""Learning-rate schedules of one task update (BENCHMARK.md, "Learning-rate schedules").

Notation: S steps per task, W = ceil(warmup_fraction·S) warmup steps (0.1 by default), η0 the base lr,
η_min = min_lr_ratio·η0 (1e-3 by default), t the 0-based task index, n the 0-based step within the task.
Every schedule is a function of (S, W, η0, η_min, t, n) and its own options only (``dynamic_recovery`` also of the
warmup fraction, which it applies to a longer horizon) — never of the number of tasks T, which a task update is not
told (a stream may grow later without invalidating the tasks already trained).

The cross-task schedules are those of the authors' code (``initialize_optimizer_and_scheduler`` in
``continual_lib/utils/base_continual_learner.py`` of pseudope/fomo_in_flux, commit 3e123d9), formula for formula:
``meta_cosine`` is its ``cosine_with_linear_warmup_and_recovery``, ``dynamic_recovery`` its
``cosine_with_linear_warmup_and_dynamic_recovery``, ``rsqrt`` its ``rsqrt`` and ``rsqrt_continued`` /
``rsqrt_autoregressive`` / ``rsqrt_recovered`` its ``rsqrt_with_recovery`` with ``recovery_mode`` continued /
autoregressive / recovered (the reference's default ``recovery_mode`` is autoregressive, which is also the peak its
dynamic recovery warms up to). The reference builds W and the cooldown as ``int(np.ceil(fraction·S))``; here the
product is rounded to 9 decimals first, which differs only where float noise would add a step.

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
    # The fraction W was derived from (make_schedule passes it); None: W / S. Only schedules that lay a warmup over
    # a longer horizon than the task read it (dynamic_recovery).
    warmup_fraction: float | None = None

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
        if self.warmup_fraction is not None and not 0.0 <= self.warmup_fraction <= 1.0:
            raise self.bad("warmup_fraction", self.warmup_fraction, "must lie in [0, 1]")
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
        warmup_fraction=warmup_fraction,
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
    Ours: the reference lists a "wsd" scheduler name but builds no schedule for it.
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
    to η0, i.e. 0.0071 η0 with η_min = 1e-3 η0 and 0.006 η0 with η_min = 0). Non-increasing after the warmup;
    every task ends exactly at η_min.
    """

    @property
    def peak(self) -> float:
        return meta_peak(self.task_index, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr)

    def value(self, step: int) -> float:
        return cosine_with_warmup(step, self.total_steps, self.warmup_steps, self.peak, self.min_lr)


@register_schedule("dynamic_recovery")
@dataclass
class DynamicRecoverySchedule(LRSchedule):
    """Warm each task up to the meta-schedule's peak, then follow ONE global cosine over G = (t + 1)·S steps.

    The reference's ``cosine_with_linear_warmup_and_dynamic_recovery``: the global cosine is its task cosine
    (warmup, then cosine decay) evaluated at the global step g = t·S + n of a task G steps long, whose warmup is
    W_G = ceil(f·G) with the same warmup fraction f; task t's own warmup goes up to η_max(t) (:func:`meta_peak`)::

        n <  W:  warm(n; η_max(t))
        n >= W:  c(t·S + n),   c(g) = cos_seg((g − W_G + 1) / (G − W_G); η0, η_min)

    g never falls into the global warmup (t·S + W >= W_G). When W_G = (t + 1)·W (f·S a whole number, e.g. S = 1420)
    the decay covers the concatenated decay phases of tasks 0..t, p = (t·D + n − W + 1)/((t + 1)·D), D = S − W,
    and c at n = W is exactly η_max(t) for t >= 1: continuous, then non-increasing. Otherwise (W_G < (t + 1)·W, from
    rounding) the warmup peak and c(t·S + W) differ slightly. Task 0 is the plain cosine; the last step of every
    task is exactly η_min.
    """

    @property
    def peak(self) -> float:
        return meta_peak(self.task_index, self.total_steps, self.warmup_steps, self.base_lr, self.min_lr)

    @property
    def global_warmup_steps(self) -> int:
        """W_G = ceil(f·(t + 1)·S), f the warmup fraction (W / S when the schedule was built without it)."""
        span = (self.task_index + 1) * self.total_steps
        if self.warmup_fraction is None:
            return _fraction_of_steps(span, self.warmup_steps / self.total_steps) if self.total_steps else 0
        return _fraction_of_steps(span, self.warmup_fraction)

    def global_cosine(self, global_step: int) -> float:
        span = (self.task_index + 1) * self.total_steps
        warmup = self.global_warmup_steps
        return _cosine_segment((global_step - warmup + 1) / (span - warmup), self.base_lr, self.min_lr)

    def value(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(step, self.warmup_steps, self.peak)
        return self.global_cosine(self.task_index * self.total_steps + step)


# -- infinite (rsqrt) schedules --------------------------------------------------------------------------------------
def _rsqrt(position: int, warmup: int, peak: float, floor: float) -> float:
    """floor + sqrt(W / position) · (peak − floor): the reference's rsqrt decay, the peak at position W."""
    return floor + math.sqrt(warmup / position) * (peak - floor)


@dataclass
class _RsqrtCooldown(LRSchedule):
    """The shared shape of the rsqrt family (the reference's ``rsqrt`` and ``rsqrt_with_recovery``).

    With a per-variant peak P_t and decay curve u(n), and C = ceil(cooldown·S) cooldown steps from n_c = S − C::

        n <  W:          P_t · (n + 1) / W
        W <= n < n_c:    u(n)
        n >= n_c:        u(n) · (S − n − 1) / C

    The cooldown scales the decay curve's value at the step itself down linearly; its last step, n = S − 1, trains
    at lr 0 (as in the reference). Options: ``cooldown`` (fraction of S, default 0.1); W + C <= S, and W >= 1
    whenever S >= 1 (the decay sqrt(W/n) is scaled by the warmup length).
    """

    cooldown: float = 0.1

    def validate(self) -> None:
        cooldown_steps = self._fraction_option("cooldown")
        if self.warmup_steps + cooldown_steps > self.total_steps:
            raise self.bad("cooldown", self.cooldown, f"leaves no room beside the {self.warmup_steps} warmup steps: "
                           f"{cooldown_steps} cooldown + {self.warmup_steps} warmup > {self.total_steps} steps")
        if self.total_steps > 0 and self.warmup_steps == 0:
            raise self.bad("warmup_steps", self.warmup_steps,
                           "must be >= 1: the rsqrt decay sqrt(W/n) is scaled by the warmup (warmup_fraction > 0)")

    @property
    def cooldown_steps(self) -> int:
        return _fraction_of_steps(self.total_steps, self.cooldown)

    @property
    def decay_steps(self) -> int:
        """S − C − W: the steps of a task between its warmup and its cooldown."""
        return self.total_steps - self.cooldown_steps - self.warmup_steps

    @property
    def peak(self) -> float:
        """P_t, what the warmup of task t rises to."""
        return self.base_lr

    def uncooled(self, step: int) -> float:  # pragma: no cover - interface
        """u(n) for W <= n < S."""
        raise NotImplementedError

    def value(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(step, self.warmup_steps, self.peak)
        cooldown_start = self.total_steps - self.cooldown_steps
        if step < cooldown_start:
            return self.uncooled(step)
        return self.uncooled(step) * (self.total_steps - step - 1) / self.cooldown_steps


@register_schedule("rsqrt")
@dataclass
class RsqrtSchedule(_RsqrtCooldown):
    """The infinite (reciprocal square root) schedule, restarted every task (the reference's ``rsqrt``)::

        P_t = η0,   u(n) = η_min + sqrt(W / n) · (η0 − η_min)

    so steps W − 1 (the warmup's last) and W both train at η0; then the family's cooldown (:class:`_RsqrtCooldown`).
    """

    def uncooled(self, step: int) -> float:
        return _rsqrt(step, self.warmup_steps, self.base_lr, self.min_lr)


@register_schedule("rsqrt_continued")
@dataclass
class RsqrtContinuedSchedule(_RsqrtCooldown):
    """Each task re-warms to where one rsqrt over the decay steps of the tasks before would be, and restarts the rsqrt
    shape below that peak (the reference's ``rsqrt_with_recovery``, ``recovery_mode: continued``)::

        P_t  = η_min + sqrt(W / (W + t·(S − C − W))) · (η0 − η_min)
        u(n) = η_min + sqrt(W / n) · (P_t − η_min)

    then the family's cooldown. Task 0 equals ``rsqrt``.
    """

    @property
    def peak(self) -> float:
        return _rsqrt(self.warmup_steps + self.task_index * self.decay_steps, self.warmup_steps, self.base_lr,
                      self.min_lr)

    def uncooled(self, step: int) -> float:
        return _rsqrt(step, self.warmup_steps, self.peak, self.min_lr)


@register_schedule("rsqrt_autoregressive")
@dataclass
class RsqrtAutoregressiveSchedule(_RsqrtCooldown):
    """The rsqrt shape inside each task below an autoregressive peak (the reference's ``rsqrt_with_recovery``,
    ``recovery_mode: autoregressive``, its default)::

        P_t  = η_min + sqrt((t + 1)·W / (t·S + W)) · (η0 − η_min)
        u(n) = η_min + sqrt(W / n) · (P_t − η_min)

    then the family's cooldown. Task 0 equals ``rsqrt``; for S = 1420 the peak falls to about 0.33 η0 at t = 19.
    """

    @property
    def peak(self) -> float:
        t, warmup = self.task_index, self.warmup_steps
        share = math.sqrt((t + 1) * warmup / (t * self.total_steps + warmup))
        return self.min_lr + share * (self.base_lr - self.min_lr)

    def uncooled(self, step: int) -> float:
        return _rsqrt(step, self.warmup_steps, self.peak, self.min_lr)


@register_schedule("rsqrt_recovered")
@dataclass
class RsqrtRecoveredSchedule(_RsqrtCooldown):
    """One rsqrt continued across the decay steps of all tasks (the reference's ``rsqrt_with_recovery``,
    ``recovery_mode: recovered``); with E = S − C − W::

        P_0 = η0,   P_t = η_min + sqrt(W / (2·t·E)) · (η0 − η_min)   (t >= 1)
        u(n) = η_min + sqrt(W / (n + t·E)) · (η0 − η_min)

    then the family's cooldown. The warmup peak is the reference's: its position t·E is offset by t·E once more, so
    for t >= 1 the warmup ends below u(W) and the lr rises once more at n = W (e.g. 0.25 η0 to 0.33 η0 at t = 1 for
    S = 1420). It needs E >= 1 (the reference divides by zero otherwise from the second task on).
    """

    def validate(self) -> None:
        super().validate()
        # Checked for task 0 too (which would not divide by E), so that the plan-time check of the first task
        # catches what would fail from the second on.
        if self.total_steps > 0 and self.decay_steps < 1:
            raise self.bad("cooldown", self.cooldown, f"leaves no decay step between the {self.warmup_steps} warmup "
                           f"and {self.cooldown_steps} cooldown steps of the {self.total_steps}, which the peak of a "
                           "task after the first is scaled by")

    @property
    def peak(self) -> float:
        if self.task_index == 0:
            return self.base_lr
        return _rsqrt(2 * self.task_index * self.decay_steps, self.warmup_steps, self.base_lr, self.min_lr)

    def uncooled(self, step: int) -> float:
        return _rsqrt(step + self.task_index * self.decay_steps, self.warmup_steps, self.base_lr, self.min_lr)
