r"""LiNeS (Wang et al., 2025, "LiNeS: Post-training layer scaling prevents forgetting and enhances model merging").

The merged task vector τ of a tensor is scaled by its depth in its tower, so shallow layers (general features) stay
close to θ0 and deep layers keep their task-specific update:

    τ_k ← (α + β · ℓ(k) / (L − 1)) · τ_k

ℓ(k) is the residual-block index of key k within its tower and L that tower's number of blocks, both read from the
keys of an open_clip state dict. The image tower's blocks are ``visual.transformer.resblocks.{i}.``; the text tower's
``transformer.resblocks.{i}.`` (``text.transformer.resblocks.{i}.`` in open_clip's CustomTextCLIP); each tower has its
own L. Keys before a tower's blocks (embeddings, class token, positional embeddings, conv1, ln_pre) get depth 0,
keys after them (ln_post, proj, attention pooling, ln_final, text_projection) depth L − 1. ``logit_scale`` and
``logit_bias`` belong to no tower and are not scaled (factor 1). A tower with a single block has ℓ / (L − 1) := 0.
Any other key (a non-transformer tower) is a ConfigError: LiNeS has no depth for it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fomoflux.errors import ConfigError

__all__ = ["LinesDepth", "check_lines", "lines_depths", "lines_scales"]

_BLOCK = re.compile(r"^(visual\.|text\.)?transformer\.resblocks\.(\d+)\.")
_UNSCALED = {"logit_scale", "logit_bias"}
# First attribute name after the tower prefix, for keys outside the residual blocks.
_BEFORE = {
    "image": {"conv1", "class_embedding", "positional_embedding", "ln_pre"},
    "text": {"token_embedding", "positional_embedding", "cls_emb"},
}
_AFTER = {
    "image": {"ln_post", "proj", "attn_pool", "attn_pool_contrastive", "ln_contrastive"},
    "text": {"ln_final", "text_projection"},
}


@dataclass(frozen=True)
class LinesDepth:
    """Where a key sits: its tower ("image" / "text"), block depth ℓ in 0..L−1, and the tower's L."""

    tower: str
    depth: int
    blocks: int

    @property
    def fraction(self) -> float:
        """ℓ / (L − 1), 0 for a one-block tower."""
        return self.depth / (self.blocks - 1) if self.blocks > 1 else 0.0


def _tower(prefix: str | None) -> str:
    return "image" if prefix == "visual." else "text"


def lines_depths(keys: Iterable[str]) -> dict[str, LinesDepth | None]:
    """Each key's :class:`LinesDepth` (None for the unscaled ``logit_scale`` / ``logit_bias``); L per tower is
    1 + the largest block index among ``keys``. ConfigError for a key that fits no rule."""
    keys = list(keys)
    blocks: dict[str, int] = {}
    for key in keys:
        match = _BLOCK.match(key)
        if match:
            tower = _tower(match.group(1))
            blocks[tower] = max(blocks.get(tower, 0), int(match.group(2)) + 1)
    depths: dict[str, LinesDepth | None] = {}
    for key in keys:
        match = _BLOCK.match(key)
        if match:
            tower = _tower(match.group(1))
            depths[key] = LinesDepth(tower, int(match.group(2)), blocks[tower])
            continue
        if key in _UNSCALED:
            depths[key] = None
            continue
        if key.startswith("visual."):
            tower, attribute = "image", key[len("visual."):].split(".")[0]
        else:
            tower, attribute = "text", key.removeprefix("text.").split(".")[0]
        if tower not in blocks or attribute not in _BEFORE[tower] | _AFTER[tower]:
            where = f"the {tower} tower has no residual blocks" if tower not in blocks else "unknown layer"
            raise ConfigError(f"LiNeS: no depth for key {key!r} ({where}); LiNeS needs open_clip transformer towers")
        depth = 0 if attribute in _BEFORE[tower] else blocks[tower] - 1
        depths[key] = LinesDepth(tower, depth, blocks[tower])
    return depths


def check_lines(lines: Mapping[str, Any] | None) -> tuple[float, float] | None:
    """(α, β) of a LiNeS setting ``{"alpha": a, "beta": b}`` (both required, finite numbers), None for None."""
    if lines is None:
        return None
    if not isinstance(lines, Mapping) or set(lines) != {"alpha", "beta"}:
        raise ConfigError(f"LiNeS: the setting must be a mapping with exactly 'alpha' and 'beta', got {lines!r}")
    values = []
    for name in ("alpha", "beta"):
        value = lines[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"LiNeS: option {name!r} must be a finite number, got {value!r}")
        values.append(float(value))
    return values[0], values[1]


def lines_scales(keys: Iterable[str], alpha: float, beta: float) -> dict[str, float]:
    """The factor α + β · ℓ(k) / (L − 1) of every key (1.0 for ``logit_scale`` / ``logit_bias``)."""
    return {
        key: 1.0 if depth is None else alpha + beta * depth.fraction for key, depth in lines_depths(keys).items()
    }
