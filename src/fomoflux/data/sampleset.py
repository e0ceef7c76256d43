"""The in-memory form of image-caption samples that training and evaluation consume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class SampleSet:
    """Decoded samples of one or more datasets.

    images:    uint8 tensor [N, 3, H, W] at the model's input resolution (no normalisation applied).
    captions:  per sample, one or more captions; the first is the evaluation caption, training picks one at random.
    class_ids: int64 tensor [N]; the index into the dataset's class list, -1 for samples without a class.
    keys:      per sample, its provenance ``"<dataset>/<split>/<index>"``.
    """

    images: torch.Tensor
    captions: list[tuple[str, ...]]
    class_ids: torch.Tensor
    keys: list[str]

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"SampleSet.images must be uint8 [N,3,H,W], got {self.images.dtype} {tuple(self.images.shape)}")
        if not (len(self.captions) == n == self.class_ids.shape[0] == len(self.keys)):
            raise ValueError(
                f"SampleSet fields disagree in length: images {n}, captions {len(self.captions)}, "
                f"class_ids {self.class_ids.shape[0]}, keys {len(self.keys)}"
            )
        if any(len(c) == 0 for c in self.captions):
            raise ValueError("SampleSet: every sample needs at least one caption")

    def __len__(self) -> int:
        return self.images.shape[0]

    def select(self, indices: Sequence[int] | torch.Tensor) -> "SampleSet":
        idx = torch.as_tensor(indices, dtype=torch.long)
        picked = idx.tolist()
        return SampleSet(
            images=self.images[idx],
            captions=[self.captions[i] for i in picked],
            class_ids=self.class_ids[idx],
            keys=[self.keys[i] for i in picked],
        )

    @staticmethod
    def concat(parts: Sequence["SampleSet"]) -> "SampleSet":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("SampleSet.concat needs at least one non-empty part")
        return SampleSet(
            images=torch.cat([p.images for p in parts]),
            captions=[c for p in parts for c in p.captions],
            class_ids=torch.cat([p.class_ids for p in parts]),
            keys=[k for p in parts for k in p.keys],
        )
