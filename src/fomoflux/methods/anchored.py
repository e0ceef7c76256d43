"""What the anchored regularisers (EWC, SI) share: a per-parameter importance and an anchor, and the penalty

    P(θ) = s · Σ_p Σ_i w_{p,i} (θ_{p,i} − θ*_{p,i})²

with w the importance (EWC's Fisher F, SI's Ω), θ* the anchor (the weights reached after the last finished task) and s
the method's scale (EWC λ/2, SI c). ∂P/∂θ_p = 2 s · w_p ⊙ (θ_p − θ*_p).

The penalty is evaluated once per training step, so it is vectorised over the parameter list: the forward pass copies
all parameters into one flat scratch buffer with ``torch._foreach_copy_`` and reduces it with a handful of fused
kernels; the backward pass computes every gradient with ``torch._foreach_*`` ops. No Python loop touches elements, and
nothing beyond the scratch buffer (freed at once) is kept between forward and backward but the parameters themselves.

Parameters are named as in ``model.named_parameters()``; the tracked set is every floating-point parameter the method
trains in the task. State crosses tasks as a flat dict ``{"<kind>.<parameter name>": tensor}`` (:func:`pack_state` /
:func:`unpack_state`), e.g. ``fisher.visual.conv1.weight`` and ``anchor.visual.conv1.weight``.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar

import torch

from fomoflux.errors import CheckpointError, ConfigError
from fomoflux.methods.base import Method, TaskContext

__all__ = [
    "AnchoredMethod",
    "pack_state",
    "tensor_bytes",
    "tracked_parameters",
    "unpack_state",
    "weighted_squared_distance",
]


def tracked_parameters(method: Method, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of every floating-point parameter ``method`` trains, in ``model.named_parameters()`` order."""
    trained = {id(p) for p in method.trainable_parameters(model)}
    return [(n, p) for n, p in model.named_parameters() if id(p) in trained and p.is_floating_point()]


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class _WeightedSquaredDistance(torch.autograd.Function):
    """Σ_p Σ_i w_{p,i} (θ_{p,i} − a_{p,i})² over lists of tensors; anchors and weights are constants."""

    @staticmethod
    def forward(ctx, anchors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], *params: torch.Tensor):
        ctx.anchors, ctx.weights = anchors, weights
        ctx.save_for_backward(*params)
        # Accumulate in at least float32 (half-precision parameters would lose the small squared distances).
        dtype = torch.float32
        for p in params:
            dtype = torch.promote_types(dtype, p.dtype)
        scratch = torch.empty(sum(p.numel() for p in params), dtype=dtype, device=params[0].device)
        views = [part.view(p.shape) for part, p in zip(scratch.split([p.numel() for p in params]), params)]
        torch._foreach_copy_(views, params)
        torch._foreach_sub_(views, list(anchors))
        torch._foreach_mul_(views, views)
        torch._foreach_mul_(views, list(weights))
        return scratch.sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        params = ctx.saved_tensors
        needed = [i for i, need in enumerate(ctx.needs_input_grad[2:]) if need]
        grads: list[torch.Tensor | None] = [None] * len(params)
        if needed:
            diffs = torch._foreach_sub([params[i] for i in needed], [ctx.anchors[i] for i in needed])
            torch._foreach_mul_(diffs, [ctx.weights[i] for i in needed])
            torch._foreach_mul_(diffs, 2.0 * grad_output)
            for i, diff in zip(needed, diffs):
                grads[i] = diff.to(params[i].dtype)
        return (None, None, *grads)


def weighted_squared_distance(
    params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Σ_p Σ_i w_{p,i} (θ_{p,i} − a_{p,i})² as a 0-dim tensor, differentiable w.r.t. ``params`` (module docstring).

    All tensors must live on one device; the value is in float32 or the widest parameter dtype above it.
    """
    if not (len(params) == len(anchors) == len(weights)):
        raise ValueError(
            f"weighted_squared_distance: {len(params)} parameters, {len(anchors)} anchors, {len(weights)} weights"
        )
    if not params:
        raise ValueError("weighted_squared_distance: empty parameter list")
    devices = {t.device for t in (*params, *anchors, *weights)}
    if len(devices) > 1:
        raise ValueError(f"weighted_squared_distance: tensors on several devices {sorted(map(str, devices))}")
    return _WeightedSquaredDistance.apply(list(anchors), list(weights), *params)


def pack_state(groups: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """``{kind: {name: tensor}}`` → ``{"kind.name": tensor}``."""
    return {f"{kind}.{name}": tensor for kind, named in groups.items() for name, tensor in named.items()}


def unpack_state(
    state: Mapping[str, torch.Tensor], kinds: Sequence[str], owner: str
) -> dict[str, dict[str, torch.Tensor]]:
    """The inverse of :func:`pack_state` for exactly ``kinds``: every key must carry one of them, and every kind must
    name the same parameters with the same shapes (CheckpointError naming ``owner`` otherwise)."""
    groups: dict[str, dict[str, torch.Tensor]] = {kind: {} for kind in kinds}
    for key, tensor in state.items():
        kind, _, name = key.partition(".")
        if kind not in groups or not name:
            expected = ", ".join(f"'{k}.<parameter>'" for k in kinds)
            raise CheckpointError(f"{owner} state has key {key!r}; expected keys {expected}")
        groups[kind][name] = tensor
    first = kinds[0]
    for kind in kinds[1:]:
        if groups[kind].keys() != groups[first].keys():
            odd = sorted(groups[kind].keys() ^ groups[first].keys())
            raise CheckpointError(f"{owner} state: '{first}' and '{kind}' cover different parameters, e.g. {odd[0]!r}")
        for name, tensor in groups[kind].items():
            if tensor.shape != groups[first][name].shape:
                raise CheckpointError(
                    f"{owner} state: {kind}.{name} has shape {tuple(tensor.shape)} but {first}.{name} has "
                    f"{tuple(groups[first][name].shape)}"
                )
    return groups


class AnchoredMethod(Method):
    """Full fine-tuning plus ``scale · Σ w (θ − θ*)²`` (module docstring). Subclasses set ``importance_key`` and
    :meth:`penalty_scale`, and fill ``importance`` / ``anchor`` ({parameter name: tensor}) in ``end_task``.

    Before the first task has ended ``importance`` is None: the penalty is absent (None) and the state is empty.
    ``_tracked`` holds the names of the parameters the current task trains (set by :meth:`begin_task`).
    """

    importance_key: ClassVar[str] = ""

    def __init__(self, **options) -> None:
        self.importance: dict[str, torch.Tensor] | None = None
        self.anchor: dict[str, torch.Tensor] | None = None
        self._tracked: list[str] | None = None
        self._binding: tuple[weakref.ref, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None = None
        super().__init__(**options)

    def penalty_scale(self) -> float:
        raise NotImplementedError

    # -- task hooks ----------------------------------------------------------------------------------------------
    def begin_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        tracked = tracked_parameters(self, model)
        names = [name for name, _ in tracked]
        if self.importance is not None and set(names) != set(self.importance):
            odd = sorted(set(names) ^ set(self.importance))
            raise ConfigError(
                f"method {self.name!r}: this task trains a different parameter set than the previous tasks "
                f"(e.g. {odd[0]!r}); its importance and anchor cover {len(self.importance)} parameters"
            )
        self._tracked = names
        if self.importance is not None:
            self._bind(model)  # moves a state loaded on the CPU onto the training device, once

    def penalty(self, model: torch.nn.Module) -> torch.Tensor | None:
        scale = self.penalty_scale()
        if self.importance is None or scale == 0.0:
            return None
        params, anchors, weights = self._bind(model)
        return scale * weighted_squared_distance(params, anchors, weights)

    def _named_tracked(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        """The parameters of the current task by name (RuntimeError when ``begin_task`` was not called)."""
        if self._tracked is None:
            raise RuntimeError(f"{self.name}: a task hook was called before begin_task")
        named = dict(model.named_parameters())
        return [(name, named[name]) for name in self._tracked]

    def _bind(self, model: torch.nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """(parameters, anchors, importances) as aligned lists in the model's parameter order, cached per model.

        The model order (not the state's) keeps the penalty's summation order, hence its value, the same for a
        method that trained the previous task and for one restored from its saved state.
        """
        binding = self._binding
        if binding is not None and binding[0]() is model:
            return binding[1], binding[2], binding[3]
        assert self.importance is not None and self.anchor is not None
        params: list[torch.Tensor] = []
        anchors: list[torch.Tensor] = []
        weights: list[torch.Tensor] = []
        seen = set()
        for name, param in model.named_parameters():
            weight = self.importance.get(name)
            if weight is None:
                continue
            if weight.shape != param.shape:
                raise CheckpointError(
                    f"method {self.name!r}: its state holds {name} with shape {tuple(weight.shape)} but the model's "
                    f"parameter has {tuple(param.shape)}"
                )
            if weight.device != param.device:
                self.importance[name] = weight = weight.to(param.device)
                self.anchor[name] = self.anchor[name].to(param.device)
            params.append(param)
            anchors.append(self.anchor[name])
            weights.append(weight)
            seen.add(name)
        missing = sorted(set(self.importance) - seen)
        if missing:
            raise CheckpointError(f"method {self.name!r}: its state holds {missing[0]!r}, which the model lacks")
        self._binding = (weakref.ref(model), params, anchors, weights)
        return params, anchors, weights

    def _set_state(self, importance: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> None:
        self.importance, self.anchor = importance, anchor
        self._binding = None

    # -- state across tasks --------------------------------------------------------------------------------------
    def held_tensors(self) -> list[torch.Tensor]:
        """Every tensor the method holds right now (for memory accounting); subclasses add their per-task buffers."""
        return [*(self.importance or {}).values(), *(self.anchor or {}).values()]

    def held_bytes(self) -> int:
        return tensor_bytes(self.held_tensors())

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.importance is None or self.anchor is None:
            return {}
        return pack_state({self.importance_key: self.importance, "anchor": self.anchor})

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if not state:
            self.importance = self.anchor = None
            self._binding = None
            return
        groups = unpack_state(state, [self.importance_key, "anchor"], f"method {self.name!r}")
        self._set_state(groups[self.importance_key], groups["anchor"])
