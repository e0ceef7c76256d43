"""Locked-tower fine-tuning (LiT-style): one tower is frozen, the other is fully fine-tuned.

- ``locked_text``: the text tower is locked; the image tower trains (every ``visual.*`` parameter).
- ``locked_image``: the image tower is locked; the text tower trains (every parameter outside ``visual.`` — token
  and positional embeddings, transformer, final LayerNorm, text projection — except the temperature).

The temperature ``logit_scale`` belongs to neither tower and stays frozen in both. No state crosses tasks beyond
the weights themselves.
"""

from __future__ import annotations

import torch

from fomoflux.methods.base import Method, register_method

__all__ = ["IMAGE_PREFIX", "LockedImage", "LockedText"]

IMAGE_PREFIX = "visual."
TEMPERATURE = "logit_scale"


@register_method("locked_text")
class LockedText(Method):
    """θ_image trains, θ_text and the temperature are frozen."""

    summary = (
        "Locked text tower (LiT-style): the image tower is fully fine-tuned; the text tower and the temperature "
        "stay frozen."
    )

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for n, p in model.named_parameters() if n.startswith(IMAGE_PREFIX)]


@register_method("locked_image")
class LockedImage(Method):
    """θ_text trains, θ_image and the temperature are frozen."""

    summary = "Locked image tower: the text tower is fully fine-tuned; the image tower and the temperature stay frozen."

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for n, p in model.named_parameters() if not n.startswith(IMAGE_PREFIX) and n != TEMPERATURE]
