"""Atomic file writes: a killed job never leaves a file under its final name that looks complete.

Everything is written to a temporary file in the destination's directory, flushed, and renamed over the
final path with ``os.replace`` (atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on error it is removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
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
