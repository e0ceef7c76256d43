"""Synaptic Intelligence (Zenke, Poole & Ganguli, 2017): full fine-tuning plus

    P(θ) = c · Σ_p Ω_p (θ_p − θ*_p)²

Within task t every optimizer step n adds to the per-parameter path integral ω, as ``path_integral`` says:

- "lr_grad_squared" (the reference release, ``continual_lib/si.py``, as in mammoth): ω_p += η_n · g_p², with η_n
  the step's lr. It is −g ⊙ Δθ for plain SGD (Δθ = −η g), not for AdamW, whose steps it does not look at;
- "grad_times_step" (the paper's definition, exact for any optimizer): ω_p += −g_p ⊙ Δθ_p, Δθ_p = θ_p(after the
  step) − θ_p(before it).

g_p is the gradient the step used, as in the reference: of contrastive loss + penalty, after gradient-norm clipping
(still in ``p.grad`` at ``after_step``). When the task ends

    Ω ← Ω + ω / ((θ_end − θ_start)² + ξ),    θ* ← θ_end,    ω ← 0,

where θ_start is the reference point of the task: the previous task's end θ*_{t−1}, or for the first task the weights
it started from (θ0), as in the reference. Before the first task has ended there is no Ω and no penalty. Defaults are
the reference's (``configs/config.yaml``, ``si``): c = 0.5, ξ = 1, "lr_grad_squared".

Where this module differs from the reference: the reference trains every task from θ0 and evaluates θ0 (its
``end_task`` skips the base class's weight bookkeeping, a defect BENCHMARK.md names), so its tasks after the first
start away from θ_start; here task t + 1 starts from θ_t = θ*. The reference skips the ω update of a step whose
gradients hold a NaN (fp16 loss scaling's overflow steps, which its GradScaler also skips); training here has no loss
scaling, so there are no such steps to skip.

Memory on the training device, per trained floating-point parameter: Ω, θ* (which doubles as θ_start) and ω — three
copies during a task — plus, for "grad_times_step", the previous values for Δθ (:meth:`SI.extra_memory_bytes`); ω
and the previous values are freed when the task ends. Every update is a few ``torch._foreach_*`` kernels over the
parameter list and allocates nothing. State crosses tasks as ``omega.<parameter name>`` (Ω) and
``anchor.<parameter name>`` (θ*).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from fomoflux.errors import CheckpointError, ConfigError
from fomoflux.methods.anchored import AnchoredMethod, tensor_bytes
from fomoflux.methods.base import TaskContext, register_method

__all__ = ["PATH_INTEGRALS", "SI"]

PATH_INTEGRALS = ("lr_grad_squared", "grad_times_step")


@register_method("si")
class SI(AnchoredMethod):
    summary = ("Synaptic Intelligence (Zenke, Poole & Ganguli, 2017): full fine-tuning plus c · Σ Ω (θ − θ*)², with "
               "Ω the path integral of each parameter's contribution to the loss and θ* the weights after the previous "
               "task.")
    options: ClassVar[dict[str, Any]] = {"c": 0.5, "xi": 1.0, "path_integral": "lr_grad_squared"}
    option_help: ClassVar[dict[str, str]] = {
        "c": "c >= 0, the penalty's strength",
        "xi": "damping ξ > 0 in Ω ← Ω + ω / ((θ_end − θ_start)² + ξ)",
        "path_integral": "what each step adds to ω: 'lr_grad_squared' (the reference) lr · g², the SGD form; "
                         "'grad_times_step' −g ⊙ Δθ, the paper's definition, exact for AdamW too",
    }
    importance_key = "omega"

    def __init__(self, **options) -> None:
        self.path: list[torch.Tensor] | None = None  # ω of the running task, aligned with ``_tracked``
        self.previous: list[torch.Tensor] | None = None  # θ before the step about to be taken (grad_times_step)
        self._params: list[torch.nn.Parameter] | None = None  # the running task's tracked parameters
        self._lr_at: Callable[[int], float] | None = None  # the running task's lr by step (lr_grad_squared)
        super().__init__(**options)

    def validate(self) -> None:
        if not (0.0 <= self.c < math.inf):
            raise ConfigError(f"method 'si': option 'c' must be a finite number >= 0, got {self.c}")
        if not (0.0 < self.xi < math.inf):
            raise ConfigError(f"method 'si': option 'xi' (the damping ξ) must be a finite number > 0, got {self.xi}")
        if self.path_integral not in PATH_INTEGRALS:
            raise ConfigError(f"method 'si': option 'path_integral' must be one of {', '.join(PATH_INTEGRALS)}, got "
                              f"{self.path_integral!r}")

    @property
    def _tracks_steps(self) -> bool:
        return self.path_integral == "grad_times_step"

    def penalty_scale(self) -> float:
        return self.c

    def extra_memory_bytes(self, trainable: list[torch.nn.Parameter]) -> int:
        # Ω, the anchor θ*, the path integral ω (and the previous values for Δθ): copies of the trained parameters
        copies = 4 if self._tracks_steps else 3
        return copies * tensor_bytes(p for p in trainable if p.is_floating_point())

    def held_tensors(self) -> list[torch.Tensor]:
        return [*super().held_tensors(), *(self.path or []), *(self.previous or [])]

    @torch.no_grad()
    def begin_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        super().begin_task(model, ctx)
        self._lr_at = ctx.lr_at
        self._params = [p for _, p in self._named_tracked(model)]
        params = [p.detach() for p in self._params]
        if self.anchor is None:
            # the first task's reference point θ_start: its starting weights (no penalty reads it while Ω is None)
            self.anchor = {name: p.clone() for name, p in zip(self._tracked or [], params)}
        self.path = [torch.zeros_like(p) for p in params]
        self.previous = [p.clone() for p in params] if self._tracks_steps else None

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, step: int) -> None:
        if self.path is None or self._params is None:
            raise RuntimeError("si: after_step without begin_task")
        params = self._params
        stepped = [i for i, p in enumerate(params) if p.grad is not None]
        if len(stepped) == len(params):
            path, grads = self.path, [p.grad for p in params]
        else:
            path, grads = [self.path[i] for i in stepped], [params[i].grad for i in stepped]
        if not self._tracks_steps:
            if self._lr_at is None:
                raise ConfigError("method 'si': path_integral 'lr_grad_squared' needs each step's lr, and the task "
                                  "context has none (TaskContext.lr_at)")
            if grads:
                torch._foreach_addcmul_(path, grads, grads, value=self._lr_at(step))
            return
        assert self.previous is not None
        # previous ← θ_before − θ_after = −Δθ, so ω += g ⊙ previous is ω += −g ⊙ Δθ with no temporary
        torch._foreach_sub_(self.previous, params)
        if grads:
            previous = self.previous if len(stepped) == len(params) else [self.previous[i] for i in stepped]
            torch._foreach_addcmul_(path, grads, previous)
        torch._foreach_copy_(self.previous, params)

    def task_state(self) -> dict[str, torch.Tensor]:
        # ω so far; the previous values are the weights after the last step, which the snapshot holds anyway
        return {f"path.{name}": t for name, t in zip(self._tracked or [], self.path or [])}

    @torch.no_grad()
    def load_task_state(self, model: torch.nn.Module, state) -> None:
        if self.path is None or self._params is None:
            raise RuntimeError("si: load_task_state without begin_task")
        names = list(self._tracked or [])
        if sorted(state) != sorted(f"path.{name}" for name in names):
            raise CheckpointError("si: the mid-task snapshot's path integral does not match the tracked parameters")
        torch._foreach_copy_(self.path, [state[f"path.{name}"].to(p.device) for name, p in zip(names, self.path)])
        if self.previous is not None:
            torch._foreach_copy_(self.previous, [p.detach() for p in self._params])

    @torch.no_grad()
    def end_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        if self.path is None or self.anchor is None:
            raise RuntimeError("si: end_task without begin_task")
        names = list(self._tracked or [])
        params = [p.detach() for _, p in self._named_tracked(model)]
        anchor = [self.anchor[name] for name in names]
        # ω ← ω / ((θ_end − θ_start)² + ξ); the denominator goes into the previous-values buffer where there is one,
        # else into one parameter-sized temporary at a time (never a fourth copy of all parameters)
        if self.previous is not None:
            denominator = self.previous
            torch._foreach_copy_(denominator, params)
            torch._foreach_sub_(denominator, anchor)
            torch._foreach_mul_(denominator, denominator)
            torch._foreach_add_(denominator, self.xi)
            torch._foreach_div_(self.path, denominator)
        else:
            for path, param, start in zip(self.path, params, anchor):
                path.div_(torch.sub(param, start).square_().add_(self.xi))
        if self.importance is None:
            importance = dict(zip(names, self.path))
        else:
            importance = self.importance
            torch._foreach_add_([importance[name] for name in names], self.path)
        torch._foreach_copy_(anchor, params)
        self.path = self.previous = self._params = None
        self._lr_at = None
        self._set_state(importance, self.anchor)
