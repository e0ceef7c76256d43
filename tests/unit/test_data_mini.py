"""The embedded mini benchmark: registry invariants, determinism, balance and image format."""

from __future__ import annotations

import pickle
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from fomoflux.data.mini import (
    DIGIT_NAMES,
    digits_split_indices,
    generate_split,
    mini_registry,
    split_count,
)
from fomoflux.data.registry import DatasetSpec
from fomoflux.data.shards import store_image
from fomoflux.errors import ConfigError, DataError

REGISTRY = mini_registry()
STOPWORDS = {"a", "an", "the", "of", "on", "is", "that"}


def _png_and_captions(spec: DatasetSpec, split: str, seed: int, scale: float) -> list[tuple[bytes, tuple[str, ...]]]:
    return [(store_image(s.image).data, s.captions) for s in generate_split(spec, split, seed, 32, scale)]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


# --- registry -------------------------------------------------------------------------------------------------


def test_registry_roles_and_kinds():
    by_role = Counter(spec.role for spec in REGISTRY.values())
    assert by_role["evaluation"] >= 3
    assert by_role["adaptation"] >= 6
    assert by_role["pretraining"] == 1
    assert "digits" in REGISTRY and REGISTRY["digits"].role == "adaptation"
    assert any(s.kind == "retrieval" and s.role == "evaluation" for s in REGISTRY.values())
    for name in ("shapes", "colors", "scenes"):
        assert REGISTRY[name].role == "evaluation"


def test_registry_spec_fields():
    pool = REGISTRY["pool"]
    assert (pool.kind, pool.role, pool.caption_source, pool.classnames, pool.splits) == (
        "pretraining", "pretraining", "native", (), ("train",))
    assert REGISTRY["scenes"].classnames == () and REGISTRY["scenes"].caption_source == "native"
    for name, spec in REGISTRY.items():
        assert spec.name == name
        source = spec.source["generate"]
        assert source["generator"] == name
        assert set(source) == {"generator", *spec.splits}
        if spec.role == "evaluation":
            assert spec.splits == ("test",) and 500 <= source["test"] <= 1000
        if spec.role == "adaptation":
            assert spec.kind == "classification" and spec.caption_source == "generated"
            assert spec.splits == ("train", "test")
            k = len(spec.classnames)
            assert 4 <= k <= 10
            assert 100 <= source["train"] / k <= 150 and 30 <= source["test"] / k <= 60
    prompts = [s.prompt for s in REGISTRY.values() if s.role == "adaptation"]
    assert len(set(prompts)) == len(prompts), "every adaptation dataset has its own prompt template"
    assert REGISTRY["digits"].classnames == DIGIT_NAMES


def test_registry_rejects_tiny_images():
    with pytest.raises(ConfigError, match="image_size"):
        mini_registry(8)


def test_pool_has_no_adaptation_concepts():
    pool_words: set[str] = set()
    pool_text = []
    for sample in generate_split(REGISTRY["pool"], "train", 0, 32, scale=0.05):
        for caption in sample.captions:
            pool_words |= _words(caption)
            pool_text.append(" " + caption.lower() + " ")
    joined = "\n".join(pool_text)
    for spec in REGISTRY.values():
        if spec.role != "adaptation":
            continue
        for cls in spec.classnames:
            assert f" {cls.lower()} " not in joined, f"{spec.name}: pool captions mention {cls!r}"
            leaked = (_words(cls) - STOPWORDS) & pool_words
            # Single letters ("letter A") are articles in English captions, not the concept.
            leaked = {w for w in leaked if len(w) > 1}
            assert not leaked, f"{spec.name}: class {cls!r} shares words {leaked} with pool captions"


def test_evaluation_concepts_are_covered_by_the_pool():
    pool_words = set()
    for sample in generate_split(REGISTRY["pool"], "train", 0, 32, scale=0.02):
        pool_words |= _words(" ".join(sample.captions))
    for name in ("shapes", "colors"):
        for cls in REGISTRY[name].classnames:
            assert _words(cls) <= pool_words, f"{name}: {cls!r} never appears in the pool"


# --- generation -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pool", "new_shapes", "textures", "glyphs", "directions", "counting", "digits"])
def test_same_seed_same_bytes_other_seed_other_bytes(name):
    spec = REGISTRY[name]
    split = spec.splits[0]
    scale = 0.005 if name == "pool" else 0.05
    first = _png_and_captions(spec, split, 3, scale)
    again = _png_and_captions(spec, split, 3, scale)
    other = _png_and_captions(spec, split, 4, scale)
    assert first == again
    assert [png for png, _ in first] != [png for png, _ in other]


def test_splits_and_datasets_use_independent_streams():
    train = _png_and_captions(REGISTRY["new_shapes"], "train", 0, 0.02)
    test = _png_and_captions(REGISTRY["new_shapes"], "test", 0, 0.02)
    assert train[0][0] != test[0][0]
    pool = _png_and_captions(REGISTRY["pool"], "train", 0, 0.0005)
    scenes = _png_and_captions(REGISTRY["scenes"], "test", 0, 0.01)
    assert pool[0][0] != scenes[0][0]


def test_smaller_scale_is_a_prefix():
    spec = REGISTRY["glyphs"]
    small = _png_and_captions(spec, "train", 1, 0.02)
    large = _png_and_captions(spec, "train", 1, 0.04)
    assert large[: len(small)] == small


@pytest.mark.parametrize("name", ["glyphs", "digits", "pool"])
def test_any_range_drawn_in_another_process_is_that_slice_of_the_split(name):
    # The shard writer's workers draw the shards they write: a pickled split drawn from 5 to 12 is samples 5..11.
    split = generate_split(REGISTRY[name], REGISTRY[name].splits[0], 2, 32, 0.01)
    whole = [(s.index, store_image(s.image).data, s.captions, s.class_id) for s in split]
    part = pickle.loads(pickle.dumps(split)).draw(5, 12)
    assert [(s.index, store_image(s.image).data, s.captions, s.class_id) for s in part] == whole[5:12]
    assert len(split) == len(whole)


@pytest.mark.parametrize("name", [n for n, s in REGISTRY.items() if s.kind == "classification"])
def test_class_balance_and_counts(name):
    spec = REGISTRY[name]
    for split in spec.splits:
        samples = list(generate_split(spec, split, 0, 32))
        counts = Counter(s.class_id for s in samples)
        assert sorted(counts) == list(range(len(spec.classnames)))
        for s in samples:
            assert spec.classnames[s.class_id] == s.class_name
        assert [s.index for s in samples] == list(range(len(samples)))
        if name == "digits":
            # Real data: a stratified cut of sklearn's (nearly balanced) classes.
            assert abs(len(samples) - spec.source["generate"][split]) <= 10
            assert max(counts.values()) <= 1.15 * min(counts.values())
        else:
            assert len(samples) == spec.source["generate"][split]
            assert max(counts.values()) - min(counts.values()) <= 1


def test_tiny_scale_keeps_two_samples_per_class():
    for spec in REGISTRY.values():
        for split in spec.splits:
            samples = list(generate_split(spec, split, 0, 32, scale=1e-4))
            assert len(samples) == split_count(spec, split, 1e-4)
            if spec.classnames:
                counts = Counter(s.class_id for s in samples)
                assert len(counts) == len(spec.classnames) and min(counts.values()) >= 2
            else:
                assert len(samples) >= 2


@pytest.mark.parametrize("size", [32, 48])
def test_images_are_rgb_at_the_requested_size(size):
    for spec in REGISTRY.values():
        sample = next(iter(generate_split(spec, spec.splits[0], 0, size)))
        assert isinstance(sample.image, Image.Image)
        assert sample.image.mode == "RGB" and sample.image.size == (size, size)
        pixels = np.asarray(sample.image)
        assert pixels.std() > 5, f"{spec.name}: a blank image"


def test_captions():
    for spec in REGISTRY.values():
        sample = next(iter(generate_split(spec, spec.splits[0], 0, 32)))
        assert all(isinstance(c, str) and c for c in sample.captions)
        if spec.caption_source == "generated":
            assert len(sample.captions) >= 2
            core = spec.class_prompt(sample.class_name).rstrip(".")
            assert sample.captions[0].startswith(core + ", "), sample.captions
        if spec.name in ("pool", "scenes"):
            assert re.fullmatch(r"a [a-z]+ [a-z]+ on a [a-z ]+ background", sample.captions[0]), sample.captions
    digit = next(iter(generate_split(REGISTRY["digits"], "train", 0, 32)))
    assert digit.captions[0] == f"a handwritten digit {digit.class_name}, white strokes on black"


def test_every_caption_and_prompt_fits_the_tiny_models_context():
    # fomo-tiny-vit reads 16 tokens: a longer text would be cut before its end token, silently. Pool and scenes
    # captions are enumerated over every attribute combination; the classification sets are drawn whole.
    import itertools

    import open_clip

    from fomoflux.data import render
    from fomoflux.data.mini import _scene_captions
    from fomoflux.model import architecture_config

    context = architecture_config("fomo-tiny-vit")["text_cfg"]["context_length"]
    encode = open_clip.get_tokenizer("ViT-B-32").encode
    texts = set()
    for shape, colour, background, size in itertools.product(
        render.POOL_SHAPES, render.COLORS, render.BACKGROUNDS, ("small", "medium", "large")
    ):
        texts.update(_scene_captions(REGISTRY["pool"], None, {"shape": shape, "colour": colour,
                                                               "background": background, "size": size}))
    for spec in REGISTRY.values():
        texts.update(spec.class_prompt(c) for c in spec.classnames)
        if spec.classnames:
            for split in spec.splits:
                texts.update(c for s in generate_split(spec, split, 0, 32) for c in s.captions)
    longest = max(texts, key=lambda t: len(encode(t)))
    assert len(texts) > 1000
    assert len(encode(longest)) + 2 <= context, (longest, len(encode(longest)) + 2, context)  # + start and end


def test_digits_are_the_real_sklearn_digits():
    from sklearn.datasets import load_digits

    train = digits_split_indices(0, "train")
    test = digits_split_indices(0, "test")
    for d in range(10):
        assert not set(train[d]) & set(test[d])
        assert 0.75 <= len(train[d]) / (len(train[d]) + len(test[d])) <= 0.85
    assert sum(len(v) for v in train.values()) + sum(len(v) for v in test.values()) == 1797
    assert digits_split_indices(1, "train")[0].tolist() != train[0].tolist()
    # The first test sample is the upscaled sklearn image it says it is.
    bunch = load_digits()
    first_src = min(int(i) for v in test.values() for i in v)
    sample = next(iter(generate_split(REGISTRY["digits"], "test", 0, 32)))
    assert sample.class_name == DIGIT_NAMES[bunch.target[first_src]]
    small = np.asarray(sample.image.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=float)
    reference = bunch.images[first_src] * 255 / 16
    assert np.corrcoef(small.ravel(), reference.ravel())[0, 1] > 0.9


def test_generate_split_errors():
    with pytest.raises(DataError, match="train"):
        generate_split(REGISTRY["shapes"], "train", 0, 32)
    bad = DatasetSpec("odd", "classification", "adaptation", ("x",),
                      source={"generate": {"generator": "nope", "test": 4}})
    with pytest.raises(ConfigError, match="nope"):
        generate_split(bad, "test", 0, 32)
    alien = DatasetSpec("odd", "classification", "adaptation", ("circle", "blob"),
                        source={"generate": {"generator": "shapes", "test": 4}})
    with pytest.raises(ConfigError, match="blob"):
        generate_split(alien, "test", 0, 32)
    with pytest.raises(ConfigError, match="seed"):
        generate_split(REGISTRY["pool"], "train", -1, 32)


def test_a_spec_may_use_a_subset_of_a_generators_classes():
    subset = DatasetSpec("few", "classification", "adaptation", ("ring", "hexagon"), "a {} thing.",
                         source={"generate": {"generator": "new_shapes", "train": 6}})
    samples = list(generate_split(subset, "train", 0, 32))
    assert [s.class_name for s in samples[:2]] == ["ring", "hexagon"]
    assert [s.class_id for s in samples[:2]] == [0, 1]
    assert samples[0].captions[-1] == "a ring thing."


def test_digit_counts_match_sklearn():
    # The registry sizes the digits splits from DIGITS_PER_CLASS without loading sklearn; they must be sklearn's.
    import numpy as np

    from fomoflux.data.mini import DIGITS_PER_CLASS, _digits_count, _digits_data, digits_split_indices

    _, target = _digits_data()
    assert tuple(np.bincount(target).tolist()) == DIGITS_PER_CLASS
    for split in ("train", "test"):
        assert _digits_count(split) == sum(len(v) for v in digits_split_indices(0, split).values())
