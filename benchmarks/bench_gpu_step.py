"""Training-step throughput of ViT-B/16 full fine-tuning through the fomoflux task loop, against 2,800 samples/s.

    .venv/bin/python benchmarks/bench_gpu_step.py [--batch-size 512] [--steps 20] [--warmup 3] [--precision auto]

open_clip's ``ViT-B-16`` from a random init (nothing is downloaded), trained by ``run_task_update`` with full
fine-tuning on random uint8 224x224 images with captions (the paper mixture of pool / update / buffer at task 1), on
the device ``FOMOFLUX_DEVICE`` or the default rule picks (``fomoflux.device.resolve_device``); ``auto`` precision is
bf16 autocast on CUDA. The loop logs every step and reads the loss back each time, as it does in the pipeline, so
the log's ``elapsed_s`` times finished steps; the first ``--warmup`` steps (kernel selection, allocator growth) are
left out. Prints samples/s, the peak ``torch.cuda.max_memory_allocated`` (GiB), the device name and the ratio to
the target.

With ``--shards DIR`` (a data folder made by ``benchmarks/bench_scale.py``: JPEG shards of 224-320 px with byte
offsets) the sources are samples on disk, read, decoded and cropped per step by ``--data-workers`` DataLoader
workers exactly as in the pipeline (``--buffer`` samples in the buffer); it then also prints the fraction of the
timed steps' wall time the loop waited for data (the log's ``data_wait_s``; goal: near 0).

On a CPU it runs too, to check that it works, not to measure: give it a tiny batch, e.g.
``--batch-size 8 --steps 2 --warmup 1`` (a ViT-B/16 step at batch 512 takes minutes on a CPU).
"""

from __future__ import annotations

import argparse
import os
import platform

import torch
from _timing import image_size, random_samples

from fomoflux.device import resolve_device, resolve_precision
from fomoflux.methods import get_method
from fomoflux.model import create_model
from fomoflux.train.loop import TaskUpdateConfig, run_task_update

ARCH = "ViT-B-16"
TARGET_SAMPLES_PER_S = 2800.0
MIXTURE = {"pretrain": 0.33, "update": 0.34, "buffer": 0.33}
PAPER_CROP = {"kind": "random_resized_crop", "scale": [0.9, 1.0], "ratio": [0.75, 4 / 3]}


def disk_sources(root: str, buffer: int) -> dict:
    """Update (5,000), buffer and pool sources on disk from a bench_scale.py data folder."""
    from pathlib import Path

    from fomoflux.data.catalog import select_rows
    from fomoflux.data.loading import READ_COLUMNS, DiskSamples

    root_path = Path(root)
    columns = [*READ_COLUMNS, "class_name"]
    rows = select_rows([root_path / "scale" / "manifest.parquet"], split="train", dataset="scale", columns=columns)
    pool = select_rows([root_path / "pool" / "manifest.parquet"], split="train", dataset="pool", columns=columns)
    return {"update": DiskSamples(root_path, rows[:5000]), "buffer": DiskSamples(root_path, rows[5000:5000 + buffer]),
            "pretrain": DiskSamples(root_path, pool)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="steps run first and left out of the timing")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--samples", type=int, default=None,
                        help="samples per source (default 2 x batch size; steps draw with replacement)")
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--shards", type=str, default=None, help="data folder of bench_scale.py: read from disk")
    parser.add_argument("--data-workers", type=int, default=max(2, (os.cpu_count() or 2) - 2))
    parser.add_argument("--buffer", type=int, default=100_000, help="buffer samples with --shards")
    args = parser.parse_args()
    if args.batch_size < 2 or args.steps < 1 or args.warmup < 1:
        parser.error("need --batch-size >= 2, --steps >= 1 and --warmup >= 1")
    return args


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's architecture and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"


def timed_rate(log, warmup: int, batch_size: int) -> float:
    """Samples/s over the logged steps after the first ``warmup`` (elapsed_s is read after each step's sync)."""
    elapsed = log["elapsed_s"].to_list()
    timed_steps = len(elapsed) - warmup
    return timed_steps * batch_size / (elapsed[-1] - elapsed[warmup - 1])


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device()
    model, tokenizer = create_model(ARCH, None, device=device, seed=0)
    side = image_size(model)
    samples = args.samples or 2 * args.batch_size
    if args.shards:
        sources = disk_sources(args.shards, args.buffer)
        extra = {"data_workers": args.data_workers, "augmentation": PAPER_CROP}
    else:
        sources = {
            "pretrain": random_samples(samples, side, "pool", 1),
            "update": random_samples(samples, side, "update", 2),
            "buffer": random_samples(samples, side, "buffer", 3),
        }
        extra = {}
    cfg = TaskUpdateConfig(
        steps=args.warmup + args.steps, batch_size=args.batch_size, lr=1e-5, mixture=MIXTURE, task_index=1,
        seed=0, device=str(device), progress=False, precision=args.precision, log_every=1, **extra,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log = run_task_update(model, tokenizer, get_method("finetune"), sources, cfg)
    rate = timed_rate(log, args.warmup, args.batch_size)
    peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else "n/a (CPU)"

    print(f"{ARCH} full fine-tuning, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"precision {args.precision} ({resolve_precision(device, args.precision)})")
    print(f"device: {device} = {device_name(device)}")
    print(f"throughput: {rate:,.1f} samples/s   peak allocated: {peak}   "
          f"ratio to the {TARGET_SAMPLES_PER_S:,.0f} samples/s target: {rate / TARGET_SAMPLES_PER_S:.3f}")
    print(f"final loss {log['loss'][-1]:.4f} (finite: {torch.isfinite(torch.tensor(log['loss'][-1])).item()})")
    if args.shards:
        timed = log[args.warmup:]
        span = log["elapsed_s"][-1] - log["elapsed_s"][args.warmup - 1]
        print(f"data from disk: {args.data_workers} loader workers, buffer {args.buffer:,}; waited for data "
              f"{timed['data_wait_s'].sum():.2f} s of {span:.2f} s ({timed['data_wait_s'].sum() / span:.1%})")


if __name__ == "__main__":
    main()
