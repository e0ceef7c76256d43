"""Image preprocessing shared by training and evaluation.

Samples are stored at the model's input resolution, so open_clip's resize + centre-crop are identities and
preprocessing reduces to scaling to [0, 1] and normalising with the model's mean / std, done batched on tensors.
"""

from __future__ import annotations

import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def image_stats(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) an open_clip model was configured with (``model.visual.preprocess_cfg``)."""
    cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD))


class Normalizer:
    """uint8 [N,3,H,W] -> float32 normalised, on ``device``."""

    def __init__(self, mean, std, device: torch.device | str = "cpu") -> None:
        std_tensor = torch.tensor(std, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * std_tensor)).view(1, 3, 1, 1).to(device)
        self.shift = (torch.tensor(mean, dtype=torch.float32) / std_tensor).view(1, 3, 1, 1).to(device)
        self.device = torch.device(device)

    @classmethod
    def for_model(cls, model, device: torch.device | str = "cpu") -> Normalizer:
        mean, std = image_stats(model)
        return cls(mean, std, device)

    def __call__(self, images_uint8: torch.Tensor) -> torch.Tensor:
        if images_uint8.dtype != torch.uint8:
            raise TypeError(f"Normalizer expects uint8 images, got {images_uint8.dtype}")
        # .float() of a uint8 tensor is a fresh tensor, so the in-place ops below touch no caller data; they halve
        # the cost, which matters for tiny models whose forward pass is cheaper than this conversion.
        return images_uint8.to(self.device, non_blocking=True).float().mul_(self.scale).sub_(self.shift)
