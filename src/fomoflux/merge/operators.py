r"""Merge operators: how the task vectors τ_i = θ_i − θ0 of one tensor combine into one merged task vector τ.

The merged weights are θ0 + τ (after optional LiNeS depth scaling of τ, see ``fomoflux.merge.lines``). Operators work
per tensor ("key") and read the checkpoints one at a time through :class:`~fomoflux.merge.sources.TaskVectors`,
holding O(1) tensors of the key's shape whatever the number of checkpoints n. The TIES family (``ties``, ``dare``,
``breadcrumbs``) ranks entries as the reference (``continual_lib/merge.py`` of FoMo-in-Flux) does, over the whole
flattened tower (``scope: tower``: the image tower, and the text tower with the temperature: the reference's two
merged state dicts) rather than per tensor; they then read the checkpoints in a :meth:`MergeOperator.prepare` pass
over every key first (per-checkpoint thresholds, elected signs) and keep one int8 sign per entry of the model.
``scope: tensor`` ranks within each tensor instead (no prepare pass: cheaper, not the reference). Arithmetic is in
float32 (float64 tensors stay float64) and the result is cast back to the checkpoint's dtype by the caller.

Weights w_i are used by ``interpolation`` and ``slerp`` only (``uses_weights``); every other operator is defined by
its own options and ignores them (their length is still checked), as in the reference.

========================  =================================================================================
``interpolation``         τ = Σ_i w_i τ_i   (for Σ w = 1 this is Σ_i w_i θ_i)
``slerp``                 spherical interpolation of the flattened weights θ (not τ), folded left to right
``task_arithmetic``       τ = λ Σ_i τ_i
``ties``                  prune the smallest ``prune`` fraction of each τ_i, elect signs, disjoint mean, × λ
``dare``                  drop entries of each τ_i with probability ``prune``, rescale by 1/(1 − p), elect signs,
                          disjoint mean, × λ
``breadcrumbs``           prune the largest ``prune_top`` and the smallest ``prune`` fraction of each τ_i, elect
                          signs, disjoint mean, × λ
``magmax``                per entry the τ_i of largest |τ_i|, × λ
``model_stock``           θ = t·mean(θ_i) + (1 − t)·θ0, t from the mean pairwise cosine of the τ_i
``tall_masks``            consensus of TALL masks applied to Σ_i τ_i, × λ
``random``                per entry a uniformly chosen τ_i (seeded), × λ: the control for magmax's selection
========================  =================================================================================

Defaults are the reference's (its ``configs/config.yaml`` and class defaults); the exact definitions, and where they
deviate from the reference, are in each class's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch

from fomoflux.errors import ConfigError
from fomoflux.merge.lines import tower_of
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
MERGE_FUNCTIONS = ("mean", "sum", "max")
SCOPES = ("tower", "tensor")
Cuts = tuple[float, ...]  # pruning thresholds of one task vector


class MergeOperator:
    """Base class of merge operators.

    Options are a class-level dict of defaults (``option_help`` describes them); ``__init__`` rejects unknown names,
    coerces ints to floats where the default is a float, type-checks the rest and calls :meth:`validate` for ranges;
    every error is a ConfigError naming the operator, the option and the value. :meth:`prepare` is called once with
    every floating-point key before the per-key merges (operators needing statistics over the whole model use it).
    :meth:`merge` gets one key's θ0 tensor (compute dtype, read-only), the lazy task vectors of that key, the weights,
    and ``rng(i)``: a fresh generator for checkpoint i of this key (the same stream on every call, so two passes see
    the same random draws). It returns the merged τ. ``scale_option`` names the option that LiNeS replaces.
    """

    name: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Any]] = {}
    option_help: ClassVar[Mapping[str, str]] = {}
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

    def prepare(self, keys: Sequence[str], vectors: Callable[[str], TaskVectors], rngs: Callable[[str], Rng]) -> None:
        """Called once before the per-key merges with every key that will be merged, ``vectors(key)`` its task
        vectors and ``rngs(key)`` its ``rng``. Nothing by default."""

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        raise NotImplementedError

    def _range_error(self, option: str, requirement: str) -> ConfigError:
        return ConfigError(
            f"merge operator {self.name!r}: option {option!r} must be {requirement}, got {getattr(self, option)!r}"
        )

    def _choice(self, option: str, choices: Sequence[str]) -> None:
        if getattr(self, option) not in choices:
            raise self._range_error(option, "one of " + ", ".join(choices))

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


def _count_dtype(n: int) -> torch.dtype:
    """The smallest integer dtype that counts up to n (per-entry counters of the size of a tensor)."""
    return torch.uint8 if n < 2**8 else torch.int16 if n < 2**15 else torch.int32


def slerp_pair(a: torch.Tensor, b: torch.Tensor, t: float, eps: float) -> torch.Tensor:
    """Spherical interpolation between the flattened tensors a and b at fraction t (a at 0, b at 1).

    With Ω the angle between a and b: sin((1−t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b, which keeps the norm when ‖a‖ = ‖b‖.
    When |cos Ω| > 1 − eps (nearly colinear: the formula divides by sin Ω ≈ 0; the reference's DOT_THRESHOLD 0.9995
    is eps 5e-4) or either norm is 0 (no angle), the linear (1 − t)·a + t·b.
    """
    norm_a = float(torch.linalg.vector_norm(a))
    norm_b = float(torch.linalg.vector_norm(b))
    if norm_a > 0.0 and norm_b > 0.0:
        cos = float(torch.dot(a.reshape(-1), b.reshape(-1))) / (norm_a * norm_b)
        cos = min(1.0, max(-1.0, cos))
        if abs(cos) <= 1.0 - eps:
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

    The reference's SLERP takes exactly two models and its weight ``weight_coefficients[0]`` is the fraction towards
    the second one; here w_i is the weight of checkpoint i, as for interpolation (the same for equal weights).
    """

    options = {"eps": 5e-4}
    option_help = {"eps": "interpolate linearly where |cos Ω| > 1 − eps (reference: DOT_THRESHOLD 0.9995)"}
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


SCALE_HELP = "λ, the factor of the merged task vector (LiNeS factors replace it when `lines` is set)"


@register_operator("task_arithmetic")
class TaskArithmetic(MergeOperator):
    """τ = λ Σ_i τ_i with λ = ``scale`` (Ilharco et al., 2023). The weights are ignored: λ is the one knob."""

    options = {"scale": 1.0}
    option_help = {"scale": SCALE_HELP}

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        merged = torch.zeros_like(base)
        for tau in taus:
            merged += tau
        return merged.mul_(self.scale)


class SignElected(MergeOperator):
    r"""The TIES family: prune each τ_i, elect a sign per entry, merge the entries that agree with it; × λ.

    As the reference's ``TIES`` does: s = sign(Σ_i pruned τ_i) per entry, and where that sum is 0, s = the sign of
    Σ s over the scope (the majority sign; 0 if that is 0 too). An entry of pruned τ_i is selected where it is > 0
    for s > 0 and < 0 otherwise (so for s = 0, negative entries). ``merge_function`` aggregates the selected entries:
    ``mean`` (Σ selected / max(1, their count)), ``sum``, or ``max`` (the largest |selected| × s).

    ``scope: tower`` (default, the reference: each task vector flattened over its tower, the image tower or the
    text tower with the temperature) computes the pruning thresholds of each (tower, checkpoint) and the elected
    signs of every key in :meth:`prepare`; ``scope: tensor`` ranks and takes the majority sign within each tensor.
    Weights ignored.
    """

    options = {"merge_function": "mean", "scope": "tower", "scale": 1.0}
    option_help = {
        "merge_function": "how the entries agreeing with the elected sign combine: mean, sum or max",
        "scope": "where entries are ranked and the majority sign taken: tower (the reference: each tower flattened) "
                 "or tensor (each tensor on its own)",
        "scale": SCALE_HELP,
    }

    def validate(self) -> None:
        self._choice("merge_function", MERGE_FUNCTIONS)
        self._choice("scope", SCOPES)

    # -- what a family member defines ---------------------------------------------------------------------------
    def thresholds(self, magnitude: torch.Tensor) -> Cuts:
        """The pruning cut(s) of one task vector from its flattened magnitudes (empty: no cut)."""
        return ()

    def sparsify(self, tau: torch.Tensor, cuts: Cuts, generator: Callable[[], torch.Generator]) -> torch.Tensor:
        """τ with its pruned entries set to 0 (in place); ``generator()`` gives this (key, checkpoint)'s stream."""
        raise NotImplementedError

    needs_thresholds: ClassVar[bool] = True

    # -- the shared machinery -----------------------------------------------------------------------------------
    def _pruned(self, index: int, tau: torch.Tensor, cuts: Mapping[int, Cuts], rng: Rng) -> torch.Tensor:
        return self.sparsify(tau, cuts.get(index, ()), lambda: rng(index))

    def _elect(self, taus: TaskVectors, cuts: Mapping[int, Cuts], rng: Rng) -> torch.Tensor:
        elected = torch.zeros_like(taus.base)
        for index, tau in enumerate(taus):
            elected += self._pruned(index, tau, cuts, rng)
        return torch.sign(elected)

    def _tensor_cuts(self, taus: TaskVectors) -> dict[int, Cuts]:
        if not self.needs_thresholds:
            return {}
        return {index: self.thresholds(tau.abs_().reshape(-1)) for index, tau in enumerate(taus)}

    def prepare(self, keys: Sequence[str], vectors: Callable[[str], TaskVectors], rngs: Callable[[str], Rng]) -> None:
        self._signs: dict[str, torch.Tensor] = {}
        self._cuts: dict[str, dict[int, Cuts]] = {}
        self._majority: dict[str, float] = {}
        if self.scope != "tower" or not keys:
            return
        towers: dict[str, list[str]] = {}
        for key in keys:
            towers.setdefault(tower_of(key), []).append(key)
        for tower, members in towers.items():
            cuts: dict[int, Cuts] = {}
            if self.needs_thresholds:
                bases = [vectors(key).base for key in members]
                sizes = [base.numel() for base in bases]
                dtype = torch.float64 if any(base.dtype == torch.float64 for base in bases) else torch.float32
                del bases
                for index in range(len(vectors(members[0]))):
                    # One checkpoint's |τ| over the whole tower (the reference's flattened vector), filled in place.
                    flat = torch.empty(sum(sizes), dtype=dtype)
                    offset = 0
                    for key, size in zip(members, sizes, strict=True):
                        flat[offset:offset + size] = vectors(key)[index].abs_().reshape(-1)
                        offset += size
                    cuts[index] = self.thresholds(flat)
                    del flat
            self._cuts[tower] = cuts
            total = 0.0
            for key in members:
                sign = self._elect(vectors(key), cuts, rngs(key))
                total += float(sign.sum())
                self._signs[key] = sign.to(torch.int8)
            self._majority[tower] = math.copysign(1.0, total) if total != 0.0 else 0.0

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        if self.scope == "tower":
            tower = tower_of(taus.key)
            cuts = self._cuts[tower]
            sign = self._signs.pop(taus.key).to(base.dtype)
            majority = self._majority[tower]
        else:
            cuts = self._tensor_cuts(taus)
            sign = self._elect(taus, cuts, rng)
            total = float(sign.sum())
            majority = math.copysign(1.0, total) if total != 0.0 else 0.0
        sign.masked_fill_(sign == 0, majority)
        positive = sign > 0
        if self.merge_function != "max":
            del sign  # only max needs the sign itself: one tensor fewer alive during the pass
        merged = torch.zeros_like(base)
        count = torch.zeros(base.shape, dtype=_count_dtype(len(taus))) if self.merge_function == "mean" else None
        for index, tau in enumerate(taus):
            pruned = self._pruned(index, tau, cuts, rng)
            selected = torch.where(positive, pruned > 0, pruned < 0)
            pruned.masked_fill_(~selected, 0.0)
            if self.merge_function == "max":
                torch.maximum(merged, pruned.abs_(), out=merged)
            else:
                merged += pruned
                if count is not None:
                    count += selected
        if self.merge_function == "max":
            merged.mul_(sign)
        elif count is not None:
            merged /= count.clamp(min=1)
        return merged.mul_(self.scale)


def _kth_smallest(flat: torch.Tensor, k: int) -> float:
    """The k-th smallest (1-based) value of a flat tensor."""
    return float(torch.kthvalue(flat, k).values)


@register_operator("ties")
class Ties(SignElected):
    """TIES-merging (Yadav et al., 2023) as the reference's ``TIES``: prune, elect sign, disjoint merge; × λ.

    Prune: with D the entries of the scope and k = int(D · ``prune``), the entries of |τ_i| below its k-th smallest
    value are set to 0 (kept: the top D − k + 1 and ties; k = 0 keeps all, where the reference fails). ``prune`` is
    the fraction pruned, the reference's ``prune_percentile`` (0.2 its default and offline-merge config, 0.7 in the
    EMA/ZS/FT-merge configs, which those presets default to): the TIES paper's "top 20%" is ``prune: 0.8``.
    """

    options = {"prune": 0.2, **SignElected.options}
    option_help = {"prune": "fraction of each task vector's smallest-magnitude entries set to 0 (the reference's "
                            "prune_percentile)", **SignElected.option_help}

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.prune < 1.0:
            raise self._range_error("prune", "in [0, 1)")

    def thresholds(self, magnitude: torch.Tensor) -> Cuts:
        k = int(magnitude.numel() * self.prune)
        return (_kth_smallest(magnitude, k),) if k >= 1 else ()

    def sparsify(self, tau: torch.Tensor, cuts: Cuts, generator: Callable[[], torch.Generator]) -> torch.Tensor:
        if not cuts:
            return tau
        return tau.masked_fill_(tau.abs() < cuts[0], 0.0)


@register_operator("dare")
class Dare(SignElected):
    """DARE (Yu et al., 2024) followed by TIES' sign election and disjoint merge, the reference's ``dare_ties``.

    Each entry of τ_i is dropped with probability p = ``prune`` and the survivors are rescaled by 1/(1 − p), which
    keeps E[τ_i] unchanged. The reference drops exactly int(D · p) − 1 of the D entries of a tower (a uniformly
    random subset by ranking uniform draws); here each entry is dropped independently (the same fraction in
    expectation). The drop mask of (key, i) comes from its own generator (seeded from the merge seed, the key and
    the checkpoint's 0-based index), so every pass sees the same mask and the result is a pure function of the seed.
    p = 0 is TIES with prune 0.
    """

    options = {"prune": 0.2, **SignElected.options}
    option_help = {"prune": "drop probability p of each task-vector entry; survivors are scaled by 1/(1 − p)",
                   **SignElected.option_help,
                   "scope": "where the majority sign of cancelling entries is taken: tower (the reference) or tensor"}
    needs_thresholds = False

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.prune < 1.0:
            raise self._range_error("prune", "in [0, 1)")

    def sparsify(self, tau: torch.Tensor, cuts: Cuts, generator: Callable[[], torch.Generator]) -> torch.Tensor:
        dropped = torch.rand(tau.shape, generator=generator(), dtype=torch.float32) < self.prune
        return tau.masked_fill_(dropped, 0.0).mul_(1.0 / (1.0 - self.prune))


@register_operator("breadcrumbs")
class Breadcrumbs(SignElected):
    """Model Breadcrumbs (Davari & Belilovsky, 2024) as the reference's ``breadcrumbs_ties``: masks, then TIES.

    Mask of τ_i, per task vector flattened over the scope (the reference's one row per task vector): with D entries
    sorted by |τ_i| ascending as m_0..m_{D−1}, top = int(D · ``prune_top``) and bottom = int(D · ``prune``), the
    entries with m_bottom ≤ |τ_i| ≤ m_{D−1−top} are kept (ties at a cut are kept), the others set to 0. Then sign
    election and disjoint ``merge_function`` (the reference config's mean) as TIES, × λ. Defaults: prune_top 0.01,
    prune 0.2 (0.7 in the EMA/ZS/FT-merge presets), as the reference's configs.
    """

    options = {"prune_top": 0.01, "prune": 0.2, **SignElected.options}
    option_help = {"prune_top": "fraction of each task vector's largest-magnitude entries set to 0 (the reference's "
                                "top_prune_percentile)",
                   "prune": "fraction of each task vector's smallest-magnitude entries set to 0 (prune_percentile)",
                   **SignElected.option_help}

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.prune_top < 1.0:
            raise self._range_error("prune_top", "in [0, 1)")
        if not 0.0 <= self.prune < 1.0:
            raise self._range_error("prune", "in [0, 1)")
        if self.prune_top + self.prune >= 1.0:
            raise ConfigError(f"merge operator 'breadcrumbs': options 'prune_top' + 'prune' must be < 1 (they would "
                              f"remove every entry), got {self.prune_top} + {self.prune}")

    def thresholds(self, magnitude: torch.Tensor) -> Cuts:
        numel = magnitude.numel()
        top, bottom = int(self.prune_top * numel), int(self.prune * numel)
        if top + bottom >= numel:
            raise ConfigError(f"merge operator 'breadcrumbs': prune_top {self.prune_top} and prune {self.prune} "
                              f"would remove all {numel} entries")
        return _kth_smallest(magnitude, bottom + 1), _kth_smallest(magnitude, numel - top)

    def sparsify(self, tau: torch.Tensor, cuts: Cuts, generator: Callable[[], torch.Generator]) -> torch.Tensor:
        magnitude = tau.abs()
        return tau.masked_fill_((magnitude < cuts[0]) | (magnitude > cuts[1]), 0.0)


@register_operator("magmax")
class MagMax(MergeOperator):
    """MagMax (Marczak et al., 2024): per entry the τ_i with the largest |τ_i| (the earliest on ties, as the
    reference's argmax), × λ. Weights ignored."""

    options = {"scale": 1.0}
    option_help = {"scale": SCALE_HELP}

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        merged: torch.Tensor | None = None
        for tau in taus:
            merged = tau if merged is None else torch.where(tau.abs() > merged.abs(), tau, merged)
        assert merged is not None
        return merged.mul_(self.scale)


@register_operator("model_stock")
class ModelStock(MergeOperator):
    """Model Stock (Jang et al., 2024): θ = t·mean(θ_i) + (1 − t)·θ0, i.e. τ = t · mean(τ_i), per tensor.

    t = n·cos / ((n − 1)·cos + 1 + eps) with cos the mean pairwise cosine between the task vectors, clamped to
    [−1, 1]: for n = 2 exactly the reference's ``ModelStock`` (which takes two models only; its cos also adds eps to
    the norm product). For n > 2 cos is computed in one pass from u = Σ_i τ_i/‖τ_i‖: Σ_{i≠j} cos(τ_i, τ_j) =
    ‖u‖² − m, m the number of non-zero τ_i, so cos = (‖u‖² − m) / (n(n − 1)); a zero τ_i (e.g. θ0 itself in the
    list) counts as cosine 0 with every other. For n = 1, cos = 1. Weights ignored.
    """

    options = {"eps": 1e-8}
    option_help = {"eps": "added to the denominator of t (the reference's eps)"}

    def validate(self) -> None:
        if not self.eps >= 0.0:
            raise self._range_error("eps", ">= 0")

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
            cos = min(1.0, max(-1.0, cos))
        t = n * cos / ((n - 1) * cos + 1.0 + self.eps)
        return total.mul_(t / n)


@register_operator("tall_masks")
class TallMasks(MergeOperator):
    """Consensus merging with TALL masks (Wang et al., 2024), as the reference's ``TallMasks``: τ = λ · (consensus ⊙
    τ_MTL).

    τ_MTL = Σ_i τ_i (pass 1). Task i's TALL mask keeps the entries where it matters relative to the others:
    m_i = |τ_i| > ``lam`` · |τ_MTL − τ_i| (the reference's tall_mask_lambda, default 0.4). The consensus keeps
    entries where at least ``min_agree`` masks are on (pass 2; the reference's pruning_threshold, default 0, which
    keeps every entry: task arithmetic; 2 drops the paper's "selfish" and "catastrophic" entries). Weights ignored.
    """

    options = {"lam": 0.4, "min_agree": 0, "scale": 1.0}
    option_help = {"lam": "λ of the TALL masks |τ_i| > λ·|τ_MTL − τ_i| (the reference's tall_mask_lambda)",
                   "min_agree": "keep entries on in at least this many masks (the reference's pruning_threshold)",
                   "scale": SCALE_HELP}

    def validate(self) -> None:
        if not self.lam >= 0.0:
            raise self._range_error("lam", ">= 0")
        if self.min_agree < 0:
            raise self._range_error("min_agree", ">= 0")

    def merge(self, base: torch.Tensor, taus: TaskVectors, weights: Sequence[float], rng: Rng) -> torch.Tensor:
        multitask = torch.zeros_like(base)
        for tau in taus:
            multitask += tau
        if self.min_agree == 0:
            return multitask.mul_(self.scale)  # every entry passes: no second pass
        agree = torch.zeros(base.shape, dtype=_count_dtype(len(taus)))
        for tau in taus:
            agree += tau.abs() > torch.sub(multitask, tau).abs_().mul_(self.lam)
        return multitask.masked_fill_(agree < self.min_agree, 0.0).mul_(self.scale)


@register_operator("random")
class RandomChoice(MergeOperator):
    """Per entry one τ_i chosen uniformly at random, × λ: MagMax's selection replaced by chance (its control).

    Streaming by reservoir sampling: start with τ_1; checkpoint j = 2..n replaces each entry with probability 1/j,
    drawn from the generator of (seed, key, j − 1) (0-based index). Each τ_i ends up chosen with probability
    1/i · Π_{j>i} (1 − 1/j) = 1/n per entry, independently across entries (the reference's uniform randint; other
    draws). Weights ignored.
    """

    options = {"scale": 1.0}
    option_help = {"scale": SCALE_HELP}

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
