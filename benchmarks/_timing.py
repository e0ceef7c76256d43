"""Shared helpers of the benchmark scripts: set-up, toy inputs, warm-up + interleaved rounds, medians, tables.

Every benchmark here compares things measured in one process. Running them in rounds (A B C A B C ...) after a
warm-up of each makes slow phases of a shared machine hit all of them alike, and the median of the rounds ignores
the odd outlier; ratios of those medians are what the scripts report.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image

from fomoflux.data.sampleset import SampleSet
from fomoflux.model import register_architecture

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")

__all__ = [
    "REPO",
    "setup_architecture",
    "image_size",
    "random_samples",
    "synchronize",
    "interleaved_rounds",
    "median",
    "markdown_table",
    "photo_like_jpeg",
]


def setup_architecture(arch: str) -> None:
    """Register the project's model config ``config/models/<arch>.json`` when there is one (else open_clip's own)."""
    config = REPO / "config" / "models" / f"{arch}.json"
    if config.exists():
        register_architecture(config)


def image_size(model: torch.nn.Module) -> int:
    """The side of the square images the model's vision tower takes."""
    size = model.visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else size


def random_samples(n: int, size: int, name: str, seed: int) -> SampleSet:
    """n random uint8 images with two captions each (their content does not matter to a timing)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    captions = [(f"a {name} sample number {i % 97}", f"{name} {i % 13}") for i in range(n)]
    return SampleSet(images, captions, torch.arange(n) % 10, [f"{name}/train/{i}" for i in range(n)])


def synchronize(device: str | torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it measures the work (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_rounds(runs: Mapping[str, Callable[[], T]], rounds: int, warmup: int = 1) -> dict[str, list[T]]:
    """Call every run ``warmup`` times (results dropped), then ``rounds`` times in turn A B C A B C ...

    Returns each run's results in round order. The warm-up calls are interleaved as well, so one-off costs
    (allocator growth, lazy initialisation, caches) are paid before any measured round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for _ in range(warmup):
        for run in runs.values():
            run()
    results: dict[str, list[T]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            results[name].append(run())
    return results


def median(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        raise ValueError("median of no values")
    return statistics.median(values)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table: one header row, a separator, one line per row (cells as given, already formatted)."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def photo_like_jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    """JPEG bytes of a smooth colour gradient with mild noise: compresses and decodes like a photo, unlike noise."""
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    base = rng.uniform(0, 255, size=(1, 1, 3)).astype(np.float32)
    slope = rng.uniform(-120, 120, size=(2, 1, 1, 3)).astype(np.float32)
    noise = rng.normal(0, 12, size=(height, width, 3)).astype(np.float32)
    pixels = np.clip(base + slope[0] * x + slope[1] * y + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
