"""What each job asks a cluster for: GPUs, CPUs per GPU, memory and time, scaled from the run's model and budget.

Snakemake passes these as rule resources; the SLURM executor turns them into ``sbatch`` options (``gpu`` ->
``--gpus``, ``cpus_per_gpu`` -> ``--cpus-per-gpu``, ``mem_mb`` -> ``--mem``, ``runtime`` (minutes) -> ``-t``).
Locally they are only bookkeeping. The estimates are deliberately generous: a job that asks for too little is
killed after it has spent its time, one that asks for a little too much only waits a little longer in the queue.
Memory and time grow with Snakemake's ``attempt``, so a job killed for memory or time by the scheduler is retried
with more of both.

Host memory of a task update = a fixed allowance for the interpreter and libraries + ``PARAM_COPIES`` fp32 copies
of the model (weights, gradients, two AdamW moments, θ0 for the methods that anchor to it, method state: all on
the host when training on the CPU), both for each process of a multi-GPU update, + the data loader: per
DataLoader worker a process allowance and its prefetched batches (uint8, twice: the worker's and the pinned copy),
+ ``ROW_BYTES`` per selected manifest row (the index of the task's samples: offsets, no pixels, no captions).
Images are read per batch (``fomoflux.train.data``), so nothing scales with the number of images but that index:
a million-sample buffer adds about a quarter of a GB, not the 150 GB its decoded images would take.
Time of a task update = its FLOPs (steps x FLOPs per step, from the method's step profile) at a sustained
``gpu_tflops``, times ``runtime_safety``, never below ``min_runtime`` minutes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fomoflux.errors import ConfigError

__all__ = [
    "ResourceSettings",
    "PARAM_COPIES",
    "LOADER_WORKER_MB",
    "ROW_BYTES",
    "task_memory_mb",
    "eval_memory_mb",
    "runtime_minutes",
    "cpus_per_gpu",
    "data_workers",
    "shard_workers",
    "manifest_rows",
]

# weights, gradients, AdamW exp_avg and exp_avg_sq, θ0 (anchored methods), method state (EWC Fisher, SI omega, EMA)
PARAM_COPIES = 6
MB = 2**20
# A DataLoader worker: a forked interpreter that shares the parent's pages until it writes them (measured RSS of a
# worker decoding 224 px JPEGs, benchmarks/bench_scale.py, rounded up).
LOADER_WORKER_MB = 512
# One selected manifest row as the job holds it (the selection frame, then DiskSamples' offset arrays).
ROW_BYTES = 256
# An evaluated sample's fp32 image embedding (up to 1024 wide) and its first caption.
EMBEDDING_BYTES = 4 * 1024 + 128


@dataclass(frozen=True)
class ResourceSettings:
    """The config's ``cluster:`` section (every key optional). CPU-only stages get the profile's
    ``default-resources`` instead."""

    gpu_tflops: float = 100.0  # sustained training throughput of one GPU, TFLOP/s
    runtime_safety: float = 3.0  # time limit = safety x estimated time
    min_runtime: int = 20  # minutes: no GPU job asks for less
    pretrain_runtime: int = 120  # minutes for pretraining the embedded benchmark's base model
    base_memory_mb: int = 3072  # Python, torch, open_clip, polars, and the job's own Snakemake

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> ResourceSettings:
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"cluster.{unknown[0]}: unknown key; known keys are {', '.join(sorted(known))}")
        settings = cls(**section)
        for f in fields(cls):
            value = getattr(settings, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"cluster.{f.name} must be a number > 0, got {value!r}")
        if settings.runtime_safety < 1:
            raise ConfigError(f"cluster.runtime_safety must be >= 1, got {settings.runtime_safety!r}")
        return settings


def _check_attempt(attempt: int) -> int:
    if not isinstance(attempt, int) or attempt < 1:
        raise ConfigError(f"resources: attempt must be an integer >= 1, got {attempt!r}")
    return attempt


def task_memory_mb(
    settings: ResourceSettings,
    *,
    params: int,
    image_size: int,
    batch_size: int,
    data_rows: int,
    loader_workers: int,
    prefetch_factor: int = 4,
    workers: int = 1,
    attempt: int = 1,
) -> int:
    """Host memory (MB) of one task update (module docstring): base + model copies per process (a data-parallel
    update on ``workers`` GPUs runs one process per GPU beside the job's own), + ``loader_workers`` DataLoader
    workers per training process with ``prefetch_factor`` batches of ``batch_size / workers`` images each, + the
    index of ``data_rows`` selected rows, times ``attempt``."""
    if workers < 1:
        raise ConfigError(f"resources: workers must be >= 1, got {workers!r}")
    processes = 1 if workers == 1 else workers + 1
    batch_bytes = math.ceil(batch_size / workers) * 3 * image_size * image_size
    loader = workers * loader_workers * (LOADER_WORKER_MB * MB + 2 * prefetch_factor * batch_bytes)
    total = processes * (settings.base_memory_mb * MB + PARAM_COPIES * 4 * params) + loader + data_rows * ROW_BYTES
    return math.ceil(total / MB) * _check_attempt(attempt)


def eval_memory_mb(settings: ResourceSettings, *, params: int, image_size: int, batch_size: int,
                   loader_workers: int, rows: int, attempt: int = 1) -> int:
    """Host memory (MB) of an evaluation: base + the model (and its load buffer) + the loader's workers and
    prefetched batches + the evaluated rows' index and embeddings (images are read batch by batch)."""
    batch_bytes = batch_size * 3 * image_size * image_size
    loader = loader_workers * (LOADER_WORKER_MB * MB + 2 * 4 * batch_bytes) + batch_bytes
    total = settings.base_memory_mb * MB + 2 * 4 * params + loader + rows * (ROW_BYTES + EMBEDDING_BYTES)
    return math.ceil(total / MB) * _check_attempt(attempt)


def runtime_minutes(settings: ResourceSettings, *, flops: float, gpus: int = 1, attempt: int = 1) -> int:
    """Time limit (minutes) of a GPU job doing ``flops`` on ``gpus`` GPUs, times ``attempt``."""
    if flops < 0 or gpus < 1:
        raise ConfigError(f"resources: flops must be >= 0 and gpus >= 1, got {flops!r}, {gpus!r}")
    seconds = settings.runtime_safety * flops / (settings.gpu_tflops * 1e12 * gpus)
    return max(settings.min_runtime, math.ceil(seconds / 60)) * _check_attempt(attempt)


def data_workers(setting: Any, threads: int, on_gpu: bool) -> int:
    """DataLoader workers for ``training.data_workers`` / ``evaluation.data_workers``: ``auto`` is the job's
    threads less the one that drives the GPU (at least 2) on a GPU, and 0 on the CPU, where workers would only take
    cores from the forward pass."""
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
            raise ConfigError(f"data_workers must be 'auto' or an integer >= 0, got {setting!r}")
        return setting
    return max(2, int(threads) - 1) if on_gpu else 0


def shard_workers(spec: Any, *, threads: int, shard_size: int, scale: float) -> int:
    """Processes of a shard_dataset job: at most ``threads`` (``benchmark.shard_threads``), and for a generated
    dataset, whose size the plan knows, one per full shard: a worker process costs a second of start-up (it imports
    the image stack), more than drawing a shard of the mini benchmark's small sets, which one process writes while
    the other cores run the next dataset. Downloaded datasets get ``threads``."""
    generate = spec.source.get("generate")
    if not generate:
        return max(1, int(threads))
    from fomoflux.data.mini import split_count

    samples = sum(split_count(spec, split, scale) for split in spec.splits if split in generate)
    return max(1, min(int(threads), samples // int(shard_size)))


def cpus_per_gpu(threads: int, gpus: int) -> int:
    """CPUs to ask per GPU so that the job gets ``threads`` CPUs in all (at least one per GPU)."""
    return max(1, math.ceil(int(threads) / max(1, int(gpus))))


def manifest_rows(dataset_dirs: Iterable[str | Path], split: str | None = None) -> int:
    """Rows of ``split`` (all rows for None) in the datasets' ``manifest.parquet`` files. All rows are counted from
    the files' footers; a split reads only the ``split`` column."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    total = 0
    for folder in dataset_dirs:
        path = Path(folder) / "manifest.parquet"
        if split is None:
            total += pq.ParquetFile(path).metadata.num_rows
        else:
            column = pq.read_table(path, columns=["split"])["split"]
            total += int(pc.sum(pc.equal(column, split)).as_py() or 0)
    return total
