"""The batches of a task update: drawn by step, read and decoded in DataLoader workers.

Step n's batch is a pure function of (seed, task, n) (BENCHMARK.md, "One task update"):

1. a fresh ``torch.Generator`` seeded by ``step_seed(seed, task, n)`` draws, source by source in the order of
   ``SOURCES``, ``count`` sample indices uniformly with replacement and one uniform number per sample that picks one
   of its captions (``min(floor(u * n_captions), n_captions - 1)``);
2. a second generator, seeded by the same step under the salt ``<salt>:augment``, draws the training transform's
   random numbers for every position of the batch (so turning augmentation on or off never changes which samples
   are drawn);
3. the samples are read (by byte offset, :class:`fomoflux.data.loading.DiskSamples`, or from memory), decoded,
   cropped and resized to the model's resolution, and their captions tokenised.

Only step 3 touches data, and only for the samples of the batch: a job's memory does not depend on how many samples
a source holds (a million-sample buffer is a few numpy arrays of offsets). :class:`TaskBatches` is a map-style
``Dataset`` over step numbers; :func:`batch_loader` runs it in DataLoader workers (alive for the task) with pinned
memory and prefetching, so decoding overlaps the GPU's steps. Which worker builds which step has no effect on the
batch, so ``workers = 0`` and ``workers = 8`` give identical training. In a data-parallel update each rank builds
only its slice of the batch (``rank``, ``world_size``): the draws are made for the whole batch, the reads for the
slice.

Training transform (``Augmentation``): the paper's RandomResizedCrop (scale 0.9-1.0, aspect ratio 3/4-4/3,
bicubic; torchvision's algorithm: ten attempts, then a centre crop of the clamped ratio), with its random numbers
pre-drawn per position as in 2., so it is deterministic too. Images come as tensors (``read_pixels``: JPEGs
decoded by torchvision), and the resize is torch's antialiased bicubic kernel on uint8 (torchvision's tensor path)
rather than PIL's, which costs 2.5x more per image. ``Augmentation.none()`` uses the evaluation transform (shorter
side to the size, centre crop).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fomoflux.errors import ConfigError
from fomoflux.seeding import step_seed
from fomoflux.train.mixture import SOURCES, source_batch_sizes

__all__ = ["Augmentation", "TaskBatches", "batch_loader", "crop_box", "step_seed"]

CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries this many boxes before its centre-crop fallback


@dataclass(frozen=True)
class Augmentation:
    """The training transform: ``kind`` "random_resized_crop" (``scale``, ``ratio``: ranges of the crop's area
    fraction and aspect ratio) or "none" (the evaluation transform)."""

    kind: str = "random_resized_crop"
    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        if self.kind not in ("random_resized_crop", "none"):
            raise ConfigError(f"training.augmentation.kind: {self.kind!r} is not one of random_resized_crop, none")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"training.augmentation.scale: need 0 < low <= high <= 1, got {list(self.scale)}")
        lo, hi = self.ratio
        if not 0 < lo <= hi:
            raise ConfigError(f"training.augmentation.ratio: need 0 < low <= high, got {list(self.ratio)}")

    @classmethod
    def none(cls) -> Augmentation:
        return cls(kind="none")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Augmentation:
        """From ``training.augmentation`` (None: no augmentation)."""
        if cfg is None:
            return cls.none()
        return cls(kind=cfg.get("kind", "random_resized_crop"), scale=tuple(cfg.get("scale", (0.9, 1.0))),
                   ratio=tuple(cfg.get("ratio", (3 / 4, 4 / 3))))

    @property
    def active(self) -> bool:
        return self.kind != "none"


def crop_box(width: int, height: int, uniforms: np.ndarray, aug: Augmentation) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` on an image of ``width`` x ``height``, with its random draws
    taken from ``uniforms`` ([CROP_ATTEMPTS, 4] numbers in [0, 1): area fraction, log-ratio, top, left of each
    attempt) instead of the global RNG. Returns (left, top, right, bottom)."""
    area = width * height
    log_lo, log_hi = math.log(aug.ratio[0]), math.log(aug.ratio[1])
    for u_scale, u_ratio, u_top, u_left in uniforms:
        target = area * (aug.scale[0] + u_scale * (aug.scale[1] - aug.scale[0]))
        aspect = math.exp(log_lo + u_ratio * (log_hi - log_lo))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(u_top * (height - h + 1))
            left = int(u_left * (width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < aug.ratio[0]:
        w, h = width, int(round(width / aug.ratio[0]))
    elif in_ratio > aug.ratio[1]:
        h, w = height, int(round(height * aug.ratio[1]))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


class TaskBatches(torch.utils.data.Dataset):
    """Step -> (uint8 images [b, 3, S, S], token ids [b, L]) of one task update (module docstring).

    ``sources``: ``{"pretrain"|"update"|"buffer": DiskSamples | SampleSet | None}``. ``image_size`` S: the model's
    resolution (None: the stored size of the first source's first image). ``b`` is ``batch_size / world_size``.
    """

    def __init__(
        self,
        sources: Mapping[str, Any],
        tokenizer,
        batch_size: int,
        mixture: Mapping[str, float],
        task_index: int,
        seed: int,
        salt: str = "task-update",
        *,
        image_size: int | None = None,
        augmentation: Augmentation | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        unknown = sorted(set(sources) - set(SOURCES))
        if unknown:
            raise ConfigError(f"task update: unknown source {unknown[0]!r}; sources are {', '.join(SOURCES)}")
        available = [name for name in SOURCES if sources.get(name) is not None and len(sources[name]) > 0]
        self.counts = source_batch_sizes(batch_size, mixture, task_index, available=available)
        self.sources = {name: sources[name] for name in SOURCES if self.counts[name] > 0}
        self.lengths = {name: len(source) for name, source in self.sources.items()}
        self.tokenizer = tokenizer
        self.batch_size, self.task_index, self.seed, self.salt = batch_size, task_index, seed, salt
        self.augmentation = augmentation or Augmentation.none()
        if batch_size % world_size:
            raise ConfigError(f"training.batch_size {batch_size} does not divide by training.gpus {world_size}")
        local = batch_size // world_size
        self.positions = range(rank * local, (rank + 1) * local)
        if image_size is None and self.sources:
            first = next(iter(self.sources.values()))
            image_size = min(first.read_image(0).size)
        self.image_size = image_size

    def __len__(self) -> int:  # steps are the sampler's business; any non-negative step is valid
        return 2**62

    def draw_indices(self, step: int) -> list[tuple[str, int, float]]:
        """Step ``step``'s (source, sample index, caption draw u) per batch position, in batch order."""
        gen = torch.Generator().manual_seed(step_seed(self.seed, self.task_index, step, self.salt))
        drawn: list[tuple[str, int, float]] = []
        for name in self.sources:
            n = self.counts[name]
            idx = torch.randint(self.lengths[name], (n,), generator=gen).tolist()
            u = torch.rand(n, generator=gen, dtype=torch.float64).tolist()
            drawn.extend(zip([name] * n, idx, u))
        return drawn

    def augmentation_uniforms(self, step: int) -> np.ndarray:
        """[batch_size, CROP_ATTEMPTS, 4] uniforms of the training transform at ``step`` (one row per position)."""
        gen = torch.Generator().manual_seed(step_seed(self.seed, self.task_index, step, f"{self.salt}:augment"))
        return torch.rand(self.batch_size, CROP_ATTEMPTS, 4, generator=gen, dtype=torch.float64).numpy()

    def _augment_into(self, out: torch.Tensor, source, indices: list[int], uniforms: np.ndarray) -> None:
        """Write uint8 [n, 3, S, S] into ``out``: each image cropped to its box and resized (bicubic, antialiased)
        by torch's uint8 kernel, about 2.5x faster than PIL's bicubic resize. The crop is handed to the kernel
        channels-last (HWC in memory), the layout its vectorised path takes, 1.3x faster than a strided view; the
        kernel returns NCHW, the batch's layout, so the result is written with a plain copy."""
        size = self.image_size
        for k, index in enumerate(indices):
            pixels = source.read_pixels(index, min_side=size)  # [3, H, W]
            left, top, right, bottom = crop_box(pixels.shape[2], pixels.shape[1], uniforms[k], self.augmentation)
            crop = pixels[None, :, top:bottom, left:right].contiguous(memory_format=torch.channels_last)
            if crop.shape[-2:] != (size, size):
                crop = torch.nn.functional.interpolate(crop, size=(size, size), mode="bicubic", antialias=True)
            out[k] = crop[0]

    def _batch_tensor(self) -> torch.Tensor:
        """The uint8 [b, 3, S, S] the step's images are written into. In a DataLoader worker it is allocated in
        shared memory, as torch's own collate does, so that sending it to the main process copies nothing (a
        plain tensor is copied into shared memory on the way: 77 MB a step at B = 512, 224 px)."""
        shape = (len(self.positions), 3, self.image_size, self.image_size)
        if torch.utils.data.get_worker_info() is None:
            return torch.empty(shape, dtype=torch.uint8)
        storage = torch.UntypedStorage._new_shared(math.prod(shape))
        return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        drawn = self.draw_indices(step)
        uniforms = self.augmentation_uniforms(step) if self.augmentation.active else None
        images, captions = self._batch_tensor(), []
        # Positions of one source are contiguous (sources are laid out in order): one read call per segment.
        start = self.positions.start
        while start < self.positions.stop:
            name = drawn[start][0]
            stop = start
            while stop < self.positions.stop and drawn[stop][0] == name:
                stop += 1
            source = self.sources[name]
            indices = [drawn[pos][1] for pos in range(start, stop)]
            segment = images[start - self.positions.start:stop - self.positions.start]
            if uniforms is None:
                segment.copy_(source.eval_images(indices, self.image_size))
            else:
                self._augment_into(segment, source, indices, uniforms[start:stop])
            for pos, index in zip(range(start, stop), indices):
                options = source.read_captions(index)
                captions.append(options[min(int(drawn[pos][2] * len(options)), len(options) - 1)])
            start = stop
        return images, self.tokenizer(captions).long()

    def draw(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``step``'s batch (this rank's slice), built in this process."""
        return self[step]


def batch_loader(batches: TaskBatches, steps: range, *, workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int = 4):
    """An iterator over the batches of ``steps``, in order: built in ``workers`` DataLoader processes that live
    for the whole pass (0: in this process), ``prefetch_factor`` batches ahead per worker, in pinned memory when
    ``pin_memory``."""
    if workers < 0:
        raise ConfigError(f"training.data_workers must be >= 0, got {workers}")
    if len(steps) == 0:
        return iter(())
    # One pass over the task's steps: the workers live for the whole task. (persistent_workers would only keep them
    # for a second pass, and ties their lifetime to a reference cycle between loader and iterator.)
    kwargs: dict[str, Any] = {"prefetch_factor": prefetch_factor} if workers else {}
    return iter(torch.utils.data.DataLoader(batches, batch_size=None, sampler=list(steps), num_workers=workers,
                                            pin_memory=pin_memory, **kwargs))
