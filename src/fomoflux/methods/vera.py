"""VeRA (Kopiczko et al., 2024): vector-based random-matrix adaptation — only two scaling vectors train per block.

    ΔW = s · diag(b) · B · diag(d) · A,    W' = W0 + ΔW

As in the reference release (``continual_lib/vera.py`` at 3e123d9): A (rank × in) and B (out × rank) are frozen
random matrices drawn with torch's ``kaiming_uniform_(a=√rank)`` (fan_in: in for A, rank for B), shared by every
adapted block of the same shape (the reference shares them per layer width, across layers, towers and q/k/v); d
(rank) starts at ``d_init`` = 0 and b (out) at ``b_init`` = 0.1 (the reference's values; the VeRA paper's sec. 3.3
has them the other way round, b = 0 and d = d_init: set ``d_init: 0.1, b_init: 0``), so W' = W0 at the start. s is
``scale``. The attention in-projection gets separate q, k, v vectors (``adapters``: slices). The state holds d and b
per block (``"<weight>[.<q|k|v>].vera_d"`` / ``.vera_b``) and the shared matrices once per block shape
(``"vera_shared.<out>x<in>.vera_A"`` / ``.vera_B``), seeded by (seed, shape) — the reference draws them from the
global generator in layer order. Options and the adapter's life across tasks: ``adapters``.
"""

from __future__ import annotations

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
from fomoflux.methods.lora import check_scale

__all__ = ["VERA_OPTIONS", "VERA_OPTION_HELP", "VeRA", "VeRAWeight"]

SHARED_PREFIX = "vera_shared"

VERA_OPTIONS: dict[str, Any] = {**ADAPTER_OPTIONS, "scale": 1.0, "d_init": 0.0, "b_init": 0.1}
VERA_OPTION_HELP: dict[str, str] = {
    **ADAPTER_OPTION_HELP,
    "rank": "rank r of the frozen random matrices A (r × in) and B (out × r), shared by blocks of one shape "
    "(the reference's default: 5)",
    "scale": "s in ΔW = s·diag(b)·B·diag(d)·A (the reference's default: 1), a finite number > 0",
    "d_init": "initial value of the trained vector d (r entries); the reference's 0 (the VeRA paper's: 0.1)",
    "b_init": "initial value of the trained vector b (out entries); the reference's 0.1 (the VeRA paper's: 0); "
    "exactly one of d_init, b_init must be 0",
}


class VeRAWeight(torch.nn.Module):
    """W ↦ W + scale · diag(vera_b) · vera_B · diag(vera_d) · vera_A."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], scale: float) -> None:
        super().__init__()
        attach_tensors(self, tensors)
        self.scale = scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = self.vera_b.unsqueeze(1) * (self.vera_B @ (self.vera_d.unsqueeze(1) * self.vera_A))
        return weight + self.scale * delta


@register_method("vera")
class VeRA(AdapterMethod):
    options: ClassVar[Mapping[str, Any]] = VERA_OPTIONS
    option_help: ClassVar[Mapping[str, str]] = VERA_OPTION_HELP
    weight_tensors = ("vera_d", "vera_b")
    frozen_tensors = frozenset({"vera_A", "vera_B"})

    def validate(self) -> None:
        super().validate()
        check_scale(self.name, self.scale)
        # ΔW = 0 at the start needs d or b at 0; with both at 0 both gradients are 0 and the adapter never moves.
        if (self.d_init == 0) == (self.b_init == 0):
            raise ConfigError(
                f"method {self.name!r}: exactly one of the options 'd_init' and 'b_init' must be 0 (the model starts "
                f"at θ0 and the other vector gets a gradient), got d_init={self.d_init!r}, b_init={self.b_init!r}"
            )

    def tensor_keys(self, prefix: str, shape: torch.Size) -> dict[str, str]:
        shared = f"{SHARED_PREFIX}.{shape[0]}x{shape[1]}"
        return {
            "vera_d": f"{prefix}.vera_d",
            "vera_b": f"{prefix}.vera_b",
            "vera_A": f"{shared}.vera_A",
            "vera_B": f"{shared}.vera_B",
        }

    def fresh_tensor(self, tensor: str, prefix: str, weight: torch.Tensor, seed: int) -> torch.Tensor:
        out_features, in_features = weight.shape
        if tensor == "vera_d":
            return torch.full((self.rank,), float(self.d_init), device=weight.device, dtype=weight.dtype)
        if tensor == "vera_b":
            return torch.full((out_features,), float(self.b_init), device=weight.device, dtype=weight.dtype)
        shape = (self.rank, in_features) if tensor == "vera_A" else (out_features, self.rank)
        if weight.device.type == "meta":
            return torch.empty(shape, device="meta", dtype=weight.dtype)
        # One stream per (shape, matrix): blocks of one shape get the same A and B whatever order they come in.
        generator = torch.Generator().manual_seed(adapter_seed(seed, "vera", out_features, in_features, tensor))
        return kaiming_uniform(shape, generator, self.rank)

    def parametrization(self, tensors: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        return VeRAWeight(tensors, self.scale)
