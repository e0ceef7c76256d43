r"""LiNeS (Wang et al., 2025, "LiNeS: Post-training layer scaling prevents forgetting and enhances model merging").

The merged task vector τ of a tensor is scaled by its depth in its tower, so shallow layers (general features) stay
close to θ0 and deep layers keep their task-specific update. As the reference (``BaseLinesMerge`` of
``continual_lib/merge.py``) computes it, the factor of key k is

    s(k) = α + β · f(ℓ(k) / (L − 1))      f = identity (``linear``), square (``quadratic``) or √ (``sqrt``)

for a key inside residual block ℓ of its tower (``…resblocks.{ℓ}.``), L being that tower's number of blocks, and
s(k) = α for every other key: embeddings, class token, positional embeddings, conv1, ln_pre, ln_post, proj,
attention pooling, ln_final, text_projection, logit_scale, logit_bias — all of them, before or after the blocks.
The reference merges the image tower (``visual.*``) and the rest (text tower and temperature) as two separate state
dicts, each with its own L; here the image tower is the keys starting with ``visual.``, the text tower every other
key. A tower with a single block has ℓ / (L − 1) := 0 (the reference divides by zero). A tower with no residual
blocks at all is a ConfigError: LiNeS has no depth for it (the reference raises there too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fomoflux.errors import ConfigError

__all__ = ["LINES_SCALINGS", "LinesDepth", "LinesSetting", "check_lines", "lines_depths", "lines_scales", "tower_of"]

_BLOCK = re.compile(r"\.resblocks\.(\d+)\.")
LINES_SCALINGS = {"linear": lambda x: x, "quadratic": lambda x: x**2, "sqrt": math.sqrt}


def tower_of(key: str) -> str:
    """"image" for the image tower's keys (``visual.*``), "text" for every other key (the text tower, logit_scale):
    the reference's two merged state dicts, backbone and head."""
    return "image" if key.startswith("visual.") else "text"


@dataclass(frozen=True)
class LinesDepth:
    """Where a key sits: its tower ("image" / "text"), its block ℓ in 0..L−1 (None outside the blocks), and L."""

    tower: str
    depth: int | None
    blocks: int

    @property
    def fraction(self) -> float | None:
        """ℓ / (L − 1) (0 for a one-block tower); None for a key outside the blocks."""
        if self.depth is None:
            return None
        return self.depth / (self.blocks - 1) if self.blocks > 1 else 0.0


@dataclass(frozen=True)
class LinesSetting:
    """A checked LiNeS setting."""

    alpha: float
    beta: float
    scaling: str = "linear"

    def factor(self, depth: LinesDepth) -> float:
        fraction = depth.fraction
        return self.alpha if fraction is None else self.alpha + self.beta * LINES_SCALINGS[self.scaling](fraction)


def _block_of(key: str) -> int | None:
    match = _BLOCK.search(key)
    return int(match.group(1)) if match else None


def lines_depths(keys: Iterable[str]) -> dict[str, LinesDepth]:
    """Each key's :class:`LinesDepth`; L per tower is 1 + the largest block index among the tower's ``keys``.
    ConfigError when a tower has keys but no residual blocks."""
    keys = list(keys)
    blocks: dict[str, int] = {}
    for key in keys:
        block = _block_of(key)
        if block is not None:
            blocks[tower_of(key)] = max(blocks.get(tower_of(key), 0), block + 1)
    depths: dict[str, LinesDepth] = {}
    for key in keys:
        tower = tower_of(key)
        if tower not in blocks:
            raise ConfigError(f"LiNeS: no depth for key {key!r} (the {tower} tower has no residual blocks "
                              "'resblocks.N.'); LiNeS needs open_clip transformer towers")
        depths[key] = LinesDepth(tower, _block_of(key), blocks[tower])
    return depths


def check_lines(lines: Mapping[str, Any] | None) -> LinesSetting | None:
    """The :class:`LinesSetting` of ``{"alpha": a, "beta": b, "scaling": linear|quadratic|sqrt}`` (alpha and beta
    required, finite numbers; scaling optional, default linear); None for None."""
    if lines is None:
        return None
    if not isinstance(lines, Mapping) or not {"alpha", "beta"} <= set(lines) <= {"alpha", "beta", "scaling"}:
        raise ConfigError("LiNeS: the setting must be a mapping with 'alpha' and 'beta' (and optionally 'scaling'), "
                          f"got {lines!r}")
    values = []
    for name in ("alpha", "beta"):
        value = lines[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"LiNeS: option {name!r} must be a finite number, got {value!r}")
        values.append(float(value))
    scaling = lines.get("scaling", "linear")
    if scaling not in LINES_SCALINGS:
        raise ConfigError(f"LiNeS: option 'scaling' must be one of {', '.join(LINES_SCALINGS)}, got {scaling!r}")
    return LinesSetting(values[0], values[1], scaling)


def lines_scales(keys: Iterable[str], alpha: float, beta: float, scaling: str = "linear") -> dict[str, float]:
    """The factor s(k) of every key (see module doc)."""
    setting = LinesSetting(float(alpha), float(beta), scaling)
    return {key: setting.factor(depth) for key, depth in lines_depths(keys).items()}
