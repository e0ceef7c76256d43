"""Toy data and model helpers shared by the unit tests (import as ``from toy import ...``)."""

from __future__ import annotations

import torch

from fomoflux.data.sampleset import SampleSet

# The smallest project architecture (config/models/fomo-micro-vit.json): real open_clip code, milliseconds per step.
MICRO = "fomo-micro-vit"
PAPER_MIXTURE = {"pretrain": 0.33, "update": 0.34, "buffer": 0.33}


def random_set(n: int, seed: int, tag: str, size: int = 32, captions_per_sample: int = 2) -> SampleSet:
    """n random uint8 images with distinct captions per sample (nothing to learn; for plumbing and determinism)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    captions = [tuple(f"{tag} sample {i} caption {j}" for j in range(captions_per_sample)) for i in range(n)]
    return SampleSet(images, captions, torch.arange(n), [f"{tag}/train/{i}" for i in range(n)])


def learnable_set(n: int, seed: int) -> SampleSet:
    """8 classes, each a corner of the RGB cube (+ noise) with its own captions: a contrastive model can match them."""
    g = torch.Generator().manual_seed(seed)
    names = ["black", "blue", "green", "cyan", "red", "magenta", "yellow", "white"]
    palette = torch.tensor([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)]) * 200 + 28
    labels = torch.arange(n) % 8
    noise = torch.randn(n, 3, 32, 32, generator=g) * 20
    images = (palette[labels].view(n, 3, 1, 1) + noise).clamp(0, 255).to(torch.uint8)
    captions = [(f"a photo of something {names[c]}", f"a {names[c]} picture") for c in labels.tolist()]
    return SampleSet(images, captions, labels, [f"toy/train/{i}" for i in range(n)])


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state_dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
