"""Writing datasets as webdataset tar shards plus one parquet manifest.

Layout of one dataset directory (``<data_root>/<dataset>/``)::

    train-000000.tar  train-000001.tar  ...  test-000000.tar  manifest.parquet

Each sample is three plain ustar members sharing a key, in this order: ``<key>.jpg`` or ``<key>.png`` (the image,
in the format it is stored in), ``<key>.txt`` (the first caption) and ``<key>.json`` (dataset, split, index, class_id,
class_name, captions). So the shards are plain webdataset: ``wds.WebDataset(url).decode("pil")`` and open_clip's
loader (``jpg;png`` + ``txt``) read them. The manifest has one row per sample (``MANIFEST_SCHEMA``) with the stored
image's format and size and the byte offset and length of every member's data in its shard file: a reader seeks
straight to a member, and the catalog and the loader never list a tar.

Stored images (``store_image``) keep the source's encoded bytes where they can: a JPEG or PNG whose shorter side is
at most ``max_image_side`` is stored as it is (checked to be complete, never decoded in full). Larger images are
decoded, their shorter side resized to the bound (bicubic, aspect kept) and stored as JPEG; other formats are
re-encoded, as JPEG when the source is lossy (lossy WebP), else as PNG (BMP, GIF, TIFF, lossless WebP, and the mini
benchmark's generated images). Nothing is cropped: the loader resizes and crops at read time.

Writing runs in ``workers`` processes: the main process reads the samples in order (an importer streams them from
its archive in one pass; samples of a folder carry only their file's path) and hands shard-sized chunks to the
workers, which read the files, check, encode and write whole shard files and return their manifest rows; a split
whose samples a worker can draw itself (``DrawnSplit``, the mini benchmark) is handed out as index ranges instead.
At most ``workers + 1`` chunks are in flight, so memory is bounded by a few shards of source bytes, and results are
put together in shard order: the same samples give byte-identical shards and manifest whatever the number of workers
(tar headers carry mtime 0 and no user names, see ``_ShardFile``).

The directory appears atomically: everything is written into a temporary sibling and renamed onto the final path
at the end, so a killed or failing job never leaves a directory that looks complete.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import tarfile
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fomoflux.errors import ConfigError, DataError
from fomoflux.io import honour_umask
from fomoflux.progress import progress

if TYPE_CHECKING:
    import polars as pl

    from fomoflux.data.registry import DatasetSpec

LOG = logging.getLogger("fomoflux.data")
MANIFEST_NAME = "manifest.parquet"
MANIFEST_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("index", pa.int64()),
        ("key", pa.string()),
        ("shard", pa.string()),  # relative to the data root (the dataset directory's parent)
        ("class_id", pa.int32()),
        ("class_name", pa.string()),  # null for samples without a class
        ("caption", pa.string()),  # the first (evaluation) caption
        ("captions", pa.list_(pa.string())),
        ("image_format", pa.string()),  # the image member's extension: "jpg" or "png"
        ("width", pa.int32()),  # the stored image's size, in pixels
        ("height", pa.int32()),
        # Where each member's data lies in the shard file: seek(offset), read(length) gives exactly its bytes.
        ("image_offset", pa.int64()),
        ("image_length", pa.int64()),
        ("txt_offset", pa.int64()),
        ("txt_length", pa.int64()),
        ("json_offset", pa.int64()),
        ("json_length", pa.int64()),
    ]
)
# Shorter-side bound of stored images: twice the 224 px the paper's models take, so the training-time
# RandomResizedCrop (scale down to 0.08-0.9 of the area) still crops from real pixels rather than upsampling, and
# most web and release images (typically 300-500 px) pass through unchanged; a 4k photo shrinks ~30x in bytes.
MAX_IMAGE_SIDE = 512
# JPEG quality of re-encoded (resized or lossy-source) images. On sklearn's two sample photos at 512 px, 95 gives
# a PSNR of 38-40 dB (90: 35-39), far below what the resize to the model's 224 px discards, at half the bytes of
# quality 100 and a quarter of a PNG's; the few images it applies to are not worth a visible loss to save more.
JPEG_QUALITY = 95
BAD_SAMPLE_POLICIES = ("error", "skip")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass
class RawSample:
    """One sample before it is written.

    ``image``: a PIL image (generated data), the source file's encoded bytes, or the path of the source file: then
    the process that writes the shard reads it, so a folder of images is sharded without passing its bytes between
    processes. Stored as ``store_image`` says.
    ``origin``: where the sample came from (e.g. ``archive X: member Y``), for error messages and the skip log.
    """

    index: int
    image: Image.Image | bytes | Path
    captions: tuple[str, ...]
    class_id: int = -1
    class_name: str | None = None
    origin: str = ""


@dataclass(frozen=True)
class DrawnSplit:
    """A split that any process can draw a part of: ``count`` samples, those at positions ``[start, stop)`` being
    ``draw(start, stop)``. ``draw`` must be picklable (a module-level function or a ``functools.partial`` of one) and
    a pure function of its arguments, so that a worker process draws exactly the shard it writes."""

    count: int
    draw: Callable[[int, int], Iterable[RawSample]]

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[RawSample]:
        return iter(self.draw(0, self.count))


@dataclass
class SkipLog:
    """The samples left out (``on_bad_sample="skip"``): each as ``(origin, reason)``, and each logged as a warning."""

    items: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.items)

    def add(self, origin: str, reason: str) -> None:
        """Remember one skipped sample and log it at WARNING on the ``fomoflux.data`` logger."""
        self.items.append((origin, reason))
        LOG.warning("skipped %s: %s", origin, reason)


class StoredImage(NamedTuple):
    """An image as a shard stores it: member extension (``jpg`` / ``png``), encoded bytes, size in pixels."""

    format: str
    data: bytes
    width: int
    height: int


def tar_key(dataset: str, split: str, index: int) -> str:
    """The webdataset key of a sample. webdataset cuts a member name at the first '.' of its base name to find the
    extension, so characters other than letters, digits, '_' and '-' are replaced in the dataset part."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', dataset)}/{split}/{index:08d}"


def shard_name(split: str, k: int) -> str:
    return f"{split}-{k:06d}.tar"


# --- stored images ----------------------------------------------------------------------------------------------


def store_image(image: Image.Image | bytes, max_side: int = MAX_IMAGE_SIDE) -> StoredImage:
    """How a shard stores ``image`` (a PIL image or a source file's bytes); see the module docstring.

    Raises DataError, without a file name (the caller knows it), when the bytes are not a complete, readable image.
    """
    if isinstance(image, Image.Image):
        return _encode(image, "jpg" if min(image.size) > max_side else "png", max_side)
    data = bytes(image)
    if data[:3] == _JPEG_SOI:
        # The common case (web and release photos, cameras' multi-picture MPO files too) without PIL: the segment
        # walk that checks the file is complete also finds its size, at half the cost of Image.open's header parse.
        try:
            width, height = jpeg_frame_size(data)
        except ValueError as exc:
            raise DataError(f"not a readable image (JPEG: {exc})") from exc
        if min(width, height) <= max_side:
            return StoredImage("jpg", data, width, height)
    try:
        source = Image.open(io.BytesIO(data))
        if min(source.size) > max_side:
            return _encode(source, "jpg", max_side)
        if source.format == "PNG":
            source.verify()  # every chunk's CRC up to IEND: a cut or damaged file fails, no pixel is inflated
            return StoredImage("png", data, *source.size)
        lossy = source.format == "WEBP" and not _lossless_webp(data)
        return _encode(source, "jpg" if lossy else "png", max_side)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for a bad image
        raise DataError(f"not a readable image ({exc.__class__.__name__}: {exc})") from exc


def _encode(image: Image.Image, image_format: str, max_side: int) -> StoredImage:
    """``image`` decoded (RGB or L), its shorter side resized to ``max_side`` if longer, encoded as ``image_format``."""
    width, height = image.size
    shorter = min(width, height)
    size = (round(width * max_side / shorter), round(height * max_side / shorter)) if shorter > max_side else None
    if size is not None:
        # A JPEG decodes at the largest DCT scale (1/2, 1/4, 1/8) that still covers ``size``: 2-8x less work.
        image.draft(image.mode, size)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # what every reader converts to anyway (alpha dropped, palettes expanded)
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    if image_format == "jpg":
        image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buf, format="PNG")
    return StoredImage(image_format, buf.getvalue(), *image.size)


# A marker: 0xFF, optional 0xFF fill bytes, then a code other than 0x00 (0xFF00 is a stuffed 0xFF data byte).
_JPEG_MARKER = re.compile(rb"\xff+([^\x00\xff])")
# The end of a scan's entropy-coded data: the first marker that is not a restart marker RST0-7 (0xD0-0xD7).
# Spelled with a literal first byte, which lets the regex engine skip to each 0xFF (10x faster than "\xff+").
_JPEG_SCAN_END = re.compile(rb"\xff\xff*[^\x00\xd0-\xd7\xff]")
_JPEG_SOI = b"\xff\xd8\xff"
# Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic): all but DHT (C4), the
# reserved JPG (C8) and DAC (CC) in C0-CF. Their segment holds precision, height and width.
_JPEG_SOF_CODES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_frame_size(data: bytes, check_complete: bool = True) -> tuple[int, int]:
    """The (width, height) of a JPEG's frame; raises ValueError unless its segments chain from SOI to an EOI marker
    (with ``check_complete=False``: to the frame header, where the walk then stops: a few microseconds).

    The walk follows each segment's length and each scan's entropy-coded data to the marker after it, so it reads
    all the data: a file cut off anywhere (an interrupted download or copy) has no EOI where the chain ends, a
    damaged length breaks the chain. It costs ~35 us for a 300 px photo, a tenth of libjpeg's 1/8-scale decode
    (PIL's ``draft``, ~380 us: it still Huffman-decodes every coefficient), which would catch little more, as
    libjpeg only warns about corrupt entropy-coded data (benchmarks/bench_sharding.py).
    """
    pos, end = 2, len(data)  # after SOI
    size = None
    while True:
        marker = _JPEG_MARKER.match(data, pos)
        if marker is None:
            raise ValueError("JPEG is cut off (no end-of-image marker)" if pos >= end
                             else f"JPEG has no marker where one must be (byte {pos})")
        code, pos = marker.group(1)[0], marker.end()
        if code == 0xD9:  # EOI; anything after it (camera trailers) is ignored by every decoder
            if size is None:
                raise ValueError("JPEG has no frame header (SOF marker)")
            return size
        if 0xD0 <= code <= 0xD7 or code == 0x01:  # RSTn, TEM: markers without a length
            continue
        length = int.from_bytes(data[pos:pos + 2], "big")
        if pos + 2 > end or pos + length > end:
            raise ValueError("JPEG is cut off (a segment runs past the end of the file)")
        if length < 2:
            raise ValueError(f"JPEG has a segment of impossible length {length} (byte {pos})")
        if code in _JPEG_SOF_CODES and size is None:
            if length < 8:
                raise ValueError(f"JPEG frame header is too short (byte {pos})")
            height, width = int.from_bytes(data[pos + 3:pos + 5], "big"), int.from_bytes(data[pos + 5:pos + 7], "big")
            if width == 0 or height == 0:  # height 0 means "given later by a DNL marker": no reader here handles it
                raise ValueError(f"JPEG frame header gives a size of {width}x{height}")
            size = (width, height)
            if not check_complete:
                return size
        pos += length
        if code == 0xDA:  # SOS: the scan's entropy-coded data follows the header
            scan_end = _JPEG_SCAN_END.search(data, pos)
            if scan_end is None:
                raise ValueError("JPEG is cut off (in the middle of a scan)")
            pos = scan_end.start()


def _lossless_webp(data: bytes) -> bool:
    """Whether a WebP file's image is a lossless (VP8L) bitstream rather than a lossy (VP8) one."""
    pos = 12  # after "RIFF", the file size and "WEBP": a list of chunks (fourcc, little-endian size, data)
    while pos + 8 <= len(data):
        fourcc, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if fourcc in (b"VP8 ", b"VP8L"):
            return fourcc == b"VP8L"
        pos += 8 + size + (size & 1)
    return False


# --- writing shards ---------------------------------------------------------------------------------------------


class _ManifestRows:
    """Column-wise accumulation of manifest rows (cheaper than a list of dicts for 10^5 rows)."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {name: [] for name in MANIFEST_SCHEMA.names}

    def add(self, **row: object) -> None:
        for name, values in self.columns.items():
            values.append(row[name])

    def extend(self, columns: Mapping[str, list]) -> None:
        for name, values in self.columns.items():
            values.extend(columns[name])

    def table(self) -> pa.Table:
        return pa.table(self.columns, schema=MANIFEST_SCHEMA)


@dataclass
class _ShardJob:
    """One shard to write: its samples (a list, or positions ``start:stop`` of a DrawnSplit) and where to."""

    path: Path  # the shard file, in the temporary folder
    shard: str  # its name in the manifest (relative to the data root)
    dataset: str
    split: str
    samples: list[RawSample] | DrawnSplit
    start: int
    stop: int
    max_image_side: int
    on_bad_sample: str


class _ShardResult(NamedTuple):
    split: str
    columns: dict[str, list]  # the manifest rows of the shard's samples, in order
    skipped: list[tuple[str, str]]  # (origin, reason) of each sample left out


def _check_sample(sample: RawSample, where: str) -> None:
    if not isinstance(sample.index, int) or sample.index < 0:
        raise DataError(f"{where}: sample index must be a non-negative int, got {sample.index!r}")
    if not sample.captions or not all(isinstance(c, str) and c for c in sample.captions):
        raise DataError(f"{where}: sample {sample.index} needs at least one non-empty caption, got {sample.captions!r}")
    if (sample.class_id >= 0) != (sample.class_name is not None):
        raise DataError(f"{where}: sample {sample.index} has class_id {sample.class_id} but class_name "
                        f"{sample.class_name!r} (both or neither)")


class _ShardFile:
    """A tar shard written member by member, recording where each member's data lies.

    Each member is a regular file with mode 0644, uid/gid 0, mtime 0 and no user names, so the same samples give
    the same bytes on any machine. The 512-byte ustar header is built here rather than by ``tarfile.TarInfo``,
    whose general-purpose ``tobuf`` costs ~40 us a member, a quarter of the time of sharding a 25 KB JPEG (3
    members) when the bytes only have to be copied (benchmarks/bench_scale.py). The headers are byte-identical to
    tarfile's (tests/unit/test_data_shards.py), and a name that does not fit ustar's 100-byte field (never a
    ``tar_key``, which is ASCII and short) falls back to tarfile.
    """

    def __init__(self, handle: io.BufferedWriter) -> None:
        self.handle = handle
        self.offset = 0

    def add(self, name: str, data: bytes) -> tuple[int, int]:
        """Append one member; returns the offset of its data in the file and its length."""
        header = _ustar_header(name, len(data))
        padding = -len(data) % tarfile.BLOCKSIZE
        self.handle.write(header)
        self.handle.write(data)
        self.handle.write(_ZERO_BLOCK[:padding])
        start = self.offset + len(header)
        self.offset = start + len(data) + padding
        return start, len(data)

    def close(self) -> None:
        """The end-of-archive marker (two zero blocks), then zeros up to a whole tar record, as tarfile writes."""
        self.handle.write(_ZERO_BLOCK * 2)
        self.offset += 2 * tarfile.BLOCKSIZE
        self.handle.write(bytes(-self.offset % tarfile.RECORDSIZE))


_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
# The fixed fields of a regular-file ustar header: mode 0644, uid 0, gid 0 (offsets 100-123), mtime 0 (136), type
# '0' (156), magic "ustar\0" and version "00" (257); the name (0), the size (124) and the checksum (148) go in per file.
_USTAR_TEMPLATE = bytearray(tarfile.BLOCKSIZE)
_USTAR_TEMPLATE[100:124] = b"0000644\x000000000\x000000000\x00"
_USTAR_TEMPLATE[136:148] = b"00000000000\x00"
_USTAR_TEMPLATE[156:157] = b"0"
_USTAR_TEMPLATE[257:265] = b"ustar\x0000"


def _ustar_header(name: str, size: int) -> bytes:
    encoded = name.encode("utf-8")
    if len(encoded) > 100 or size >= 8 ** 11:
        info = tarfile.TarInfo(name)
        info.size = size
        return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    header = _USTAR_TEMPLATE.copy()
    header[:len(encoded)] = encoded
    header[124:136] = b"%011o\x00" % size
    # The checksum is the byte sum of the header with its own field read as eight spaces (POSIX ustar).
    header[148:156] = b"%06o\x00 " % (sum(header) + 8 * ord(" "))
    return bytes(header)


def _source(sample: RawSample, where: str, origin: str) -> Image.Image | bytes:
    """The sample's image, reading it when it is a path (in the process that writes the shard)."""
    if not isinstance(sample.image, Path):
        return sample.image
    try:
        return sample.image.read_bytes()
    except OSError as exc:  # a source that vanished or cannot be read is not a bad image: never skipped
        raise DataError(f"{where}: {origin}: cannot read {sample.image} ({exc.strerror or exc})") from None


def _write_shard(job: _ShardJob) -> _ShardResult:
    """Write one shard file (run in a worker process, or in the main one); returns its manifest rows and skips."""
    samples = job.samples.draw(job.start, job.stop) if isinstance(job.samples, DrawnSplit) else job.samples
    where = f"dataset {job.dataset!r} split {job.split!r}"
    rows, skipped = _ManifestRows(), []
    with open(job.path, "wb") as handle:
        tar = _ShardFile(handle)
        for sample in samples:
            _check_sample(sample, where)
            origin = sample.origin or f"sample {sample.index}"
            source = _source(sample, where, origin)
            try:
                image = store_image(source, job.max_image_side)
            except DataError as exc:
                if job.on_bad_sample == "error":
                    raise DataError(f"{where}: {origin}: {exc}") from None
                skipped.append((origin, f"{where}: {exc}"))
                continue
            key = tar_key(job.dataset, job.split, sample.index)
            meta = {"dataset": job.dataset, "split": job.split, "index": sample.index,
                    "class_id": sample.class_id, "class_name": sample.class_name,
                    "captions": list(sample.captions)}
            image_span = tar.add(f"{key}.{image.format}", image.data)
            txt_span = tar.add(f"{key}.txt", sample.captions[0].encode("utf-8"))
            json_span = tar.add(f"{key}.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
            rows.add(dataset=job.dataset, split=job.split, index=sample.index, key=key, shard=job.shard,
                     class_id=sample.class_id, class_name=sample.class_name, caption=sample.captions[0],
                     captions=list(sample.captions), image_format=image.format, width=image.width,
                     height=image.height, image_offset=image_span[0], image_length=image_span[1],
                     txt_offset=txt_span[0], txt_length=txt_span[1], json_offset=json_span[0],
                     json_length=json_span[1])
        tar.close()
        handle.flush()
        os.fsync(handle.fileno())
    return _ShardResult(job.split, rows.columns, skipped)


def _shard_jobs(samples_by_split: Mapping[str, Iterable[RawSample]], *, dataset: str, tmp_dir: Path, rel_dir: str,
                shard_size: int, max_image_side: int, on_bad_sample: str) -> Iterator[_ShardJob]:
    """The shards of every split, in order; a streamed split is read here, one shard's samples at a time."""
    for split, samples in samples_by_split.items():
        if isinstance(samples, DrawnSplit):
            parts = ((samples, start, min(start + shard_size, samples.count))
                     for start in range(0, samples.count, shard_size))
        else:
            parts = ((chunk, 0, len(chunk)) for chunk in _batches(samples, shard_size))
        for k, (part, start, stop) in enumerate(parts):
            name = shard_name(split, k)
            yield _ShardJob(tmp_dir / name, f"{rel_dir}/{name}", dataset, split, part, start, stop, max_image_side,
                            on_bad_sample)


def _batches(samples: Iterable[RawSample], size: int) -> Iterator[list[RawSample]]:
    """Consecutive lists of ``size`` samples (the last one shorter), read from ``samples`` one list at a time."""
    iterator = iter(samples)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _in_order(function: Callable, jobs: Iterable, workers: int) -> Iterator:
    """``map(function, jobs)`` over ``workers`` processes, results in job order, with at most ``workers + 1`` jobs
    submitted and not yet collected: memory stays bounded by those, however many jobs there are. Closing the
    iterator (or an error) cancels what has not started and waits for what has, so no worker writes afterwards."""
    if workers <= 1:
        yield from map(function, jobs)
        return
    # fork, not spawn / forkserver: those re-import the __main__ module in every worker, and under Snakemake's
    # script: directive that module is the job script itself.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        pending: deque = deque()
        try:
            for job in jobs:
                if len(pending) > workers:
                    yield pending.popleft().result()
                pending.append(pool.submit(function, job))
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _install(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished temporary directory onto ``out_dir`` (rename onto an empty directory is allowed)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise DataError(f"{out_dir} exists and is not empty (pass overwrite=True to replace it)")
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, old / "d")
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _sample_count(samples_by_split: Mapping[str, Iterable[RawSample]]) -> int | None:
    """How many samples there are, when every split knows (for the progress bar)."""
    if all(hasattr(samples, "__len__") for samples in samples_by_split.values()):
        return sum(len(samples) for samples in samples_by_split.values())  # type: ignore[arg-type]
    return None


def write_dataset(samples_by_split: Mapping[str, Iterable[RawSample]], *, dataset: str, out_dir: Path,
                  shard_size: int = 2000, overwrite: bool = False, workers: int = 1,
                  max_image_side: int = MAX_IMAGE_SIDE, on_bad_sample: str = "error",
                  skipped: SkipLog | None = None) -> Path:
    """Write every split to ``out_dir`` as tar shards of at most ``shard_size`` samples plus ``manifest.parquet``;
    returns ``out_dir``. Samples are consumed lazily (a generator is fine) or drawn by the workers (a DrawnSplit).

    ``workers`` processes write the shards (see the module docstring); images are stored as ``store_image`` says,
    with ``max_image_side``. An image that is not complete and readable is a DataError naming the dataset, split and
    the sample's origin with ``on_bad_sample="error"``; with ``"skip"`` it is left out and recorded in ``skipped``
    (and logged). If anything raises, nothing appears under ``out_dir``.
    """
    out_dir = Path(out_dir)
    if shard_size < 1:
        raise ConfigError(f"shard_size must be at least 1, got {shard_size}")
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive int, got {workers!r}")
    if not isinstance(max_image_side, int) or max_image_side < 1:
        raise ConfigError(f"max_image_side must be a positive int, got {max_image_side!r}")
    if on_bad_sample not in BAD_SAMPLE_POLICIES:
        raise ConfigError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
    for split in samples_by_split:
        if not _SPLIT_NAME.match(split):
            raise ConfigError(f"dataset {dataset!r}: split name {split!r} must be letters, digits and '_' only")
    # Fail before the (possibly long) generation rather than after it.
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"{out_dir} exists and is not empty (pass overwrite=True to replace it)")
    skipped = skipped if skipped is not None else SkipLog()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp makes 0700; the folder becomes the output, so it gets the umask's mode (fomoflux.io.honour_umask).
    tmp = honour_umask(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        jobs = _shard_jobs(samples_by_split, dataset=dataset, tmp_dir=tmp, rel_dir=out_dir.name,
                           shard_size=shard_size, max_image_side=max_image_side, on_bad_sample=on_bad_sample)
        rows = _ManifestRows()
        seen: dict[str, set[int]] = {split: set() for split in samples_by_split}
        bar = progress(_sample_count(samples_by_split), f"shard {dataset}", unit="img", interval_s=30)
        left_out = dict.fromkeys(samples_by_split, 0)
        with contextlib.closing(_in_order(_write_shard, jobs, workers)) as results, bar:
            for result in results:
                for index in result.columns["index"]:
                    if index in seen[result.split]:
                        raise DataError(f"dataset {dataset!r} split {result.split!r}: duplicate sample index {index}")
                    seen[result.split].add(index)
                for origin, reason in result.skipped:
                    skipped.add(origin, reason)
                left_out[result.split] += len(result.skipped)
                rows.extend(result.columns)
                bar.advance(len(result.columns["index"]) + len(result.skipped))
        for split, count in left_out.items():
            if count and not seen[split]:
                raise DataError(f"dataset {dataset!r} split {split!r}: all {count} samples were skipped (none has a "
                                f"readable image)")
        with open(tmp / MANIFEST_NAME, "wb") as handle:
            pq.write_table(rows.table(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        _install(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_manifest(dataset_dir: Path) -> pl.DataFrame:
    """The manifest of a written dataset directory as a polars DataFrame."""
    import polars as pl

    path = Path(dataset_dir) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"missing manifest {path}")
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a corrupt file
        raise DataError(f"cannot read manifest {path}: {exc}") from exc


def build_dataset(spec: DatasetSpec, out_dir: Path, *, seed: int, image_size: int, scale: float = 1.0,
                  archive: Path | None = None, shard_size: int = 2000, overwrite: bool = False,
                  on_bad_sample: str = "error", skipped: SkipLog | None = None,
                  max_image_side: int = MAX_IMAGE_SIDE, workers: int = 1) -> Path:
    """Materialise one registry dataset as shards, by its source:

    - ``generate``: drawn by the mini benchmark at ``image_size`` px (``seed``, ``scale``), by the workers;
    - ``download``: imported from its already-downloaded ``archive``; ``local``: from its folder or archive in place.
      Format ``imagefolder`` (``<split>/<class>/<image>``) or ``fomo_in_flux`` (the release's layout and annotations);
    - ``webdataset``: existing webdataset shards (a replay pool).

    Imported images keep their bytes, or are bounded by ``max_image_side`` (see ``store_image``); ``image_size`` and
    ``scale`` apply to generated data only. ``workers``: processes writing shards. ``on_bad_sample`` / ``skipped``:
    an image that does not decode is an error, or a skip counted in ``skipped``.
    """
    options = {"shard_size": shard_size, "overwrite": overwrite, "on_bad_sample": on_bad_sample,
               "max_image_side": max_image_side, "workers": workers}
    kind = spec.obtained_by
    if kind == "generate":
        from fomoflux.data.mini import generate_split

        splits = {split: generate_split(spec, split, seed, image_size, scale) for split in spec.splits}
        return write_dataset(splits, dataset=spec.name, out_dir=out_dir, skipped=skipped, **options)
    if kind == "webdataset":
        from fomoflux.data.pool import convert_webdataset_pool, expand_shards

        log = convert_webdataset_pool(expand_shards(spec.source["webdataset"]["urls"]), spec, out_dir, **options)
        _merge_skips(log, skipped)
        return Path(out_dir)
    source = spec.source[kind]
    if kind == "download":
        if archive is None:
            raise ConfigError(f"dataset {spec.name!r} is downloaded: build_dataset needs its archive")
        path = Path(archive)
    else:
        path = Path(source["path"])
        if not path.exists():
            raise DataError(f"dataset {spec.name!r}: local copy {path} does not exist")
    if source.get("format", "imagefolder") == "fomo_in_flux":
        from fomoflux.data.release import convert_release_dataset

        annotations = source.get("annotations")
        log = convert_release_dataset(path, spec, out_dir, annotations=Path(annotations) if annotations else None,
                                      **options)
        _merge_skips(log, skipped)
        return Path(out_dir)
    if path.is_dir():
        raise DataError(f"dataset {spec.name!r}: an imagefolder source must be an archive (.tar, .tar.gz, .zip), "
                        f"got the folder {path}")
    from fomoflux.data.archive import import_imagefolder

    splits = {split: import_imagefolder(path, spec, split) for split in spec.splits}
    return write_dataset(splits, dataset=spec.name, out_dir=out_dir, skipped=skipped, **options)


def _merge_skips(log: SkipLog | None, into: SkipLog | None) -> None:
    """Hand an importer's skips to the caller's SkipLog (already logged once, by the importer)."""
    if into is not None and log is not None:
        into.items.extend(log.items)
