"""Atomic file writes: a killed job never leaves a file under its final name that looks complete.

Everything is written to a temporary file in the destination's directory, flushed, and renamed over the
final path with ``os.replace`` (atomic on POSIX within one file system).

Permissions follow the umask, as for a file made with ``open()``: ``tempfile.mkstemp`` / ``mkdtemp`` create
0600 / 0700 (private, for temporary files), which would make every output unreadable to colleagues on a shared
cluster; temporary files and folders that become outputs get ``umask_mode`` (0644 / 0755 under umask 022).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (``/proc/self/status``); elsewhere set
    and restored at once (``os.umask`` has no read-only form)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def umask_mode(directory: bool = False) -> int:
    """The mode ``open()`` (0666) or ``os.mkdir`` (0777) would give a new file or folder under the current umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def honour_umask(path: str | os.PathLike, directory: bool | None = None) -> Path:
    """Give a file or folder made by ``tempfile.mkstemp`` / ``mkdtemp`` (0600 / 0700) the mode the umask gives
    new files and folders; returns the path (so ``tmp = honour_umask(tempfile.mkdtemp(...))`` reads as one step)."""
    target = Path(path)
    os.chmod(target, umask_mode(target.is_dir() if directory is None else directory))
    return target


def temp_file(folder: str | os.PathLike, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """``tempfile.mkstemp`` in ``folder`` with the umask's mode instead of 0600: (open descriptor, path)."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, umask_mode())
    except BaseException:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise
    return fd, Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error it is removed.

    The file ends with the umask's mode whatever the writer did with the temporary path: some replace it with a
    file of their own (safetensors' is 0600)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(final.parent, prefix=f".{final.name}.")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), umask_mode())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)


def write_parquet(path: str | os.PathLike, table) -> None:
    """Write a pyarrow Table or a polars DataFrame to parquet atomically."""
    import pyarrow.parquet as pq

    if hasattr(table, "to_arrow"):
        table = table.to_arrow()
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


METADATA_KEY = "fomoflux"


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors, atomically and byte-reproducibly.

    The safetensors writer emits header metadata in hash-map order, which differs between processes; so the
    metadata is stored as one key holding sorted JSON, and the same tensors and metadata give the same bytes.
    """
    from safetensors.torch import save_file

    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    header = {METADATA_KEY: json.dumps(metadata or {}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata=header)


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata written by :func:`write_safetensors` (plain header metadata for files written elsewhere)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata() or {})
    if set(header) == {METADATA_KEY}:
        return json.loads(header[METADATA_KEY])
    return header
