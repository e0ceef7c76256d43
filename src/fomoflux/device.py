"""Where a job computes: the device, the mixed precision, and data-parallel worker processes.

A training / evaluation job runs as a SLURM job that gets 0, 1 or several GPUs (SLURM sets ``CUDA_VISIBLE_DEVICES``).

- :func:`resolve_device`: ``FOMOFLUX_DEVICE`` when set (``cpu``, ``cuda``, ``cuda:N``), else the first visible GPU,
  else the CPU.
- :func:`autocast`: ``training.precision`` as a context manager around forward passes. ``auto`` is bf16 autocast on
  CUDA and nothing on the CPU, so CPU results stay bit-identical to plain fp32 code.
- :func:`run_distributed`: ``world_size`` worker processes joined in one ``torch.distributed`` process group (NCCL
  on CUDA, rank r on ``cuda:r``; gloo on the CPU, which is what makes the data-parallel path testable without a
  GPU). :func:`distributed_rank_world` tells library code (the task loop) whether it runs inside such a group.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fomoflux.errors import ConfigError

__all__ = [
    "DEVICE_ENV",
    "PRECISIONS",
    "DistributedContext",
    "autocast",
    "check_gpus",
    "destroy_distributed",
    "distributed_rank_world",
    "init_distributed",
    "resolve_device",
    "resolve_precision",
    "run_distributed",
    "split_batch_size",
]

DEVICE_ENV = "FOMOFLUX_DEVICE"
PRECISIONS = ("auto", "fp32", "bf16")
_DEVICE_PATTERN = re.compile(r"cpu|cuda(?::(\d+))?")
_RENDEZVOUS_HOST = "127.0.0.1"
# How long workers wait for each other at the rendezvous and in a collective before failing instead of hanging.
_PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=30)


# ---- device and precision --------------------------------------------------------------------------------------


def resolve_device(env: Mapping[str, str] = os.environ) -> torch.device:
    """The device a job computes on: ``FOMOFLUX_DEVICE`` if set and not empty, else ``cuda`` when a GPU is visible,
    else ``cpu``.

    Raises ConfigError naming FOMOFLUX_DEVICE and its value for anything but ``cpu``, ``cuda`` or ``cuda:N``, and for
    a CUDA device that is not visible (no GPU, or N >= the number of visible GPUs).
    """
    value = env.get(DEVICE_ENV, "").strip()
    if not value:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _DEVICE_PATTERN.fullmatch(value)
    if match is None:
        raise ConfigError(f"{DEVICE_ENV}={value!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    if value == "cpu":
        return torch.device("cpu")
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(match.group(1)) if match.group(1) is not None else 0
    if index >= visible:
        raise ConfigError(
            f"{DEVICE_ENV}={value!r}: {visible} CUDA device(s) visible (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r})"
        )
    return torch.device(value)


def resolve_precision(device: torch.device | str, precision: str) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` (``training.precision``) means on ``device``.

    ``auto`` is bf16 on a CUDA device that computes in bf16 natively (Ampere and newer) and fp32 everywhere else.
    Raises ConfigError naming training.precision for a value outside :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"training.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    # Older GPUs only emulate bf16 (slower than fp32), so auto does not pick it there.
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16"
    return "fp32"


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """A context manager for forward passes: bf16 autocast on ``device`` when :func:`resolve_precision` says bf16,
    else a no-op (fp32; parameters are never cast, only the ops autocast selects run in bf16).

    Raises ConfigError naming training.precision for an unknown ``precision``.
    """
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_gpus(device: torch.device | str, gpus: Any) -> None:
    """Check ``training.gpus`` (the worker processes of one training job) against ``device``.

    Raises ConfigError naming training.gpus when it is not an integer >= 1, or when ``device`` is CUDA and fewer
    than ``gpus`` GPUs are visible (naming the visible count). On the CPU any count runs (gloo workers).
    """
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ConfigError(f"training.gpus: must be an integer >= 1, got {gpus!r}")
    if torch.device(device).type == "cuda":
        visible = torch.cuda.device_count()
        if visible < gpus:
            raise ConfigError(
                f"training.gpus: {gpus} GPU(s) asked for but {visible} visible (CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r})"
            )


def split_batch_size(batch_size: int, world_size: int) -> int:
    """Samples per rank when ``world_size`` ranks share one step's batch of ``batch_size``.

    Raises ConfigError naming training.batch_size and training.gpus when the batch does not divide evenly (uneven
    slices would weight the ranks' gradients unequally).
    """
    if batch_size % world_size:
        raise ConfigError(
            f"training.batch_size {batch_size} is not divisible by training.gpus {world_size}: every worker must "
            "take the same number of samples of a step's batch"
        )
    return batch_size // world_size


# ---- distributed workers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedContext:
    """One worker of a :func:`run_distributed` group: its rank, the group's size and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this worker is rank 0, the one that writes outputs and shows progress."""
        return self.rank == 0


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world_size) of this process's default process group; (0, 1) when none is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _worker_device(device_type: str, rank: int) -> torch.device:
    if device_type == "cuda":
        torch.cuda.set_device(rank)
        return torch.device("cuda", rank)
    if device_type == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"distributed workers: device type {device_type!r} is not supported (cpu or cuda)")


def init_distributed(rank: int, world_size: int, device_type: str, port: int) -> DistributedContext:
    """Join the default process group of ``world_size`` workers as ``rank`` (rendezvous on 127.0.0.1:``port``).

    NCCL with rank r on ``cuda:r`` when ``device_type`` is ``cuda``; gloo on the CPU. Returns the worker's context.
    """
    import torch.distributed as dist

    device = _worker_device(device_type, rank)
    store = dist.TCPStore(_RENDEZVOUS_HOST, port, world_size, is_master=False, timeout=_PROCESS_GROUP_TIMEOUT)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=_PROCESS_GROUP_TIMEOUT)
    return DistributedContext(rank=rank, world_size=world_size, device=device)


def destroy_distributed() -> None:
    """Leave the default process group (nothing when none is initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _worker_entry(
    rank: int,
    fn: Callable[..., None],
    world_size: int,
    device_type: str,
    port: int,
    threads: int,
    args: tuple,
) -> None:
    """What each spawned worker runs: threads, logging, the process group, then ``fn(context, *args)``."""
    torch.set_num_threads(threads)
    # open_clip's ClipLoss gathers features with torch.distributed.nn.all_gather, which torch has deprecated (it still
    # works); its FutureWarning, once per worker and call site, would only clutter the job's log.
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
                            category=FutureWarning)
    # A spawned process starts without logging configured; its stderr is the job's log (see _inherited_output).
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"%(asctime)s %(levelname)s [rank {rank}] %(message)s", force=True)
    try:
        # Reported before the process group is torn down: leaving it is what makes the other workers fail.
        fn(init_distributed(rank, world_size, device_type, port), *args)
    except BaseException:
        _report_failure(port, rank, traceback.format_exc())
        raise
    finally:
        destroy_distributed()


_FAILURE_KEY = "fomoflux/worker_failure/{rank}"


def _report_failure(port: int, rank: int, text: str) -> None:
    """Leave this worker's traceback, with the time it failed, in the parent's store. When one worker fails, the
    others fail soon after in their collectives ("connection reset"); the parent reports the earliest failure first
    because whichever process torch notices first is often one of those followers."""
    import torch.distributed as dist

    try:
        client = dist.TCPStore(_RENDEZVOUS_HOST, port, is_master=False, timeout=datetime.timedelta(seconds=5))
        client.set(_FAILURE_KEY.format(rank=rank), f"{time.time():.6f}\n{text}")
    except Exception:  # the parent may already be gone; the exception itself still reaches it through torch
        pass


def _failure_report(store, world_size: int) -> str:
    failures = []
    for rank in range(world_size):
        key = _FAILURE_KEY.format(rank=rank)
        if store.check([key]):
            stamp, text = store.get(key).decode().split("\n", 1)
            failures.append((float(stamp), rank, text))
    failures.sort()
    return "\n".join(f"-- worker rank {rank} failed{' first' if i == 0 else ''}:\n{text}"
                     for i, (_, rank, text) in enumerate(failures))


@contextlib.contextmanager
def _inherited_output() -> Iterator[None]:
    """Point file descriptors 1 and 2 at what ``sys.stdout`` / ``sys.stderr`` write to, while workers start.

    A job's log (``workflow_entry.job_log``) replaces ``sys.stderr`` in Python only; spawned workers inherit the
    descriptors, so without this their progress bars and logs would miss the job's log. ``dup2`` makes the
    descriptors share the log's open file (and its offset), so workers and parent append without overwriting.
    Streams without a real file descriptor (pytest's capture) are left alone.
    """
    saved: list[tuple[int, int]] = []
    try:
        for target, stream in ((1, sys.stdout), (2, sys.stderr)):
            try:
                source = stream.fileno()
            except (AttributeError, OSError, ValueError):
                continue
            if source == target:
                continue
            stream.flush()
            saved.append((target, os.dup(target)))
            os.dup2(source, target)
        yield
    finally:
        for target, copy in reversed(saved):
            os.dup2(copy, target)
            os.close(copy)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Keep spawned workers from re-running the parent's ``__main__``.

    The spawn start method imports the parent's main module in every child. Under Snakemake that module is the job's
    script, whose top level runs the whole job: each worker would run the job again (and spawn workers of its own).
    Without ``__file__`` and ``__spec__`` multiprocessing imports no main module; the worker function therefore has
    to live in an importable module, never in ``__main__``.
    """
    main = sys.modules["__main__"]
    missing = object()
    saved_file = main.__dict__.pop("__file__", missing)
    saved_spec = getattr(main, "__spec__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = saved_spec
        if saved_file is not missing:
            main.__file__ = saved_file


def run_distributed(
    fn: Callable[..., None],
    world_size: int,
    *,
    device_type: str = "cpu",
    args: tuple = (),
    threads: int = 1,
) -> None:
    """Run ``fn(context: DistributedContext, *args)`` in ``world_size`` spawned worker processes, one process group.

    ``fn`` must be a module-level function of an importable module (it is pickled by name). ``args`` are pickled
    into every worker; CPU tensors among them travel through shared memory (one copy, read by all workers), so
    anything a worker modifies must reach it as a private copy (e.g. pickled to bytes). Each worker uses
    ``threads`` torch threads; rank r uses ``cuda:r`` when ``device_type`` is ``cuda`` (NCCL), else the CPU (gloo).
    The rendezvous is a TCP store this process serves on 127.0.0.1, on a port the OS picks (so no race for a
    "free" port). Returns when every worker has finished.

    Raises ConfigError for world_size < 1 or threads < 1; ``torch.multiprocessing.ProcessRaisedException`` (the
    failing worker's traceback in its message) when a worker raises, ``ProcessExitedException`` when one dies. The
    other workers are then terminated, so none is left waiting in a collective.
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"run_distributed: world_size must be an integer >= 1, got {world_size!r}")
    if threads < 1:
        raise ConfigError(f"run_distributed: threads must be >= 1, got {threads!r}")
    # The store's server lives in this process for the whole run; port 0 lets the OS choose an unused port.
    store = dist.TCPStore(_RENDEZVOUS_HOST, 0, None, True, timeout=_PROCESS_GROUP_TIMEOUT, wait_for_workers=False)
    worker_args = (fn, world_size, device_type, store.port, threads, tuple(args))
    with _inherited_output():
        with _main_module_hidden():
            processes = mp.start_processes(_worker_entry, args=worker_args, nprocs=world_size, join=False,
                                           start_method="spawn")
        try:
            while not processes.join():
                pass
        except mp.ProcessRaisedException as err:
            report = _failure_report(store, world_size)
            if not report:
                raise
            raise mp.ProcessRaisedException(f"\n\n{report}", err.error_index, err.error_pid) from None
        finally:
            # torch leaves a failed worker's pickled traceback in a temporary file; the message above has it.
            for path in getattr(processes, "error_files", []):
                with contextlib.suppress(OSError):
                    os.unlink(path)
    del store
