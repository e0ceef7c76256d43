"""Release tars (and extracted copies) into shards; checksum records; an offline download-and-convert run."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import re
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from http_server import data_no_proxy_fixture, data_server_fixture  # noqa: F401 (fixtures; the first is autouse)
from PIL import Image

from fomoflux.data.download import download, verify_or_record
from fomoflux.data.registry import DatasetSpec
from fomoflux.data.release import SkipLog, convert_release_dataset, iter_release_samples
from fomoflux.data.shards import read_manifest
from fomoflux.errors import ConfigError, DataError, DownloadError

NAME = "CLRS"
CLASSES = ("railway", "river", "airport")  # the spec's order, not alphabetical
SIZE = 16


def _image(fmt: str, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> bytes:
    """Real encoded image bytes: smooth colours plus noise, ``size`` = (width, height)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _record(classname: str | None, merged: str | None = None, primer: str | None = None,
            default: str | list[str] | None = None) -> dict:
    return {"classname": classname, "target": None if classname is None else CLASSES.index(classname),
            "default_caption": default, "primer_caption": primer, "synthetic_caption": None,
            "synthetic_merged_caption": merged}


def _release() -> tuple[dict[str, bytes], dict[str, dict[str, dict]]]:
    """Image members and per-split annotations of a small CLRS-like release.

    train: 7 images of mixed formats, sizes and modes; test: 3. Every caption names its image path, so a test can
    tell which image a sample came from. Per class, the first image has a merged and a primer caption, the second
    also two default captions, the third only a primer caption (which is never used: the class prompt is).
    """
    images: dict[str, bytes] = {}
    annotations: dict[str, dict[str, dict]] = {"train": {}, "test": {}}
    shapes = [("JPEG", (40, 30), "RGB"), ("PNG", (30, 50), "RGBA"), ("PNG", (SIZE, SIZE), "RGB"),
              ("JPEG", (25, 25), "L"), ("PNG", (60, 20), "P")]
    n = 0
    for split, per_class in (("train", (3, 2, 2)), ("test", (1, 1, 1))):
        for cls, count in zip(CLASSES, per_class):
            for i in range(count):
                fmt, size, mode = shapes[n % len(shapes)]
                path = f"{NAME}/{NAME}/{cls}/{cls}_{split}_{i}.{'jpg' if fmt == 'JPEG' else 'png'}"
                images[path] = _image(fmt, size, mode, seed=n)
                n += 1
                if i == 0:
                    record = _record(cls, merged=f"merged {path}", primer=f"primer {path}")
                elif i == 1:
                    record = _record(cls, merged=f"merged {path}", primer=f"primer {path}",
                                     default=[f"default {path}", f"second default {path}"])
                else:
                    record = _record(cls, primer=f"primer {path}")  # no caption field: the class prompt
                annotations[split][path] = record
    return images, annotations


def _tar(path: Path, members: dict[str, bytes], mode: str = "w", shuffle: int | None = 1) -> Path:
    """Write ``members`` to a tar (archive order shuffled, so that it differs from sorted order)."""
    names = list(members)
    if shuffle is not None:
        random.Random(shuffle).shuffle(names)
    with tarfile.open(path, mode) as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
    return path


def _json(table: dict) -> bytes:
    return json.dumps(table).encode("utf-8")


def _release_tar(tmp_path: Path, *, with_annotations: bool = True, mode: str = "w", name: str = "CLRS.tar",
                 extra: dict[str, bytes] | None = None) -> tuple[Path, dict[str, dict[str, dict]]]:
    images, annotations = _release()
    members = dict(images)
    if with_annotations:
        members.update({f"{NAME}_{split}.json": _json(table) for split, table in annotations.items()})
    members.update(extra or {})
    return _tar(tmp_path / name, members, mode), annotations


def _spec(**overrides) -> DatasetSpec:
    fields = {"name": NAME, "kind": "classification", "role": "adaptation", "classnames": CLASSES,
              "prompt": "a satellite photo of a {}.", "source": {"download": {"url": "http://x/CLRS.tar"}}}
    fields.update(overrides)
    return DatasetSpec(**fields)


# --- happy paths ----------------------------------------------------------------------------------------------


def test_generated_captions_classes_indices_and_images(tmp_path):
    extra = {
        "__MACOSX/CLRS/CLRS/river/._river_train_0.png": b"\x00\x05\x16\x07 apple double",
        "CLRS/CLRS/river/._river_train_0.png": b"\x00\x05\x16\x07 apple double",
        "CLRS/CLRS/.DS_Store": b"junk",
        "CLRS/README.txt": b"not an image",
        "CLRS/CLRS/river/unlisted.jpg": _image("JPEG", (20, 20)),
    }
    archive, annotations = _release_tar(tmp_path, extra=extra)
    images = _release()[0]
    samples = list(iter_release_samples(archive, _spec(), "train"))
    train = annotations["train"]
    keys = sorted(train)
    assert len(samples) == len(train) == 7
    assert sorted(s.index for s in samples) == list(range(7))
    # Archive order was shuffled: samples come in archive order, not in index order.
    assert [s.index for s in samples] != list(range(7))
    for sample in samples:
        path = keys[sample.index]
        cls = path.split("/")[2]
        assert sample.class_name == cls and sample.class_id == CLASSES.index(cls)
        # The reference's rule: default_caption if present (all of them), else synthetic_merged_caption; never
        # the primer caption.
        if train[path]["default_caption"]:
            assert sample.captions == (f"default {path}", f"second default {path}")
        elif train[path]["synthetic_merged_caption"]:
            assert sample.captions == (f"merged {path}",)
        else:
            assert sample.captions == (f"a satellite photo of a {cls}.",)
        assert not any(c.startswith("primer") for c in sample.captions)
        # The file's bytes as they are (the shard writer decides how to store them), and where they came from.
        assert sample.image == images[path] and sample.origin == f"archive {archive}: member {path}"
    test = list(iter_release_samples(archive, _spec(), "test"))
    assert sorted(s.index for s in test) == [0, 1, 2]


def test_native_captions_and_specs_without_classes(tmp_path):
    images = {f"{NAME}/img/{i}.jpg": _image("JPEG", (24, 18), seed=i) for i in range(4)}
    table = {
        f"{NAME}/img/0.jpg": _record(None, merged="ignored: a default exists", default=["first caption", "second", ""]),
        f"{NAME}/img/1.jpg": _record(None, default="only caption"),
        f"{NAME}/img/2.jpg": _record("river", primer="ignored"),  # no caption field: the class prompt
        f"{NAME}/img/3.jpg": _record(None, merged="merged, as the reference falls back to", default=" "),
    }
    archive = _tar(tmp_path / "CLRS.tar", {**images, f"{NAME}_test.json": _json(table)})
    spec = _spec(kind="retrieval", role="evaluation", classnames=(), caption_source="native", splits=("test",))
    samples = sorted(iter_release_samples(archive, spec, "test"), key=lambda s: s.index)
    assert [s.captions for s in samples] == [("first caption", "second"), ("only caption",),
                                            ("a satellite photo of a river.",),
                                            ("merged, as the reference falls back to",)]
    # Without classes in the spec there is no class id, and the manifest's class_name stays null.
    assert {(s.class_id, s.class_name) for s in samples} == {(-1, None)}
    # With classes, a record without a classname still has none.
    with_classes = _spec(caption_source="native", splits=("test",))
    samples = sorted(iter_release_samples(archive, with_classes, "test"), key=lambda s: s.index)
    assert [(s.class_id, s.class_name) for s in samples] == [(-1, None), (-1, None), (1, "river"), (-1, None)]


def test_annotations_folder_comes_first_and_nested_annotation_is_found(tmp_path):
    images, annotations = _release()
    # Inside the archive: only a decoy at the top level naming one train image, and the real one under CLRS/.
    first = min(annotations["train"])
    decoy = {first: _record("railway", merged="decoy")}
    archive = _tar(tmp_path / "CLRS.tar", {**images, f"{NAME}_train.json": _json(decoy),
                                           f"{NAME}/{NAME}_test.json": _json(annotations["test"])})
    info = tmp_path / "00_info"
    info.mkdir()
    (info / f"{NAME}_train.json").write_bytes(_json(annotations["train"]))
    train = list(iter_release_samples(archive, _spec(), "train", annotations=info))
    assert len(train) == 7 and all(s.captions != ("decoy",) for s in train)
    # Without the folder the archive's top-level file wins over nothing else: the decoy, one sample.
    assert [s.captions for s in iter_release_samples(archive, _spec(), "train")] == [("decoy",)]
    # test is not in the folder: found at CLRS/CLRS_test.json inside the archive.
    assert len(list(iter_release_samples(archive, _spec(), "test", annotations=info))) == 3


def test_extracted_folder_gives_the_same_samples(tmp_path):
    archive, _ = _release_tar(tmp_path)
    from_tar = sorted(iter_release_samples(archive, _spec(), "train"), key=lambda s: s.index)
    extracted = tmp_path / "shared"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    for source in (extracted, extracted / NAME):  # the folder holding CLRS/, or CLRS/ itself
        from_folder = list(iter_release_samples(source, _spec(), "train"))
        assert [s.index for s in from_folder] == list(range(7))  # a folder is read in sorted order
        # From a folder, the image is the file (read by the shard writer's workers), holding the member's bytes.
        assert all(isinstance(s.image, Path) and s.image.is_file() for s in from_folder)
        assert [(s.captions, s.class_id, s.image.read_bytes()) for s in from_folder] == \
               [(s.captions, s.class_id, s.image) for s in from_tar]


@pytest.mark.parametrize("mode", ["w:gz", "w:xz"])
def test_compressed_tar(tmp_path, mode):
    plain = sorted(iter_release_samples(_release_tar(tmp_path)[0], _spec(), "train"), key=lambda s: s.index)
    archive, _ = _release_tar(tmp_path, mode=mode, name=f"CLRS.tar.{mode[2:]}")
    packed = sorted(iter_release_samples(archive, _spec(), "train"), key=lambda s: s.index)
    assert [(s.index, s.captions, s.image) for s in packed] == [(s.index, s.captions, s.image) for s in plain]


def test_convert_writes_every_split(tmp_path):
    archive, annotations = _release_tar(tmp_path)
    out = tmp_path / "data" / NAME
    skipped = convert_release_dataset(archive, _spec(), out, shard_size=4, annotations=None,
                                      on_bad_sample="error")
    assert skipped.count == 0
    manifest = read_manifest(out).sort("split", "index")
    assert manifest.group_by("split").len().sort("split").rows() == [("test", 3), ("train", 7)]
    train = manifest.filter(pl.col("split") == "train")
    keys = sorted(annotations["train"])
    assert train["class_name"].to_list() == [k.split("/")[2] for k in keys]
    assert train["shard"].unique().sort().to_list() == ["CLRS/train-000000.tar", "CLRS/train-000001.tar"]
    # Every image is within the size bound: stored as the release's own bytes, in its own format, found by offset.
    images = _release()[0]
    for row in train.iter_rows(named=True):
        source = keys[row["index"]]
        with open(out.parent / row["shard"], "rb") as shard:
            shard.seek(row["image_offset"])
            assert shard.read(row["image_length"]) == images[source]
        assert row["image_format"] == source.rsplit(".", 1)[1]
        assert (row["width"], row["height"]) == Image.open(io.BytesIO(images[source])).size


# --- errors ---------------------------------------------------------------------------------------------------


def test_unknown_class_names_class_and_dataset(tmp_path):
    images, annotations = _release()
    path = sorted(annotations["train"])[2]
    annotations["train"][path]["classname"] = "harbour"
    archive = _tar(tmp_path / "CLRS.tar", {**images, f"{NAME}_train.json": _json(annotations["train"])})
    with pytest.raises(DataError) as err:
        iter_release_samples(archive, _spec(), "train")  # raised at the call, before any image is read
    assert "'harbour'" in str(err.value) and "'CLRS'" in str(err.value) and path in str(err.value)


def test_truncated_tar_names_the_archive(tmp_path):
    for mode, name in (("w", "CLRS.tar"), ("w:gz", "CLRS.tar.gz")):
        archive, _ = _release_tar(tmp_path, mode=mode, name=name)
        data = archive.read_bytes()
        # Keep the annotations readable from a given folder; cut the archive in the middle of its images.
        archive.write_bytes(data[: len(data) // 2])
        info = tmp_path / "00_info"
        info.mkdir(exist_ok=True)
        (info / f"{NAME}_train.json").write_bytes(_json(_release()[1]["train"]))
        with pytest.raises(DataError, match=re.escape(f"archive {archive} is truncated or corrupt")):
            list(iter_release_samples(archive, _spec(), "train", annotations=info))


def test_annotated_image_missing_from_archive(tmp_path):
    images, annotations = _release()
    gone = sorted(annotations["train"])[4]
    del images[gone]
    archive = _tar(tmp_path / "CLRS.tar", {**images, f"{NAME}_train.json": _json(annotations["train"])})
    with pytest.raises(DataError, match=re.escape(gone)) as err:
        list(iter_release_samples(archive, _spec(), "train"))
    assert str(archive) in str(err.value)


DAMAGED = {
    "not an image": b"\xff\xd8\xff\xe0 truncated jpeg",
    "cut-off jpeg": _image("JPEG", (40, 30))[:700],  # the header is complete; the scan stops half-way
    "cut-off png": _image("PNG", (30, 20))[:-30],
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_undecodable_image_errors_or_is_skipped_and_counted(tmp_path, caplog, damage):
    images, annotations = _release()
    bad = sorted(annotations["train"])[1]
    images[bad] = DAMAGED[damage]
    members = {**images, **{f"{NAME}_{s}.json": _json(t) for s, t in annotations.items()}}
    archive = _tar(tmp_path / "CLRS.tar", members)
    out = tmp_path / "data" / NAME
    with pytest.raises(DataError) as err:
        convert_release_dataset(archive, _spec(), out, shard_size=100, annotations=None, on_bad_sample="error")
    assert str(archive) in str(err.value) and bad in str(err.value) and "not a readable image" in str(err.value)
    assert not out.exists()

    with pytest.raises(ConfigError, match="on_bad_sample"):
        convert_release_dataset(archive, _spec(), out, shard_size=100, annotations=None, on_bad_sample="ignore")

    with caplog.at_level(logging.WARNING, logger="fomoflux.data"):
        skipped = convert_release_dataset(archive, _spec(), out, shard_size=100, annotations=None,
                                          on_bad_sample="skip", workers=2)
    assert isinstance(skipped, SkipLog) and skipped.count == 1
    assert skipped.items[0][0] == f"archive {archive}: member {bad}"
    assert any(bad in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    manifest = read_manifest(out)
    train = manifest.filter(pl.col("split") == "train")
    assert train.height == 6 and manifest.height == 9
    # The skipped image's index is absent; the others keep their sorted rank.
    assert sorted(train["index"].to_list()) == [0, 2, 3, 4, 5, 6]


def test_missing_annotation_names_where_it_looked(tmp_path):
    archive, _ = _release_tar(tmp_path, with_annotations=False)
    info = tmp_path / "00_info"
    info.mkdir()
    with pytest.raises(DataError) as err:
        iter_release_samples(archive, _spec(), "train", annotations=info)
    message = str(err.value)
    assert str(info / "CLRS_train.json") in message
    assert f"{archive}:CLRS_train.json" in message and f"{archive}:CLRS/CLRS_train.json" in message
    with pytest.raises(DataError, match="does not exist"):
        iter_release_samples(tmp_path / "nothere.tar", _spec(), "train")


# --- checksum records -----------------------------------------------------------------------------------------


def test_verify_or_record(tmp_path):
    file = tmp_path / "CLRS.tar"
    file.write_bytes(b"release bytes")
    record = tmp_path / "CLRS.tar.sha256"
    digest = hashlib.sha256(b"release bytes").hexdigest()
    assert verify_or_record(file, record) == digest
    assert record.read_text() == f"{digest}  CLRS.tar\n"
    assert verify_or_record(file, record) == digest
    file.write_bytes(b"release bytes, changed")
    with pytest.raises(DataError) as err:
        verify_or_record(file, record)
    changed = hashlib.sha256(b"release bytes, changed").hexdigest()
    assert all(part in str(err.value) for part in (str(file), str(record), digest, changed))
    # A digest the caller already computed (download returns one) is compared the same way.
    with pytest.raises(DataError, match=changed):
        verify_or_record(file, record, digest=changed)
    assert verify_or_record(file, record, digest=digest) == digest
    record.write_text("not a checksum\n")
    with pytest.raises(DataError, match=re.escape(str(record))):
        verify_or_record(file, record)
    record.write_text(f"{changed} *other.tar\n")
    with pytest.raises(DataError, match="other.tar"):
        verify_or_record(file, record)


# --- offline end to end ---------------------------------------------------------------------------------------


def test_download_record_and_convert(data_server, tmp_path):
    base, state = data_server
    (tmp_path / "served").mkdir()
    archive, annotations = _release_tar(tmp_path / "served")
    state.files["/CLRS.tar"] = archive.read_bytes()
    state.files["/login"] = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
    state.html.add("/login")

    dest = tmp_path / "downloads" / "CLRS.tar"
    record = tmp_path / "downloads" / "CLRS.tar.sha256"
    digest = download(f"{base}/CLRS.tar", dest, None, backoff=0)
    assert verify_or_record(dest, record) == digest  # first time: recorded
    assert record.read_text().split() == [digest, "CLRS.tar"]
    assert verify_or_record(dest, record) == digest  # second time: verified

    out = tmp_path / "data" / NAME
    skipped = convert_release_dataset(dest, _spec(), out, shard_size=5, annotations=None,
                                      on_bad_sample="error")
    assert skipped.count == 0
    manifest = read_manifest(out)
    for split, table in annotations.items():
        rows = manifest.filter(pl.col("split") == split).sort("index")
        keys = sorted(table)
        assert rows["index"].to_list() == list(range(len(keys)))
        assert rows["class_id"].to_list() == [CLASSES.index(k.split("/")[2]) for k in keys]
        assert rows["dataset"].unique().to_list() == [NAME]
        first_captions = [(table[k]["default_caption"] or [table[k]["synthetic_merged_caption"]])[0] for k in keys]
        assert [c for c in first_captions if c] == [c for c in rows["caption"].to_list() if "satellite" not in c]
        # every caption of a record is kept in the manifest's captions list, the evaluation caption first
        defaults = [table[k]["default_caption"] for k in keys]
        assert [list(d) for d in defaults if d] == [c for c in rows["captions"].to_list() if len(c) > 1]

    dest.write_bytes(dest.read_bytes()[:-1024])  # a changed (cut) file no longer matches its record
    with pytest.raises(DataError, match=re.escape(str(record))):
        verify_or_record(dest, record)
    with pytest.raises(DownloadError, match="HTML"):
        download(f"{base}/login", tmp_path / "downloads" / "login.tar", None, backoff=0)
