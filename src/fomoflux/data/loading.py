"""Reading samples from webdataset shards by byte offset: decoding, the evaluation transform, and on-disk sources.

The manifest records, per sample, the shard and the byte offset and length of its image, ``.txt`` and ``.json``
members (``fomoflux.data.shards.MANIFEST_SCHEMA``), so one sample is one ``os.pread`` of its image bytes: no tar is
walked, nothing else of the shard is read, and a job holds only the rows it uses.

- :class:`ShardReader` reads members by offset through a small cache of open file descriptors. ``pread`` does not
  move a file position, so the descriptors are safe to share with forked DataLoader workers.
- :class:`DiskSamples` is a selection of manifest rows kept as a few numpy arrays (about 100 bytes per sample, no
  captions and no pixels in memory); images and captions are read when a batch asks for them. It serves the same
  read interface as an in-memory :class:`~fomoflux.data.sampleset.SampleSet`, so training, evaluation and the
  methods that pass over data (EWC's Fisher) take either.
- :func:`load_samples` decodes rows into a SampleSet (small selections and tests).

Images are stored in their original encoding and size (JPEG passes through sharding untouched), so every read ends
in a transform to the model's resolution: :func:`eval_transform` is open_clip's test transform (shorter side to
the size, bicubic, then a centre crop); the training transform (a seeded RandomResizedCrop) is in
``fomoflux.train.data``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from fomoflux.data.sampleset import SampleSet
from fomoflux.data.shards import jpeg_frame_size
from fomoflux.errors import DataError

if TYPE_CHECKING:
    import polars as pl

# The manifest columns an on-disk source needs (the offsets are written by fomoflux.data.shards since DATA 2).
READ_COLUMNS = ("dataset", "split", "index", "shard", "class_id", "image_format", "image_offset", "image_length",
                "txt_offset", "txt_length", "json_offset", "json_length")
REQUIRED_COLUMNS = READ_COLUMNS
_FORMATS = {"png": ("PNG",), "jpg": ("JPEG",), "jpeg": ("JPEG",), "webp": ("WEBP",)}


def decode_image(data: bytes, image_format: str | None = None, *, min_side: int | None = None) -> Image.Image:
    """Encoded image bytes -> an RGB PIL image.

    ``image_format`` (a member extension: png, jpg, webp) restricts PIL's format probing to that one decoder.
    ``min_side``: a JPEG whose shorter side is at least twice that is decoded at a reduced DCT scale (libjpeg's
    1/2, 1/4, 1/8) that keeps its shorter side >= ``min_side``: 2-4x cheaper than a full decode followed by a
    downscale, and the transform that follows resizes anyway. Raises ValueError / OSError for bad bytes.
    """
    formats = _FORMATS.get(image_format or "", None)
    image = Image.open(io.BytesIO(data), formats=formats)
    if min_side is not None and image.format == "JPEG" and min(image.size) >= 2 * min_side:
        scale = min(image.size) / min_side
        image.draft("RGB", (int(image.size[0] / scale) + 1, int(image.size[1] / scale) + 1))
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


def eval_transform(image: Image.Image, size: int) -> np.ndarray:
    """open_clip's test transform: shorter side to ``size`` (bicubic), centre crop ``size`` x ``size``; -> uint8
    [size, size, 3]. An image that already is ``size`` x ``size`` passes unchanged."""
    width, height = image.size
    if (width, height) != (size, size):
        scale = size / min(width, height)
        # torchvision's Resize(size) rounds the longer side down (int), as here.
        new = (size, int(height * scale)) if width <= height else (int(width * scale), size)
        new = (max(new[0], size), max(new[1], size))
        if new != (width, height):
            image = image.resize(new, Image.Resampling.BICUBIC)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        if new != (size, size):
            image = image.crop((left, top, left + size, top + size))
    return np.asarray(image)


def to_chw(pixels: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, 3] arrays -> one uint8 tensor [N, 3, H, W]."""
    if not len(pixels):
        return torch.zeros((0, 3, 1, 1), dtype=torch.uint8)
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()


class ShardReader:
    """Reads byte ranges of shard files through a bounded cache of open descriptors (closed least-recent first)."""

    def __init__(self, root: Path, max_open: int = 64) -> None:
        self.root = Path(root)
        self.max_open = max_open
        self._fds: dict[str, int] = {}
        self._pid = os.getpid()

    def read(self, shard: str, offset: int, length: int) -> bytes:
        if self._pid != os.getpid():
            # A forked worker inherits the parent's descriptors; pread is safe on them, but the cache's
            # eviction must not close what the parent still uses: start a cache of our own.
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.pop(shard, None)
        if fd is None:
            path = self.root / shard
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise DataError(f"missing shard {path}") from None
            if len(self._fds) >= self.max_open:
                os.close(self._fds.pop(next(iter(self._fds))))
        self._fds[shard] = fd  # most recently used last
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise DataError(f"shard {self.root / shard} is truncated: {length} bytes at offset {offset} wanted, "
                            f"{len(data)} read")
        return data

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __getstate__(self) -> dict:
        # A pickled reader (spawned workers) opens its own descriptors.
        return {"root": self.root, "max_open": self.max_open, "_fds": {}, "_pid": -1}

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass


class DiskSamples:
    """Manifest rows of samples on disk, read lazily (module docstring). Indices are positions in the selection."""

    def __init__(self, data_root: Path, rows: pl.DataFrame) -> None:
        absent = [c for c in READ_COLUMNS if c not in rows.columns]
        if absent:
            raise DataError(f"manifest rows lack column(s) {absent}: the dataset was sharded by an older fomoflux "
                            "(before byte offsets were recorded); rerun its shard_dataset job")
        shards, codes = np.unique(rows["shard"].to_numpy().astype(str), return_inverse=True)
        self.data_root = Path(data_root)
        self.shards: list[str] = shards.tolist()
        self.shard_index = codes.astype(np.int32)
        self.formats: list[str] = sorted(set(rows["image_format"].to_list()))
        self.format_index = np.searchsorted(np.array(self.formats), rows["image_format"].to_numpy().astype(str))
        self.format_index = self.format_index.astype(np.int8)
        self.offsets = np.stack([rows[c].to_numpy().astype(np.int64) for c in READ_COLUMNS[6:]], axis=1)
        self.class_ids = torch.from_numpy(rows["class_id"].to_numpy().astype(np.int64))
        # Provenance for error messages: dataset / split per row are few distinct strings.
        self._names = rows.select("dataset", "split", "index")
        self._reader = ShardReader(self.data_root)

    def __len__(self) -> int:
        return int(self.shard_index.shape[0])

    def key(self, i: int) -> str:
        dataset, split, index = self._names.row(int(i))
        return f"{dataset}/{split}/{index}"

    @property
    def keys(self) -> list[str]:
        return [f"{d}/{s}/{i}" for d, s, i in self._names.iter_rows()]

    def _member(self, i: int, column: int) -> bytes:
        shard = self.shards[self.shard_index[i]]
        return self._reader.read(shard, int(self.offsets[i, 2 * column]), int(self.offsets[i, 2 * column + 1]))

    def read_image(self, i: int, min_side: int | None = None) -> Image.Image:
        """Sample ``i``'s image, RGB, at its stored size (or a reduced JPEG scale keeping ``min_side``)."""
        return self._decode(i, self._member(i, 0), min_side)

    def _decode(self, i: int, data: bytes, min_side: int | None) -> Image.Image:
        try:
            return decode_image(data, self.formats[self.format_index[i]], min_side=min_side)
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for bad data
            raise self._undecodable(i, exc) from exc

    def _undecodable(self, i: int, exc: Exception) -> DataError:
        return DataError(f"shard {self.data_root / self.shards[self.shard_index[i]]}: sample {self.key(i)!r} has an "
                         f"undecodable image ({exc})")

    def read_pixels(self, i: int, min_side: int | None = None) -> torch.Tensor:
        """Sample ``i``'s image as uint8 [3, H, W] (RGB), the pixels ``read_image`` gives. A JPEG that needs no
        reduced-scale decode is decoded by torchvision's libjpeg-turbo decoder straight into a tensor: 1.4x faster
        than PIL's decode plus its copy into an array (benchmarks/bench_scale.py), pixel for pixel the same."""
        data = self._member(i, 0)
        if self.formats[self.format_index[i]] in ("jpg", "jpeg"):
            try:
                width, height = jpeg_frame_size(data, check_complete=False)
                if min_side is None or min(width, height) < 2 * min_side:
                    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            except (ValueError, RuntimeError) as exc:  # a broken header; libjpeg's errors surface as RuntimeError
                raise self._undecodable(i, exc) from exc
        # PIL, from the bytes already read: PNGs, and JPEGs at a reduced DCT scale.
        return torch.from_numpy(np.array(self._decode(i, data, min_side))).permute(2, 0, 1)

    def read_captions(self, i: int) -> tuple[str, ...]:
        return tuple(json.loads(self._member(i, 2))["captions"])

    def read_first_caption(self, i: int) -> str:
        return self._member(i, 1).decode("utf-8")

    def eval_images(self, indices: Sequence[int], size: int) -> torch.Tensor:
        return to_chw([eval_transform(self.read_image(i, min_side=size), size) for i in indices])

    def first_captions(self, indices: Sequence[int]) -> list[str]:
        return [self.read_first_caption(i) for i in indices]

    def select(self, indices: Sequence[int] | torch.Tensor) -> DiskSamples:
        picked = np.asarray(torch.as_tensor(indices, dtype=torch.long))
        out = object.__new__(DiskSamples)
        out.data_root, out.shards, out.formats = self.data_root, self.shards, self.formats
        out.shard_index, out.format_index = self.shard_index[picked], self.format_index[picked]
        out.offsets, out.class_ids = self.offsets[picked], self.class_ids[torch.as_tensor(picked)]
        out._names = self._names[picked.tolist()] if len(picked) else self._names.clear()
        out._reader = ShardReader(self.data_root)
        return out

    @property
    def captions(self) -> list[tuple[str, ...]]:
        """Every sample's first caption (evaluation needs them all at once); reads one member per sample."""
        return [(c,) for c in self.first_captions(range(len(self)))]


def disk_samples(data_root: Path, rows: pl.DataFrame) -> DiskSamples | None:
    """The rows as a DiskSamples, or None for no rows."""
    return DiskSamples(data_root, rows) if rows.height else None


def load_samples(data_root: Path, rows: pl.DataFrame, image_size: int) -> SampleSet:
    """Decode exactly ``rows`` (manifest columns) into a SampleSet at ``image_size`` (evaluation transform), in the
    order of ``rows``, with every caption of each sample.

    ``data_root`` is the directory the rows' ``shard`` paths are relative to. A missing or truncated shard or an
    image that does not decode is a DataError naming the shard file (and the sample key).
    """
    source = DiskSamples(data_root, rows)
    n = len(source)
    images = source.eval_images(range(n), image_size) if n else torch.zeros((0, 3, image_size, image_size),
                                                                                dtype=torch.uint8)
    captions = [source.read_captions(i) for i in range(n)]
    return SampleSet(images=images, captions=captions, class_ids=source.class_ids.clone(), keys=source.keys)
