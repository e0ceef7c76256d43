"""Paper-scale data flow on synthetic JPEGs on disk: memory that does not grow with the buffer, a loader that keeps
up, and sharding at the speed of copying files — each measured side by side in one run.

    .venv/bin/python benchmarks/bench_scale.py [--images 110000] [--pool 20000] [--workdir /tmp/fomoflux-scale]
        [--steps 12] [--batch-size 512] [--workers 2]

1. Builds (once; later runs reuse ``--workdir``) ``--images`` photo-like JPEGs of 224-320 px in 1,000 classes and a
   ``--pool`` of caption-only JPEGs, as files, in a process pool.
2. Sharding: ``write_dataset`` of those files (the pipeline's writer, given the files' paths as the release-folder
   importer gives them: the ``--workers`` processes read them, JPEG bytes pass through, offsets recorded) vs a plain
   read + write of the same files into a new folder (one process); ratio.
3. Memory: one task update (``run_task_update``, the pipeline's streaming sources ``DiskSamples``, B = 512 at 224 px,
   the paper's RandomResizedCrop, ``--workers`` DataLoader workers, a 224 px micro ViT for compute) with a buffer of
   100,000 vs 10,000 samples, each in a fresh subprocess: peak PSS of the process tree (main + loader workers; PSS
   counts shared pages once) and peak RSS of the main process. Goal: within 10 % of each other, < 4 GB + model.
4. Loader: samples/s of ``batch_loader`` with ``--workers`` workers (read by offset, decode, crop, resize, tokenise,
   hand over) over ``--steps`` batches once every worker delivered its first, vs a plain single-process decode of
   as many of the same JPEGs (read the file, PIL decode); ratio (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _timing import photo_like_jpeg
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = 1000
ARCH_CONFIG = REPO / "config" / "models" / "fomo-micro-vit224.json"


def seeded_jpeg(seed: int) -> bytes:
    """A photo-like JPEG of 224-320 px a side, a pure function of ``seed``."""
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(224, 321, size=2))
    return photo_like_jpeg(rng, width, height)


def _write_files(args: tuple[Path, int, int]) -> None:
    folder, start, stop = args
    for i in range(start, stop):
        path = folder / f"{i // 10000:03d}" / f"{i:07d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(seeded_jpeg(i))


def image_files(folder: Path, n: int, processes: int) -> list[Path]:
    chunks = [(folder, a, min(a + 2000, n)) for a in range(0, n, 2000)]
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_write_files, chunks))
    return [folder / f"{i // 10000:03d}" / f"{i:07d}.jpg" for i in range(n)]


def _samples(files: list[Path], classed: bool):
    from fomoflux.data.shards import RawSample

    for i, path in enumerate(files):
        if classed:
            c = i % CLASSES
            yield RawSample(index=i, image=path, captions=(f"a photo of a class {c} thing.",
                                                                        f"class {c}, picture {i}."),
                            class_id=c, class_name=f"class {c}")
        else:
            yield RawSample(index=i, image=path, captions=(f"a pool photo number {i}.",))


def shard(files: list[Path], name: str, out: Path, workers: int, classed: bool) -> float:
    from fomoflux.data.shards import write_dataset

    os.sync()
    started = time.perf_counter()
    write_dataset({"train": _samples(files, classed)}, dataset=name, out_dir=out, shard_size=2000,
                  overwrite=True, workers=workers)
    return time.perf_counter() - started


def plain_copy(files: list[Path], out: Path) -> float:
    """Read each file and write it to a new one, then make the copies durable (the shards are fsync'ed too)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()
    started = time.perf_counter()
    for i, path in enumerate(files):
        (out / f"{i:07d}.jpg").write_bytes(path.read_bytes())
    os.sync()
    return time.perf_counter() - started


def _drop_cache_hint(paths: list[Path]) -> None:
    # Not root-only page-cache dropping: reading everything once makes both sides of a comparison read warm files.
    for path in paths:
        path.read_bytes()


# ---- one task update in a subprocess -------------------------------------------------------------------------


def task_update_child(spec: dict) -> None:
    """Run one task update with streaming sources; print its figures as one JSON line."""
    import threading

    import psutil
    import torch

    from fomoflux.data.catalog import select_rows
    from fomoflux.data.loading import READ_COLUMNS, DiskSamples
    from fomoflux.methods import get_method
    from fomoflux.model import create_model, register_architecture
    from fomoflux.pipeline.task_data import replay_sample
    from fomoflux.train import TaskUpdateConfig, run_task_update

    torch.set_num_threads(1)
    me = psutil.Process()
    peak = {"pss": 0, "rss": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                tree = [me, *me.children(recursive=True)]
                pss = sum(p.memory_full_info().pss for p in tree)
                peak["pss"] = max(peak["pss"], pss)
                peak["rss"] = max(peak["rss"], me.memory_info().rss)
            except psutil.Error:
                pass
            stop.wait(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    root = Path(spec["root"])
    columns = [*READ_COLUMNS, "class_name"]
    rows = select_rows([root / "scale" / "manifest.parquet"], split="train", dataset="scale", columns=columns)
    update = DiskSamples(root, rows[: spec["update"]])
    buffer = DiskSamples(root, rows[spec["update"]: spec["update"] + spec["buffer"]])
    pool_rows = select_rows([root / "pool" / "manifest.parquet"], split="train", dataset="pool", columns=columns)
    chosen = replay_sample(pool_rows.height, spec["steps"] * 169, 0, 2)
    pool = DiskSamples(root, pool_rows if chosen is None else pool_rows[chosen])
    register_architecture(ARCH_CONFIG)
    model, tokenizer = create_model("fomo-micro-vit224", seed=0)
    cfg = TaskUpdateConfig(steps=spec["steps"], batch_size=spec["batch_size"], lr=1e-5, task_index=2,
                           progress=False, data_workers=spec["workers"],
                           augmentation={"kind": "random_resized_crop", "scale": [0.9, 1.0], "ratio": [0.75, 4 / 3]})
    started = time.perf_counter()
    run_task_update(model, tokenizer, get_method("finetune"), {"update": update, "buffer": buffer, "pretrain": pool},
                    cfg)
    wall = time.perf_counter() - started
    stop.set()
    watcher.join()
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"peak_pss": peak["pss"], "peak_rss": peak["rss"], "wall_s": wall, "params": params,
                      "samples_per_s": spec["steps"] * spec["batch_size"] / wall}))


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- loader vs plain decode ------------------------------------------------------------------------------------


def loader_rate(root: Path, steps: int, batch_size: int, workers: int) -> float:
    from fomoflux.data.catalog import select_rows
    from fomoflux.data.loading import READ_COLUMNS, DiskSamples
    from fomoflux.model import create_model, register_architecture
    from fomoflux.train.data import Augmentation, TaskBatches, batch_loader

    register_architecture(ARCH_CONFIG)
    _, tokenizer = create_model("fomo-micro-vit224", device="meta")
    rows = select_rows([root / "scale" / "manifest.parquet"], split="train", dataset="scale",
                       columns=[*READ_COLUMNS, "class_name"])
    batches = TaskBatches({"update": DiskSamples(root, rows)}, tokenizer, batch_size, {"update": 1.0}, 1, 0,
                          image_size=224, augmentation=Augmentation())
    # Steady state, as over a task's 1,420 steps: the clock starts once every worker has delivered its first batch
    # (forking the workers and filling the pipeline is a one-off of a few seconds per task).
    loader = batch_loader(batches, range(steps + workers), workers=workers)
    for _ in range(max(1, workers)):
        next(loader)
    started = time.perf_counter()
    for _ in loader:
        pass
    return steps * batch_size / (time.perf_counter() - started)


def plain_decode_rate(files: list[Path], n: int) -> float:
    picked = np.random.default_rng(0).choice(len(files), size=n, replace=True)
    started = time.perf_counter()
    for i in picked:
        with Image.open(io.BytesIO(files[i].read_bytes())) as image:
            image.convert("RGB").load()
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=110_000)
    parser.add_argument("--pool", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fomoflux-scale"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--parts", default="sharding,memory,loader",
                        help="comma-separated parts to run: sharding, memory, loader")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task_update_child(json.loads(args.child))
        return

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files = image_files(work / "files" / "scale", args.images, os.cpu_count() or 2)
    pool_files = image_files(work / "files" / "pool", args.pool, os.cpu_count() or 2)
    print(f"synthetic JPEGs: {len(files):,} + {len(pool_files):,} pool, "
          f"{sum(f.stat().st_size for f in files) / len(files) / 1024:.1f} KiB each "
          f"(ready in {time.perf_counter() - t0:.0f} s)", flush=True)

    data = work / "data"
    parts = set(args.parts.split(","))
    if "sharding" in parts:
        sharding_comparison(files, work, args.workers)
    if not (data / "scale" / "manifest.parquet").exists():
        shard(files, "scale", data / "scale", args.workers, True)
    if not (data / "pool" / "manifest.parquet").exists():
        shard(pool_files, "pool", data / "pool", args.workers, False)
    if "memory" in parts:
        memory_comparison(data, args)
    if "loader" in parts:
        loader = loader_rate(data, args.steps, args.batch_size, args.workers)
        plain = plain_decode_rate(files, args.steps * args.batch_size)
        print(f"loader ({args.workers} workers, read+decode+crop+tokenise): {loader:,.0f} samples/s; plain decode "
              f"(1 process): {plain:,.0f} samples/s; ratio {loader / plain:.2f} (goal >= 0.8)", flush=True)


def sharding_comparison(files: list[Path], work: Path, workers: int) -> None:
    # Sharding vs copying, on a 20k slice in three interleaved rounds (the full set is sharded once, below).
    part = files[:20_000]
    _drop_cache_hint(part)
    shard_times, copy_times = [], []
    for _ in range(3):
        shard_times.append(shard(part, "slice", work / "slice", workers, True))
        copy_times.append(plain_copy(part, work / "copy"))
    shard_rate, copy_rate = len(part) / min(shard_times), len(part) / min(copy_times)
    shutil.rmtree(work / "slice", ignore_errors=True)
    shutil.rmtree(work / "copy", ignore_errors=True)
    print(f"sharding ({workers} workers): {shard_rate:,.0f} img/s; plain read+write: {copy_rate:,.0f} img/s; "
          f"ratio {shard_rate / copy_rate:.2f} (goal >= 0.8)", flush=True)


def memory_comparison(data: Path, args) -> None:
    results = {}
    for buffer in (10_000, 100_000):
        spec = {"root": str(data), "update": 5_000, "buffer": buffer, "steps": args.steps,
                "batch_size": args.batch_size, "workers": args.workers}
        results[buffer] = run_child(spec)
        r = results[buffer]
        print(f"task update, buffer {buffer:>7,}: peak PSS (tree) {r['peak_pss'] / 2**20:,.0f} MiB, peak RSS (main) "
              f"{r['peak_rss'] / 2**20:,.0f} MiB, {r['samples_per_s']:,.0f} samples/s", flush=True)
    small, large = results[10_000], results[100_000]
    print(f"peak PSS 100k / 10k: {large['peak_pss'] / small['peak_pss']:.3f} (goal within 10 %); "
          f"peak RSS 100k / 10k: {large['peak_rss'] / small['peak_rss']:.3f}; model {large['params'] / 1e6:.1f}M "
          f"parameters", flush=True)


if __name__ == "__main__":
    main()
