"""Where the tensors of a merge come from: safetensors checkpoints read one key at a time, or in-memory state dicts.

A merge walks the keys of θ0 and, within a key, the checkpoints θ_1..θ_n one at a time. :class:`TaskVectors` is the
lazy, re-iterable sequence of task vectors τ_i = θ_i − θ0 of one key that a merge operator consumes: every iteration
reads the checkpoints again, so an operator that needs two passes (TIES, TALL masks) simply iterates twice and only
ever holds the tensor it is looking at plus its own accumulators.

A file is opened with ``safetensors.safe_open`` for each read and closed right after. safetensors memory-maps the
file and ``get_tensor`` returns a view of that map, so a handle kept open for the whole merge would keep every page
it ever read resident (and counted in the process's RSS): n checkpoints would cost n models of memory. Reopening
costs a parse of the header (about 0.3 ms for a ViT-B/16 checkpoint) and keeps memory at O(1) tensors per key.

Before each checkpoint read, freed heap memory is handed back to the operating system (glibc's ``malloc_trim``; a
no-op elsewhere). glibc serves allocations below its dynamic mmap threshold (up to 32 MiB, so most tensors) from the
heap and keeps what is freed there; with the same few tensor sizes allocated and freed over and over, the retained
memory grew with the number of checkpoints read (TIES over 20 fomo-tiny-vit checkpoints: 224 to 737 MB peak from run
to run, against 199 MB every run with the trim, which costs ~15% time on that model).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from fomoflux.errors import CheckpointError

__all__ = ["FileSource", "StateSource", "TaskVectors", "TensorSource", "check_layouts", "tensor_generator"]


class TensorSource:
    """One model's tensors by key: ``keys()``, ``layout(key)`` (shape, dtype name), ``is_floating(key)`` and
    ``read(key)``."""

    label: str

    def keys(self) -> list[str]:
        raise NotImplementedError

    def is_floating(self, key: str) -> bool:
        raise NotImplementedError

    def layout(self, key: str) -> tuple[tuple[int, ...], str]:
        raise NotImplementedError

    def read(self, key: str) -> torch.Tensor:
        """The tensor of ``key``; callers must not modify it in place (it may be a view of a file or of a caller's
        state dict)."""
        raise NotImplementedError


class FileSource(TensorSource):
    """A safetensors checkpoint; the header is read once, every tensor read opens the file anew (see module doc)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = f"checkpoint {self.path}"
        if not self.path.is_file():
            raise CheckpointError(f"checkpoint {self.path} does not exist")
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                self._layouts = {
                    key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype())
                    for key in handle.keys()
                }
        except Exception as exc:  # safetensors raises its own error types, OSError, ValueError...
            raise CheckpointError(f"checkpoint {self.path} is not a readable safetensors file: {exc}") from exc

    def keys(self) -> list[str]:
        return list(self._layouts)

    def layout(self, key: str) -> tuple[tuple[int, ...], str]:
        return self._layouts[key]

    def is_floating(self, key: str) -> bool:
        # safetensors' dtype names: F64, F32, F16, BF16, F8_E4M3, ... for floats; I*, U*, BOOL, C* otherwise.
        return self._layouts[key][1].startswith(("F", "BF"))

    def read(self, key: str) -> torch.Tensor:
        try:
            with safe_open(str(self.path), framework="pt") as handle:
                return handle.get_tensor(key)
        except Exception as exc:
            raise CheckpointError(f"checkpoint {self.path}: cannot read key {key!r}: {exc}") from exc


class StateSource(TensorSource):
    """An in-memory state dict (named ``label`` in errors)."""

    def __init__(self, state: Mapping[str, torch.Tensor], label: str) -> None:
        self.state = state
        self.label = label

    def keys(self) -> list[str]:
        return list(self.state)

    def layout(self, key: str) -> tuple[tuple[int, ...], str]:
        tensor = self.state[key]
        return tuple(tensor.shape), str(tensor.dtype).removeprefix("torch.")

    def is_floating(self, key: str) -> bool:
        return self.state[key].is_floating_point()

    def read(self, key: str) -> torch.Tensor:
        return self.state[key].detach().cpu()


def check_layouts(base: TensorSource, others: Sequence[TensorSource]) -> None:
    """Every source has exactly θ0's keys with θ0's shapes and dtypes, else CheckpointError naming source and key."""
    base_keys = base.keys()
    expected = set(base_keys)
    for source in others:
        keys = set(source.keys())
        missing = [key for key in base_keys if key not in keys]
        if missing:
            raise CheckpointError(f"{source.label} lacks key {missing[0]!r} of the base {base.label}")
        extra = sorted(keys - expected)
        if extra:
            raise CheckpointError(f"{source.label} has key {extra[0]!r} that the base {base.label} lacks")
        for key in base_keys:
            (shape, dtype), (base_shape, base_dtype) = source.layout(key), base.layout(key)
            if shape != base_shape:
                raise CheckpointError(
                    f"{source.label}: key {key!r} has shape {shape} but the base {base.label} has {base_shape}"
                )
            if dtype != base_dtype:
                raise CheckpointError(
                    f"{source.label}: key {key!r} has dtype {dtype} but the base {base.label} has {base_dtype}"
                )


def _heap_trimmer() -> Callable[[], None]:
    """A function returning freed heap memory to the OS: glibc's ``malloc_trim(0)``, or a no-op without glibc."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # no C library found, or one without malloc_trim (musl, macOS)
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


release_free_memory = _heap_trimmer()


def tensor_generator(seed: int, key: str, index: int) -> torch.Generator:
    """A CPU generator seeded by a stable hash of (seed, key, checkpoint index).

    Python's ``hash`` of a string changes between processes, so the seed comes from BLAKE2b instead; the same
    (seed, key, index) gives the same stream in any process, and every key and checkpoint gets its own stream.
    """
    digest = hashlib.blake2b(f"{seed}\x00{key}\x00{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


class TaskVectors:
    """The task vectors τ_i = θ_i − θ0 of one key over the checkpoints, read lazily in order.

    Every iteration (and every ``[i]``) reads the checkpoint again and yields a fresh tensor in the compute dtype
    that the caller owns (it may modify it in place). ``base`` is θ0's tensor for the key in the compute dtype;
    it is shared, so operators must not modify it.
    """

    def __init__(self, key: str, base: torch.Tensor, sources: Sequence[TensorSource]) -> None:
        self.key = key
        self.base = base
        self.sources = sources

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> torch.Tensor:
        release_free_memory()
        raw = self.sources[index].read(self.key)
        # torch.sub promotes a half-precision raw tensor to the (float32) compute dtype in one new tensor, and never
        # writes into ``raw``, which may be a view of the file's memory map or of a caller's state dict.
        return torch.sub(raw, self.base)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index in range(len(self.sources)):
            yield self[index]
