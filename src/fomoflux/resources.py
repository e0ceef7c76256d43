"""What each job asks a cluster for: GPUs, CPUs per GPU, memory and time, scaled from the run's model and budget.

Snakemake passes these as rule resources; the SLURM executor turns them into ``sbatch`` options (``gpu`` ->
``--gpus``, ``cpus_per_gpu`` -> ``--cpus-per-gpu``, ``mem_mb`` -> ``--mem``, ``runtime`` (minutes) -> ``-t``).
Locally they are only bookkeeping. The estimates are deliberately generous: a job that asks for too little is
killed after it has spent its time, one that asks for a little too much only waits a little longer in the queue.
Memory and time grow with Snakemake's ``attempt``, so a job killed for memory or time by the scheduler is retried
with more of both.

Host memory of a task update = a fixed allowance for the interpreter and libraries + ``PARAM_COPIES`` fp32 copies
of the model (weights, gradients, two AdamW moments, θ0 for the methods that anchor to it, method state: all on
the host when training on the CPU), both for each process of a multi-GPU update, + every image the task decodes (uint8, 3 x H x W: the task's update and buffer
data, bounded by the rows of the datasets it reads, and the pool's draws, bounded by steps x batch).
Time of a task update = its FLOPs (steps x FLOPs per step, from the method's step profile) at a sustained
``gpu_tflops``, times ``runtime_safety``, never below ``min_runtime`` minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from fomoflux.errors import ConfigError

__all__ = [
    "ResourceSettings",
    "PARAM_COPIES",
    "task_memory_mb",
    "eval_memory_mb",
    "runtime_minutes",
    "cpus_per_gpu",
    "manifest_rows",
]

# weights, gradients, AdamW exp_avg and exp_avg_sq, θ0 (anchored methods), method state (EWC Fisher, SI omega, EMA)
PARAM_COPIES = 6
MB = 2**20


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
    def from_config(cls, section: Mapping[str, Any] | None) -> "ResourceSettings":
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
    data_rows: int,
    pool_rows: int,
    pool_draws: int,
    workers: int = 1,
    attempt: int = 1,
) -> int:
    """Host memory (MB) of one task update: base + model copies per worker process (a data-parallel update on
    ``workers`` GPUs runs one process per GPU beside the job's own), + decoded images once (the workers share them),
    times ``attempt``."""
    if workers < 1:
        raise ConfigError(f"resources: workers must be >= 1, got {workers!r}")
    images = data_rows + min(pool_rows, pool_draws)
    image_bytes = 3 * image_size * image_size
    processes = 1 if workers == 1 else workers + 1
    total = processes * (settings.base_memory_mb * MB + PARAM_COPIES * 4 * params) + images * image_bytes
    return math.ceil(total / MB) * _check_attempt(attempt)


def eval_memory_mb(settings: ResourceSettings, *, params: int, image_size: int, rows: int, attempt: int = 1) -> int:
    """Host memory (MB) of an evaluation: base + the model (and its load buffer) + the decoded test images."""
    total = settings.base_memory_mb * MB + 2 * 4 * params + rows * 3 * image_size * image_size
    return math.ceil(total / MB) * _check_attempt(attempt)


def runtime_minutes(settings: ResourceSettings, *, flops: float, gpus: int = 1, attempt: int = 1) -> int:
    """Time limit (minutes) of a GPU job doing ``flops`` on ``gpus`` GPUs, times ``attempt``."""
    if flops < 0 or gpus < 1:
        raise ConfigError(f"resources: flops must be >= 0 and gpus >= 1, got {flops!r}, {gpus!r}")
    seconds = settings.runtime_safety * flops / (settings.gpu_tflops * 1e12 * gpus)
    return max(settings.min_runtime, math.ceil(seconds / 60)) * _check_attempt(attempt)


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
