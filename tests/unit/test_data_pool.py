"""Importing a webdataset replay pool (img2dataset layout) into our shard format: fomoflux.data.pool."""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from fomoflux.data.pool import convert_webdataset_pool, expand_shards, iter_webdataset_samples
from fomoflux.data.registry import DatasetSpec
from fomoflux.data.release import SkipLog
from fomoflux.data.shards import read_manifest
from fomoflux.errors import ConfigError, DataError

IMAGE_SIZE = 16
SPEC = DatasetSpec(name="cc3m_pool", kind="pretraining", role="pretraining",
                   source={"webdataset": {"urls": "unused"}}, splits=("train",))


@dataclass
class PoolSample:
    """What one source sample should come out as: its caption(s) and the solid colour of its image."""

    key: str
    captions: tuple[str, ...]
    colour: tuple[int, int, int]


def encoded_image(colour: tuple[int, int, int], size: tuple[int, int], fmt: str) -> bytes:
    """A solid-colour image of ``size`` in format ``fmt`` (JPEG / WEBP / PNG)."""
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def write_shard(path: Path, members: list[dict[str, object]]) -> str:
    """Write ``members`` (webdataset sample dicts of bytes) as a tar shard at ``path``; returns the path as str."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path), encoder=False) as writer:
        for member in members:
            writer.write(member)
    return str(path)


def distinct_colour(n: int) -> tuple[int, int, int]:
    # Far apart per channel, so a JPEG / resize round trip cannot turn one sample's colour into another's.
    return (40 * (n % 6) + 20, 60 * ((n // 6) % 4) + 20, 200 - 30 * (n % 5))


def jpg_txt(n: int, size: tuple[int, int]) -> tuple[dict[str, object], PoolSample]:
    key = f"{n:09d}"
    colour = distinct_colour(n)
    caption = f"a jpeg photo number {n}"
    member = {"__key__": key, "jpg": encoded_image(colour, size, "JPEG"), "txt": (caption + "\n").encode()}
    return member, PoolSample(key, (caption,), colour)


def webp_json(n: int, size: tuple[int, int]) -> tuple[dict[str, object], PoolSample]:
    key = f"{n:09d}"
    colour = distinct_colour(n)
    caption = f"a webp picture, number {n}"
    meta = {"caption": caption, "url": f"http://example.com/{n}.webp", "width": size[0], "height": size[1]}
    member = {"__key__": key, "webp": encoded_image(colour, size, "WEBP"), "json": json.dumps(meta).encode()}
    return member, PoolSample(key, (caption,), colour)


SIZES = [(40, 30), (12, 50), (16, 16), (33, 17), (64, 64)]


@pytest.fixture
def pool(tmp_path: Path) -> dict[str, list[PoolSample]]:
    """Six shards in three namings (brace-numbered, cc3m-style, nested part_N) -> the samples of each, in order."""
    layout = {
        "flat/000.tar": (jpg_txt, 3),
        "flat/001.tar": (webp_json, 2),
        "flat/002.tar": (jpg_txt, 4),
        "cc3m/cc3m-train-0001.tar": (webp_json, 3),
        "cc3m/cc3m-train-0002.tar": (jpg_txt, 1),
        "laion/sub/dir/part_1.tar": (webp_json, 2),
    }
    expected: dict[str, list[PoolSample]] = {}
    n = 0
    for name, (make, count) in layout.items():
        members, samples = [], []
        for _ in range(count):
            member, sample = make(n, SIZES[n % len(SIZES)])
            members.append(member)
            samples.append(sample)
            n += 1
        expected[write_shard(tmp_path / name, members)] = samples
    return expected


def pixel(encoded: bytes) -> tuple[int, int, int]:
    """The centre pixel of an encoded image."""
    with Image.open(io.BytesIO(encoded)) as image:
        return image.convert("RGB").getpixel((image.width // 2, image.height // 2))


def assert_close(got: tuple[int, int, int], want: tuple[int, int, int]) -> None:
    assert all(abs(g - w) <= 8 for g, w in zip(got, want)), (got, want)


# --------------------------------------------------------------------------------------------------------------
# expand_shards


def test_expand_brace_pattern_in_numeric_order(tmp_path, pool):
    shards = expand_shards("flat/{000..002}.tar", base=tmp_path)
    assert shards == [str(tmp_path / f"flat/{k:03d}.tar") for k in range(3)]


def test_expand_glob_sorted_and_recursive(tmp_path, pool):
    assert expand_shards(str(tmp_path / "cc3m" / "cc3m-train-*.tar")) == [
        str(tmp_path / "cc3m/cc3m-train-0001.tar"), str(tmp_path / "cc3m/cc3m-train-0002.tar")]
    assert expand_shards("**/part_*.tar", base=tmp_path) == [str(tmp_path / "laion/sub/dir/part_1.tar")]


def test_expand_list_keeps_order_and_passes_urls_through(tmp_path, pool):
    shards = expand_shards(["cc3m/*.tar", "flat/{001..002}.tar", str(tmp_path / "laion/sub/dir/part_1.tar"),
                            "https://host/pool/{00..01}.tar", "pipe:curl -s http://host/x.tar"], base=tmp_path)
    assert shards == [
        str(tmp_path / "cc3m/cc3m-train-0001.tar"),
        str(tmp_path / "cc3m/cc3m-train-0002.tar"),
        str(tmp_path / "flat/001.tar"),
        str(tmp_path / "flat/002.tar"),
        str(tmp_path / "laion/sub/dir/part_1.tar"),
        "https://host/pool/00.tar",
        "https://host/pool/01.tar",
        "pipe:curl -s http://host/x.tar",
    ]


def test_expand_missing_shards_counted_and_listed(tmp_path, pool):
    with pytest.raises(DataError) as err:
        expand_shards("flat/{000..009}.tar", base=tmp_path)
    message = str(err.value)
    assert "7 of 10" in message
    assert str(tmp_path / "flat/003.tar") in message and str(tmp_path / "flat/007.tar") in message
    assert str(tmp_path / "flat/008.tar") not in message  # at most five are listed
    with pytest.raises(DataError, match="1 of 1.*gone.tar"):
        expand_shards(f"file://{tmp_path}/gone.tar")


def test_expand_glob_without_match_names_pattern(tmp_path, pool):
    with pytest.raises(DataError, match=r"part_\*\.tgz"):
        expand_shards(["flat/000.tar", "laion/part_*.tgz"], base=tmp_path)


def test_expand_duplicates_and_empty_are_config_errors(tmp_path, pool):
    with pytest.raises(ConfigError, match="flat/001.tar more than once"):
        expand_shards(["flat/{001..002}.tar", "flat/*.tar"], base=tmp_path)
    with pytest.raises(ConfigError, match="names no shards"):
        expand_shards([], base=tmp_path)
    with pytest.raises(ConfigError, match="not a path"):
        expand_shards(["flat/000.tar", " "], base=tmp_path)
    with pytest.raises(ConfigError, match="Unbalanced"):
        expand_shards("flat/{000..002.tar", base=tmp_path)


# --------------------------------------------------------------------------------------------------------------
# iter_webdataset_samples


def test_every_sample_imported_in_order(pool):
    expected = [sample for samples in pool.values() for sample in samples]
    got = list(iter_webdataset_samples(list(pool), SPEC))
    assert len(got) == len(expected) == 15  # the size is what the shards hold
    assert [s.index for s in got] == list(range(15))
    assert [s.captions for s in got] == [s.captions for s in expected]
    for raw, want in zip(got, expected):
        assert raw.class_id == -1 and raw.class_name is None
        assert isinstance(raw.image, bytes)  # the member's bytes, as they are
        assert_close(pixel(raw.image), want.colour)


def test_file_urls_read_like_paths(pool):
    urls = list(pool)[:2]
    by_path = list(iter_webdataset_samples(urls, SPEC))
    by_url = list(iter_webdataset_samples([f"file://{url}" for url in urls], SPEC))
    content = [[(s.index, s.image, s.captions) for s in samples] for samples in (by_path, by_url)]
    assert content[0] == content[1] and len(by_url) == 5


def test_txt_wins_over_json_and_json_caption_lists(tmp_path):
    colour = (200, 30, 30)
    url = write_shard(tmp_path / "p.tar", [
        {"__key__": "a", "png": encoded_image(colour, (IMAGE_SIZE, IMAGE_SIZE), "PNG"), "txt": b"from txt",
         "json": json.dumps({"caption": "from json"}).encode()},
        {"__key__": "b", "jpeg": encoded_image(colour, (8, 20), "JPEG"),
         "json": json.dumps({"captions": ["first", " second "]}).encode()},
        {"__key__": "c", "JPG": encoded_image(colour, (20, 8), "JPEG"), "txt": b"  ",
         "json": json.dumps({"caption": "json after empty txt"}).encode()},
    ])
    got = list(iter_webdataset_samples([url], SPEC))
    assert [s.captions for s in got] == [("from txt",), ("first", "second"), ("json after empty txt",)]
    for raw in got:
        assert_close(pixel(raw.image), colour)


def test_images_are_stored_uncropped_in_their_format(tmp_path):
    # Three vertical bands, red | green | blue: stored whole (the loader crops at read time), PNG as it was.
    image = Image.new("RGB", (3 * IMAGE_SIZE, IMAGE_SIZE), (255, 0, 0))
    image.paste((0, 255, 0), (IMAGE_SIZE, 0, 2 * IMAGE_SIZE, IMAGE_SIZE))
    image.paste((0, 0, 255), (2 * IMAGE_SIZE, 0, 3 * IMAGE_SIZE, IMAGE_SIZE))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    webp = encoded_image((10, 200, 30), (20, 12), "WEBP")  # lossy WebP: re-encoded as JPEG
    url = write_shard(tmp_path / "wide.tar", [{"__key__": "w", "png": buf.getvalue(), "txt": b"bands"},
                                              {"__key__": "v", "webp": webp, "txt": b"webp"}])
    out = tmp_path / "out" / "cc3m_pool"
    convert_webdataset_pool([url], SPEC, out, shard_size=10)
    rows = read_manifest(out).rows(named=True)
    assert [(r["image_format"], r["width"], r["height"]) for r in rows] == [("png", 3 * IMAGE_SIZE, IMAGE_SIZE),
                                                                          ("jpg", 20, 12)]
    [wide, small] = wds.WebDataset(str(out / "train-000000.tar"), shardshuffle=False)
    assert wide["png"] == buf.getvalue()
    assert_close(pixel(small["jpg"]), (10, 200, 30))


def test_arguments_checked_before_reading(pool):
    urls = list(pool)
    with pytest.raises(ConfigError, match="on_bad_sample"):
        iter_webdataset_samples(urls, SPEC, on_bad_sample="ignore")
    with pytest.raises(ConfigError, match="skipped"):
        iter_webdataset_samples(urls, SPEC, on_bad_sample="skip")
    classes = DatasetSpec(name="cls", kind="classification", role="evaluation", classnames=("a",),
                          source={"webdataset": {"urls": "x"}})
    with pytest.raises(ConfigError, match="classification"):
        iter_webdataset_samples(urls, classes)


def truncate(path: str, keep: int) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep])


def member_offsets(path: str) -> list[int]:
    with tarfile.open(path) as tar:
        return [member.offset for member in tar]


@pytest.mark.parametrize("where", ["member boundary", "inside a header", "inside data", "garbage"])
def test_truncated_or_unreadable_shard_names_it(pool, where):
    urls = list(pool)
    bad = urls[2]  # flat/002.tar, after two good shards
    offsets = member_offsets(bad)
    if where == "member boundary":
        truncate(bad, offsets[4])  # tarfile alone would read this as a complete, shorter shard
    elif where == "inside a header":
        truncate(bad, offsets[4] + 100)
    elif where == "inside data":
        truncate(bad, offsets[4] + 512 + 10)
    else:
        Path(bad).write_bytes(b"not a tar at all " * 100)
    with pytest.raises(DataError, match=bad):
        list(iter_webdataset_samples(urls, SPEC))


def test_empty_pool_is_an_error(tmp_path):
    url = write_shard(tmp_path / "empty.tar", [])
    with pytest.raises(DataError, match="no usable sample"):
        list(iter_webdataset_samples([url], SPEC))


def shard_with_bad_sample(tmp_path: Path, bad: dict[str, object]) -> str:
    good = [jpg_txt(n, (20, 10))[0] for n in range(3)]
    return write_shard(tmp_path / "bad.tar", [good[0], {"__key__": "bad_one", **bad}, good[1], good[2]])


# name -> (the bad sample's members, what the error says, whether the importer or the shard writer finds it)
BAD_SAMPLES = {
    "corrupt image": ({"jpg": b"\xff\xd8\xff\xe0 definitely not a jpeg", "txt": b"caption"},
                      "not a readable image", "writer"),
    "cut-off image": ({"jpg": encoded_image((9, 9, 9), (30, 30), "JPEG")[:400], "txt": b"caption"},
                      "not a readable image", "writer"),
    "no caption": ({"jpg": encoded_image((9, 9, 9), (30, 30), "JPEG")}, "no caption", "importer"),
    "null json caption": ({"webp": encoded_image((9, 9, 9), (30, 30), "WEBP"),
                           "json": json.dumps({"caption": None}).encode()}, "no caption", "importer"),
    "no image": ({"txt": b"caption", "json": b"{}"}, "no image", "importer"),
}


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_bad_sample_is_an_error_naming_shard_and_key(tmp_path, case):
    members, reason, _ = BAD_SAMPLES[case]
    url = shard_with_bad_sample(tmp_path, members)
    out = tmp_path / "out" / "cc3m_pool"
    with pytest.raises(DataError, match=reason) as err:
        convert_webdataset_pool([url], SPEC, out, shard_size=10)
    assert url in str(err.value) and "bad_one" in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_bad_sample_is_a_counted_skip(tmp_path, case):
    members, reason, found_by = BAD_SAMPLES[case]
    url = shard_with_bad_sample(tmp_path, members)
    out = tmp_path / "out" / "cc3m_pool"
    skipped = convert_webdataset_pool([url], SPEC, out, shard_size=10, on_bad_sample="skip")
    manifest = read_manifest(out)
    assert manifest["caption"].to_list() == [f"a jpeg photo number {n}" for n in range(3)]
    # Indices count the samples the importer yields: contiguous over a sample it leaves out, not over an image
    # the writer finds undecodable (the writer never renumbers: a release's indices are its annotation ranks).
    assert manifest["index"].to_list() == ([0, 1, 2] if found_by == "importer" else [0, 2, 3])
    [(member, why)] = skipped.items
    assert member == f"webdataset shard {url} sample 'bad_one'" and reason in why


def test_only_bad_samples_is_an_error_even_when_skipping(tmp_path):
    url = write_shard(tmp_path / "p.tar", [{"__key__": "x", "txt": b"caption only"}])
    skipped = SkipLog()
    with pytest.raises(DataError, match="1 skipped"):
        list(iter_webdataset_samples([url], SPEC, on_bad_sample="skip", skipped=skipped))


# --------------------------------------------------------------------------------------------------------------
# convert_webdataset_pool


def test_convert_round_trip(tmp_path, pool):
    out = tmp_path / "out" / "cc3m_pool"
    skipped = convert_webdataset_pool(list(pool), SPEC, out, shard_size=4)
    assert skipped.count == 0
    manifest = read_manifest(out)
    expected = [sample for samples in pool.values() for sample in samples]
    assert manifest.height == len(expected)
    assert set(manifest["split"]) == {"train"} and set(manifest["dataset"]) == {"cc3m_pool"}
    assert manifest["index"].to_list() == list(range(len(expected)))
    assert set(manifest["class_id"]) == {-1} and manifest["class_name"].null_count() == manifest.height
    assert manifest["caption"].to_list() == [s.captions[0] for s in expected]
    assert [tuple(c) for c in manifest["captions"].to_list()] == [s.captions for s in expected]
    assert sorted(os.listdir(out)) == ["manifest.parquet"] + [f"train-{k:06d}.tar" for k in range(4)]
    # The written shards hold the images in order: JPEGs as they were, lossy WebPs re-encoded as JPEG.
    written = wds.WebDataset(sorted(str(p) for p in out.glob("train-*.tar")), shardshuffle=False)
    sources = [sample for url in pool for sample in wds.WebDataset(url, shardshuffle=False)]
    for sample, source, want in zip(written, sources, expected, strict=True):
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"jpg", "txt", "json"}
        if "jpg" in source:
            assert sample["jpg"] == source["jpg"]
        assert_close(pixel(sample["jpg"]), want.colour)


def test_convert_failure_leaves_nothing(tmp_path, pool):
    urls = list(pool)
    truncate(urls[-1], member_offsets(urls[-1])[2])
    out = tmp_path / "out" / "cc3m_pool"
    with pytest.raises(DataError, match=urls[-1]):
        convert_webdataset_pool(urls, SPEC, out, shard_size=4)
    assert not out.exists()
    assert os.listdir(tmp_path / "out") == []  # no temporary directory left behind either


def test_convert_is_deterministic(tmp_path, pool):
    outs = [tmp_path / run / "cc3m_pool" for run in ("a", "b")]
    for out in outs:
        convert_webdataset_pool(list(pool), SPEC, out, shard_size=5)
    names = sorted(os.listdir(outs[0]))
    assert names == sorted(os.listdir(outs[1]))
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
