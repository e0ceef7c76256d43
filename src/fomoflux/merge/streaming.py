"""Merging checkpoints key by key: θ = θ0 + s(k) · op(τ_1..τ_n) for every floating-point tensor k.

τ_i = θ_i − θ0 are the task vectors, ``op`` a merge operator of ``fomoflux.merge.operators`` and s(k) the optional
LiNeS depth factor (``fomoflux.merge.lines``; 1 without LiNeS). With LiNeS, s(k) replaces the operator's λ
(``scale``, set to 1), as the reference does for task arithmetic and the TIES family. Non-floating tensors are copied
from the last checkpoint. The merge streams: it walks θ0's keys one at a time, and within a key the operator reads
the checkpoints one at a time (again for each of its passes), so peak memory is the merged state plus O(1) tensors
of the largest key, whatever the number of checkpoints; operators ranking over whole towers (the TIES family's
``scope: tower``) add one tower's flattened magnitudes and an int8 sign per entry. Arithmetic is in float32 at
least; results have the checkpoints' dtypes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fomoflux.errors import ConfigError
from fomoflux.merge.lines import LinesSetting, check_lines, lines_depths
from fomoflux.merge.operators import MergeOperator, check_operator
from fomoflux.merge.sources import FileSource, StateSource, TaskVectors, TensorSource, check_layouts, tensor_generator

__all__ = ["merge_checkpoints", "merge_state_dicts"]


def merge_checkpoints(
    base: str | Path,
    checkpoints: Sequence[str | Path],
    weights: Sequence[float],
    operator: str = "interpolation",
    options: Mapping[str, Any] | None = None,
    lines: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The merged state dict (CPU tensors, θ0's keys and dtypes) of the safetensors ``checkpoints`` over ``base``.

    ``weights``: one number per checkpoint (used by interpolation / slerp; checked for every operator).
    ``operator`` / ``options``: a registered merge operator and its options. ``lines``: None or
    ``{"alpha": a, "beta": b, "scaling": s}`` (LiNeS scaling of the merged task vector, replacing λ). ``seed``: for
    random operators (dare, random), whose draws come from per-(seed, key, checkpoint) generators, never the global RNG.
    θ0 itself may be one of the checkpoints (its τ is 0). ConfigError for bad settings (before any file is opened),
    CheckpointError naming file and key for missing files, missing or extra keys, other shapes or dtypes.
    """
    if isinstance(checkpoints, (str, Path)):
        raise ConfigError(f"merge: checkpoints must be a list of paths, got the single path {str(checkpoints)!r}")
    paths = list(checkpoints)
    op, weights, scaling = _settings(operator, options, weights, len(paths), lines, seed)
    return _merge(FileSource(base), [FileSource(path) for path in paths], op, weights, scaling, seed)


def merge_state_dicts(
    base: Mapping[str, torch.Tensor],
    states: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float],
    operator: str = "interpolation",
    options: Mapping[str, Any] | None = None,
    lines: Mapping[str, float] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """:func:`merge_checkpoints` over in-memory state dicts (errors name "state i" for the i-th, 0-based).

    The inputs are never modified; the result is new CPU tensors. Gives the same result as saving the states and
    merging the files.
    """
    if isinstance(states, Mapping):
        raise ConfigError("merge: states must be a list of state dicts, got a single state dict")
    states = list(states)
    op, weights, scaling = _settings(operator, options, weights, len(states), lines, seed)
    sources = [StateSource(state, f"state {index}") for index, state in enumerate(states)]
    return _merge(StateSource(base, "base state"), sources, op, weights, scaling, seed)


def _settings(
    operator: str,
    options: Mapping[str, Any] | None,
    weights: Sequence[float],
    n: int,
    lines: Mapping[str, float] | None,
    seed: int,
) -> tuple[MergeOperator, list[float], LinesSetting | None]:
    """The operator, the weights as floats and the LiNeS setting, after every check that needs no file."""
    op = check_operator(operator, options)
    setting = check_lines(lines)
    if setting is not None and "scale" in op.options:
        op = check_operator(operator, {**dict(options or {}), "scale": 1.0})  # LiNeS' factors replace λ
    if n < 1:
        raise ConfigError(f"merge operator {operator!r}: needs at least one checkpoint, got none")
    values = list(weights)
    if len(values) != n:
        raise ConfigError(f"merge operator {operator!r}: {len(values)} weights for {n} checkpoints: {values}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"merge operator {operator!r}: weights must be finite numbers, got {value!r}")
    floats = [float(value) for value in values]
    op.check_weights(floats)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"merge operator {operator!r}: seed must be an int, got {seed!r}")
    return op, floats, setting


@torch.no_grad()
def _merge(
    base: TensorSource,
    sources: Sequence[TensorSource],
    op: MergeOperator,
    weights: list[float],
    scaling: LinesSetting | None,
    seed: int,
) -> dict[str, torch.Tensor]:
    check_layouts(base, sources)
    keys = base.keys()
    floating = [key for key in keys if base.is_floating(key)]
    factors = {} if scaling is None else {key: scaling.factor(depth) for key, depth in lines_depths(floating).items()}

    def vectors(key: str) -> TaskVectors:
        raw = base.read(key)
        return TaskVectors(key, raw.to(torch.promote_types(raw.dtype, torch.float32)), sources)

    # Empty tensors are copied, never merged (below), so the operator never sees them.
    merging = [key for key in floating if math.prod(base.layout(key)[0]) > 0]
    op.prepare(merging, vectors, lambda key: functools.partial(tensor_generator, seed, key))
    merged: dict[str, torch.Tensor] = {}
    for key in keys:
        if not base.is_floating(key):
            merged[key] = sources[-1].read(key).clone()
            continue
        raw = base.read(key)
        if raw.numel() == 0:
            merged[key] = raw.clone()
            continue
        theta0 = raw.to(torch.promote_types(raw.dtype, torch.float32))
        taus = TaskVectors(key, theta0, sources)
        tau = op.merge(theta0, taus, weights, functools.partial(tensor_generator, seed, key))
        factor = factors.get(key, 1.0)
        if factor != 1.0:
            tau.mul_(factor)
        merged[key] = tau.add_(theta0).to(raw.dtype)
    return merged
