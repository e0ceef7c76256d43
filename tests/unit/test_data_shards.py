"""Shards, manifest, loader and catalog: write -> read back (webdataset, byte offsets, load_samples) -> select;
how images are stored; parallel writing."""

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
import torch
from PIL import Image

from fomoflux.data.catalog import build_catalog, select_rows
from fomoflux.data.loading import load_samples
from fomoflux.data.mini import generate_split, mini_registry
from fomoflux.data.shards import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    RawSample,
    SkipLog,
    _ShardFile,
    _ustar_header,
    build_dataset,
    jpeg_frame_size,
    read_manifest,
    store_image,
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
    for (_, size, mode, txt, meta), sample in zip(read, expected):
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
        "caption": ["x"] * 2 * n, "captions": [["x"]] * 2 * n, "image_format": ["png"] * 2 * n,
        **{name: [0] * 2 * n for name in MANIFEST_SCHEMA.names[10:]},
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
    """Copy the shard with ``member``'s data replaced by ``payload``, cut or zero-padded to the same length (so
    the manifest's offsets of every other member stay right)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tout:
        for info in tin:
            data = tin.extractfile(info).read()
            if info.name == member:
                data = payload[: len(data)].ljust(len(data), b"\0")
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
    # The loader names a sample dataset/split/index.
    assert str(root / shard) in str(err.value) and f"digits/train/{rows['index'][5]}" in str(err.value)
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
    with pytest.raises(DataError, match="split 'train': sample 0: not a readable image"):
        write_dataset({"train": [bad]}, dataset="d", out_dir=tmp_path / "d")
    sample = next(iter(generate_split(REGISTRY["counting"], "train", 0, SIZE, 0.01)))
    with pytest.raises(DataError, match="duplicate"):
        write_dataset({"train": [sample, sample]}, dataset="d", out_dir=tmp_path / "d")
    with pytest.raises(ConfigError, match="split"):
        write_dataset({"tr/ain": [sample]}, dataset="d", out_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()


# --- stored images, byte offsets, parallel writing ---------------------------------------------------------------


def _photo(width: int, height: int, fmt: str = "JPEG", seed: int = 0, mode: str = "RGB", **save) -> bytes:
    """Encoded bytes of a smooth gradient with noise (decodes like a photo)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    pixels = rng.uniform(0, 255, (1, 1, 3)) + rng.uniform(-100, 100, (1, 1, 3)) * x + 80 * y
    pixels = np.clip(pixels + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format=fmt, **save)
    return buf.getvalue()


BOUND = 64  # max_image_side of these tests
MIXED = {  # name -> (source bytes, stored format, stored size)
    "jpeg": (_photo(60, 40, seed=1), "jpg", (60, 40)),
    "grey jpeg": (_photo(30, 50, mode="L", seed=2), "jpg", (30, 50)),
    "progressive jpeg with restarts": (_photo(64, 70, seed=3, progressive=True, restart_marker_blocks=2), "jpg",
                                       (64, 70)),
    "png with alpha": (_photo(50, 30, "PNG", mode="RGBA", seed=4), "png", (50, 30)),
    "wide jpeg": (_photo(300, 100, seed=5), "jpg", (192, 64)),  # shorter side to the bound, aspect kept
    "tall png": (_photo(80, 160, "PNG", seed=6), "jpg", (64, 128)),
    "bmp": (_photo(20, 24, "BMP", seed=7), "png", (20, 24)),
    "lossy webp": (_photo(40, 30, "WEBP", seed=8, quality=80), "jpg", (40, 30)),
    "lossless webp": (_photo(40, 30, "WEBP", seed=9, lossless=True), "png", (40, 30)),
}


def _mixed_samples() -> list[RawSample]:
    return [RawSample(index=i, image=data, captions=(f"a {name}", f"picture {i}"), origin=f"file {name}")
            for i, (name, (data, _, _)) in enumerate(MIXED.items())]


def test_store_image_keeps_jpeg_and_png_bytes_and_bounds_the_rest():
    for name, (data, stored_format, size) in MIXED.items():
        stored = store_image(data, BOUND)
        assert (stored.format, (stored.width, stored.height)) == (stored_format, size), name
        with Image.open(io.BytesIO(stored.data)) as image:
            assert image.format == {"jpg": "JPEG", "png": "PNG"}[stored_format] and image.size == size, name
        if name in ("jpeg", "grey jpeg", "progressive jpeg with restarts", "png with alpha"):
            assert stored.data == data, f"{name}: within the bound, the source bytes are kept"
    # Resized: the picture is the source's, scaled (the resize is bicubic, the encoding JPEG at quality 95).
    wide = store_image(MIXED["wide jpeg"][0], BOUND)
    want = Image.open(io.BytesIO(MIXED["wide jpeg"][0])).convert("RGB").resize((192, 64), Image.Resampling.BICUBIC)
    got = Image.open(io.BytesIO(wide.data)).convert("RGB")
    assert np.abs(np.asarray(got, float) - np.asarray(want, float)).mean() < 4
    # Generated images (PIL) become PNG, losslessly.
    drawn = Image.fromarray(np.arange(48 * 40 * 3, dtype=np.uint8).reshape(40, 48, 3))
    stored = store_image(drawn, BOUND)
    assert stored.format == "png" and np.array_equal(np.asarray(Image.open(io.BytesIO(stored.data))), np.asarray(drawn))


def test_a_jpeg_cut_anywhere_is_not_readable_and_trailing_bytes_are_fine():
    data = MIXED["progressive jpeg with restarts"][0]
    for cut in range(2, len(data), max(1, len(data) // 97)):
        with pytest.raises(DataError, match="not a readable image"):
            store_image(data[:cut])
    with pytest.raises(DataError, match="not a readable image"):
        store_image(data[:-1])  # only the end-of-image marker's last byte missing
    assert store_image(data + b"camera trailer").data == data + b"camera trailer"


def _write_mixed(out: Path, workers: int, shard_size: int = 4) -> Path:
    return write_dataset({"train": _mixed_samples(), "test": _mixed_samples()[:3]}, dataset="mixed", out_dir=out,
                         shard_size=shard_size, max_image_side=BOUND, workers=workers)


def test_offsets_give_exactly_every_members_bytes(tmp_path):
    out = _write_mixed(tmp_path / "mixed", workers=2)
    manifest = read_manifest(out)
    assert manifest.height == len(MIXED) + 3
    members_seen = 0
    for shard in manifest["shard"].unique().to_list():
        with tarfile.open(tmp_path / shard) as tar:
            members = {info.name: tar.extractfile(info).read() for info in tar}
            assert all(info.isfile() and info.mtime == 0 for info in tar.getmembers())
        rows = manifest.filter(pl.col("shard") == shard).iter_rows(named=True)
        with open(tmp_path / shard, "rb") as handle:
            for row in rows:
                for member, ext in (("image", row["image_format"]), ("txt", "txt"), ("json", "json")):
                    handle.seek(row[f"{member}_offset"])
                    assert handle.read(row[f"{member}_length"]) == members[f"{row['key']}.{ext}"]
                    members_seen += 1
        assert len(members) == 3 * manifest.filter(pl.col("shard") == shard).height
    assert members_seen == 3 * manifest.height
    by_index = manifest.filter(pl.col("split") == "train").sort("index")
    assert by_index["image_format"].to_list() == [fmt for _, fmt, _ in MIXED.values()]
    assert list(zip(by_index["width"], by_index["height"])) == [size for _, _, size in MIXED.values()]


def test_shards_read_with_plain_webdataset_and_open_clip_keys(tmp_path):
    import webdataset as wds

    out = _write_mixed(tmp_path / "mixed", workers=1)
    manifest = read_manifest(out).filter(pl.col("split") == "train").sort("index")
    urls = sorted(str(p) for p in out.glob("train-*.tar"))
    decoded = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in decoded] == manifest["key"].to_list()
    for sample, row in zip(decoded, manifest.iter_rows(named=True)):
        image = sample[row["image_format"]]
        stored = store_image(MIXED[row["caption"][2:]][0], BOUND)
        # webdataset's "pil" decoding converts to RGB.
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(io.BytesIO(stored.data)).convert("RGB")))
        assert sample["txt"] == row["caption"] and sample["json"]["captions"] == row["captions"]
    # open_clip's training loader reads ("jpg;png", "txt") tuples.
    pairs = list(wds.WebDataset(urls, shardshuffle=False).decode("pilrgb").to_tuple("jpg;png", "txt"))
    assert len(pairs) == len(MIXED) and all(image.mode == "RGB" for image, _ in pairs)


def test_same_bytes_whatever_the_number_of_workers(tmp_path):
    written = {}
    for workers in (1, 3):
        streamed = _write_mixed(tmp_path / f"w{workers}" / "mixed", workers=workers, shard_size=2)
        drawn = build_dataset(REGISTRY["glyphs"], tmp_path / f"w{workers}" / "glyphs", seed=3, image_size=SIZE,
                              scale=0.05, shard_size=16, workers=workers)
        written[workers] = {p.relative_to(tmp_path / f"w{workers}"): p.read_bytes()
                            for folder in (streamed, drawn) for p in sorted(folder.iterdir())}
    assert len([name for name in written[1] if name.suffix == ".tar"]) > 6
    assert written[1] == written[3]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_truncated_jpeg_is_an_error_naming_it_or_a_counted_skip(tmp_path, workers):
    samples = _mixed_samples()
    samples[5].image = MIXED["jpeg"][0][:-100]
    samples[5].origin = "archive /data/x.tar: member x/cut.jpg"
    with pytest.raises(DataError) as err:
        write_dataset({"train": samples}, dataset="mixed", out_dir=tmp_path / "m", shard_size=2, workers=workers)
    assert "archive /data/x.tar: member x/cut.jpg" in str(err.value) and "cut off" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    skipped = SkipLog()
    write_dataset({"train": samples}, dataset="mixed", out_dir=tmp_path / "m", shard_size=2, workers=workers,
                  on_bad_sample="skip", skipped=skipped)
    assert [origin for origin, _ in skipped.items] == ["archive /data/x.tar: member x/cut.jpg"]
    assert 5 not in read_manifest(tmp_path / "m")["index"].to_list()
    assert read_manifest(tmp_path / "m").height == len(MIXED) - 1
    with pytest.raises(DataError, match="all 1 samples were skipped"):
        write_dataset({"train": [samples[5]]}, dataset="mixed", out_dir=tmp_path / "n", on_bad_sample="skip")


def test_jpeg_frame_size_is_pils_size_for_every_kind_of_jpeg():
    for name, (data, *_) in MIXED.items():
        if data[:3] == b"\xff\xd8\xff":
            assert jpeg_frame_size(data) == Image.open(io.BytesIO(data)).size, name
    with pytest.raises(ValueError, match="no frame header"):
        jpeg_frame_size(b"\xff\xd8\xff\xd9")  # SOI, EOI: complete, but not a picture


@pytest.mark.parametrize("name", ["k/train/00000001.jpg", "new_shapes/test/12345678.json", "é/x.txt", "n" * 100,
                                  "a/" * 60 + "long.jpg"])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 25_000, 8 ** 11 - 1])
def test_hand_built_tar_headers_are_tarfiles(name, size):
    info = tarfile.TarInfo(name)
    info.size = size
    assert _ustar_header(name, size) == info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


def test_whole_shard_file_is_what_tarfile_writes(tmp_path):
    members = [("a/train/00000000.jpg", MIXED["jpeg"][0]), ("a/train/00000000.txt", b"x"), ("a/x.json", b"")]
    ours, theirs = tmp_path / "ours.tar", tmp_path / "theirs.tar"
    with open(ours, "wb") as handle:
        shard = _ShardFile(handle)
        spans = [shard.add(name, data) for name, data in members]
        shard.close()
    with tarfile.open(theirs, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert ours.read_bytes() == theirs.read_bytes()
    raw = ours.read_bytes()
    assert [raw[start:start + length] for start, length in spans] == [data for _, data in members]


def test_samples_given_as_paths_are_read_by_the_workers(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    samples = []
    for i, (name, (data, _, _)) in enumerate(MIXED.items()):
        (folder / f"{i}.bin").write_bytes(data)
        samples.append(RawSample(index=i, image=folder / f"{i}.bin", captions=(f"a {name}",)))
    from_paths = write_dataset({"train": samples}, dataset="mixed", out_dir=tmp_path / "p" / "mixed", shard_size=2,
                               max_image_side=BOUND, workers=2)
    from_bytes = write_dataset({"train": [RawSample(index=s.index, image=s.image.read_bytes(), captions=s.captions)
                                          for s in samples]},
                               dataset="mixed", out_dir=tmp_path / "b" / "mixed", shard_size=2, max_image_side=BOUND)
    assert {p.name: p.read_bytes() for p in from_paths.iterdir()} == {p.name: p.read_bytes()
                                                                      for p in from_bytes.iterdir()}
    # A file that cannot be read is an error naming it, also where bad images are skipped: the source is broken.
    (folder / "3.bin").unlink()
    with pytest.raises(DataError, match=r"cannot read .*3\.bin"):
        write_dataset({"train": samples}, dataset="mixed", out_dir=tmp_path / "q", workers=2, on_bad_sample="skip")
    assert not (tmp_path / "q").exists()


def test_read_pixels_are_read_image_pixels_for_every_format(tmp_path):
    from fomoflux.data.loading import READ_COLUMNS, DiskSamples

    out = _write_mixed(tmp_path / "mixed", workers=1)
    rows = read_manifest(out).sort("split", "index")
    samples = DiskSamples(tmp_path, rows.select(READ_COLUMNS))
    assert {"jpg", "png"} <= set(rows["image_format"])
    for i in range(len(samples)):
        for min_side in (None, 16, 40):  # 16: the wide JPEG (64 px high) takes PIL's reduced-scale decode
            want = torch.from_numpy(np.array(samples.read_image(i, min_side=min_side))).permute(2, 0, 1)
            got = samples.read_pixels(i, min_side=min_side)
            assert got.dtype == torch.uint8 and torch.equal(got, want), (rows["caption"][i], min_side)
