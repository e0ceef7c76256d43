"""Decoding selected manifest rows from their webdataset shards into a :class:`SampleSet`.

Rows come from the catalog (``select_rows``) and name their shard. Each shard that holds any wanted sample is read
once, front to back, and only the wanted ``.png`` members are decoded; everything else (captions, class ids) comes
from the rows themselves, so the ``.txt`` / ``.json`` members are skipped without being read.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from PIL import Image

from fomoflux.data.sampleset import SampleSet
from fomoflux.errors import DataError

if TYPE_CHECKING:
    import polars as pl

REQUIRED_COLUMNS = ("dataset", "split", "index", "key", "shard", "class_id", "captions")


def decode_png(data: bytes, image_size: int) -> np.ndarray:
    """PNG bytes -> uint8 [H, W, 3] at ``image_size`` (resized with bicubic filtering only if stored otherwise)."""
    # formats=("PNG",): skip PIL's probing of every registered format.
    with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
        image = image.convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
        return np.asarray(image)


_BLOCK = 512


def _octal(field: bytes) -> int:
    # Numeric tar fields are NUL/space-terminated octal; GNU base-256 (high bit set) only occurs for sizes of 8 GiB+.
    if field and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    return int(field.rstrip(b"\0 ").lstrip(b" ") or b"0", 8)


def iter_tar(path: Path) -> Iterator[tuple[str, memoryview]]:
    """(member name, data) of every regular file of an uncompressed tar, in order.

    A small reader instead of the ``tarfile`` module: parsing headers is the dominant cost of loading small images
    with ``tarfile`` (about half of the time at 32 px), and shards only use plain ustar headers. PAX and GNU
    long-name headers are understood too, so shards written by other tools still read.
    """
    # One read of the whole shard (a few MB at small image sizes); the yielded views keep it alive as needed.
    data = Path(path).read_bytes()
    if not data:
        raise DataError(f"shard {path} is empty")
    yield from _walk(path, memoryview(data), len(data))


def _walk(path: Path, view: memoryview, size: int) -> Iterator[tuple[str, memoryview]]:
    pos = 0
    long_name: str | None = None
    while pos + _BLOCK <= size:
        header = bytes(view[pos:pos + _BLOCK])
        if header == b"\0" * _BLOCK:
            return  # end-of-archive marker
        try:
            stored = _octal(header[148:156])
            length = _octal(header[124:136])
        except ValueError:
            raise DataError(f"shard {path}: corrupt tar header at byte {pos}") from None
        # The checksum counts its own field as spaces.
        if stored != sum(header[:148]) + 256 + sum(header[156:]):
            raise DataError(f"shard {path}: tar header checksum mismatch at byte {pos}")
        kind = header[156:157]
        start = pos + _BLOCK
        end = start + length
        if end > size:
            raise DataError(f"shard {path} is truncated (member at byte {pos} runs past the end)")
        pos = start + (length + _BLOCK - 1) // _BLOCK * _BLOCK
        if kind == b"L":  # GNU long name: the data is the next member's name
            long_name = bytes(view[start:end]).rstrip(b"\0").decode("utf-8")
            continue
        if kind == b"x":  # PAX extended header: take its path record
            for record in bytes(view[start:end]).decode("utf-8").splitlines():
                _, _, field = record.partition(" ")
                if field.startswith("path="):
                    long_name = field[5:]
            continue
        if kind not in (b"0", b"\0", b"7"):
            long_name = None
            continue  # directories, links, global headers: no sample data
        if long_name is not None:
            name, long_name = long_name, None
        else:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8")
            if header[257:262] == b"ustar" and header[345] != 0:
                name = header[345:500].split(b"\0", 1)[0].decode("utf-8") + "/" + name
        yield name, view[start:end]
    raise DataError(f"shard {path} is truncated (no end-of-archive marker)")


def _read_shard(path: Path, wanted: dict[str, list[int]], out: np.ndarray, image_size: int) -> None:
    """Decode the wanted keys of one shard into ``out`` at their row positions."""
    missing = set(wanted)
    try:
        for name, data in iter_tar(path):
            if not name.endswith(".png"):
                continue
            key = name[:-4]
            positions = wanted.get(key)
            if positions is None:
                continue
            try:
                pixels = decode_png(bytes(data), image_size)
            except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad data
                raise DataError(f"shard {path}: sample {key!r} has an undecodable PNG ({exc})") from exc
            for pos in positions:
                out[pos] = pixels
            missing.discard(key)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read shard {path} ({exc})") from exc
    if missing:
        some = ", ".join(sorted(missing)[:5])
        raise DataError(f"shard {path} lacks {len(missing)} sample(s) its manifest lists, e.g. {some}")


def load_samples(data_root: Path, rows: "pl.DataFrame", image_size: int) -> SampleSet:
    """Decode exactly ``rows`` (manifest columns) into a SampleSet, in the order of ``rows``.

    ``data_root`` is the directory the rows' ``shard`` paths are relative to. A missing shard, a shard that lacks a
    listed sample, or a PNG that does not decode is a DataError naming the shard file (and the sample key).
    """
    absent = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if absent:
        raise DataError(f"load_samples: rows lack manifest column(s) {absent}")
    data_root = Path(data_root)
    n = rows.height
    out = np.empty((n, image_size, image_size, 3), dtype=np.uint8)

    # shard -> key -> row positions (a key listed twice is decoded once and copied).
    by_shard: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for pos, (shard, key) in enumerate(zip(rows["shard"].to_list(), rows["key"].to_list())):
        by_shard[shard][key].append(pos)
    for shard, wanted in by_shard.items():
        path = data_root / shard
        if not path.is_file():
            raise DataError(f"missing shard {path} (listed for {len(wanted)} sample(s))")
        _read_shard(path, wanted, out, image_size)

    captions = [tuple(c) for c in rows["captions"].to_list()]
    keys = [f"{d}/{s}/{i}" for d, s, i in zip(rows["dataset"].to_list(), rows["split"].to_list(),
                                               rows["index"].to_list())]
    images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    class_ids = torch.from_numpy(rows["class_id"].to_numpy().astype(np.int64))
    return SampleSet(images=images, captions=captions, class_ids=class_ids, keys=keys)
