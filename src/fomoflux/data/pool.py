"""Importing a pretraining replay pool stored as webdataset shards into our shard format.

The paper's replay pool is a LAION-400M / DataComp / CC3M / CC12M subset as img2dataset writes it: tar shards whose
samples are ``<key>.jpg`` (or jpeg / png / webp) plus ``<key>.txt`` and/or ``<key>.json`` with a ``"caption"``.
The pool is imported once into our shard format (``fomoflux.data.shards``; the images' bytes are kept, or bounded in
size), so that every stage reads one format. Shards are read in the order given and never shuffled, so one set of
shards always gives the same samples with the same indices; the pool's size is whatever the shards hold.
"""

from __future__ import annotations

import glob
import json
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from braceexpand import UnbalancedBracesError, braceexpand

from fomoflux.data.registry import DatasetSpec
from fomoflux.data.shards import BAD_SAMPLE_POLICIES, MAX_IMAGE_SIDE, RawSample, SkipLog, write_dataset
from fomoflux.errors import ConfigError, DataError

# "scheme://..." (http, https, file, s3, ...) or webdataset's "pipe:<command>"; anything else is a local path.
_URL = re.compile(r"^(pipe:|[A-Za-z][A-Za-z0-9+.-]*://)")
_GLOB_CHARS = frozenset("*?[")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")  # the first one a sample has is its image
POOL_SPLIT = "train"
_MAX_LISTED = 5  # missing shards named in one error message


class SkipRecorder(Protocol):
    """What ``iter_webdataset_samples`` needs of its ``skipped`` argument (``shards.SkipLog`` is one)."""

    @property
    def count(self) -> int: ...

    def add(self, member: str, reason: str) -> None: ...


class _BadSample(Exception):
    """One sample cannot be imported; the message is the reason (no location: the caller adds shard and key)."""


# --------------------------------------------------------------------------------------------------------------
# Shard lists


def _is_url(item: str) -> bool:
    return _URL.match(item) is not None


def _has_glob(item: str) -> bool:
    return any(char in _GLOB_CHARS for char in item)


def _local_path(item: str, base: Path) -> Path:
    """``item`` as a path, ``~`` expanded and a relative one resolved against ``base``."""
    path = Path(item).expanduser()
    return path if path.is_absolute() else Path(base) / path


def _expand_item(item: str, base: Path) -> list[str]:
    """The shards one brace-expanded entry names: a URL as it is, a glob's matches sorted, a path made absolute.

    Raises DataError for a glob that matches nothing."""
    if _is_url(item):
        return [item]
    path = _local_path(item, base)
    if not _has_glob(item):
        return [os.path.abspath(path)]
    matches = sorted(os.path.abspath(match) for match in glob.glob(str(path), recursive=True))
    if not matches:
        raise DataError(f"shard pattern {item!r} (as {path}) matches no file")
    return matches


def _local_file(shard: str) -> Path | None:
    """The file a plain path or file:// URL names; None for a remote URL or a pipe."""
    if not _is_url(shard):
        return Path(shard)
    parsed = urlparse(shard)
    return Path(parsed.path) if parsed.scheme == "file" else None


def _missing_local(shards: list[str]) -> list[str]:
    """The local shards (plain paths and file:// URLs) that are not existing files, in order. Remote and pipe
    shards are not checked: whether they exist shows when they are read."""
    missing = []
    for shard in shards:
        local = _local_file(shard)
        if local is not None and not local.is_file():
            missing.append(shard)
    return missing


def expand_shards(urls: str | Sequence[str], base: Path = Path(".")) -> list[str]:
    """The shard list that ``urls`` describes, in order.

    Each entry may be a brace pattern (``/data/cc3m/{0000..0331}.tar``), a glob (``/data/cc3m/*.tar``, its matches
    sorted), a plain path or a URL (``http(s)://``, ``file://``, ``pipe:``; brace-expanded, otherwise passed
    through). Relative paths resolve against ``base``; local shards are returned as absolute paths.

    Raises ConfigError for an empty or malformed entry, an empty result or a shard named twice, DataError for a glob
    that matches nothing or local shards that do not exist.
    """
    entries = [urls] if isinstance(urls, str) else list(urls)
    shards: list[str] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError(f"shard list entry {entry!r} is not a path, pattern or URL")
        try:
            expanded = list(braceexpand(entry))
        except UnbalancedBracesError as exc:
            raise ConfigError(f"shard list entry {entry!r}: {exc}") from exc
        for item in expanded:
            shards.extend(_expand_item(item, base))
    if not shards:
        raise ConfigError(f"shard list {urls!r} names no shards")
    seen: set[str] = set()
    for shard in shards:
        if shard in seen:
            raise ConfigError(f"shard list {urls!r} names shard {shard} more than once")
        seen.add(shard)
    missing = _missing_local(shards)
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED]) + (", ..." if len(missing) > _MAX_LISTED else "")
        raise DataError(f"{len(missing)} of {len(shards)} shards do not exist or are not files: {listed}")
    return shards


# --------------------------------------------------------------------------------------------------------------
# Samples


def _utf8(data: bytes, member: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadSample(f"{member} is not UTF-8 ({exc})") from exc


def _json_captions(data: bytes) -> tuple[str, ...]:
    """The caption(s) of a json member: its "caption" string, else its "captions" list; () when it has neither."""
    try:
        meta = json.loads(_utf8(data, "json"))
    except json.JSONDecodeError as exc:
        raise _BadSample(f"json member does not parse ({exc})") from exc
    if not isinstance(meta, dict):
        raise _BadSample(f"json member is a {type(meta).__name__}, not an object")
    caption = meta.get("caption")
    if isinstance(caption, str) and caption.strip():
        return (caption.strip(),)
    captions = meta.get("captions")
    if captions is None:
        return ()
    # A list with an empty or non-text entry is broken data, not something to tidy up quietly.
    if not isinstance(captions, list) or not all(isinstance(c, str) and c.strip() for c in captions):
        raise _BadSample(f"json 'captions' must be a list of non-empty strings, got {captions!r}")
    return tuple(c.strip() for c in captions)


def _captions(sample: dict[str, Any]) -> tuple[str, ...]:
    """The sample's captions: its txt member, else the caption(s) in its json member. Raises _BadSample for none."""
    if "txt" in sample:
        text = _utf8(sample["txt"], "txt").strip()
        if text:
            return (text,)
    if "json" in sample:
        captions = _json_captions(sample["json"])
        if captions:
            return captions
    raise _BadSample("no caption (no non-empty txt member and no json 'caption' / 'captions')")


def _image_bytes(sample: dict[str, Any]) -> bytes:
    """The bytes of the sample's image member (the shard writer checks them). Raises _BadSample if it has none."""
    ext = next((ext for ext in IMAGE_EXTENSIONS if ext in sample), None)
    if ext is None:
        members = sorted(name for name in sample if not name.startswith("__"))
        raise _BadSample(f"no image member ({'/'.join(IMAGE_EXTENSIONS)}); it has {members}")
    return sample[ext]


def _to_raw_sample(sample: dict[str, Any], index: int, origin: str) -> RawSample:
    """A webdataset sample dict as a RawSample (no class). Raises _BadSample."""
    return RawSample(index=index, image=_image_bytes(sample), captions=_captions(sample), origin=origin)


def _shard_error_handler(url: str):
    """A webdataset ``handler`` that turns any error while reading ``url`` into a DataError naming it.

    webdataset calls its handler for every failure (open, tar, grouping) and continues if it returns True; raising
    instead stops the import, so a truncated shard can never pass as a shorter one."""

    def handle(exc: Exception) -> bool:
        if isinstance(exc, DataError):
            # Ours, passing through an outer stage: each stage appends context to .args, which would garble it.
            exc.args = exc.args[:1]
            raise exc
        if isinstance(exc, OSError) and exc.strerror:
            detail = exc.strerror
        else:  # webdataset appends " @ <stream>" and more args to the first one; the url says it better
            detail = str(exc.args[0]).split(" @ ")[0] if exc.args else ""
        raise DataError(f"webdataset shard {url} cannot be read ({type(exc).__name__}: {detail})") from exc

    return handle


def _check_complete_tar(path: Path, url: str) -> None:
    """Raises DataError unless the tar at ``path`` is complete: every member's data present and an end-of-archive
    marker (a zero block) after the last member.

    Python's tarfile, and webdataset with it, reads a tar that was cut off at a member boundary or inside a header
    as a complete but shorter archive; an interrupted copy of a shard would lose samples without a word."""
    try:
        with tarfile.open(path, "r:*") as tar:
            for _ in tar:  # walks the headers only; the member data is seeked over
                pass
            end = tar.offset
            assert tar.fileobj is not None
            tar.fileobj.seek(end)
            marker = tar.fileobj.read(tarfile.BLOCKSIZE)
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:  # cut or corrupt compression
        detail = " ".join(str(exc).split())  # tarfile lists one line per method it tried
        raise DataError(f"webdataset shard {url} is not a readable tar file ({type(exc).__name__}: {detail})") from exc
    if len(marker) < tarfile.BLOCKSIZE or marker.count(0) != tarfile.BLOCKSIZE:
        raise DataError(f"webdataset shard {url} is truncated: no end-of-archive marker after its last member "
                        f"(at byte {end})")


def _read_shard(url: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard as webdataset groups them (member bytes by lower-case extension, plus __key__).

    One WebDataset per shard, so that every error is attributed to exactly the shard it comes from. A local shard
    is first checked to be a complete tar (see _check_complete_tar); remote and pipe shards cannot be, so one cut
    off at a member boundary would read as shorter: download such a pool before importing it."""
    import webdataset as wds

    local = _local_file(url)
    if local is not None:
        _check_complete_tar(local, url)

    dataset = wds.WebDataset(
        [url],
        shardshuffle=False,  # keep the samples' order: indices must not depend on chance
        handler=_shard_error_handler(url),
        # The default splitters hand each node / DataLoader worker a share of the shards; an import run inside
        # either would silently lose the rest.
        nodesplitter=None,
        workersplitter=None,
        empty_check=False,  # an empty shard is allowed; an empty pool is checked over all shards
    )
    yield from dataset


def _check_import_args(spec: DatasetSpec, on_bad_sample: str, skipped: object) -> None:
    """Raises ConfigError for arguments an import cannot run with (before any shard is opened)."""
    if spec.kind == "classification":
        raise ConfigError(f"dataset {spec.name!r}: a webdataset pool has captions only, not classes; its kind "
                          f"must be 'pretraining' or 'retrieval', got 'classification'")
    if on_bad_sample not in BAD_SAMPLE_POLICIES:
        raise ConfigError(f"dataset {spec.name!r}: on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, "
                          f"got {on_bad_sample!r}")
    if on_bad_sample == "skip" and skipped is None:
        raise ConfigError(f"dataset {spec.name!r}: on_bad_sample='skip' needs a `skipped` log to count skips in")


def _samples(urls: list[str], spec: DatasetSpec, on_bad_sample: str,
             skipped: SkipRecorder | None) -> Iterator[RawSample]:
    """The generator behind iter_webdataset_samples (arguments already checked)."""
    index = 0
    for url in urls:
        for sample in _read_shard(url):
            origin = f"webdataset shard {url} sample {sample['__key__']!r}"
            try:
                raw = _to_raw_sample(sample, index, origin)
            except _BadSample as bad:
                if on_bad_sample == "error":
                    raise DataError(f"dataset {spec.name!r}: {origin}: {bad}") from bad
                assert skipped is not None
                skipped.add(origin, str(bad))
                continue
            yield raw
            index += 1
    if index == 0:
        left_out = f", {skipped.count} skipped" if skipped is not None else ""
        raise DataError(f"dataset {spec.name!r}: the {len(urls)} webdataset shard(s) from {urls[0]} hold no "
                        f"usable sample{left_out}")


def iter_webdataset_samples(urls: Sequence[str], spec: DatasetSpec, *, on_bad_sample: str = "error",
                            skipped: SkipRecorder | None = None) -> Iterator[RawSample]:
    """The samples of webdataset shards ``urls`` (as ``expand_shards`` returns them), in shard and tar order.

    Each sample's image is the bytes of the first of its jpg / jpeg / png / webp members, as they are (the shard
    writer checks and stores them); its captions are its txt member, else its json "caption" (or "captions" list).
    Indices count the samples yielded over all shards (0, 1, ...); class_id is -1; ``origin`` is
    ``webdataset shard <url> sample '<key>'``.

    The arguments are checked at once (ConfigError); the shards are read lazily. A sample without image or caption
    is a DataError naming shard and key when ``on_bad_sample`` is "error"; with "skip" it is left out and recorded
    as ``skipped.add(origin, reason)``. A shard that cannot be read (missing, truncated, not a tar) and a pool
    without any usable sample are always a DataError. (An image that does not decode is found by the writer, with
    the same policy; its index is then absent from the manifest.)
    """
    shard_urls = [urls] if isinstance(urls, str) else list(urls)
    if not shard_urls:
        raise ConfigError(f"dataset {spec.name!r}: no webdataset shards given")
    _check_import_args(spec, on_bad_sample, skipped)
    return _samples(shard_urls, spec, on_bad_sample, skipped)


def convert_webdataset_pool(urls: Sequence[str], spec: DatasetSpec, out_dir: Path, *, shard_size: int,
                            on_bad_sample: str = "error", overwrite: bool = False,
                            max_image_side: int = MAX_IMAGE_SIDE, workers: int = 1) -> SkipLog:
    """Import the webdataset shards ``urls`` as split "train" of dataset ``spec.name`` in ``out_dir`` (our shards
    plus manifest, see ``write_dataset``, which also says what ``max_image_side`` and ``workers`` do); returns the
    log of skipped samples (empty unless ``on_bad_sample`` is "skip"). Raises as ``iter_webdataset_samples`` and
    ``write_dataset`` do; on error nothing appears in ``out_dir``."""
    skipped = SkipLog()
    samples = iter_webdataset_samples(urls, spec, on_bad_sample=on_bad_sample, skipped=skipped)
    write_dataset({POOL_SPLIT: samples}, dataset=spec.name, out_dir=Path(out_dir), shard_size=shard_size,
                  overwrite=overwrite, workers=workers, max_image_side=max_image_side, on_bad_sample=on_bad_sample,
                  skipped=skipped)
    return skipped
