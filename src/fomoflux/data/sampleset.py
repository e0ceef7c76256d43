"""The in-memory form of image-caption samples that training and evaluation consume.

Training, evaluation and the methods that pass over data read samples through a small interface that both this
class and the on-disk :class:`fomoflux.data.loading.DiskSamples` serve: ``len``, ``read_image(i)`` (an RGB PIL
image), ``read_captions(i)``, ``read_first_caption(i)``, ``eval_images(indices, size)`` (uint8 [n, 3, size, size]),
``first_captions(indices)``, ``key(i)``, ``class_ids`` and ``select(indices)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
            raise ValueError(
                f"SampleSet.images must be uint8 [N,3,H,W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if not (len(self.captions) == n == self.class_ids.shape[0] == len(self.keys)):
            raise ValueError(
                f"SampleSet fields disagree in length: images {n}, captions {len(self.captions)}, "
                f"class_ids {self.class_ids.shape[0]}, keys {len(self.keys)}"
            )
        if any(len(c) == 0 for c in self.captions):
            raise ValueError("SampleSet: every sample needs at least one caption")

    def __len__(self) -> int:
        return self.images.shape[0]

    def key(self, i: int) -> str:
        return self.keys[int(i)]

    def read_image(self, i: int, min_side: int | None = None):
        """Sample ``i`` as an RGB PIL image (``min_side`` is for the on-disk reader's reduced JPEG decode)."""
        from PIL import Image

        return Image.fromarray(self.images[int(i)].permute(1, 2, 0).numpy())

    def read_pixels(self, i: int, min_side: int | None = None) -> torch.Tensor:
        """Sample ``i`` as uint8 [3, H, W] (a view of the stored images)."""
        return self.images[int(i)]

    def read_captions(self, i: int) -> tuple[str, ...]:
        return self.captions[int(i)]

    def read_first_caption(self, i: int) -> str:
        return self.captions[int(i)][0]

    def eval_images(self, indices: Sequence[int], size: int) -> torch.Tensor:
        """uint8 [n, 3, size, size] of the samples at ``indices`` (the evaluation transform; a slice when the images
        already have that size)."""
        idx = torch.as_tensor(list(indices) if not isinstance(indices, torch.Tensor) else indices, dtype=torch.long)
        if tuple(self.images.shape[-2:]) == (size, size):
            return self.images[idx]
        from fomoflux.data.loading import eval_transform, to_chw

        return to_chw([eval_transform(self.read_image(i), size) for i in idx.tolist()])

    def first_captions(self, indices: Sequence[int]) -> list[str]:
        return [self.captions[int(i)][0] for i in indices]

    def select(self, indices: Sequence[int] | torch.Tensor) -> SampleSet:
        idx = torch.as_tensor(indices, dtype=torch.long)
        picked = idx.tolist()
        return SampleSet(
            images=self.images[idx],
            captions=[self.captions[i] for i in picked],
            class_ids=self.class_ids[idx],
            keys=[self.keys[i] for i in picked],
        )

    @staticmethod
    def concat(parts: Sequence[SampleSet]) -> SampleSet:
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("SampleSet.concat needs at least one non-empty part")
        return SampleSet(
            images=torch.cat([p.images for p in parts]),
            captions=[c for p in parts for c in p.captions],
            class_ids=torch.cat([p.class_ids for p in parts]),
            keys=[k for p in parts for k in p.keys],
        )
