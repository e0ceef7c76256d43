"""Converting the FoMo-in-Flux release's dataset tars (or extracted copies of them) into our shards.

Release layout
--------------
A dataset ``<NAME>`` (its release name, e.g. ``CLRS``) comes as ``<NAME>.tar`` (plain or compressed) or as that tar
already extracted into a folder on a shared file system. Its images lie under ``<NAME>/`` at any depth, e.g.
``CLRS/CLRS/railway/railway_589.jpg``.

Each split has an annotation file ``<NAME>_<split>.json`` (``CLRS_train.json``, ``CLRS_test.json``): a JSON object
mapping an image path, relative to the folder that contains ``<NAME>/`` (so it starts with ``<NAME>/``), to ::

    {"classname": str | null, "target": int | null, "default_caption": str | list[str] | null,
     "primer_caption": str | null, "synthetic_caption": list[str] | null, "synthetic_merged_caption": str | null}

The annotation file is taken from the first of these places that has it:

1. the ``annotations`` folder the caller gives (the release's ``data_lib/00_info``), as ``<NAME>_<split>.json``;
2. inside the archive or folder, as ``<NAME>_<split>.json``;
3. inside the archive or folder, as ``<NAME>/<NAME>_<split>.json``.

(Reading it from inside a tar costs a pass over the tar up to it; the release keeps them in ``data_lib/00_info``.)
Files the annotation does not list (hidden files, ``__MACOSX/``, READMEs, images of other splits) are ignored.

Conversion
----------
The index of a sample is the rank of its image path among the split's annotation keys, sorted, so the same release
always gives the same indices. Images are read in one sequential pass, in archive order (a folder: sorted path
order), so a compressed tar is never decompressed twice for the images; the shard writer and manifest do not
need index order. Each image goes to the shard writer as it is, as the member's bytes or, from a folder, the file's
path (``fomoflux.data.shards.store_image`` checks it and keeps it, or bounds its size).

Captions follow the reference code (``DatasetScaffold.set_data_and_targets`` in the authors' ``data_lib``, commit
3e123d9), whatever the spec's ``caption_source``: the record's ``default_caption`` (the human captions of MSCOCO,
Flickr30k, FSCOCO) when it has one, else its ``synthetic_merged_caption``. A field with several captions gives
all of them, in the record's order: training draws one at random per step, evaluation takes the first (as the
reference's ``__getitem__`` does). ``primer_caption`` (the bare class prompt) is never a training text. A record
with neither field falls back to the spec's class prompt of its class; the reference has no caption for it then and
its caption list silently loses alignment with its images (a defect not copied). Blank captions are dropped.
"""

from __future__ import annotations

import json
import lzma
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fomoflux.data.registry import DatasetSpec
from fomoflux.data.shards import BAD_SAMPLE_POLICIES, MAX_IMAGE_SIDE, RawSample, SkipLog, write_dataset
from fomoflux.errors import DataError

__all__ = ["BAD_SAMPLE_POLICIES", "SkipLog", "convert_release_dataset", "iter_release_samples"]  # the first two
# are fomoflux.data.shards', re-exported for the callers that import them from here.
# Everything a damaged (cut, corrupt) tar or compressed stream raises while it is read sequentially.
_ARCHIVE_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class _Annotated:
    """What the annotation says about one image, ready to become a RawSample once its bytes are read."""

    index: int
    captions: tuple[str, ...]
    class_id: int
    class_name: str | None


# --- annotations ------------------------------------------------------------------------------------------------


def _member_path(name: str) -> str:
    """A tar member name as an annotation key: POSIX, without a leading './'."""
    while name.startswith("./"):
        name = name[2:]
    return name


def _annotation_candidates(name: str, split: str) -> tuple[str, str]:
    """The two places inside an archive or folder where the split's annotation may be, in order of preference."""
    filename = f"{name}_{split}.json"
    return filename, f"{name}/{filename}"


def _read_annotation_in_tar(archive: Path, candidates: tuple[str, ...]) -> tuple[bytes, str] | None:
    """(bytes, where) of the first candidate member present in the tar, or None; one pass, stopped early when the
    most preferred candidate turns up."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # see _tar_payloads
                path = _member_path(member.name)
                if member.isfile() and path in candidates and path not in found:
                    handle = tar.extractfile(member)
                    assert handle is not None  # a regular file always has a file object
                    found[path] = handle.read()
                    if path == candidates[0]:
                        break
    except _ARCHIVE_READ_ERRORS as exc:
        raise DataError(f"archive {archive} is truncated or corrupt ({exc.__class__.__name__}: {exc})") from exc
    for path in candidates:
        if path in found:
            return found[path], f"{archive}:{path}"
    return None


def _folder_candidates(folder: Path, name: str, candidates: tuple[str, ...]) -> list[Path]:
    """Where a split's annotation may be in an extracted release: relative to ``folder`` and, when ``folder`` is the
    ``<NAME>`` folder itself, relative to its parent too (in that order, without repeats)."""
    roots = [folder, folder.parent] if folder.name == name else [folder]
    paths = [root / relative for root in roots for relative in candidates]
    return list(dict.fromkeys(paths))


def _load_annotation_bytes(source: Path, name: str, split: str, annotations: Path | None) -> tuple[bytes, str]:
    """The raw annotation JSON of ``split`` and where it came from; DataError naming every place looked at."""
    candidates = _annotation_candidates(name, split)
    looked: list[str] = []
    if annotations is not None:
        given = Path(annotations) / candidates[0]
        if given.is_file():
            return given.read_bytes(), str(given)
        looked.append(str(given))
    if source.is_dir():
        for path in _folder_candidates(source, name, candidates):
            if path.is_file():
                return path.read_bytes(), str(path)
            looked.append(str(path))
    else:
        hit = _read_annotation_in_tar(source, candidates)
        if hit is not None:
            return hit
        looked.extend(f"{source}:{relative}" for relative in candidates)
    raise DataError(f"no annotation for split {split!r} of dataset {name!r}; looked for: {', '.join(looked)}")


def _caption_list(value: Any, where: str, key: str, field_name: str) -> list[str]:
    """A caption field (str, list of str or null) as a list of its non-blank captions."""
    if value is None:
        return []
    if isinstance(value, str):
        values = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        values = value
    else:
        raise DataError(f"{where}: {key!r} has {field_name} {value!r}; expected a string, a list of strings or null")
    return [v for v in values if v.strip()]


# The annotation fields a sample's captions come from, in order of preference: the first with a caption wins.
CAPTION_FIELDS = ("default_caption", "synthetic_merged_caption")


def _captions(record: Mapping[str, Any], spec: DatasetSpec, where: str, key: str) -> tuple[str, ...]:
    """The sample's captions, evaluation caption first (see the module docstring); DataError when there are none."""
    for field_name in CAPTION_FIELDS:
        captions = _caption_list(record.get(field_name), where, key, field_name)
        if captions:
            return tuple(captions)
    classname = record.get("classname")
    if classname is None:
        raise DataError(f"{where}: {key!r} has no caption and no classname to build one from")
    return (spec.class_prompt(classname),)


def _annotate(record: Any, spec: DatasetSpec, class_ids: Mapping[str, int], where: str, key: str,
              index: int) -> _Annotated:
    """One annotation record checked and turned into an _Annotated (DataError naming the file and key)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: the record of {key!r} is {type(record).__name__}, not a JSON object")
    classname = record.get("classname")
    if classname is not None and not isinstance(classname, str):
        raise DataError(f"{where}: {key!r} has classname {classname!r}, not a string")
    class_id, class_name = -1, None
    if classname is not None and spec.classnames:
        if classname not in class_ids:
            raise DataError(f"{where}: {key!r} has class {classname!r}, which dataset {spec.name!r} does not list")
        class_id, class_name = class_ids[classname], classname
    # Without classes in the spec a sample has no class id; the manifest wants class_name null then too.
    return _Annotated(index, _captions(record, spec, where, key), class_id, class_name)


def _load_annotations(source: Path, spec: DatasetSpec, name: str, split: str,
                      annotations: Path | None) -> dict[str, _Annotated]:
    """image path -> _Annotated for every image of the split, indexed by sorted rank of the paths."""
    raw, where = _load_annotation_bytes(source, name, split, annotations)
    try:
        table = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"annotation {where} is not valid JSON ({exc})") from exc
    if not isinstance(table, dict):
        raise DataError(f"annotation {where} must be a JSON object (image path -> record), got {type(table).__name__}")
    if not table:
        raise DataError(f"annotation {where} lists no images")
    class_ids = {cls: i for i, cls in enumerate(spec.classnames)}
    keys = sorted(table)
    notes = {_member_path(key): _annotate(table[key], spec, class_ids, where, key, i) for i, key in enumerate(keys)}
    if len(notes) != len(keys):
        raise DataError(f"annotation {where} lists some images twice (once with a leading './')")
    return notes


# --- reading images ---------------------------------------------------------------------------------------------


def _tar_payloads(archive: Path, wanted: Mapping[str, _Annotated]) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of every wanted regular file, in archive order, in one pass; DataError for a damaged archive,
    a wanted path that is a link, or one that occurs twice."""
    seen: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            while (member := tar.next()) is not None:
                # tarfile keeps every TarInfo it reads, for random access later; one pass needs none of them, so
                # dropping them keeps memory flat however many files the archive has.
                tar.members.clear()
                path = _member_path(member.name)
                if path not in wanted:
                    continue  # hidden files, __MACOSX/, READMEs, images of other splits: never samples here
                if not member.isfile():
                    raise DataError(f"archive {archive}: member {member.name} is not a regular file (a link?)")
                if path in seen:
                    raise DataError(f"archive {archive}: member {member.name} occurs twice")
                seen.add(path)
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has a file object
                yield path, handle.read()
    except _ARCHIVE_READ_ERRORS as exc:
        raise DataError(f"archive {archive} is truncated or corrupt ({exc.__class__.__name__}: {exc})") from exc


def _folder_root(folder: Path, name: str, first_key: str) -> Path:
    """The folder the annotation keys are relative to: ``folder`` itself (it holds ``<NAME>/``) or, when ``folder``
    is the ``<NAME>`` folder, its parent."""
    if folder.name == name and not (folder / first_key).is_file() and (folder.parent / first_key).is_file():
        return folder.parent
    return folder


def _folder_payloads(root: Path, wanted: Mapping[str, _Annotated]) -> Iterator[tuple[str, Path]]:
    """(path, file) of every wanted file that exists under ``root``, in sorted path order. The file, not its bytes:
    the shard writer's worker processes read it (``fomoflux.data.shards.RawSample``)."""
    for path in sorted(wanted):
        file = root / path
        if file.is_file():
            yield path, file


def _samples(source: Path, spec: DatasetSpec, name: str, split: str,
             wanted: dict[str, _Annotated]) -> Iterator[RawSample]:
    """The generator behind iter_release_samples (arguments already checked, annotations loaded)."""
    if source.is_dir():
        root = _folder_root(source, name, next(iter(wanted)))
        payloads = _folder_payloads(root, wanted)
        kind = "folder"
    else:
        payloads = _tar_payloads(source, wanted)
        kind = "archive"
    found: set[str] = set()
    for path, payload in payloads:
        found.add(path)
        note = wanted[path]
        yield RawSample(index=note.index, image=payload, captions=note.captions, class_id=note.class_id,
                        class_name=note.class_name, origin=f"{kind} {source}: member {path}")
    missing = sorted(set(wanted) - found)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{kind} {source}: {len(missing)} image(s) of split {split!r} listed in the annotation are "
                        f"not in it (truncated archive, or annotation of another version?): {shown}")


def iter_release_samples(source: Path, spec: DatasetSpec, split: str, *, annotations: Path | None = None,
                         release_name: str | None = None) -> Iterator[RawSample]:
    """The ``split`` of a release dataset as RawSamples in archive order, each image the member's bytes as they are
    or, from a folder, the file's path (the shard writer reads, checks and stores them, see
    ``fomoflux.data.shards.store_image``).

    ``source`` is the dataset's tar (any compression ``tarfile`` reads) or the folder it was extracted into (or the
    ``<NAME>`` folder in there); ``release_name`` is ``<NAME>`` (default: ``spec.name``). Raises DataError (naming
    the archive and member) for a missing annotation, a class the spec does not list, a damaged archive or an
    annotated image that is absent. Arguments and annotations are checked at the call, the archive while iterating.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"dataset {spec.name!r}: source {source} does not exist")
    name = release_name or spec.name
    wanted = _load_annotations(source, spec, name, split, annotations)
    return _samples(source, spec, name, split, wanted)


def convert_release_dataset(source: Path, spec: DatasetSpec, out_dir: Path, *, shard_size: int,
                            annotations: Path | None, on_bad_sample: str, overwrite: bool = False,
                            release_name: str | None = None, max_image_side: int = MAX_IMAGE_SIDE,
                            workers: int = 1) -> SkipLog:
    """Write every split of ``spec`` from a release archive or folder to ``out_dir`` (shards + manifest, see
    ``write_dataset``, which also says what ``on_bad_sample``, ``max_image_side`` and ``workers`` do); returns the
    samples skipped across all splits. Errors as for ``iter_release_samples`` and ``write_dataset``; on any error
    nothing appears under ``out_dir``."""
    skipped = SkipLog()
    splits = {split: iter_release_samples(source, spec, split, annotations=annotations, release_name=release_name)
              for split in spec.splits}
    write_dataset(splits, dataset=spec.name, out_dir=Path(out_dir), shard_size=shard_size, overwrite=overwrite,
                  workers=workers, max_image_side=max_image_side, on_bad_sample=on_bad_sample, skipped=skipped)
    return skipped
