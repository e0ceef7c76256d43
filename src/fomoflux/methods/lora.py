"""LoRA (Hu et al., 2022): a low-rank update of each targeted weight, W' = W0 + s·B@A.

As in the reference release (``continual_lib/lora.py`` at 3e123d9): A is rank × in, initialised with torch's
``kaiming_uniform_(a=√rank)`` (U(±√(6 / ((1 + rank)·in))), seeded per block); B is out × rank, initialised to 0, so
ΔW = 0 and the model is θ0 at the start; s is ``scale`` (multiplies B@A directly, as the reference's ``scale``; peft's
α/r), no dropout. The attention in-projection gets three separate adapters, for q, k and v (``adapters``: slices).
Options, targets and the adapter's life across tasks (one adapter trained over the whole stream, folded into plain
weights after every task): ``adapters``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from fomoflux.errors import ConfigError
from fomoflux.methods.adapters import (
    ADAPTER_OPTION_HELP,
    ADAPTER_OPTIONS,
    AdapterMethod,
    adapter_seed,
    attach_tensors,
    kaiming_uniform,
)
from fomoflux.methods.base import register_method

__all__ = ["LORA_OPTIONS", "LORA_OPTION_HELP", "LoRA", "LoRAWeight", "low_rank_factors"]

LORA_OPTIONS: dict[str, Any] = {**ADAPTER_OPTIONS, "scale": 1.0}
LORA_OPTION_HELP: dict[str, str] = {
    **ADAPTER_OPTION_HELP,
    "rank": "rank r of the update s·B@A (A: r × in, B: out × r; the reference's default: 5)",
    "scale": "s in W' = W0 + s·B@A (peft's alpha / r; the reference's default: 1), a finite number > 0",
}


class LoRAWeight(torch.nn.Module):
    """W ↦ W + scale · lora_B @ lora_A."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], scale: float) -> None:
        super().__init__()
        attach_tensors(self, tensors)
        self.scale = scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_B @ self.lora_A)


def low_rank_factors(tensor: str, prefix: str, weight: torch.Tensor, rank: int, seed: int) -> torch.Tensor:
    """LoRA's initial factors of the block ``prefix`` with θ0 rows ``weight``: A ~ ``kaiming_uniform_(a=√rank)``
    (rank × in, from a generator seeded by (seed, prefix)), B = 0 (out × rank). On a meta weight: empty tensors of
    the right shapes, nothing drawn."""
    out_features, in_features = weight.shape
    if tensor == "lora_B":
        return torch.zeros(out_features, rank, device=weight.device, dtype=weight.dtype)
    if weight.device.type == "meta":
        return torch.empty(rank, in_features, device="meta", dtype=weight.dtype)
    generator = torch.Generator().manual_seed(adapter_seed(seed, prefix, "lora_A"))
    return kaiming_uniform((rank, in_features), generator, rank)


def check_scale(method: str, scale: float) -> None:
    """ConfigError unless the adapter scale s is a finite positive number (s = 0 would freeze the adapter)."""
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"method {method!r}: option 'scale' must be a finite number > 0, got {scale!r}")


@register_method("lora")
class LoRA(AdapterMethod):
    options: ClassVar[Mapping[str, Any]] = LORA_OPTIONS
    option_help: ClassVar[Mapping[str, str]] = LORA_OPTION_HELP
    weight_tensors = ("lora_A", "lora_B")

    def validate(self) -> None:
        super().validate()
        check_scale(self.name, self.scale)

    def fresh_tensor(self, tensor: str, prefix: str, weight: torch.Tensor, seed: int) -> torch.Tensor:
        return low_rank_factors(tensor, prefix, weight, self.rank, seed)

    def parametrization(self, tensors: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        return LoRAWeight(tensors, self.scale)
