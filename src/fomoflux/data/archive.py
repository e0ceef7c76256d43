"""Importing a downloaded ImageFolder archive (.tar, .tar.gz / .tgz, .zip) as RawSamples.

Layout: ``[<root>/]<split>/<classname>/<image file>`` with at most one optional top-level folder. Class folders
must match the spec's class names exactly; class ids follow the spec's class order. A sample's index is the rank of
its member name in sorted order, so the same archive always gives the same indices; samples come in archive order
(one sequential pass, see ``_iter_payloads``), each image as the member's bytes (the shard writer checks them).
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from fomoflux.data.registry import DatasetSpec
from fomoflux.data.shards import RawSample
from fomoflux.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def _is_hidden(parts: tuple[str, ...]) -> bool:
    # macOS and editors leave these in archives; they are never samples.
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _member_names(archive: Path) -> list[str]:
    """Every regular file in the archive (normalised POSIX paths, no leading './')."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return [info.filename for info in zf.infolist() if not info.is_dir()]
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tar:
            return [m.name for m in tar.getmembers() if m.isfile()]
    raise DataError(f"archive {archive} is neither a tar nor a zip file")


def _iter_payloads(archive: Path, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the wanted members, in archive order: one sequential pass, which keeps a .tar.gz from
    being decompressed again for every member that a sorted (random-access) order would seek back to."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.filename in wanted:
                    yield info.filename, zf.read(info)
        return
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.name in wanted:
                handle = tar.extractfile(member)
                if handle is None:
                    raise DataError(f"archive {archive}: member {member.name} cannot be read")
                yield member.name, handle.read()


def _split_members(archive: Path, names: list[str], split: str) -> dict[str, tuple[str, str]]:
    """member name -> (class folder, relative file path) for the images of ``split``, root folder resolved."""
    files = [(name, PurePosixPath(name.removeprefix("./")).parts) for name in names]
    files = [(name, parts) for name, parts in files if parts and not _is_hidden(parts)]
    direct = {name: parts for name, parts in files if len(parts) == 3 and parts[0] == split}
    rooted = {name: parts[1:] for name, parts in files if len(parts) == 4 and parts[1] == split}
    roots = {files_parts[0] for name, files_parts in files if name in rooted}
    if direct and rooted:
        raise DataError(f"archive {archive}: both '{split}/' and '<root>/{split}/' folders exist; which is meant?")
    if rooted and len(roots) > 1:
        raise DataError(f"archive {archive}: several top-level folders hold a '{split}/' folder: {sorted(roots)}")
    chosen = direct or rooted
    if not chosen:
        raise DataError(f"archive {archive} has no '{split}/<class>/<image>' folder (optionally under one root)")
    return {
        name: (parts[1], parts[2])
        for name, parts in chosen.items()
        if PurePosixPath(parts[2]).suffix.lower() in IMAGE_SUFFIXES
    }


def import_imagefolder(archive: Path, spec: DatasetSpec, split: str) -> Iterator[RawSample]:
    """The ``split`` images of an ImageFolder archive as RawSamples, in archive order, indexed by sorted rank.

    A class folder the spec does not list or a spec class without a folder is a DataError naming it (and the
    archive), raised when iteration starts.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise DataError(f"missing archive {archive}")
    if not spec.classnames:
        raise DataError(f"dataset {spec.name!r}: ImageFolder import needs classnames in the spec")
    members = _split_members(archive, _member_names(archive), split)
    found = {cls for cls, _ in members.values()}
    extra = sorted(found - set(spec.classnames))
    if extra:
        raise DataError(f"archive {archive}: split {split!r} has class folder(s) {extra} that dataset "
                        f"{spec.name!r} does not list")
    absent = [cls for cls in spec.classnames if cls not in found]
    if absent:
        raise DataError(f"archive {archive}: dataset {spec.name!r} class(es) {absent} have no folder in "
                        f"split {split!r}")

    class_ids = {cls: i for i, cls in enumerate(spec.classnames)}
    rank = {name: i for i, name in enumerate(sorted(members))}
    unread = set(members)
    for name, payload in _iter_payloads(archive, set(members)):
        unread.discard(name)
        cls = members[name][0]
        yield RawSample(index=rank[name], image=payload, captions=(spec.class_prompt(cls), cls),
                        class_id=class_ids[cls], class_name=cls, origin=f"archive {archive}: member {name}")
    if unread:
        raise DataError(f"archive {archive}: member(s) {sorted(unread)[:5]} were listed but could not be read")
