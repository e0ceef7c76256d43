r"""Merge operators: how the task vectors τ_i = θ_i − θ0 of one tensor combine into one merged task vector τ.

The merged weights are θ0 + τ (after optional LiNeS depth scaling of τ, see ``fomoflux.merge.lines``). Every operator
works per tensor ("key") and reads the checkpoints one at a time through :class:`~fomoflux.merge.sources.TaskVectors`,
holding O(1) tensors of the key's shape whatever the number of checkpoints n; operators needing statistics over all
checkpoints before they can decide per entry (TIES, DARE, TALL masks) read them twice. Arithmetic is in float32
(float64 tensors stay float64) and the result is cast back to the checkpoint's dtype by the caller.

Weights w_i are used by ``interpolation`` and ``slerp`` only (``uses_weights``); every other operator is defined by
its own options and ignores them (their length is still checked).

========================  =================================================================================
``interpolation``         τ = Σ_i w_i τ_i   (for Σ w = 1 this is Σ_i w_i θ_i)
``slerp``                 spherical interpolation of the flattened weights θ (not τ), folded left to right
``task_arithmetic``       τ = λ Σ_i τ_i
``ties``                  trim each τ_i to its top-``density`` |τ|, elect signs, disjoint mean, × λ
``dare``                  drop entries of each τ_i with probability p, rescale by 1/(1−p), elect signs, disjoint mean, × λ
``breadcrumbs``           mask the largest ``beta`` and the smallest entries of each τ_i, τ = λ Σ_i masked τ_i
``magmax``                per entry the τ_i of largest |τ_i|, × λ
``model_stock``           θ = t·mean(θ_i) + (1 − t)·θ0, t from the mean pairwise cosine of the τ_i
``tall_masks``            consensus of TALL masks applied to Σ_i τ_i, × λ
``random``                per entry a uniformly chosen τ_i (seeded), × λ: the control for magmax's selection
========================  =================================================================================

The exact definitions (and where they deviate from the papers to stay streaming) are in each class's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from fomoflux.errors import ConfigError
from fomoflux.merge.sources import TaskVectors
from fomoflux.registry import Registry, resolve_options

__all__ = [
    "OPERATORS",
    "MergeOperator",
    "available_operators",
    "check_operator",
    "register_operator",
    "slerp_pair",
    "top_fraction_threshold",
]

Rng = Callable[[int], torch.Generator]


class MergeOperator:
    """Base class of merge operators.

    Options are a class-level dict of defaults; ``__init__`` rejects unknown names, coerces ints to floats where the
    default is a float, type-checks the rest and calls :meth:`validate` for ranges; every error is a ConfigError
    naming the operator, the option and the value. :meth:`merge` gets one key's θ0 tensor (compute dtype, read-only),
    the lazy task vectors of that key, the weights, and ``rng(i)``: a fresh generator for checkpoint i of this key
    (the same stream on every call, so two passes see the same random draws). It returns the merged τ.
    """

    name: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Any]] = {}
    uses_weights: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        values = resolve_options(f"merge operator {self.name!r}", self.options, options)
        for key, value in values.items():
            setattr(self, key, value)
        self.validate()

    def validate(self) -> None:
        """Check option ranges (raise ConfigError)."""

    def check_weights(self, weights: Sequence[float]) -> None:
        """Check weights this operator cannot use (raise ConfigError). Length and finiteness are checked before."""

    def config(self) -> dict[str, Any]:
        """The operator's name and effective options."""
        return {"name": self.name, **{key: getattr(self, key) for key in self.options}}

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        raise NotImplementedError

    def _range_error(self, option: str, requirement: str) -> ConfigError:
        return ConfigError(
            f"merge operator {self.name!r}: option {option!r} must be {requirement}, got {getattr(self, option)!r}"
        )

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.options)
        return f"{type(self).__name__}({opts})"


OPERATORS: Registry[type[MergeOperator]] = Registry("merge operator", base=MergeOperator)


def register_operator(name: str) -> Callable[[type[MergeOperator]], type[MergeOperator]]:
    """Class decorator: make a :class:`MergeOperator` subclass available under ``name``."""
    return OPERATORS.register(name)


def available_operators() -> list[str]:
    return OPERATORS.names()


def check_operator(name: str, options: Mapping[str, Any] | None = None) -> MergeOperator:
    """The operator ``name`` built with ``options``: ConfigError on an unknown name, option or value."""
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"merge operator {name!r}: options must be a mapping, got {options!r}")
    return OPERATORS.get(name)(**dict(options or {}))


# ---- helpers -------------------------------------------------------------------------------------------------------


def top_fraction_threshold(magnitude: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count``-th largest value of ``magnitude`` (1 ≤ count ≤ numel): keeping entries ≥ it keeps the top
    ``count`` entries, plus any that tie with the last one."""
    flat = magnitude.reshape(-1)
    return torch.kthvalue(flat, flat.numel() - count + 1).values


def _fraction_count(fraction: float, numel: int) -> int:
    """round(fraction · numel), clamped to [0, numel]."""
    return max(0, min(numel, round(fraction * numel)))


def _count_dtype(n: int) -> torch.dtype:
    """The smallest integer dtype that counts up to n (per-entry counters of the size of a tensor)."""
    return torch.uint8 if n < 2**8 else torch.int16 if n < 2**15 else torch.int32


def _disjoint_mean(taus: TaskVectors, prune: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """TIES' sign election and disjoint mean over the pruned task vectors ``prune(i, τ_i)``, in two passes.

    Pass 1: s = sign(Σ_i pruned τ_i) per entry. Pass 2: the mean over the i whose pruned τ_i is non-zero and has
    sign s (0 where there is none, also where s = 0). ``prune`` must give the same result in both passes.
    """
    elected = torch.zeros_like(taus.base)
    for index, tau in enumerate(taus):
        elected += prune(index, tau)
    sign = torch.sign(elected)
    del elected
    total = torch.zeros_like(taus.base)
    count = torch.zeros(taus.base.shape, dtype=_count_dtype(len(taus)))
    for index, tau in enumerate(taus):
        pruned = prune(index, tau)
        agrees = torch.mul(pruned, sign) > 0  # non-zero, with the elected sign
        total += pruned.masked_fill_(~agrees, 0.0)
        count += agrees
    return total / count.clamp(min=1)


def slerp_pair(a: torch.Tensor, b: torch.Tensor, t: float, eps: float) -> torch.Tensor:
    """Spherical interpolation between the flattened tensors a and b at fraction t (a at 0, b at 1).

    With Ω the angle between a and b: sin((1−t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b, which keeps the norm when ‖a‖ = ‖b‖.
    When 1 − |cos Ω| ≤ eps (nearly colinear: the formula divides by sin Ω ≈ 0) or either norm is 0 (no angle), the
    linear (1 − t)·a + t·b.
    """
    norm_a = float(torch.linalg.vector_norm(a))
    norm_b = float(torch.linalg.vector_norm(b))
    if norm_a > 0.0 and norm_b > 0.0:
        cos = float(torch.dot(a.reshape(-1), b.reshape(-1))) / (norm_a * norm_b)
        cos = min(1.0, max(-1.0, cos))
        if 1.0 - abs(cos) > eps:
            omega = math.acos(cos)
            sin_omega = math.sin(omega)
            return a * (math.sin((1.0 - t) * omega) / sin_omega) + b * (math.sin(t * omega) / sin_omega)
    return a * (1.0 - t) + b * t


# ---- operators -----------------------------------------------------------------------------------------------------


@register_operator("interpolation")
class Interpolation(MergeOperator):
    """τ = Σ_i w_i τ_i, i.e. θ = θ0 + Σ_i w_i (θ_i − θ0); with Σ w_i = 1 this is the weighted average Σ_i w_i θ_i.

    Weights may be any finite numbers (negative ones extrapolate); checkpoints with weight 0 are not read.
    """

    uses_weights = True

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        merged = torch.zeros_like(base)
        for index, weight in enumerate(weights):
            if weight != 0.0:
                merged.add_(taus[index], alpha=weight)
        return merged


@register_operator("slerp")
class Slerp(MergeOperator):
    """Spherical interpolation of the weights themselves, per tensor (flattened), folded left to right.

    For two checkpoints with weights (1 − t, t) the result is slerp(θ_1, θ_2, t) (:func:`slerp_pair`, linear when
    nearly colinear by ``eps``). For n checkpoints: acc = θ_1, then acc = slerp(acc, θ_i, w_i / Σ_{j≤i} w_j) for
    i = 2..n, the running weight that makes a linear fold the weighted mean. Unlike a mean, the fold depends on the
    order. Weights must be ≥ 0 with a positive sum; leading zero-weight checkpoints are skipped (acc starts at the
    first positive weight) and later ones leave acc unchanged (t = 0), so neither is read. Returns τ = acc − θ0.
    """

    options = {"eps": 1e-4}
    uses_weights = True

    def validate(self) -> None:
        if not 0.0 <= self.eps < 1.0:
            raise self._range_error("eps", "in [0, 1)")

    def check_weights(self, weights: Sequence[float]) -> None:
        if any(w < 0.0 for w in weights) or sum(weights) <= 0.0:
            raise ConfigError(
                f"merge operator 'slerp' needs weights >= 0 with a positive sum, got {[float(w) for w in weights]}"
            )

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        merged: torch.Tensor | None = None
        running = 0.0
        for index, weight in enumerate(weights):
            if weight == 0.0:
                continue
            theta = taus[index].add_(base)
            running += weight
            merged = theta if merged is None else slerp_pair(merged, theta, weight / running, self.eps)
        assert merged is not None  # check_weights guarantees a positive weight
        return merged.sub_(base)


@register_operator("task_arithmetic")
class TaskArithmetic(MergeOperator):
    """τ = λ Σ_i τ_i with λ = ``scale`` (Ilharco et al., 2023). The weights are ignored: λ is the one knob."""

    options = {"scale": 1.0}

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        merged = torch.zeros_like(base)
        for tau in taus:
            merged += tau
        return merged.mul_(self.scale)


@register_operator("ties")
class Ties(MergeOperator):
    """TIES-merging (Yadav et al., 2023): trim, elect sign, disjoint merge; τ = λ · disjoint mean.

    Trim: each τ_i keeps its k = round(``density`` · numel) entries of largest |τ_i| (at least one; entries tying
    with the k-th largest are kept too), the rest set to 0. The paper takes the top k over the whole flattened model;
    here it is per tensor, which needs no pass over all keys first and so keeps the merge streaming. Elect: s =
    sign(Σ_i trimmed τ_i) per entry. Disjoint merge: the mean over the i whose trimmed τ_i is non-zero with sign s.
    Two passes over the checkpoints per key (the trim thresholds of pass 1 are kept: n scalars). Weights ignored.
    """

    options = {"density": 0.2, "scale": 1.0}

    def validate(self) -> None:
        if not 0.0 < self.density <= 1.0:
            raise self._range_error("density", "in (0, 1]")

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        keep = max(1, _fraction_count(self.density, base.numel()))
        thresholds: dict[int, torch.Tensor] = {}

        def trim(index: int, tau: torch.Tensor) -> torch.Tensor:
            magnitude = tau.abs()
            if index not in thresholds:
                thresholds[index] = top_fraction_threshold(magnitude, keep)
            return tau.masked_fill_(magnitude < thresholds[index], 0.0)

        return _disjoint_mean(taus, trim).mul_(self.scale)


@register_operator("dare")
class Dare(MergeOperator):
    """DARE (Yu et al., 2024) followed by TIES' sign election and disjoint merge (no trimming); × λ.

    Each entry of τ_i is dropped with probability p = ``drop`` and the survivors are rescaled by 1/(1 − p), which keeps
    E[τ_i] unchanged. The drop mask of (key, i) comes from its own generator (seeded from the merge seed, the key and
    the checkpoint's 0-based index), so both passes see the same mask and the result is a pure function of the seed.
    p = 0 is TIES with density 1.
    """

    options = {"drop": 0.9, "scale": 1.0}

    def validate(self) -> None:
        if not 0.0 <= self.drop < 1.0:
            raise self._range_error("drop", "in [0, 1)")

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        rescale = 1.0 / (1.0 - self.drop)

        def drop(index: int, tau: torch.Tensor) -> torch.Tensor:
            dropped = torch.rand(tau.shape, generator=rng(index), dtype=torch.float32) < self.drop
            return tau.masked_fill_(dropped, 0.0).mul_(rescale)

        return _disjoint_mean(taus, drop).mul_(self.scale)


@register_operator("breadcrumbs")
class Breadcrumbs(MergeOperator):
    """Model Breadcrumbs (Davari & Belilovsky, 2024): τ = λ Σ_i masked τ_i.

    Per τ_i and tensor of N entries ranked by |τ_i| from the largest: the first round(``beta`` · N) entries (outliers)
    are zeroed, the next round(``density`` · N) are kept, and all smaller ones are zeroed; so ``density`` is the
    fraction of entries kept and 1 − beta − density the fraction of small ones dropped (beta + density ≤ 1). The cuts
    are magnitudes (the largest and the smallest kept value), so entries tying with a cut value are kept too.
    Weights ignored.
    """

    options = {"beta": 0.01, "density": 0.9, "scale": 1.0}

    def validate(self) -> None:
        if not 0.0 <= self.beta < 1.0:
            raise self._range_error("beta", "in [0, 1)")
        if not 0.0 < self.density <= 1.0:
            raise self._range_error("density", "in (0, 1]")
        if self.beta + self.density > 1.0 + 1e-12:
            raise ConfigError(
                f"merge operator 'breadcrumbs': options 'beta' + 'density' must be <= 1, got {self.beta} + "
                f"{self.density}"
            )

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        numel = base.numel()
        outliers = _fraction_count(self.beta, numel)
        kept = min(_fraction_count(self.density, numel), numel - outliers)
        merged = torch.zeros_like(base)
        if kept == 0:
            return merged
        for tau in taus:
            magnitude = tau.abs()
            largest_kept = top_fraction_threshold(magnitude, outliers + 1)
            smallest_kept = top_fraction_threshold(magnitude, outliers + kept)
            merged += tau.masked_fill_((magnitude > largest_kept) | (magnitude < smallest_kept), 0.0)
        return merged.mul_(self.scale)


@register_operator("magmax")
class MagMax(MergeOperator):
    """MagMax (Marczak et al., 2024): per entry the τ_i with the largest |τ_i| (the earliest on ties), × λ.
    Weights ignored."""

    options = {"scale": 1.0}

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        merged: torch.Tensor | None = None
        for tau in taus:
            merged = tau if merged is None else torch.where(tau.abs() > merged.abs(), tau, merged)
        assert merged is not None
        return merged.mul_(self.scale)


@register_operator("model_stock")
class ModelStock(MergeOperator):
    """Model Stock (Jang et al., 2024): θ = t·mean(θ_i) + (1 − t)·θ0, i.e. τ = t · mean(τ_i), per tensor.

    t = n·cos / (1 + (n − 1)·cos) with cos the mean pairwise cosine between the task vectors, computed exactly in one
    pass from u = Σ_i τ_i/‖τ_i‖ (unit vectors): Σ_{i≠j} cos(τ_i, τ_j) = ‖u‖² − m, m the number of non-zero τ_i, so
    cos = (‖u‖² − m) / (n(n − 1)); a zero τ_i (e.g. θ0 itself in the list) counts as cosine 0 with every other.
    cos is clamped to [0, 1] (the formula assumes experts that agree at least partly; cos < 0 would make t negative
    and t has a pole at cos = −1/(n − 1)), so t ∈ [0, 1]. For n = 1, cos = 1 (t = 1: θ_1). Weights ignored.
    """

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        n = len(taus)
        total = torch.zeros_like(base)
        units = torch.zeros_like(base)
        nonzero = 0
        for tau in taus:
            norm = float(torch.linalg.vector_norm(tau))
            total += tau
            if norm > 0.0:
                units.add_(tau, alpha=1.0 / norm)
                nonzero += 1
        if n == 1:
            cos = 1.0
        else:
            cos = (float(torch.linalg.vector_norm(units)) ** 2 - nonzero) / (n * (n - 1))
            cos = min(1.0, max(0.0, cos))
        t = n * cos / (1.0 + (n - 1) * cos)
        return total.mul_(t / n)


@register_operator("tall_masks")
class TallMasks(MergeOperator):
    """Consensus merging with TALL masks (Wang et al., 2024): τ = λ · (consensus ⊙ τ_MTL).

    τ_MTL = Σ_i τ_i (pass 1). Task i's TALL mask keeps the entries where it matters relative to the others:
    m_i = |τ_i| ≥ ``lam`` · |τ_MTL − τ_i|. The consensus keeps entries where at least ``min_agree`` masks are on
    (pass 2); the default 2 drops "selfish" entries (one task only) and "catastrophic" ones (none). With fewer
    checkpoints than ``min_agree`` nothing survives and the result is θ0. Weights ignored.
    """

    options = {"lam": 1.0, "min_agree": 2, "scale": 1.0}

    def validate(self) -> None:
        if not self.lam >= 0.0:
            raise self._range_error("lam", ">= 0")
        if self.min_agree < 0:
            raise self._range_error("min_agree", ">= 0")

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        multitask = torch.zeros_like(base)
        for tau in taus:
            multitask += tau
        agree = torch.zeros(base.shape, dtype=_count_dtype(len(taus)))
        for tau in taus:
            agree += tau.abs() >= torch.sub(multitask, tau).abs_().mul_(self.lam)
        return multitask.masked_fill_(agree < self.min_agree, 0.0).mul_(self.scale)


@register_operator("random")
class RandomChoice(MergeOperator):
    """Per entry one τ_i chosen uniformly at random, × λ: MagMax's selection replaced by chance (its control).

    Streaming by reservoir sampling: start with τ_1; checkpoint j = 2..n replaces each entry with probability 1/j,
    drawn from the generator of (seed, key, j − 1) (0-based index). Each τ_i ends up chosen with probability
    1/i · Π_{j>i} (1 − 1/j) = 1/n per entry, independently across entries. Weights ignored.
    """

    options = {"scale": 1.0}

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        merged: torch.Tensor | None = None
        for index, tau in enumerate(taus):
            if merged is None:
                merged = tau
            else:
                replace = torch.rand(tau.shape, generator=rng(index), dtype=torch.float32) < 1.0 / (index + 1)
                merged = torch.where(replace, tau, merged)
        assert merged is not None
        return merged.mul_(self.scale)
