"""Synaptic Intelligence (Zenke, Poole & Ganguli, 2017): full fine-tuning plus

    P(θ) = c · Σ_p Ω_p (θ_p − θ*_p)²

Within task t every optimizer step adds to the path integral

    ω_p += −g_p ⊙ Δθ_p,    Δθ_p = θ_p(after the step) − θ_p(before it),

with g_p the gradient the step used (the clipped gradient of contrastive loss + penalty, still in ``p.grad`` at
``after_step``). When the task ends

    Ω ← Ω + ω / ((θ_end − θ_start)² + ξ),    θ* ← θ_end,    ω ← 0,

where θ_start is the reference point of the task: the previous task's end θ*_{t−1} (the paper's Δ over the task), or
for the first task the weights it started from. θ* is thus the weights reached after each task, never θ0 (the
reference release's defect). Before the first task has ended there is no Ω and no penalty.

Memory on the training device, per trained floating-point parameter: Ω, θ* (which doubles as θ_start), ω and the
previous values for Δθ — four copies during a task (:meth:`SI.extra_memory_bytes`); ω and the previous values are
freed when the task ends. Every update is a few ``torch._foreach_*`` kernels over the parameter list and allocates
nothing. State crosses tasks as ``omega.<parameter name>`` (Ω) and ``anchor.<parameter name>`` (θ*).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from fomoflux.errors import CheckpointError, ConfigError
from fomoflux.methods.anchored import AnchoredMethod, tensor_bytes
from fomoflux.methods.base import TaskContext, register_method

__all__ = ["SI"]


@register_method("si")
class SI(AnchoredMethod):
    summary = ("Synaptic Intelligence (Zenke, Poole & Ganguli, 2017): full fine-tuning plus c · Σ Ω (θ − θ*)², with "
               "Ω the path integral of each parameter's contribution to the loss and θ* the weights after the previous task.")
    options: ClassVar[dict[str, Any]] = {"c": 1.0, "xi": 1e-3}
    option_help: ClassVar[dict[str, str]] = {
        "c": "c >= 0, the penalty's strength",
        "xi": "damping ξ > 0 in Ω ← Ω + ω / ((θ_end − θ_start)² + ξ)",
    }
    importance_key = "omega"

    def __init__(self, **options) -> None:
        self.path: list[torch.Tensor] | None = None  # ω of the running task, aligned with ``_tracked``
        self.previous: list[torch.Tensor] | None = None  # θ before the step about to be taken
        self._params: list[torch.nn.Parameter] | None = None  # the running task's tracked parameters
        super().__init__(**options)

    def validate(self) -> None:
        if not (0.0 <= self.c < math.inf):
            raise ConfigError(f"method 'si': option 'c' must be a finite number >= 0, got {self.c}")
        if not (0.0 < self.xi < math.inf):
            raise ConfigError(f"method 'si': option 'xi' (the damping ξ) must be a finite number > 0, got {self.xi}")

    def penalty_scale(self) -> float:
        return self.c

    def extra_memory_bytes(self, trainable: list[torch.nn.Parameter]) -> int:
        # Ω, the anchor θ*, the path integral ω and the previous values: four copies of the trained parameters
        return 4 * tensor_bytes(p for p in trainable if p.is_floating_point())

    def held_tensors(self) -> list[torch.Tensor]:
        return [*super().held_tensors(), *(self.path or []), *(self.previous or [])]

    @torch.no_grad()
    def begin_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        super().begin_task(model, ctx)
        self._params = [p for _, p in self._named_tracked(model)]
        params = [p.detach() for p in self._params]
        if self.anchor is None:
            # the first task's reference point θ_start: its starting weights (no penalty reads it while Ω is None)
            self.anchor = {name: p.clone() for name, p in zip(self._tracked or [], params)}
        self.path = [torch.zeros_like(p) for p in params]
        self.previous = [p.clone() for p in params]

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, step: int) -> None:
        if self.path is None or self.previous is None or self._params is None:
            raise RuntimeError("si: after_step without begin_task")
        params = self._params
        # previous ← θ_before − θ_after = −Δθ, so ω += g ⊙ previous is ω += −g ⊙ Δθ with no temporary
        torch._foreach_sub_(self.previous, params)
        stepped = [i for i, p in enumerate(params) if p.grad is not None]
        if len(stepped) == len(params):
            torch._foreach_addcmul_(self.path, [p.grad for p in params], self.previous)
        elif stepped:
            torch._foreach_addcmul_(
                [self.path[i] for i in stepped], [params[i].grad for i in stepped], [self.previous[i] for i in stepped]
            )
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
        torch._foreach_copy_(self.previous, [p.detach() for p in self._params])

    @torch.no_grad()
    def end_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        if self.path is None or self.previous is None or self.anchor is None:
            raise RuntimeError("si: end_task without begin_task")
        names = list(self._tracked or [])
        params = [p.detach() for _, p in self._named_tracked(model)]
        anchor = [self.anchor[name] for name in names]
        # reuse the previous-values buffer for the denominator (θ_end − θ_start)² + ξ
        denominator = self.previous
        torch._foreach_copy_(denominator, params)
        torch._foreach_sub_(denominator, anchor)
        torch._foreach_mul_(denominator, denominator)
        torch._foreach_add_(denominator, self.xi)
        torch._foreach_div_(self.path, denominator)
        if self.importance is None:
            importance = dict(zip(names, self.path))
        else:
            importance = self.importance
            torch._foreach_add_([importance[name] for name in names], self.path)
        torch._foreach_copy_(anchor, params)
        self.path = self.previous = self._params = None
        self._set_state(importance, self.anchor)
