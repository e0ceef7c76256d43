"""VeRA (Kopiczko et al., 2024): vector-based random-matrix adaptation — only two scaling vectors train per weight.

    ΔW = diag(b) · B · diag(d) · A,    W' = W0 + ΔW

A (rank × in) and B (out × rank) are frozen random matrices, Kaiming-uniform (U(±1/√fan_in)) from a generator
seeded by (seed, out, in), and shared by every targeted weight of the same shape. d (rank) starts at ``d_init`` and
b (out) at 0, so W' = W0 at the start. The state holds d and b per weight (``"<weight>.vera_d"``,
``"<weight>.vera_b"``) and the shared matrices once per shape (``"vera_shared.<out>x<in>.vera_A"`` / ``.vera_B``).
Options and the adapter's life across tasks: ``adapters``; ``rank`` defaults to 64.
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

__all__ = ["VeRA", "VeRAWeight"]

SHARED_PREFIX = "vera_shared"


class VeRAWeight(torch.nn.Module):
    """W ↦ W + diag(vera_b) · vera_B · diag(vera_d) · vera_A."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        attach_tensors(self, tensors)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.vera_b.unsqueeze(1) * (self.vera_B @ (self.vera_d.unsqueeze(1) * self.vera_A))


@register_method("vera")
class VeRA(AdapterMethod):
    options: ClassVar[Mapping[str, Any]] = {**ADAPTER_OPTIONS, "rank": 64, "d_init": 0.1}
    option_help: ClassVar[Mapping[str, str]] = {
        **ADAPTER_OPTION_HELP,
        "rank": "rank r of the frozen random matrices A (r × in) and B (out × r), shared by weights of one shape",
        "d_init": "initial value of the trained scaling vector d (b starts at 0), a finite non-zero number",
    }
    weight_tensors = ("vera_d", "vera_b")
    frozen_tensors = frozenset({"vera_A", "vera_B"})

    def validate(self) -> None:
        super().validate()
        # d = 0 together with b = 0 would give both vectors a zero gradient: the adapter could never move.
        if not (math.isfinite(self.d_init) and self.d_init != 0):
            raise ConfigError(
                f"method {self.name!r}: option 'd_init' must be a finite non-zero number, got {self.d_init!r}"
            )

    def tensor_keys(self, name: str, shape: torch.Size) -> dict[str, str]:
        shared = f"{SHARED_PREFIX}.{shape[0]}x{shape[1]}"
        return {
            "vera_d": f"{name}.vera_d",
            "vera_b": f"{name}.vera_b",
            "vera_A": f"{shared}.vera_A",
            "vera_B": f"{shared}.vera_B",
        }

    def fresh_tensor(self, tensor: str, name: str, weight: torch.Tensor, seed: int) -> torch.Tensor:
        out_features, in_features = weight.shape
        if tensor == "vera_d":
            return torch.full((self.rank,), self.d_init, device=weight.device, dtype=weight.dtype)
        if tensor == "vera_b":
            return torch.zeros(out_features, device=weight.device, dtype=weight.dtype)
        shape = (self.rank, in_features) if tensor == "vera_A" else (out_features, self.rank)
        if weight.device.type == "meta":
            return torch.empty(shape, device="meta", dtype=weight.dtype)
        # One stream per (shape, matrix): weights of one shape get the same A and B whatever order they come in.
        generator = torch.Generator().manual_seed(adapter_seed(seed, "vera", out_features, in_features, tensor))
        return kaiming_uniform(shape, generator)

    def parametrization(self, tensors: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        return VeRAWeight(tensors)
