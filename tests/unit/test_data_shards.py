"""Shards, manifest, loader and catalog: write -> read back (webdataset, load_samples) -> select."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fomoflux.data.catalog import build_catalog, select_rows
from fomoflux.data.loading import load_samples
from fomoflux.data.mini import generate_split, mini_registry
from fomoflux.data.shards import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    RawSample,
    build_dataset,
    read_manifest,
    write_dataset,
)
from fomoflux.errors import ConfigError, DataError

REGISTRY = mini_registry()
SEED = 7
SIZE = 32
SCALE = 0.1  # small but with several shards of SHARD_SIZE
SHARD_SIZE = 32
DATASETS = ("new_shapes", "digits", "scenes")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name in DATASETS:
        build_dataset(REGISTRY[name], root / name, seed=SEED, image_size=SIZE, scale=SCALE, shard_size=SHARD_SIZE)
    return root


@pytest.fixture(scope="module")
def data_catalog(data_root) -> Path:
    out = data_root / "catalog.duckdb"
    build_catalog([data_root / name / MANIFEST_NAME for name in DATASETS], out)
    return out


def _expected(name: str, split: str) -> list[RawSample]:
    return list(generate_split(REGISTRY[name], split, SEED, SIZE, SCALE))


def test_manifest_columns_and_types(data_root):
    table = pq.read_table(data_root / "new_shapes" / MANIFEST_NAME)
    assert table.schema.names == MANIFEST_SCHEMA.names
    assert table.schema.equals(MANIFEST_SCHEMA)
    manifest = read_manifest(data_root / "new_shapes")
    expected = _expected("new_shapes", "train") + _expected("new_shapes", "test")
    assert manifest.height == len(expected)
    first = manifest.row(0, named=True)
    assert first["key"] == "new_shapes/train/00000000"
    assert first["shard"] == "new_shapes/train-000000.tar"
    assert first["caption"] == first["captions"][0] == expected[0].captions[0]
    assert list(first["captions"]) == list(expected[0].captions)
    assert first["class_name"] == REGISTRY["new_shapes"].classnames[first["class_id"]]
    for shard in manifest["shard"].unique():
        assert (data_root / shard).is_file()
    # SHARD_SIZE samples per shard, consecutive.
    n_train = len(_expected("new_shapes", "train"))
    assert manifest.filter(pl.col("split") == "train")["shard"].n_unique() == -(-n_train // SHARD_SIZE)
    scenes = read_manifest(data_root / "scenes")
    assert scenes["class_id"].to_list() == [-1] * scenes.height
    assert scenes["class_name"].null_count() == scenes.height


def test_shards_read_back_with_plain_webdataset_in_another_process(data_root):
    shard = data_root / "new_shapes" / "train-000000.tar"
    script = (
        "import json, sys, webdataset as wds\n"
        "out = []\n"
        "for s in wds.WebDataset(sys.argv[1], shardshuffle=False).decode('pil'):\n"
        "    out.append([s['__key__'], s['png'].size, s['png'].mode, s['txt'], s['json']])\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(shard)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    read = json.loads(done.stdout.strip().splitlines()[-1])
    expected = _expected("new_shapes", "train")[:SHARD_SIZE]
    assert [r[0] for r in read] == [f"new_shapes/train/{s.index:08d}" for s in expected]
    for (key, size, mode, txt, meta), sample in zip(read, expected):
        assert size == [SIZE, SIZE] and mode == "RGB"
        assert txt == sample.captions[0]
        assert meta == {"dataset": "new_shapes", "split": "train", "index": sample.index, "class_id": sample.class_id,
                        "class_name": sample.class_name, "captions": list(sample.captions)}


def test_load_samples_returns_the_written_images(data_root):
    rows = read_manifest(data_root / "digits").filter(pl.col("split") == "test")
    loaded = load_samples(data_root, rows, SIZE)
    expected = _expected("digits", "test")
    assert loaded.images.shape == (len(expected), 3, SIZE, SIZE)
    want = np.stack([np.asarray(s.image) for s in expected]).transpose(0, 3, 1, 2)
    assert np.array_equal(loaded.images.numpy(), want)
    assert loaded.captions == [s.captions for s in expected]
    assert loaded.class_ids.tolist() == [s.class_id for s in expected]
    assert loaded.keys[0] == "digits/test/0"


def test_load_samples_follows_row_order_and_resizes(data_root):
    rows = read_manifest(data_root / "new_shapes")
    picked = rows[[40, 3, 3, 17]]  # across shards and splits, with a repeat
    loaded = load_samples(data_root, picked, SIZE)
    single = [load_samples(data_root, rows[[i]], SIZE).images[0] for i in (40, 3, 17)]
    assert loaded.keys == [f"new_shapes/{r['split']}/{r['index']}" for r in picked.iter_rows(named=True)]
    assert np.array_equal(loaded.images[0].numpy(), single[0].numpy())
    assert np.array_equal(loaded.images[1].numpy(), loaded.images[2].numpy())
    assert np.array_equal(loaded.images[3].numpy(), single[2].numpy())
    assert load_samples(data_root, picked, 24).images.shape == (4, 3, 24, 24)


def test_catalog_select_by_dataset_and_entries(data_catalog):
    rows = select_rows(data_catalog, split="train", dataset="new_shapes")
    assert rows.columns == MANIFEST_SCHEMA.names
    assert rows.schema["index"] == pl.Int64 and rows.schema["class_id"] == pl.Int32
    assert rows.schema["captions"] == pl.List(pl.String)
    assert rows["index"].to_list() == list(range(rows.height))
    assert rows.height == len(_expected("new_shapes", "train"))

    entries = ["new_shapes+++ring", "digits+++seven", "digits+++zero", "digits+++zero"]
    picked = select_rows(data_catalog, split="train", entries=entries)
    assert set(zip(picked["dataset"], picked["class_name"])) == {("new_shapes", "ring"), ("digits", "seven"),
                                                                ("digits", "zero")}
    assert picked.select(["dataset", "index"]).rows() == sorted(picked.select(["dataset", "index"]).rows())
    every = select_rows(data_catalog, split="train", dataset="digits")
    assert picked.filter(pl.col("dataset") == "digits").height == every.filter(
        pl.col("class_name").is_in(["seven", "zero"])).height

    import duckdb

    with duckdb.connect(str(data_catalog), read_only=True) as con:
        counts = dict(((d, s), (n, k)) for d, s, n, k in con.execute("SELECT * FROM datasets").fetchall())
    assert counts[("new_shapes", "train")] == (rows.height, 6)
    assert counts[("scenes", "test")][1] == 0


def test_catalog_errors(data_catalog, data_root):
    with pytest.raises(DataError, match=r"new_shapes\+\+\+blob"):
        select_rows(data_catalog, split="train", entries=["new_shapes+++ring", "new_shapes+++blob"])
    with pytest.raises(DataError, match=r"nowhere\+\+\+ring"):
        select_rows(data_catalog, split="train", entries=["nowhere+++ring"])
    with pytest.raises(DataError, match="nowhere"):
        select_rows(data_catalog, split="test", dataset="nowhere")
    # A known dataset without that split is simply empty (scenes is test-only).
    empty = select_rows(data_catalog, split="train", dataset="scenes")
    assert empty.height == 0 and empty.columns == MANIFEST_SCHEMA.names
    assert select_rows(data_catalog, split="train", entries=[]).height == 0
    with pytest.raises(ConfigError, match="ring"):
        select_rows(data_catalog, split="train", entries=["ring"])
    with pytest.raises(DataError, match="two manifests"):
        build_catalog([data_root / "digits" / MANIFEST_NAME] * 2, data_root / "dup.duckdb")
    assert not (data_root / "dup.duckdb").exists()


def test_select_thousands_of_entries_quickly(tmp_path):
    # A synthetic manifest of 5,000 classes (the catalog never opens shards).
    n = 5000
    manifest = pa.table({
        "dataset": ["big"] * 2 * n, "split": ["train"] * 2 * n, "index": list(range(2 * n)),
        "key": [f"big/train/{i:08d}" for i in range(2 * n)], "shard": ["big/train-000000.tar"] * 2 * n,
        "class_id": [i % n for i in range(2 * n)], "class_name": [f"c{i % n}" for i in range(2 * n)],
        "caption": ["x"] * 2 * n, "captions": [["x"]] * 2 * n,
    }, schema=MANIFEST_SCHEMA)
    pq.write_table(manifest, tmp_path / "m.parquet")
    build_catalog([tmp_path / "m.parquet"], tmp_path / "c.duckdb")
    entries = [f"big+++c{i}" for i in range(0, n, 2)]
    start = time.perf_counter()
    rows = select_rows(tmp_path / "c.duckdb", split="train", entries=entries)
    assert time.perf_counter() - start < 3.0
    assert rows.height == 2 * len(entries)
    assert rows["index"].is_sorted()


def _rewrite_member(src: Path, dst: Path, member: str, payload: bytes) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tout:
        for info in tin:
            data = tin.extractfile(info).read()
            if info.name == member:
                data = payload
                info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def test_corrupt_png_names_shard_and_key(data_root, tmp_path):
    root = tmp_path / "root"
    (root / "digits").mkdir(parents=True)
    shard = "digits/train-000001.tar"
    rows = read_manifest(data_root / "digits").filter(pl.col("shard") == shard)
    victim = rows["key"][5]
    _rewrite_member(data_root / shard, root / shard, f"{victim}.png", b"\x89PNG\r\n\x1a\ngarbage" * 20)
    with pytest.raises(DataError) as err:
        load_samples(root, rows, SIZE)
    assert str(root / shard) in str(err.value) and victim in str(err.value)
    # Samples of the same shard that are intact still load.
    assert len(load_samples(root, rows.filter(pl.col("key") != victim), SIZE)) == rows.height - 1


def test_missing_or_truncated_shard_is_named(data_root, tmp_path):
    rows = read_manifest(data_root / "digits").head(3)
    with pytest.raises(DataError, match="train-000000.tar"):
        load_samples(tmp_path, rows, SIZE)
    (tmp_path / "digits").mkdir()
    data = (data_root / "digits" / "train-000000.tar").read_bytes()
    (tmp_path / "digits" / "train-000000.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="train-000000.tar"):
        load_samples(tmp_path, read_manifest(data_root / "digits").filter(pl.col("split") == "train"), SIZE)


def test_writing_is_atomic_and_refuses_to_overwrite(tmp_path):
    def failing():
        yield from generate_split(REGISTRY["glyphs"], "train", 0, SIZE, 0.02)
        raise RuntimeError("generator died")

    out = tmp_path / "glyphs"
    with pytest.raises(RuntimeError, match="generator died"):
        write_dataset({"train": failing()}, dataset="glyphs", out_dir=out)
    assert list(tmp_path.iterdir()) == [], "a failed write leaves nothing behind"

    build_dataset(REGISTRY["glyphs"], out, seed=0, image_size=SIZE, scale=0.02)
    first = (out / "train-000000.tar").read_bytes()
    with pytest.raises(DataError, match="not empty"):
        build_dataset(REGISTRY["glyphs"], out, seed=1, image_size=SIZE, scale=0.02)
    assert (out / "train-000000.tar").read_bytes() == first
    build_dataset(REGISTRY["glyphs"], out, seed=1, image_size=SIZE, scale=0.02, overwrite=True)
    assert (out / "train-000000.tar").read_bytes() != first
    build_dataset(REGISTRY["glyphs"], tmp_path / "again", seed=1, image_size=SIZE, scale=0.02)
    # mtime-free tar headers: the same samples give byte-identical shards.
    assert (tmp_path / "again" / "train-000000.tar").read_bytes() == (out / "train-000000.tar").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "glyphs"]


def test_write_dataset_rejects_bad_samples(tmp_path):
    bad = RawSample(index=0, image=b"not a png", captions=("x",))
    with pytest.raises(DataError, match="PNG"):
        write_dataset({"train": [bad]}, dataset="d", out_dir=tmp_path / "d")
    sample = next(iter(generate_split(REGISTRY["counting"], "train", 0, SIZE, 0.01)))
    with pytest.raises(DataError, match="duplicate"):
        write_dataset({"train": [sample, sample]}, dataset="d", out_dir=tmp_path / "d")
    with pytest.raises(ConfigError, match="split"):
        write_dataset({"tr/ain": [sample]}, dataset="d", out_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()
