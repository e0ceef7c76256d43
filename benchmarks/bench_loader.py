"""The loader's sample rate vs the training step rate of the mini benchmark's model, side by side in one process.

    .venv/bin/python benchmarks/bench_loader.py [--datasets digits ...] [--steps 30] [--batch-size 128]
                                                [--threads 1] [--repeats 3] [--data-dir DIR]

Generates the datasets a task reads (at scale 1, image size 32, with ``build_dataset``; into a temporary folder, or
``--data-dir`` to keep and reuse them), cuts their classes into a seeded random stream of ``--classes-per-task``
(the default config's 9) and times the stream's last task, interleaved in rounds after a warm-up of each:

- loader: what ``train_task`` does before and during training: ``select_rows`` on the job's manifests +
  ``load_samples`` for the update (the task's classes), the buffer (every sample of the earlier tasks) and the pool
  (its replay sample, ``replay_sample``), then ``TaskBatches`` (tokenises the task's captions) and S draws;
  samples/s = B * S / seconds;
- loader, steady state: the S draws alone (sources decoded and tokenised already);
- training: ``run_task_update`` (full fine-tuning, the default config's mixture, lr and schedule) of the model on
  the same sources for S steps; samples/s = B * S / seconds.

Prints the rates and the ratio loader / training (target >= 3).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl
import torch
from _timing import image_size, interleaved_rounds, median, setup_architecture, synchronize

from fomoflux.data.catalog import select_rows
from fomoflux.data.loading import load_samples
from fomoflux.data.mini import mini_registry
from fomoflux.data.sampleset import SampleSet
from fomoflux.data.shards import MANIFEST_NAME, build_dataset
from fomoflux.methods import get_method
from fomoflux.model import create_model
from fomoflux.pipeline.task_data import replay_sample
from fomoflux.stream import chunk
from fomoflux.train.loop import TaskBatches, TaskUpdateConfig, run_task_update

T = TypeVar("T")
POOL = "pool"
IMAGE_SIZE = 32  # config/config.yaml: benchmark.image_size
MIXTURE = {"pretrain": 0.33, "update": 0.34, "buffer": 0.33}  # config/config.yaml: mixtures.paper
LR = 1e-3  # config/config.yaml: training.lr
# In registry order: with seed 0 and 9 classes per task, stream_tasks gives the default config's stream "random".
ADAPTATION = ["digits", "new_shapes", "textures", "glyphs", "directions", "counting"]


def generate(data_root: Path, datasets: list[str], seed: int) -> dict[str, Path]:
    """Build each dataset (and the pool) under ``data_root`` unless its manifest is there already; returns
    dataset -> manifest path."""
    registry = mini_registry(IMAGE_SIZE)
    manifests = {}
    for name in [*datasets, POOL]:
        manifest = data_root / name / MANIFEST_NAME
        if not manifest.is_file():
            start = time.perf_counter()
            build_dataset(registry[name], data_root / name, seed=seed, image_size=IMAGE_SIZE, scale=1.0,
                          shard_size=2000, overwrite=True)
            print(f"generated {name} in {time.perf_counter() - start:.1f} s", flush=True)
        manifests[name] = manifest
    return manifests


def stream_tasks(datasets: list[str], classes_per_task: int, seed: int) -> list[list[str]]:
    """A seeded random order of the datasets' classes cut into tasks (the default config's ``ordering: random``)."""
    registry = mini_registry(IMAGE_SIZE)
    entries = [e for name in datasets for e in registry[name].entries()]
    order = np.random.default_rng(seed).permutation(len(entries))
    return [list(t) for t in chunk([entries[i] for i in order], classes_per_task=classes_per_task)]


class Phases:
    """Seconds spent per named phase, summed over the calls that ran under it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def timed(self, name: str, run: Callable[[], T]) -> T:
        start = time.perf_counter()
        result = run()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return result


def load_sources(manifests: list[Path], tasks: list[list[str]], draws: int, seed: int,
                 phases: Phases) -> dict[str, SampleSet]:
    """The last task's update, buffer and pool samples, loaded as ``train_task`` does (default config: buffer
    policy ``all``, no validation split): rows from the job's manifests, then only those rows decoded."""
    data_root = manifests[0].parent.parent
    task = len(tasks)

    def select(**query) -> pl.DataFrame:
        return phases.timed("select_rows", lambda: select_rows(manifests, split="train", **query))

    def decode(rows: pl.DataFrame) -> SampleSet:
        return phases.timed("load_samples", lambda: load_samples(data_root, rows, IMAGE_SIZE))

    update = decode(select(entries=tasks[-1]))
    buffer = decode(select(entries=[e for t in tasks[:-1] for e in t]))
    pool_rows = select(dataset=POOL)
    chosen = replay_sample(pool_rows.height, draws, seed, task)
    pool = decode(pool_rows if chosen is None else pool_rows[chosen])
    return {"update": update, "buffer": buffer, "pretrain": pool}


def rate(samples: int, run: Callable[[], object], device: str = "cpu") -> Callable[[], float]:
    """``run`` wrapped to return samples/s: ``samples`` over the seconds it took."""
    def timed() -> float:
        start = time.perf_counter()
        run()
        synchronize(device)
        return samples / (time.perf_counter() - start)
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=ADAPTATION,
                        help="adaptation datasets (default: all six, so the stream is the default config's)")
    parser.add_argument("--classes-per-task", type=int, default=9)
    parser.add_argument("--arch", default="fomo-tiny-vit")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (config: training.threads)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", type=Path, help="keep the generated datasets here (default: a temp folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        data_root = args.data_dir or Path(tmp)
        by_name = generate(data_root, args.datasets, args.seed)
        tasks = stream_tasks(args.datasets, args.classes_per_task, args.seed)
        # A train_task job declares the datasets of tasks 1..t and the pool (common.smk: training_data).
        manifests = [by_name[d] for d in sorted({e.split("+++")[0] for t in tasks for e in t})] + [by_name[POOL]]
        report(args, manifests, tasks)


def report(args: argparse.Namespace, manifests: list[Path], tasks: list[list[str]]) -> None:
    """Measure loader and training side by side and print the rates."""
    setup_architecture(args.arch)
    model, tokenizer = create_model(args.arch, None, device=args.device, seed=args.seed)
    if image_size(model) != IMAGE_SIZE:
        raise SystemExit(f"{args.arch} takes {image_size(model)} px images; the mini benchmark's are {IMAGE_SIZE} px")
    initial = copy.deepcopy(model.state_dict())
    samples = args.batch_size * args.steps
    cfg = TaskUpdateConfig(steps=args.steps, batch_size=args.batch_size, lr=LR, mixture=MIXTURE,
                           task_index=len(tasks) - 1, seed=args.seed, device=args.device, progress=False)
    sources = load_sources(manifests, tasks, samples, args.seed, Phases())
    batches = TaskBatches(sources, tokenizer, cfg.batch_size, cfg.mixture, cfg.task_index, cfg.seed, cfg.rng_salt)
    loader_phases: list[Phases] = []

    def loader() -> None:
        phases = Phases()
        loader_phases.append(phases)
        loaded = load_sources(manifests, tasks, samples, args.seed, phases)
        fresh = phases.timed("TaskBatches", lambda: TaskBatches(loaded, tokenizer, cfg.batch_size, cfg.mixture,
                                                                cfg.task_index, cfg.seed, cfg.rng_salt))
        phases.timed("draws", lambda: [fresh.draw(step) for step in range(args.steps)])

    def draws_only() -> None:
        for step in range(args.steps):
            batches.draw(step)

    def training() -> None:
        model.load_state_dict(initial)
        run_task_update(model, tokenizer, get_method("finetune"), sources, cfg)

    rates = interleaved_rounds(
        {"loader": rate(samples, loader), "draws": rate(samples, draws_only),
         "training": rate(samples, training, args.device)},
        rounds=args.repeats,
    )
    loader_rate, draw_rate, train_rate = (median(rates[k]) for k in ("loader", "draws", "training"))
    sizes = ", ".join(f"{name} {len(s):,}" for name, s in sources.items())
    print(f"arch={args.arch} device={args.device} batch={args.batch_size} steps={args.steps} "
          f"torch threads={torch.get_num_threads()} polars threads={pl.thread_pool_size()} "
          f"rounds={args.repeats} (median)")
    print(f"task {len(tasks)} of {len(tasks)} over {', '.join(args.datasets)} + pool: {len(tasks[-1])} classes; "
          f"sources {sizes} decoded from {len(manifests)} manifests")
    print(f"loader (select + decode + tokenise + {args.steps} draws): {loader_rate:,.0f} samples/s   "
          f"steady state (draws only): {draw_rate:,.0f} samples/s")
    print(f"training (run_task_update, finetune): {train_rate:,.0f} samples/s")
    measured = loader_phases[-args.repeats:]  # the warm-up call is not counted
    print("loader phases, median seconds per task: " + ", ".join(
        f"{name} {median(p.seconds[name] for p in measured):.3f}" for name in measured[0].seconds))
    print(f"ratio loader / training: {loader_rate / train_rate:.1f} (target >= 3); "
          f"steady state / training: {draw_rate / train_rate:.0f}")


if __name__ == "__main__":
    main()
