"""The embedded mini benchmark: a registry of small datasets that a laptop CPU can pretrain, stream and evaluate.

It mirrors FoMo-in-Flux's structure at toy scale:

- ``pool`` — the pretraining / replay pool: compositional scenes (one pool shape in one colour on a background) with
  several native caption paraphrases each.
- evaluation-only sets (``shapes``, ``colors``, ``scenes``) whose concepts the pool covers: zero-shot retention.
- adaptation sets (``digits`` = real sklearn handwritten digits, ``new_shapes``, ``textures``, ``glyphs``,
  ``directions``, ``counting``) whose concepts never occur in the pool: what the stream has to teach.

Everything is a pure function of ``(seed, dataset name, split, sample index)``: each sample draws from its own numpy
stream ``default_rng([seed, stable_hash(dataset), stable_hash(split), index])``, so a split is byte-identical across
runs and machines, a smaller ``scale`` yields a prefix of the full split, and splits or datasets never share draws.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fomoflux.data import render
from fomoflux.data.registry import DatasetSpec
from fomoflux.data.shards import DrawnSplit, RawSample
from fomoflux.errors import ConfigError, DataError

MIN_IMAGE_SIZE = 16  # below this the drawings (and 8x8 digits upscaled) stop being legible

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COUNT_NAMES = ("one dot", "two dots", "three dots", "four dots", "five dots")
GLYPH_NAMES = tuple(f"letter {letter}" for letter in render.GLYPH_STROKES)
DIGITS_TRAIN_FRACTION = 0.8

# A drawing function: (per-sample rng, class name or None, image size) -> (image, attributes for the captions).
Draw = Callable[[np.random.Generator, "str | None", int], "tuple[Image.Image, dict[str, str]]"]
# A caption function: (spec, class name or None, attributes) -> captions, the first the evaluation caption.
Caption = Callable[[DatasetSpec, "str | None", "dict[str, str]"], "tuple[str, ...]"]


def stable_hash(text: str) -> int:
    """A process-independent 64-bit hash (Python's ``hash`` of a str is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def sample_rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    """The random stream of one sample."""
    return np.random.default_rng([seed, stable_hash(dataset), stable_hash(split), index])


# ---------------------------------------------------------------------------------------------------------------
# Drawing: one function per generator family.


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _size_word(r: float) -> str:
    return "small" if r < 0.21 else "medium" if r < 0.29 else "large"


def _draw_scene(rng: np.random.Generator, size: int, shape: str | None = None,
                colour: str | None = None) -> tuple[Image.Image, dict[str, str]]:
    """A pool scene: one pool shape in one of the 8 colours on a plain (sometimes noisy) background."""
    shape = shape or _pick(rng, render.POOL_SHAPES)
    colour = colour or _pick(rng, list(render.COLORS))
    background = _pick(rng, list(render.BACKGROUNDS))
    r = float(rng.uniform(0.14, 0.36))
    extent = 1.15 * r + 0.03  # the widest outline reaches 1.15 r; keep it inside the frame
    cx, cy = (float(v) for v in rng.uniform(extent, 1.0 - extent, size=2))
    canvas = render.Canvas(size, render.jitter(render.BACKGROUNDS[background], rng, 6))
    render.draw_shape(canvas, shape, cx, cy, r, float(rng.uniform(-15, 15)), render.jitter(render.COLORS[colour], rng))
    noise = 10.0 if rng.random() < 0.5 else 0.0
    image = canvas.finish(rng, noise)
    return image, {"shape": shape, "colour": colour, "background": background, "size": _size_word(r)}


def _draw_pool(rng: np.random.Generator, _cls: str | None, size: int) -> tuple[Image.Image, dict[str, str]]:
    return _draw_scene(rng, size)


def _draw_eval_shape(rng: np.random.Generator, cls: str | None, size: int) -> tuple[Image.Image, dict[str, str]]:
    return _draw_scene(rng, size, shape=cls)


def _draw_eval_colour(rng: np.random.Generator, cls: str | None, size: int) -> tuple[Image.Image, dict[str, str]]:
    return _draw_scene(rng, size, colour=cls)


def _contrast_canvas(rng: np.random.Generator, size: int) -> tuple[render.Canvas, render.RGB, dict[str, str]]:
    """A plain canvas and a foreground colour that stands out on it (adaptation sets are clean and high-contrast)."""
    colour, background = render.contrasting_pair(rng)
    canvas = render.Canvas(size, render.jitter(render.BACKGROUNDS[background], rng, 6))
    return canvas, render.jitter(render.COLORS[colour], rng), {"colour": colour, "background": background}


def _draw_new_shape(rng: np.random.Generator, cls: str | None, size: int) -> tuple[Image.Image, dict[str, str]]:
    assert cls is not None
    canvas, fg, attrs = _contrast_canvas(rng, size)
    r = float(rng.uniform(0.24, 0.38))
    extent = 1.1 * r + 0.03
    cx, cy = (float(v) for v in rng.uniform(extent, 1.0 - extent, size=2))
    # An arrow keeps no preferred direction here (pointing is the ``directions`` set's concept).
    rotation = float(rng.uniform(-180, 180)) if cls == "arrow" else float(rng.uniform(-20, 20))
    render.draw_shape(canvas, cls, cx, cy, r, rotation, fg)
    return canvas.finish(), attrs


def _draw_texture(rng: np.random.Generator, cls: str | None, size: int) -> tuple[Image.Image, dict[str, str]]:
    assert cls is not None
    canvas, fg, attrs = _contrast_canvas(rng, size)
    period = float(rng.uniform(0.17, 0.28))  # 5.5 to 9 px at 32 px: several repeats, each still resolved
    sign = 1 if rng.random() < 0.5 else -1
    render.draw_texture(canvas, cls, fg, period, float(rng.random()), sign)
    return canvas.finish(), attrs


def _draw_glyph(rng: np.random.Generator, cls: str | None, size: int) -> tuple[Image.Image, dict[str, str]]:
    assert cls is not None
    canvas, fg, attrs = _contrast_canvas(rng, size)
    height = float(rng.uniform(0.5, 0.72))
    half = 0.5 * height + 0.08
    cx, cy = (float(v) for v in rng.uniform(half, 1.0 - half, size=2))
    render.draw_glyph(canvas, cls.removeprefix("letter "), cx, cy, height, float(rng.uniform(-12, 12)), fg,
                      float(rng.uniform(0.09, 0.13)), rng)
    return canvas.finish(), attrs


def _draw_direction(rng: np.random.Generator, cls: str | None, size: int) -> tuple[Image.Image, dict[str, str]]:
    assert cls is not None
    canvas, fg, attrs = _contrast_canvas(rng, size)
    length = float(rng.uniform(0.5, 0.72))
    cx, cy = (float(v) for v in rng.uniform(0.42, 0.58, size=2))
    angle = render.DIRECTIONS[cls] + float(rng.uniform(-8, 8))
    render.draw_arrow_line(canvas, cx, cy, length, angle, fg, float(rng.uniform(0.07, 0.1)))
    return canvas.finish(), attrs


def _draw_count(rng: np.random.Generator, cls: str | None, size: int) -> tuple[Image.Image, dict[str, str]]:
    assert cls is not None
    canvas, fg, attrs = _contrast_canvas(rng, size)
    radius = float(rng.uniform(0.06, 0.09))
    for x, y in render.scatter_points(rng, COUNT_NAMES.index(cls) + 1, radius):
        canvas.ellipse(x, y, radius, fill=fg)
    return canvas.finish(), attrs


# ---------------------------------------------------------------------------------------------------------------
# Captions.


def _scene_captions(_spec: DatasetSpec, _cls: str | None, a: dict[str, str]) -> tuple[str, ...]:
    """Native pool captions: paraphrases of one scene, the full description first."""
    c, s, b, z = a["colour"], a["shape"], a["background"], a["size"]
    return (
        f"a {c} {s} on a {b} background",
        f"a {z} {c} {s}",
        f"{c} {s}",
        f"a {s} that is {c}",
        f"a {z} {s} on {b}",
    )


def generated_captions(spec: DatasetSpec, classname: str, description: str) -> tuple[str, ...]:
    """Visual description merged with the class prompt (FoMo-in-Flux's generated captions); the first variant is
    a fixed function of the sample, the others are paraphrases for training."""
    prompt = spec.class_prompt(classname)
    core = prompt.rstrip(". ")
    return (f"{core}, {description}", f"{description}: {core}", prompt)


def described(template: str) -> Caption:
    """A caption function for classification sets: ``template`` filled from the sample's drawing attributes is the
    visual description merged with the class prompt."""

    def captions(spec: DatasetSpec, cls: str | None, attrs: dict[str, str]) -> tuple[str, ...]:
        assert cls is not None, "classification samples have a class"
        return generated_captions(spec, cls, template.format(**attrs))

    return captions


# ---------------------------------------------------------------------------------------------------------------
# Generators.


@dataclass(frozen=True)
class Procedural:
    """A generator drawing every sample independently. ``classes`` lists what it can draw (a spec may use a subset,
    in any order); an empty tuple means a caption-only set (pretraining pool, retrieval)."""

    classes: tuple[str, ...]
    draw: Draw
    captions: Caption

    def samples(self, spec: DatasetSpec, split: str, seed: int, size: int, start: int,
                stop: int) -> Iterator[RawSample]:
        """The samples at indices ``start`` to ``stop`` (exclusive)."""
        names = spec.classnames if self.classes else ()
        for i in range(start, stop):
            rng = sample_rng(seed, spec.name, split, i)
            # Classes cycle in spec order: every class gets count // K or one more sample.
            cls = names[i % len(names)] if names else None
            image, attrs = self.draw(rng, cls, size)
            yield RawSample(
                index=i,
                image=image,
                captions=self.captions(spec, cls, attrs),
                class_id=i % len(names) if names else -1,
                class_name=cls,
            )


PROCEDURAL: dict[str, Procedural] = {
    "pool": Procedural((), _draw_pool, _scene_captions),
    "scenes": Procedural((), _draw_pool, _scene_captions),
    "shapes": Procedural(render.POOL_SHAPES, _draw_eval_shape, described("{colour} on a {background} background")),
    "colors": Procedural(tuple(render.COLORS), _draw_eval_colour, described("a {shape} on a {background} background")),
    "new_shapes": Procedural(render.NEW_SHAPES, _draw_new_shape, described("{colour} on {background}")),
    "textures": Procedural(render.TEXTURES, _draw_texture, described("{colour} on {background}")),
    "glyphs": Procedural(GLYPH_NAMES, _draw_glyph, described("{colour} strokes on {background}")),
    "directions": Procedural(tuple(render.DIRECTIONS), _draw_direction, described("{colour} on {background}")),
    "counting": Procedural(COUNT_NAMES, _draw_count, described("{colour} on {background}")),
}
GENERATORS = (*PROCEDURAL, "digits")


@functools.lru_cache(maxsize=1)
def _digits_data() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's bundled handwritten digits (1,797 8x8 images, 0..16): shipped with the package, no download."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def digits_split_indices(seed: int, split: str, dataset: str = "digits") -> dict[int, np.ndarray]:
    """Per digit, the sorted indices into sklearn's digits that form ``split``: a stratified 80/20 cut drawn from a
    stream that depends on the seed but not the split, so that train and test are disjoint and cover everything."""
    _, target = _digits_data()
    rng = np.random.default_rng([seed, stable_hash(dataset), stable_hash("train/test cut")])
    out: dict[int, np.ndarray] = {}
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(target == digit))
        n_train = int(round(DIGITS_TRAIN_FRACTION * len(members)))
        out[digit] = np.sort(members[:n_train] if split == "train" else members[n_train:])
    return out


def _digits_chosen(spec: DatasetSpec, split: str, seed: int, count: int) -> list[int]:
    """The indices into sklearn's digits that sample 0, 1, ... of ``split`` show (about ``count`` of them)."""
    if split not in ("train", "test"):
        raise DataError(f"dataset {spec.name!r}: the digits generator has splits 'train' and 'test', not {split!r}")
    by_digit = digits_split_indices(seed, split, spec.name)
    available = sum(len(v) for v in by_digit.values())
    chosen: list[int] = []
    for cls in spec.classnames:
        pool = by_digit[DIGIT_NAMES.index(cls)]
        # A stratified prefix: each class keeps its share of ``count``, never fewer than two samples.
        take = min(len(pool), max(2, int(round(len(pool) * count / available))))
        chosen.extend(pool[:take].tolist())
    return sorted(chosen)


def _digits_samples(spec: DatasetSpec, split: str, seed: int, size: int, count: int, start: int,
                    stop: int) -> Iterator[RawSample]:
    images, target = _digits_data()
    wanted = {DIGIT_NAMES.index(cls): cid for cid, cls in enumerate(spec.classnames)}
    chosen = _digits_chosen(spec, split, seed, count)
    for i in range(start, stop):
        src = chosen[i]
        digit = int(target[src])
        cls = DIGIT_NAMES[digit]
        gray = Image.fromarray(np.clip(images[src] * (255.0 / 16.0), 0, 255).astype(np.uint8), "L")
        image = gray.resize((size, size), Image.Resampling.BICUBIC).convert("RGB")
        yield RawSample(
            index=i,
            image=image,
            captions=generated_captions(spec, cls, "white strokes on black"),
            class_id=wanted[digit],
            class_name=cls,
        )


# Images per digit 0-9 in sklearn's load_digits (a fixed dataset; tests/unit/test_data_mini.py checks these against
# sklearn). The registry needs only the split sizes, and every job builds the registry: loading sklearn for them
# would cost each job a second.
DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def _digits_count(split: str) -> int:
    train = sum(int(round(DIGITS_TRAIN_FRACTION * n)) for n in DIGITS_PER_CLASS)
    return train if split == "train" else sum(DIGITS_PER_CLASS) - train


# ---------------------------------------------------------------------------------------------------------------
# Registry and entry point.


def _source(generator: str, **counts: int) -> dict[str, dict[str, object]]:
    return {"generate": {"generator": generator, **counts}}


def mini_registry(image_size: int = 32) -> dict[str, DatasetSpec]:
    """The mini benchmark's datasets. The specs themselves do not depend on ``image_size`` (generation takes it);
    it is checked here so that an unusable size fails when the registry is built, not halfway through a run."""
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size {image_size} is below the mini benchmark's minimum of {MIN_IMAGE_SIZE} px")
    specs = [
        DatasetSpec("pool", "pretraining", "pretraining", prompt="a photo of a {}.", caption_source="native",
                    source=_source("pool", train=40_000), splits=("train",)),
        # Evaluation-only: concepts the pool covers, so they measure retention of pretraining knowledge.
        DatasetSpec("shapes", "classification", "evaluation", render.POOL_SHAPES, "a photo of a {}.",
                    source=_source("shapes", test=600), splits=("test",)),
        DatasetSpec("colors", "classification", "evaluation", tuple(render.COLORS), "a {} object.",
                    source=_source("colors", test=600), splits=("test",)),
        DatasetSpec("scenes", "retrieval", "evaluation", (), caption_source="native",
                    source=_source("scenes", test=600), splits=("test",)),
        # Adaptation: concepts absent from the pool; the stream has to teach them. Their (invented) release years
        # order time-incremental streams; glyphs and directions share one, so that stream interleaves them.
        DatasetSpec("digits", "classification", "adaptation", DIGIT_NAMES, "a handwritten digit {}.",
                    source=_source("digits", train=_digits_count("train"), test=_digits_count("test")), year=1998),
        DatasetSpec("new_shapes", "classification", "adaptation", render.NEW_SHAPES, "a drawing of the {} shape.",
                    source=_source("new_shapes", train=750, test=300), year=2021),
        DatasetSpec("textures", "classification", "adaptation", render.TEXTURES, "a {} pattern.",
                    source=_source("textures", train=750, test=300), year=2014),
        DatasetSpec("glyphs", "classification", "adaptation", GLYPH_NAMES, "a drawing of the {}.",
                    source=_source("glyphs", train=1000, test=400), year=2019),
        DatasetSpec("directions", "classification", "adaptation", tuple(render.DIRECTIONS), "an arrow pointing {}.",
                    source=_source("directions", train=1000, test=400), year=2019),
        DatasetSpec("counting", "classification", "adaptation", COUNT_NAMES, "a picture of {}.",
                    source=_source("counting", train=625, test=250), year=2016),
    ]
    return {spec.name: spec for spec in specs}


def split_count(spec: DatasetSpec, split: str, scale: float = 1.0) -> int:
    """How many samples ``generate_split`` yields for ``split`` at ``scale`` (digits: approximately)."""
    source = spec.source.get("generate", {})
    if split not in spec.splits or split not in source:
        raise DataError(f"dataset {spec.name!r} has no generated split {split!r} (splits: {list(spec.splits)})")
    if scale <= 0:
        raise ConfigError(f"dataset {spec.name!r}: scale must be positive, got {scale}")
    n = int(source[split])
    # Keep at least two samples per class so that every class exists in every split, even at tiny scales.
    floor = 2 * len(spec.classnames) if spec.classnames else 2
    return max(floor, int(math.ceil(n * scale)))


def generate_split(spec: DatasetSpec, split: str, seed: int, image_size: int, scale: float = 1.0) -> DrawnSplit:
    """The samples of one generated split, drawn at ``image_size`` px: iterating gives them in index order, and
    ``draw(start, stop)`` any range of them, so the shard writer's workers draw the shards they write.

    Validation happens before the first sample is drawn, so a bad spec fails when called, not when iterated.
    """
    if spec.obtained_by != "generate":
        raise ConfigError(f"dataset {spec.name!r} is obtained by {spec.obtained_by!r}, not generated")
    generator = spec.source["generate"].get("generator")
    if generator not in GENERATORS:
        raise ConfigError(f"dataset {spec.name!r}: unknown generator {generator!r} (known: {', '.join(GENERATORS)})")
    if image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"dataset {spec.name!r}: image_size {image_size} is below {MIN_IMAGE_SIZE} px")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"dataset {spec.name!r}: seed must be a non-negative integer, got {seed!r}")
    known = DIGIT_NAMES if generator == "digits" else PROCEDURAL[generator].classes
    unknown = [cls for cls in spec.classnames if cls not in known]
    if known and unknown:
        raise ConfigError(f"dataset {spec.name!r}: generator {generator!r} cannot draw classes {unknown}")
    if known and not spec.classnames:
        raise ConfigError(f"dataset {spec.name!r}: generator {generator!r} draws classes, the spec lists none")
    count = split_count(spec, split, scale)
    if generator == "digits":
        n = len(_digits_chosen(spec, split, seed, count))
        return DrawnSplit(n, functools.partial(_digits_samples, spec, split, seed, image_size, count))
    return DrawnSplit(count, functools.partial(_draw_procedural, generator, spec, split, seed, image_size))


def _draw_procedural(generator: str, spec: DatasetSpec, split: str, seed: int, size: int, start: int,
                     stop: int) -> Iterator[RawSample]:
    # Looked up by name in the drawing process: caption functions are closures, which do not pickle.
    return PROCEDURAL[generator].samples(spec, split, seed, size, start, stop)
