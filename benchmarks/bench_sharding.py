"""Release-tar sharding vs a plain copy of the same image files, side by side in one process; storage per image.

    .venv/bin/python benchmarks/bench_sharding.py [--n 2000] [--classes 20] [--workers 4] [--shard-size 200]
        [--repeats 5]

Builds (in a temporary folder) a FoMo-in-Flux release of ``--n`` photo-like JPEGs of 224-400 px in ``--classes``
classes, as extracted files and as a tar with its annotation file, then measures, in interleaved rounds after a
warm-up of each (each run starting after an ``os.sync``, so that none pays for the previous one's writeback):

- plain:    read each extracted image file's bytes and write them into a new file (one process, no fsync);
- sharding: ``convert_release_dataset`` of the tar with ``--workers`` processes (default: the rule's,
  ``benchmark.shard_threads``): one pass over the tar, every JPEG checked complete and stored as it is, shards and
  manifest written and fsync'ed: everything the pipeline's ``shard_dataset`` does.

Shards hold ``--shard-size`` images (the pipeline's default is 2000, over datasets of 10^4-10^6 images; 2000 images
in shards of 200 give every worker several). Prints both rates in images/s and their ratio sharding/plain (goal
>= 0.8); the cost per image of the JPEG completeness check against a reduced-scale (PIL ``draft``) and a full
decode; and the bytes per image of the new shards against the old format (every image centre-cropped to a 224 px
square and stored as PNG; estimated on the first 300 images).
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
import yaml
from _timing import REPO, interleaved_rounds, median, photo_like_jpeg
from PIL import Image, ImageOps

from fomoflux.data.registry import DatasetSpec
from fomoflux.data.release import convert_release_dataset
from fomoflux.data.shards import jpeg_frame_size, read_manifest

NAME = "BENCH"
OLD_FORMAT_SIZE = 224  # the old shards' square side at the paper's resolution
OLD_FORMAT_SAMPLE = 300  # images the old format's size is estimated on (a PNG encode each)


def rule_workers() -> int:
    """The shard_dataset rule's default number of processes (``benchmark.shard_threads`` in the config schema)."""
    schema = yaml.safe_load((REPO / "config" / "schema" / "config.schema.yaml").read_text())
    return int(schema["properties"]["benchmark"]["properties"]["shard_threads"]["default"])


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
        width, height = (int(v) for v in rng.integers(224, 401, size=2))
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


def plain_rate(files: list[Path], work: Path) -> float:
    """Images/s of reading each file's bytes and writing them into a new file (output removed afterwards)."""
    out = Path(tempfile.mkdtemp(dir=work))
    os.sync()  # every measured run starts with nothing left to write back from the one before
    start = time.perf_counter()
    for i, file in enumerate(files):
        (out / f"{i:07d}.jpg").write_bytes(file.read_bytes())
    rate = len(files) / (time.perf_counter() - start)
    shutil.rmtree(out)
    return rate


def sharding_rate(archive: Path, spec: DatasetSpec, work: Path, n: int, workers: int, shard_size: int,
                  keep: Path | None = None) -> float:
    """Images/s of converting the whole tar into shards + manifest (output removed afterwards, or moved to
    ``keep``)."""
    out_parent = Path(tempfile.mkdtemp(dir=work))
    os.sync()
    start = time.perf_counter()
    # The writer's progress bar goes to stderr; silenced so that it does not interleave with the results.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        convert_release_dataset(archive, spec, out_parent / NAME, shard_size=shard_size, annotations=None,
                                on_bad_sample="error", workers=workers)
    rate = n / (time.perf_counter() - start)
    if keep is not None:
        os.replace(out_parent / NAME, keep)
    shutil.rmtree(out_parent)
    return rate


def check_costs(payloads: list[bytes]) -> dict[str, float]:
    """Microseconds per image of the completeness check the writer runs, and of the decodes it replaces."""
    def structural(data: bytes) -> None:
        _ = Image.open(io.BytesIO(data)).size  # the header parse the writer does anyway
        jpeg_frame_size(data)

    def draft(data: bytes) -> None:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (1, 1))  # libjpeg's 1/8 scale: all coefficients still Huffman-decoded
        image.load()

    def full(data: bytes) -> None:
        Image.open(io.BytesIO(data)).load()

    checks = {"structural": structural, "draft 1/8": draft, "full decode": full}

    def timed(check) -> float:
        start = time.perf_counter()
        for data in payloads:
            check(data)
        return (time.perf_counter() - start) / len(payloads) * 1e6

    rounds = interleaved_rounds({name: (lambda c=check: timed(c)) for name, check in checks.items()}, rounds=3)
    return {name: median(values) for name, values in rounds.items()}


def storage(shards: Path, files: list[Path]) -> tuple[float, float]:
    """Bytes per image of the written shards, and of the old format (224 px PNG squares, same tar overhead)."""
    manifest = read_manifest(shards)
    shard_bytes = sum(p.stat().st_size for p in shards.glob("*.tar"))
    overhead = (shard_bytes - manifest["image_length"].sum()) / manifest.height  # headers, padding, txt, json
    pngs = []
    for file in files[:OLD_FORMAT_SAMPLE]:
        with Image.open(file) as image:
            square = ImageOps.fit(image.convert("RGB"), (OLD_FORMAT_SIZE, OLD_FORMAT_SIZE), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        square.save(buf, format="PNG")
        pngs.append(len(buf.getvalue()))
    return shard_bytes / manifest.height, float(np.mean(pngs)) + overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=rule_workers())
    parser.add_argument("--shard-size", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_sharding.") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        archive, files, spec = build_release(root, args.n, args.classes)
        print(f"release: {args.n} JPEGs 224-400 px (mean {archive.stat().st_size / args.n / 1024:.1f} KiB), "
              f"{args.classes} classes, tar {archive.stat().st_size / 2**20:.1f} MiB, built in "
              f"{time.perf_counter() - started:.1f}s; {os.cpu_count()} CPUs")
        runs = {
            "plain": lambda: plain_rate(files, root),
            "sharding": lambda: sharding_rate(archive, spec, root, args.n, args.workers, args.shard_size),
        }
        rates = interleaved_rounds(runs, rounds=args.repeats, warmup=1)
        kept = root / "kept"
        sharding_rate(archive, spec, root, args.n, args.workers, args.shard_size, keep=kept)
        costs = check_costs([file.read_bytes() for file in files[:500]])
        new_bytes, old_bytes = storage(kept, files)
    plain, sharding = median(rates["plain"]), median(rates["sharding"])
    print(f"workers={args.workers} shard_size={args.shard_size} repeats={args.repeats} (medians of interleaved "
          f"rounds; plain {', '.join(f'{r:.0f}' for r in rates['plain'])}; sharding "
          f"{', '.join(f'{r:.0f}' for r in rates['sharding'])} img/s)")
    print(f"plain read+write: {plain:,.0f} img/s   sharding: {sharding:,.0f} img/s   "
          f"ratio: {sharding / plain:.3f} (goal >= 0.8)")
    print("JPEG check per image: " + ", ".join(f"{name} {us:.0f} us" for name, us in costs.items()))
    print(f"storage: {new_bytes / 1024:.1f} KiB/image (original JPEGs + tar members) vs {old_bytes / 1024:.1f} "
          f"KiB/image as {OLD_FORMAT_SIZE} px PNG squares (old format, on {OLD_FORMAT_SAMPLE} images): "
          f"{old_bytes / new_bytes:.2f}x")


if __name__ == "__main__":
    main()
