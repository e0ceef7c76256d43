"""DoRA (Liu et al., 2024): weight-decomposed low-rank adaptation, a trained magnitude times a LoRA-updated direction.

    V = W0 + s·B@A,    W' = m ⊙ V / ‖V‖     (‖V‖: the L2 norm of each output row of V; m: one scale per row)

As in the reference release (``continual_lib/dora.py`` at 3e123d9): A, B are LoRA's (``kaiming_uniform_(a=√rank)``,
B = 0), m is initialised to ‖W0‖ per row, so W' = W0 at the start (up to float rounding), and ‖V‖ is detached (the
DoRA paper's sec. 4.3: treated as a constant in the backward pass, so gradients reach A and B through V alone). A, B
and m train. The attention in-projection gets separate q, k, v adapters (with m per row, the reference's one
magnitude vector over the fused 3·width rows is the same as one per block). Options and the adapter's life across
tasks: ``adapters``; ``rank`` and ``scale`` as for LoRA.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from fomoflux.methods.adapters import AdapterMethod, attach_tensors
from fomoflux.methods.base import register_method
from fomoflux.methods.lora import LORA_OPTION_HELP, LORA_OPTIONS, check_scale, low_rank_factors

__all__ = ["DoRA", "DoRAWeight"]


class DoRAWeight(torch.nn.Module):
    """W ↦ magnitude ⊙ V / sg(‖V‖_row) with V = W + scale · lora_B @ lora_A (sg: no gradient through the norm)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], scale: float) -> None:
        super().__init__()
        attach_tensors(self, tensors)
        self.scale = scale

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        direction = weight + self.scale * (self.lora_B @ self.lora_A)
        row_norm = torch.linalg.vector_norm(direction, dim=1, keepdim=True).detach()
        return self.magnitude.unsqueeze(1) * (direction / row_norm)


@register_method("dora")
class DoRA(AdapterMethod):
    options: ClassVar[Mapping[str, Any]] = LORA_OPTIONS
    option_help: ClassVar[Mapping[str, str]] = LORA_OPTION_HELP
    weight_tensors = ("lora_A", "lora_B", "magnitude")

    def validate(self) -> None:
        super().validate()
        check_scale(self.name, self.scale)

    def fresh_tensor(self, tensor: str, prefix: str, weight: torch.Tensor, seed: int) -> torch.Tensor:
        if tensor == "magnitude":
            return torch.linalg.vector_norm(weight.detach(), dim=1)
        return low_rank_factors(tensor, prefix, weight, self.rank, seed)

    def parametrization(self, tensors: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        return DoRAWeight(tensors, self.scale)
