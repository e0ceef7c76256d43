"""Writing datasets as webdataset tar shards plus one parquet manifest.

Layout of one dataset directory (``<data_root>/<dataset>/``)::

    train-000000.tar  train-000001.tar  ...  test-000000.tar  manifest.parquet

Each sample is three tar members sharing a key: ``<key>.png`` (the image), ``<key>.txt`` (the first caption) and
``<key>.json`` (dataset, split, index, class_id, class_name, captions), so the shards are plain webdataset and read
with ``wds.WebDataset(url).decode("pil")``. The manifest has one row per sample (see ``MANIFEST_SCHEMA``); the
catalog and the loader work from it and never need to list a tar.

The directory appears atomically: everything is written into a temporary sibling and renamed onto the final path
at the end, so a killed or failing job never leaves a directory that looks complete.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps
from tqdm import tqdm

from fomoflux.errors import ConfigError, DataError

if TYPE_CHECKING:
    import polars as pl

    from fomoflux.data.registry import DatasetSpec

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
    ]
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass
class RawSample:
    """One sample before it is written: ``image`` is a PIL image or already-encoded PNG bytes."""

    index: int
    image: Image.Image | bytes
    captions: tuple[str, ...]
    class_id: int = -1
    class_name: str | None = None


def tar_key(dataset: str, split: str, index: int) -> str:
    """The webdataset key of a sample. webdataset cuts a member name at the first '.' of its base name to find the
    extension, so characters other than letters, digits, '_' and '-' are replaced in the dataset part."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', dataset)}/{split}/{index:08d}"


def shard_name(split: str, k: int) -> str:
    return f"{split}-{k:06d}.tar"


def encode_png(image: Image.Image | bytes) -> bytes:
    """PNG bytes of an RGB image; bytes are passed through after a signature check."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        if not data.startswith(PNG_SIGNATURE):
            raise DataError("RawSample.image bytes are not a PNG (bad signature)")
        return data
    if image.mode != "RGB":
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def fit_square(payload: bytes, size: int) -> Image.Image:
    """Decode image bytes to RGB, resized so the shorter side is ``size`` and centre-cropped square (BICUBIC).

    Returns the image unchanged (but RGB) when it already is ``size`` x ``size``. Raises DataError, without a
    file name (the caller knows it), when the bytes are not a readable image.
    """
    try:
        image = Image.open(io.BytesIO(payload))
        image.load()  # decode now: a truncated file fails here, not later inside the resize
        rgb = image if image.mode == "RGB" else image.convert("RGB")
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for a bad image
        raise DataError(f"not a readable image ({exc.__class__.__name__}: {exc})") from exc
    if rgb.size == (size, size):
        return rgb
    # Shorter side to size, then a centre crop: what open_clip's eval transform does, so storing images at the
    # model's resolution keeps its own resize + crop an identity.
    return ImageOps.fit(rgb, (size, size), Image.Resampling.BICUBIC)


class _ManifestRows:
    """Column-wise accumulation of manifest rows (cheaper than a list of dicts for 10^5 rows)."""

    def __init__(self) -> None:
        self.columns: dict[str, list] = {name: [] for name in MANIFEST_SCHEMA.names}

    def add(self, **row: object) -> None:
        for name, values in self.columns.items():
            values.append(row[name])

    def table(self) -> pa.Table:
        return pa.table(self.columns, schema=MANIFEST_SCHEMA)


def _check_sample(sample: RawSample, where: str) -> None:
    if not isinstance(sample.index, int) or sample.index < 0:
        raise DataError(f"{where}: sample index must be a non-negative int, got {sample.index!r}")
    if not sample.captions or not all(isinstance(c, str) and c for c in sample.captions):
        raise DataError(f"{where}: sample {sample.index} needs at least one non-empty caption, got {sample.captions!r}")
    if (sample.class_id >= 0) != (sample.class_name is not None):
        raise DataError(f"{where}: sample {sample.index} has class_id {sample.class_id} but class_name "
                        f"{sample.class_name!r} (both or neither)")


def _write_split(samples: Iterable[RawSample], *, dataset: str, split: str, tmp_dir: Path, rel_dir: str,
                 shard_size: int, rows: _ManifestRows) -> None:
    import webdataset as wds

    handle = writer = None
    shard = ""
    seen: set[int] = set()
    total = len(samples) if hasattr(samples, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(samples, desc=f"{dataset}/{split}", unit="img", total=total, file=sys.stderr, mininterval=1.0)
    try:
        for n, sample in enumerate(bar):
            where = f"dataset {dataset!r} split {split!r}"
            _check_sample(sample, where)
            if sample.index in seen:
                raise DataError(f"{where}: duplicate sample index {sample.index}")
            seen.add(sample.index)
            if n % shard_size == 0:
                _close_shard(writer, handle)
                shard = shard_name(split, n // shard_size)
                handle = open(tmp_dir / shard, "wb")
                # mtime=0: identical samples give byte-identical shards (reproducible, diffable outputs).
                writer = wds.TarWriter(handle, encoder=False, mtime=0)
            key = tar_key(dataset, split, sample.index)
            meta = {
                "dataset": dataset,
                "split": split,
                "index": sample.index,
                "class_id": sample.class_id,
                "class_name": sample.class_name,
                "captions": list(sample.captions),
            }
            assert writer is not None
            writer.write({
                "__key__": key,
                "png": encode_png(sample.image),
                "txt": sample.captions[0].encode("utf-8"),
                "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
            })
            rows.add(dataset=dataset, split=split, index=sample.index, key=key, shard=f"{rel_dir}/{shard}",
                     class_id=sample.class_id, class_name=sample.class_name, caption=sample.captions[0],
                     captions=list(sample.captions))
    finally:
        bar.close()
        _close_shard(writer, handle)


def _close_shard(writer, handle) -> None:
    if writer is not None:
        writer.close()
    if handle is not None and not handle.closed:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()


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


def write_dataset(samples_by_split: Mapping[str, Iterable[RawSample]], *, dataset: str, out_dir: Path,
                  shard_size: int = 2000, overwrite: bool = False) -> Path:
    """Write every split to ``out_dir`` as tar shards of ``shard_size`` samples plus ``manifest.parquet``; returns
    ``out_dir``. Samples are consumed lazily (a generator is fine); if one raises, nothing appears under ``out_dir``.
    """
    out_dir = Path(out_dir)
    if shard_size < 1:
        raise ConfigError(f"shard_size must be at least 1, got {shard_size}")
    for split in samples_by_split:
        if not _SPLIT_NAME.match(split):
            raise ConfigError(f"dataset {dataset!r}: split name {split!r} must be letters, digits and '_' only")
    # Fail before the (possibly long) generation rather than after it.
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"{out_dir} exists and is not empty (pass overwrite=True to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        rows = _ManifestRows()
        for split, samples in samples_by_split.items():
            _write_split(samples, dataset=dataset, split=split, tmp_dir=tmp, rel_dir=out_dir.name,
                         shard_size=shard_size, rows=rows)
        with open(tmp / MANIFEST_NAME, "wb") as handle:
            pq.write_table(rows.table(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        _install(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_manifest(dataset_dir: Path) -> "pl.DataFrame":
    """The manifest of a written dataset directory as a polars DataFrame."""
    import polars as pl

    path = Path(dataset_dir) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"missing manifest {path}")
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a corrupt file
        raise DataError(f"cannot read manifest {path}: {exc}") from exc


def build_dataset(spec: "DatasetSpec", out_dir: Path, *, seed: int, image_size: int, scale: float = 1.0,
                  archive: Path | None = None, shard_size: int = 2000, overwrite: bool = False,
                  on_bad_sample: str = "error", skipped=None) -> Path:
    """Materialise one registry dataset as shards, by its source:

    - ``generate``: drawn by the mini benchmark (``seed``, ``scale``);
    - ``download``: imported from its already-downloaded ``archive``; ``local``: from its folder or archive in place.
      Format ``imagefolder`` (``<split>/<class>/<image>``) or ``fomo_in_flux`` (the release's layout and annotations);
    - ``webdataset``: existing webdataset shards (a replay pool), re-encoded at ``image_size``.

    ``scale`` applies to generated data only. ``on_bad_sample`` / ``skipped`` (a SkipLog): an image that does not
    decode is an error, or a counted skip (imports only; generated data is always valid).
    """
    kind = spec.obtained_by
    if kind == "generate":
        from fomoflux.data.mini import generate_split

        splits = {split: generate_split(spec, split, seed, image_size, scale) for split in spec.splits}
        return write_dataset(splits, dataset=spec.name, out_dir=out_dir, shard_size=shard_size, overwrite=overwrite)
    if kind == "webdataset":
        from fomoflux.data.pool import convert_webdataset_pool, expand_shards

        log = convert_webdataset_pool(expand_shards(spec.source["webdataset"]["urls"]), spec, out_dir,
                                      image_size=image_size, shard_size=shard_size, on_bad_sample=on_bad_sample,
                                      overwrite=overwrite)
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
        log = convert_release_dataset(path, spec, out_dir, image_size=image_size, shard_size=shard_size,
                                      annotations=Path(annotations) if annotations else None,
                                      on_bad_sample=on_bad_sample, overwrite=overwrite)
        _merge_skips(log, skipped)
        return Path(out_dir)
    if path.is_dir():
        raise DataError(f"dataset {spec.name!r}: an imagefolder source must be an archive (.tar, .tar.gz, .zip), "
                        f"got the folder {path}")
    from fomoflux.data.archive import import_imagefolder

    splits = {split: import_imagefolder(path, spec, split, image_size) for split in spec.splits}
    return write_dataset(splits, dataset=spec.name, out_dir=out_dir, shard_size=shard_size, overwrite=overwrite)


def _merge_skips(log, into) -> None:
    """Hand an importer's skips to the caller's SkipLog (already logged once, by the importer)."""
    if into is not None and log is not None:
        into.items.extend(log.items)
