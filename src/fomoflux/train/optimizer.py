"""AdamW of a task update, by convention (``training.optimizer``): which parameters decay, betas, eps, and the clamp.

Two conventions, named after the code they reproduce:

- ``reference`` (default): the FoMo-in-Flux release (commit 3e123d9, ``continual_lib/utils/base_continual_learner.py``
  ``initialize_optimizer_and_scheduler``) builds ``torch.optim.AdamW(self.to_optimize)`` fresh at every task's
  ``begin_task``, with only ``lr`` and ``weight_decay`` (``experiment.optimizer.lr`` / ``.weight_decay``) set per
  parameter group: betas and eps are torch's defaults, (0.9, 0.999) and 1e-8, and the weight decay applies to every
  trained parameter alike, biases, norm gains, embeddings and the temperature ``logit_scale`` included (the groups
  are the visual tower's and the text side's parameters; parameters without a gradient are untouched by AdamW).
  The release never clamps ``logit_scale`` (no ``clamp`` of it anywhere in the repository).
- ``open_clip``: open_clip's training script (``open_clip_train/main.py`` and ``train.py``): no weight decay on
  parameters of rank < 2 or whose name contains ``bn``, ``ln``, ``bias`` or ``logit_scale``; its ViT defaults betas
  (0.9, 0.98) and eps 1e-6 (``open_clip_train/params.py``); ``logit_scale`` clamped to [0, ln 100] after every step.

Both use the run's ``lr`` (one for every group, set per step from the schedule), ``weight_decay`` (decoupled, as
AdamW) and ``grad_clip`` (the norm over all trained parameters, as both codes clip). ``betas`` / ``eps`` given in
the config override the convention's values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fomoflux.errors import ConfigError

__all__ = ["OPTIMIZER_CONVENTIONS", "OptimizerConvention", "adamw", "decay_groups", "fused_adamw_supported",
           "optimizer_convention", "resolve_optimizer"]


@dataclass(frozen=True)
class OptimizerConvention:
    betas: tuple[float, float]
    eps: float
    # Whether parameters of rank < 2 and those named bn / ln / bias / logit_scale are exempt from weight decay.
    exempt_from_decay: bool
    # Upper bound of logit_scale after every step (its lower bound is then 0); None: never clamped.
    max_logit_scale: float | None


OPTIMIZER_CONVENTIONS: dict[str, OptimizerConvention] = {
    "reference": OptimizerConvention(betas=(0.9, 0.999), eps=1e-8, exempt_from_decay=False, max_logit_scale=None),
    "open_clip": OptimizerConvention(betas=(0.9, 0.98), eps=1e-6, exempt_from_decay=True,
                                     max_logit_scale=math.log(100.0)),
}
_NAMES_EXEMPT_FROM_DECAY = ("bn", "ln", "bias", "logit_scale")


def optimizer_convention(name: str, where: str = "training.optimizer.convention") -> OptimizerConvention:
    if name not in OPTIMIZER_CONVENTIONS:
        raise ConfigError(f"{where}: {name!r} is not one of {', '.join(OPTIMIZER_CONVENTIONS)}")
    return OPTIMIZER_CONVENTIONS[name]


def resolve_optimizer(raw: Mapping[str, Any] | None, where: str = "training.optimizer") -> dict[str, Any]:
    """``training.optimizer`` with every value filled in: ``{"convention", "betas": [b1, b2], "eps"}``.

    What a task's spec holds, so a change of convention, betas or eps reruns training, and an explicit value equal
    to the convention's is the same setting as leaving it out. Raises ConfigError naming the key at fault.
    """
    raw = dict(raw or {})
    unknown = sorted(set(raw) - {"convention", "betas", "eps"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: betas, convention, eps)")
    name = raw.get("convention", "reference")
    chosen = optimizer_convention(name, f"{where}.convention")
    betas = raw.get("betas")
    if betas is None:
        betas = chosen.betas
    if (not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2
            or not all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"{where}.betas: must be two numbers in [0, 1), got {betas!r}")
    eps = raw.get("eps")
    if eps is None:
        eps = chosen.eps
    if not _is_number(eps) or not eps > 0:
        raise ConfigError(f"{where}.eps: must be a number > 0, got {eps!r}")
    return {"convention": name, "betas": [float(betas[0]), float(betas[1])], "eps": float(eps)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def decay_groups(model: torch.nn.Module, params: Sequence[torch.nn.Parameter], weight_decay: float,
                 convention_name: str) -> list[dict[str, Any]]:
    """AdamW's parameter groups of ``params`` (the trained parameters): decayed with ``weight_decay``, and, under
    the open_clip convention, exempt (weight decay 0). A parameter ``model`` does not name (a method's own) is
    judged by its rank alone."""
    if not optimizer_convention(convention_name).exempt_from_decay:
        return [{"params": list(params), "weight_decay": weight_decay}] if params else []
    names = {id(p): n for n, p in model.named_parameters()}
    decay, exempt = [], []
    for p in params:
        name = names.get(id(p), "")
        skip = p.ndim < 2 or any(part in name for part in _NAMES_EXEMPT_FROM_DECAY)
        (exempt if skip else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    return groups


def fused_adamw_supported(device: torch.device, params: Sequence[torch.nn.Parameter]) -> bool | None:
    """Whether torch's fused AdamW serves ``params`` on ``device``: CUDA and CPU kernels, floating-point weights.
    ``None`` (torch's choice, the per-tensor loop) elsewhere."""
    if device.type not in ("cuda", "cpu"):
        return None
    floating = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    return True if all(p.dtype in floating for p in params) else None


def adamw(model: torch.nn.Module, params: Sequence[torch.nn.Parameter], *, lr: float, weight_decay: float,
          convention_name: str, betas: tuple[float, float], eps: float, fused: bool | None = None) -> torch.optim.AdamW:
    """A fresh AdamW over ``params`` as the convention groups them (``fused``: torch's fused kernel)."""
    return torch.optim.AdamW(decay_groups(model, params, weight_decay, convention_name), lr=lr, betas=tuple(betas),
                             eps=eps, fused=fused)
