"""Release-tar conversion into shards vs the bare image work it must do, side by side in one process.

    .venv/bin/python benchmarks/bench_sharding.py [--n 1500] [--image-size 224] [--classes 20] [--repeats 2]

Builds (in a temporary folder) a FoMo-in-Flux release tar of ``--n`` JPEG images of 200-400 px in ``--classes``
classes, with its annotation file, then measures, in interleaved rounds:

- plain:    read each image file's bytes, decode, fit to ``--image-size`` square, encode PNG (nothing else);
- sharding: ``convert_release_dataset`` of the tar (one pass over it, shards, manifest; everything the pipeline does).

Prints both rates in images/s and their ratio sharding/plain (target >= 0.8).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import interleaved_rounds, median
from PIL import Image, ImageOps

from fomoflux.data.registry import DatasetSpec
from fomoflux.data.release import convert_release_dataset
from fomoflux.data.shards import encode_png

NAME = "BENCH"


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


def build_release(root: Path, n: int, classes: int, seed: int = 0) -> tuple[Path, list[Path], DatasetSpec]:
    """Write the images as files (the extracted release) and as ``<root>/BENCH.tar`` with its annotation.

    Returns the tar, the image files (for the plain loop) and the dataset spec.
    """
    rng = np.random.default_rng(seed)
    classnames = tuple(f"class_{c:02d}" for c in range(classes))
    extracted = root / "extracted"
    annotation: dict[str, dict] = {}
    files: list[Path] = []
    for i in range(n):
        cls = classnames[i % classes]
        key = f"{NAME}/{NAME}/{cls}/{cls}_{i:05d}.jpg"
        width, height = (int(v) for v in rng.integers(200, 401, size=2))
        file = extracted / key
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(photo_like_jpeg(rng, width, height))
        files.append(file)
        annotation[key] = {"classname": cls, "target": i % classes, "default_caption": None,
                           "primer_caption": f"A photo of a {cls}.", "synthetic_caption": None,
                           "synthetic_merged_caption": f"A photo of a {cls}, picture number {i}."}
    (extracted / f"{NAME}_train.json").write_text(json.dumps(annotation))
    archive = root / f"{NAME}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(extracted / NAME, arcname=NAME)
        tar.add(extracted / f"{NAME}_train.json", arcname=f"{NAME}_train.json")
    spec = DatasetSpec(NAME, "classification", "adaptation", classnames, splits=("train",),
                       source={"local": {"path": str(archive)}})
    return archive, files, spec


def plain_rate(files: list[Path], size: int) -> float:
    """Images/s of the bare work: read, decode, convert, fit, encode PNG."""
    start = time.perf_counter()
    for file in files:
        with Image.open(io.BytesIO(file.read_bytes())) as image:
            rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = ImageOps.fit(rgb, (size, size), Image.Resampling.BICUBIC)
        encode_png(rgb)
    return len(files) / (time.perf_counter() - start)


def sharding_rate(archive: Path, spec: DatasetSpec, work: Path, size: int, n: int) -> float:
    """Images/s of converting the whole tar into shards + manifest (output removed afterwards)."""
    out_parent = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    # The writer's progress bar goes to stderr; silenced so that it does not interleave with the results.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        convert_release_dataset(archive, spec, out_parent / NAME, image_size=size, shard_size=500,
                                annotations=None, on_bad_sample="error")
    rate = n / (time.perf_counter() - start)
    shutil.rmtree(out_parent)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_sharding.") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        archive, files, spec = build_release(root, args.n, args.classes)
        print(f"release: {args.n} JPEGs 200-400 px, {args.classes} classes, tar {archive.stat().st_size / 2**20:.1f} "
              f"MiB, built in {time.perf_counter() - started:.1f}s")
        # Warm-up on a small release of its own (imports, first shard and manifest writes, allocator growth):
        # a full-size warm-up round would double the run time without changing the medians.
        (root / "warmup").mkdir()
        small_archive, small_files, small_spec = build_release(root / "warmup", 40, args.classes, seed=1)
        interleaved_rounds({
            "plain": lambda: plain_rate(small_files, args.image_size),
            "sharding": lambda: sharding_rate(small_archive, small_spec, root, args.image_size, 40),
        }, rounds=1, warmup=0)
        runs = {
            "plain": lambda: plain_rate(files, args.image_size),
            "sharding": lambda: sharding_rate(archive, spec, root, args.image_size, args.n),
        }
        rates = interleaved_rounds(runs, rounds=args.repeats, warmup=0)
    plain, sharding = median(rates["plain"]), median(rates["sharding"])
    print(f"image_size={args.image_size} repeats={args.repeats} (medians of interleaved rounds, in {args.n} images: "
          f"plain {', '.join(f'{r:.0f}' for r in rates['plain'])}; sharding "
          f"{', '.join(f'{r:.0f}' for r in rates['sharding'])} img/s)")
    print(f"plain decode+fit+png: {plain:,.0f} img/s   sharding: {sharding:,.0f} img/s   "
          f"ratio: {sharding / plain:.3f} (target >= 0.8)")


if __name__ == "__main__":
    main()
