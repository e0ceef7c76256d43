"""Procedural drawing for the embedded mini benchmark.

Everything is drawn with PIL on a supersampled canvas in *unit coordinates* (0..1 across the image, y down) and
downsampled with LANCZOS, so edges are antialiased at 32 px. Every random choice comes from the caller's numpy
``Generator``: the same generator state gives byte-identical pixels.

The primitives here know nothing about datasets or captions; :mod:`fomoflux.data.mini` decides what to draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]
Point = tuple[float, float]

# Object colours of the pool and the evaluation sets. Saturated and far apart so that a 32-px image keeps them apart.
COLORS: dict[str, RGB] = {
    "red": (220, 35, 35),
    "green": (40, 185, 50),
    "blue": (45, 85, 240),
    "yellow": (245, 225, 40),
    "purple": (150, 55, 205),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "cyan": (40, 220, 230),
}
BACKGROUNDS: dict[str, RGB] = {
    "black": (8, 8, 8),
    "gray": (110, 110, 110),
    "dark blue": (12, 22, 85),
}

POOL_SHAPES = ("circle", "square", "triangle", "cross", "star", "diamond")
NEW_SHAPES = ("hexagon", "heart", "arrow", "crescent", "ring", "pentagon")
TEXTURES = ("horizontal stripes", "vertical stripes", "diagonal stripes", "checkerboard", "dots", "grid")

# Letters made only of straight strokes, in a unit box (x right, y down); drawn with round caps.
GLYPH_STROKES: dict[str, tuple[tuple[Point, Point], ...]] = {
    "A": (((0.0, 1.0), (0.5, 0.0)), ((0.5, 0.0), (1.0, 1.0)), ((0.22, 0.6), (0.78, 0.6))),
    "E": (((0.0, 0.0), (0.0, 1.0)), ((0.0, 0.0), (1.0, 0.0)), ((0.0, 0.5), (0.8, 0.5)), ((0.0, 1.0), (1.0, 1.0))),
    "F": (((0.0, 0.0), (0.0, 1.0)), ((0.0, 0.0), (1.0, 0.0)), ((0.0, 0.5), (0.8, 0.5))),
    "H": (((0.0, 0.0), (0.0, 1.0)), ((1.0, 0.0), (1.0, 1.0)), ((0.0, 0.5), (1.0, 0.5))),
    "L": (((0.0, 0.0), (0.0, 1.0)), ((0.0, 1.0), (1.0, 1.0))),
    "T": (((0.0, 0.0), (1.0, 0.0)), ((0.5, 0.0), (0.5, 1.0))),
    "X": (((0.0, 0.0), (1.0, 1.0)), ((1.0, 0.0), (0.0, 1.0))),
    "Z": (((0.0, 0.0), (1.0, 0.0)), ((1.0, 0.0), (0.0, 1.0)), ((0.0, 1.0), (1.0, 1.0))),
}

# Compass directions as angles in degrees, counter-clockwise from "right" (so "up" is 90 although y points down).
DIRECTIONS: dict[str, float] = {
    "up": 90.0,
    "up right": 45.0,
    "right": 0.0,
    "down right": -45.0,
    "down": -90.0,
    "down left": -135.0,
    "left": 180.0,
    "up left": 135.0,
}

# The heart outline (the classic parametric curve), normalised to unit radius around its visual centre.
_T = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
_HEART = np.stack(
    [16 * np.sin(_T) ** 3, -(13 * np.cos(_T) - 5 * np.cos(2 * _T) - 2 * np.cos(3 * _T) - np.cos(4 * _T)) - 2.5], axis=1
) / 16.5


def supersample_factor(size: int) -> int:
    """How many canvas pixels per output pixel: 4x at small sizes (where antialiasing matters), 2x at large ones."""
    return max(2, min(4, 256 // max(size, 1)))


def luminance(rgb: RGB) -> float:
    r, g, b = rgb
    return 0.299 * r + 0.587 * g + 0.114 * b


def contrasting_pair(rng: np.random.Generator, min_contrast: float = 70.0) -> tuple[str, str]:
    """A (colour, background) name pair whose luminances differ enough for a 32-px drawing to stay legible."""
    colours, backgrounds = list(COLORS), list(BACKGROUNDS)
    while True:
        c = colours[rng.integers(len(colours))]
        b = backgrounds[rng.integers(len(backgrounds))]
        if abs(luminance(COLORS[c]) - luminance(BACKGROUNDS[b])) >= min_contrast:
            return c, b


def jitter(rgb: RGB, rng: np.random.Generator, amount: int = 12) -> RGB:
    """Perturb a colour a little so that a colour name covers a neighbourhood, not one exact value."""
    d = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(min(255, max(0, v + dv))) for v, dv in zip(rgb, d))  # type: ignore[return-value]


def rotate(points: np.ndarray, degrees: float, cx: float, cy: float) -> list[Point]:
    """Rotate unit-centred ``points`` [K,2] by ``degrees`` (counter-clockwise on screen) and move them to (cx, cy)."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    x, y = points[:, 0], points[:, 1]
    # Screen y points down, so a visually counter-clockwise rotation flips the sign of the sine terms.
    xs = cx + c * x + s * y
    ys = cy - s * x + c * y
    return list(zip(xs.tolist(), ys.tolist()))


def regular_polygon(n: int, start_deg: float = 90.0) -> np.ndarray:
    """Unit-radius regular n-gon, first vertex at ``start_deg`` (90 = pointing up)."""
    angles = np.radians(start_deg + 360.0 * np.arange(n) / n)
    return np.stack([np.cos(angles), -np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    outer = regular_polygon(2 * points)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return outer * radii[:, None]


def _cross(arm: float = 0.32) -> np.ndarray:
    w = arm
    return np.array(
        [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)],
        dtype=float,
    )


def _arrow() -> np.ndarray:
    # Pointing right: a shaft and a wide head, centred on the origin.
    return np.array(
        [(-1.0, -0.22), (0.15, -0.22), (0.15, -0.6), (1.0, 0.0), (0.15, 0.6), (0.15, 0.22), (-1.0, 0.22)], dtype=float
    )


# Unit outlines of every polygonal shape. Squares and diamonds are scaled so that their area is close to a circle's.
POLYGONS: dict[str, np.ndarray] = {
    "square": regular_polygon(4, 45.0) * 1.1,
    "diamond": np.array([(0.0, -1.15), (0.7, 0.0), (0.0, 1.15), (-0.7, 0.0)]),
    "triangle": regular_polygon(3) * 1.2 + np.array([0.0, 0.15]),
    "star": _star() * 1.15,
    "cross": _cross(),
    "hexagon": regular_polygon(6, 0.0),
    "pentagon": regular_polygon(5),
    "arrow": _arrow(),
    "heart": _HEART * 1.1,
}


class Canvas:
    """A supersampled RGB drawing surface addressed in unit coordinates."""

    def __init__(self, size: int, background: RGB, supersample: int | None = None) -> None:
        self.size = size
        self.px = size * (supersample or supersample_factor(size))
        self.background = background
        self.image = Image.new("RGB", (self.px, self.px), background)
        self.draw = ImageDraw.Draw(self.image)

    def _xy(self, points: Sequence[Point]) -> list[Point]:
        p = self.px
        return [(x * p, y * p) for x, y in points]

    def polygon(self, points: Sequence[Point], fill: RGB) -> None:
        self.draw.polygon(self._xy(points), fill=fill)

    def ellipse(self, cx: float, cy: float, r: float, fill: RGB | None = None, outline: RGB | None = None,
                width: float = 0.0) -> None:
        p = self.px
        box = ((cx - r) * p, (cy - r) * p, (cx + r) * p, (cy + r) * p)
        self.draw.ellipse(box, fill=fill, outline=outline, width=max(1, round(width * p)) if outline else 0)

    def rectangle(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        p = self.px
        self.draw.rectangle((x0 * p, y0 * p, x1 * p - 1, y1 * p - 1), fill=fill)

    def stroke(self, a: Point, b: Point, fill: RGB, width: float) -> None:
        """A line segment with round caps (PIL lines have square ends, which look ragged at small sizes)."""
        p = self.px
        w = width * p
        self.draw.line((a[0] * p, a[1] * p, b[0] * p, b[1] * p), fill=fill, width=max(1, round(w)))
        r = w / 2.0
        for x, y in (a, b):
            self.draw.ellipse((x * p - r, y * p - r, x * p + r, y * p + r), fill=fill)

    def finish(self, rng: np.random.Generator | None = None, noise: float = 0.0) -> Image.Image:
        """Downsample to the output size (LANCZOS after a cheap box pre-reduction) and optionally add pixel noise."""
        image = self.image
        if self.px != self.size:
            # reducing_gap first box-reduces to within 2x of the target, then LANCZOS does the rest: the same
            # antialiased result at a third of the cost of a direct 4x LANCZOS.
            image = image.resize((self.size, self.size), Image.Resampling.LANCZOS, reducing_gap=2.0)
        if noise > 0.0 and rng is not None:
            arr = np.asarray(image, dtype=np.int16)
            arr = arr + rng.integers(-round(noise), round(noise) + 1, size=arr.shape, dtype=np.int16)
            image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
        return image


def draw_shape(canvas: Canvas, shape: str, cx: float, cy: float, r: float, rotation: float, fill: RGB) -> None:
    """Draw one filled shape of (unit) radius ``r`` centred on (cx, cy), rotated by ``rotation`` degrees."""
    if shape == "circle":
        canvas.ellipse(cx, cy, r, fill=fill)
    elif shape == "ring":
        canvas.ellipse(cx, cy, r, outline=fill, width=0.38 * r)
    elif shape == "crescent":
        # A disc with an offset disc of background cut out of it; the cut-out's side follows the rotation.
        canvas.ellipse(cx, cy, r, fill=fill)
        a = math.radians(rotation)
        canvas.ellipse(cx + 0.45 * r * math.cos(a), cy - 0.45 * r * math.sin(a), 0.85 * r, fill=canvas.background)
    elif shape in POLYGONS:
        canvas.polygon(rotate(POLYGONS[shape] * r, rotation, cx, cy), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_texture(canvas: Canvas, texture: str, fg: RGB, period: float, phase: float, diagonal_sign: int = 1) -> None:
    """Fill the whole canvas with a periodic pattern of ``period`` (unit) and offset ``phase`` (in periods)."""
    off = phase * period
    n = int(math.ceil(1.0 / period)) + 2
    starts = [off + (k - 1) * period for k in range(n)]
    half = period / 2.0
    if texture == "horizontal stripes":
        for s in starts:
            canvas.rectangle(0.0, s, 1.0, s + half, fg)
    elif texture == "vertical stripes":
        for s in starts:
            canvas.rectangle(s, 0.0, s + half, 1.0, fg)
    elif texture == "diagonal stripes":
        # Parallelograms along x + y = const (or x - y with the other sign): the diagonal's span is twice as long.
        for k in range(-n, 2 * n):
            s = off + k * period
            if diagonal_sign > 0:
                pts = [(s, 0.0), (s + half, 0.0), (s + half - 1.0, 1.0), (s - 1.0, 1.0)]
            else:
                pts = [(s - 1.0, 0.0), (s - 1.0 + half, 0.0), (s + half, 1.0), (s, 1.0)]
            canvas.polygon(pts, fg)
    elif texture == "checkerboard":
        for i, y in enumerate(starts):
            for j, x in enumerate(starts):
                if (i + j) % 2 == 0:
                    canvas.rectangle(x, y, x + period, y + period, fg)
    elif texture == "dots":
        r = 0.24 * period
        for y in starts:
            for x in starts:
                canvas.ellipse(x + half, y + half, r, fill=fg)
    elif texture == "grid":
        w = 0.22 * period
        for s in starts:
            canvas.rectangle(s, 0.0, s + w, 1.0, fg)
            canvas.rectangle(0.0, s, 1.0, s + w, fg)
    else:
        raise ValueError(f"unknown texture {texture!r}")


def draw_glyph(canvas: Canvas, letter: str, cx: float, cy: float, height: float, rotation: float, fill: RGB,
               width: float, rng: np.random.Generator, wobble: float = 0.04) -> None:
    """Draw ``letter`` from straight strokes, each end point wobbled a little (a hand-drawn look)."""
    strokes = GLYPH_STROKES[letter]
    ends = np.array([pt for stroke in strokes for pt in stroke], dtype=float)
    ends = ends + rng.uniform(-wobble, wobble, size=ends.shape)
    # Letter box: 0.7 x 1.0 of the height, centred on the origin before rotation.
    local = (ends - 0.5) * np.array([0.7 * height, height])
    pts = rotate(local, rotation, cx, cy)
    for k in range(0, len(pts), 2):
        canvas.stroke(pts[k], pts[k + 1], fill, width)


def draw_arrow_line(canvas: Canvas, cx: float, cy: float, length: float, angle: float, fill: RGB, width: float) -> None:
    """A line with an open arrow head, centred on (cx, cy), pointing at ``angle`` degrees (counter-clockwise)."""
    a = math.radians(angle)
    dx, dy = math.cos(a), -math.sin(a)
    tail = (cx - dx * length / 2, cy - dy * length / 2)
    tip = (cx + dx * length / 2, cy + dy * length / 2)
    canvas.stroke(tail, tip, fill, width)
    head = 0.38 * length
    for side in (150.0, -150.0):
        b = math.radians(angle + side)
        canvas.stroke(tip, (tip[0] + head * math.cos(b), tip[1] - head * math.sin(b)), fill, width)


def scatter_points(rng: np.random.Generator, n: int, radius: float, margin: float = 0.06,
                   gap: float = 0.05) -> list[Point]:
    """``n`` centres of non-overlapping discs of ``radius`` inside the unit square (rejection sampling, restarted
    from scratch on a dead end so that a small image always fits the largest count)."""
    lo, hi = margin + radius, 1.0 - margin - radius
    min_d = 2 * radius + gap
    while True:
        pts: list[Point] = []
        for _ in range(200):
            p = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
            if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= min_d * min_d for q in pts):
                pts.append(p)
                if len(pts) == n:
                    return pts
