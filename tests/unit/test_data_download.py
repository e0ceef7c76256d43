"""download() against a local HTTP server, and ImageFolder archive import into shards."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
import zipfile

import numpy as np
import polars as pl
import pytest
from http_server import data_no_proxy_fixture, data_server_fixture  # noqa: F401 (fixtures; the first is autouse)
from PIL import Image

from fomoflux.data.archive import import_imagefolder
from fomoflux.data.download import download
from fomoflux.data.loading import load_samples
from fomoflux.data.registry import DatasetSpec
from fomoflux.data.shards import build_dataset, read_manifest
from fomoflux.errors import DataError, DownloadError

CLASSES = ("cat", "dog", "owl")
PER_CLASS = {"train": 3, "test": 2}


def _image_bytes(rng: np.random.Generator, fmt: str, size: tuple[int, int]) -> bytes:
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _archive_members(root: str = "toy/", classes=CLASSES) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    members = {f"{root}README.txt": b"not an image"}
    for split, n in PER_CLASS.items():
        for cls in classes:
            for i in range(n):
                fmt, ext = ("PNG", "png") if i % 2 == 0 else ("JPEG", "jpg")
                members[f"{root}{split}/{cls}/img{i}.{ext}"] = _image_bytes(rng, fmt, (40, 30))
    return members


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _spec(classnames=("owl", "cat", "dog"), url: str = "http://x/toy.tar.gz") -> DatasetSpec:
    return DatasetSpec("toy", "classification", "adaptation", tuple(classnames), "a photo of a {}, a toy.",
                       source={"download": {"url": url, "sha256": None}})


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- download -------------------------------------------------------------------------------------------------


def test_download_with_checksum(data_server, tmp_path):
    base, state = data_server
    body = _tar_gz(_archive_members())
    state.files["/toy.tar.gz"] = body
    dest = tmp_path / "toy.tar.gz"
    assert download(f"{base}/toy.tar.gz", dest, _sha(body), backoff=0) == _sha(body)
    assert dest.read_bytes() == body
    assert not dest.with_suffix(".gz.part").exists()
    # A verified file is not fetched again.
    assert download(f"{base}/toy.tar.gz", dest, _sha(body), backoff=0) == _sha(body)
    assert len(state.requests) == 1
    # Without a checksum the digest is still reported.
    assert download(f"{base}/toy.tar.gz", tmp_path / "other.tgz", None, backoff=0) == _sha(body)


def test_download_resumes_after_a_cut(data_server, tmp_path):
    base, state = data_server
    body = bytes(range(256)) * 400  # 100 KiB
    state.files["/big.tar"] = body
    state.cut_after["/big.tar"] = 30_000
    dest = tmp_path / "big.tar"
    assert download(f"{base}/big.tar", dest, _sha(body), retries=1, backoff=0) == _sha(body)
    assert dest.read_bytes() == body
    assert len(state.requests) == 2
    assert "Range" not in state.requests[0][1]
    assert state.requests[1][1]["Range"] == "bytes=30000-"


def test_download_restarts_when_the_server_ignores_range(data_server, tmp_path):
    base, state = data_server
    body = b"x" * 50_000
    state.files["/plain.tar"] = body
    state.ignore_range.add("/plain.tar")
    dest = tmp_path / "plain.tar"
    dest.with_suffix(".tar.part").write_bytes(b"x" * 1000 + b"stale")
    assert download(f"{base}/plain.tar", dest, _sha(body), backoff=0) == _sha(body)
    assert state.requests[0][1]["Range"] == "bytes=1005-"
    assert dest.read_bytes() == body


def test_download_with_a_complete_part_gets_416_and_finishes(data_server, tmp_path):
    base, state = data_server
    body = b"y" * 4000
    state.files["/done.tar"] = body
    dest = tmp_path / "done.tar"
    dest.with_suffix(".tar.part").write_bytes(body)
    assert download(f"{base}/done.tar", dest, _sha(body), backoff=0) == _sha(body)
    assert dest.read_bytes() == body


def test_download_retries_a_server_error(data_server, tmp_path):
    base, state = data_server
    state.files["/flaky.tar"] = b"z" * 1000
    state.fail_once.add("/flaky.tar")
    dest = tmp_path / "flaky.tar"
    download(f"{base}/flaky.tar", dest, None, retries=2, backoff=0)
    assert dest.read_bytes() == b"z" * 1000
    assert len(state.requests) == 2


def test_wrong_checksum_is_an_error_and_leaves_nothing(data_server, tmp_path):
    base, state = data_server
    body = b"payload" * 100
    state.files["/x.tar"] = body
    dest = tmp_path / "x.tar"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        download(f"{base}/x.tar", dest, wrong, backoff=0)
    message = str(err.value)
    assert f"{base}/x.tar" in message and wrong in message and _sha(body) in message
    assert not dest.exists() and not dest.with_suffix(".tar.part").exists()


def test_dead_url_is_an_error_naming_it(data_server, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/gone.tar"
    with pytest.raises(DownloadError, match=re.escape(url)):
        download(url, tmp_path / "gone.tar", None, retries=1, backoff=0, timeout=2)
    base, _ = data_server
    with pytest.raises(DownloadError, match=re.escape(f"{base}/missing.tar") + ".*404"):
        download(f"{base}/missing.tar", tmp_path / "missing.tar", None, retries=1, backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_html_is_refused(data_server, tmp_path):
    base, state = data_server
    state.files["/login"] = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
    state.html.add("/login")
    with pytest.raises(DownloadError, match="HTML"):
        download(f"{base}/login", tmp_path / "a.tar", None, backoff=0)
    # The same page served with an archive content type is caught by its first bytes.
    state.files["/sneaky.tar"] = b"\n  <html><body>quota exceeded</body></html>"
    with pytest.raises(DownloadError, match="HTML"):
        download(f"{base}/sneaky.tar", tmp_path / "b.tar", None, backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_file_url(tmp_path):
    body = _zip(_archive_members())
    src = tmp_path / "src.zip"
    src.write_bytes(body)
    dest = tmp_path / "out" / "toy.zip"
    assert download(src.as_uri(), dest, _sha(body)) == _sha(body)
    assert dest.read_bytes() == body
    with pytest.raises(DownloadError, match="nothere.zip"):
        download((tmp_path / "nothere.zip").as_uri(), tmp_path / "n.zip", None, retries=0)


# --- archive import -------------------------------------------------------------------------------------------


def test_downloaded_archive_imports_into_shards(data_server, tmp_path):
    base, state = data_server
    body = _tar_gz(_archive_members())
    state.files["/toy.tar.gz"] = body
    archive = tmp_path / "downloads" / "toy.tar.gz"
    download(f"{base}/toy.tar.gz", archive, _sha(body), backoff=0)

    spec = _spec()
    build_dataset(spec, tmp_path / "data" / "toy", seed=0, image_size=16, archive=archive, shard_size=4)
    manifest = read_manifest(tmp_path / "data" / "toy")
    train = manifest.filter(pl.col("split") == "train")
    assert train.height == 3 * PER_CLASS["train"]
    assert manifest.filter(pl.col("split") == "test").height == 3 * PER_CLASS["test"]
    # Sorted member order (cat, dog, owl folders), class ids in the spec's order (owl, cat, dog).
    assert train["class_name"].to_list() == ["cat"] * 3 + ["dog"] * 3 + ["owl"] * 3
    assert train["class_id"].to_list() == [1] * 3 + [2] * 3 + [0] * 3
    assert train["caption"][0] == "a photo of a cat, a toy."
    assert train["shard"].unique().sort().to_list() == ["toy/train-000000.tar", "toy/train-000001.tar",
                                                        "toy/train-000002.tar"]
    loaded = load_samples(tmp_path / "data", train, 16)
    assert loaded.images.shape == (9, 3, 16, 16)


def test_zip_without_root_folder(tmp_path):
    archive = tmp_path / "toy.zip"
    archive.write_bytes(_zip(_archive_members(root="")))
    samples = list(import_imagefolder(archive, _spec(), "test"))
    assert [s.class_name for s in samples] == ["cat", "cat", "dog", "dog", "owl", "owl"]
    assert [s.index for s in samples] == list(range(6))
    # The members' bytes as they are (the shard writer stores them), and where they came from.
    members = _archive_members(root="")
    assert samples[0].image == members["test/cat/img0.png"]
    assert samples[0].origin == f"archive {archive}: member test/cat/img0.png"


def test_class_mismatch_is_named(tmp_path):
    archive = tmp_path / "toy.tar.gz"
    archive.write_bytes(_tar_gz(_archive_members()))
    with pytest.raises(DataError, match="bird"):
        list(import_imagefolder(archive, _spec(("owl", "cat", "dog", "bird")), "train"))
    with pytest.raises(DataError, match="dog"):
        list(import_imagefolder(archive, _spec(("owl", "cat")), "train"))
    with pytest.raises(DataError, match="'val/"):
        list(import_imagefolder(archive, _spec(), "val"))


def test_undecodable_image_names_archive_and_member(tmp_path):
    members = _archive_members()
    members["toy/train/dog/img1.jpg"] = b"\xff\xd8 truncated jpeg"
    archive = tmp_path / "toy.tar.gz"
    archive.write_bytes(_tar_gz(members))
    with pytest.raises(DataError) as err:
        build_dataset(_spec(), tmp_path / "data" / "toy", seed=0, image_size=16, archive=archive, shard_size=4)
    assert str(archive) in str(err.value) and "toy/train/dog/img1.jpg" in str(err.value)
    assert not (tmp_path / "data" / "toy").exists()
    not_archive = tmp_path / "page.tar"
    not_archive.write_bytes(b"<html></html>")
    with pytest.raises(DataError, match="neither a tar nor a zip"):
        list(import_imagefolder(not_archive, _spec(), "train"))
