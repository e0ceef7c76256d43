"""Weight adapters for parameter-efficient fine-tuning (LoRA, DoRA, VeRA): target selection, attaching, folding.

An adapter re-parametrises a weight matrix W (out × in) of a residual block as W' = f(W0, φ), with small tensors φ
the only thing that trains; the subclasses define f (``lora``: W0 + s·B@A, ``dora``, ``vera``).

Targets. The weights of open_clip's ``ResidualAttentionBlock`` that an adapter can sit on (option ``targets``)::

    attn_in   attn.in_proj_weight   (3·width × width; a Parameter of torch's MultiheadAttention, not a Linear)
    attn_out  attn.out_proj.weight  (width × width)
    mlp_in    mlp.c_fc.weight       (mlp_width × width)
    mlp_out   mlp.c_proj.weight     (width × mlp_width)

in the blocks ``visual.transformer.resblocks.{i}`` (image tower) and ``transformer.resblocks.{i}`` (text tower) picked
by ``towers`` and ``blocks`` (None: all; negative indices count from the end of each tower). The default, as in the
reference release (``continual_lib/lora.py`` at 3e123d9, which adapts every residual block of both towers), is the
attention in-projections and the MLP out-projections: the reference also builds adapters for ``attn.out_proj``, but
its attention forward reads ``out_proj.weight`` directly, so they never act; and it skips ``mlp.c_fc`` by name.

Slices. ``attn_in`` is the fused [q; k; v] projection; as in the reference (``LoRA_MHA``), each of its three row
blocks (width × width) gets an adapter of its own, keyed ``"<weight>.q.<tensor>"`` / ``.k.`` / ``.v.``, and W' is
the three adapted blocks stacked. Every other target is one block, keyed ``"<weight>.<tensor>"``.

One adapter is trained across the whole stream. Its tensors φ are the method's cross-task state, keyed as above
(e.g. ``"visual.transformer.resblocks.0.attn.in_proj_weight.q.lora_A"``); tensors shared by several blocks (VeRA's
random projections) have keys of their own. In one task:

- ``begin_task``: every adapted weight is reset to θ0 exactly (the model arrives holding θ0 + the previous task's
  folded ΔW), then f is attached with ``torch.nn.utils.parametrize.register_parametrization``, so that the model's
  forward sees W' while the weight itself (the parametrization's ``original``) stays θ0. φ comes from the state of
  the previous task, or is freshly initialised at the first one (from a generator seeded by a hash of the run's seed
  and the block's key prefix, so a run is reproducible; on device "meta" only shapes are made);
- training updates φ only (:meth:`AdapterMethod.trainable_parameters`);
- ``end_task`` folds W ← f(θ0, φ) into plain weights (``remove_parametrizations(leave_parametrized=True)``): the
  checkpoint has open_clip's keys and shapes, and loads with plain open_clip. φ is kept for the next task.

:func:`fold_adapter_state` builds the same deployable state dict from θ0 and a saved φ alone, without a model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.nn.utils import parametrize

from fomoflux.errors import CheckpointError, ConfigError
from fomoflux.methods.base import Method, TaskContext

__all__ = [
    "ADAPTER_OPTIONS",
    "ADAPTER_OPTION_HELP",
    "ATTN_IN_SLICES",
    "TARGETS",
    "TOWERS",
    "TOWER_BLOCKS",
    "AdapterMethod",
    "RowBlocks",
    "WeightSlice",
    "adapter_seed",
    "attach_tensors",
    "fold_adapter_state",
    "kaiming_uniform",
    "select_targets",
    "weight_slices",
]

TARGETS: dict[str, str] = {
    "attn_in": "attn.in_proj_weight",
    "attn_out": "attn.out_proj.weight",
    "mlp_in": "mlp.c_fc.weight",
    "mlp_out": "mlp.c_proj.weight",
}
# The row blocks of the fused attention in-projection, in torch's order (MultiheadAttention: W = [W_q; W_k; W_v]).
ATTN_IN_SLICES = ("q", "k", "v")
TOWERS = ("both", "image", "text")
# Where each tower's residual blocks live: CLIP has the text transformer at the top level, CustomTextCLIP under text.
TOWER_BLOCKS: dict[str, tuple[str, ...]] = {
    "image": ("visual.transformer.resblocks",),
    "text": ("transformer.resblocks", "text.transformer.resblocks"),
}
# The reference release's defaults (configs/config.yaml at 3e123d9: rank 5, every block of both towers).
ADAPTER_OPTIONS: dict[str, Any] = {
    "rank": 5,
    "towers": "both",
    "targets": ["attn_in", "mlp_out"],
    "blocks": None,
}
ADAPTER_OPTION_HELP: dict[str, str] = {
    "rank": "rank r of the adapter's low-rank matrices (the reference's default: 5)",
    "towers": "which towers get adapters: both, image or text",
    "targets": "the weights of each residual block adapted: attn_in (q, k and v adapted separately), attn_out, "
    "mlp_in, mlp_out",
    "blocks": "indices of the residual blocks adapted in each tower (negative: from the end; null: all)",
}


@dataclass(frozen=True)
class WeightSlice:
    """Rows ``start:stop`` of an adapted weight, adapted on their own; ``label`` is None for the whole weight."""

    label: str | None
    start: int
    stop: int

    def prefix(self, weight_name: str) -> str:
        """The state-key prefix of this block's tensors."""
        return f"{weight_name}.{self.label}" if self.label else weight_name


def weight_slices(name: str, shape: torch.Size | tuple[int, ...]) -> list[WeightSlice]:
    """The blocks ``name`` (of ``shape``) is adapted in: q, k, v for an attention in-projection, else the whole."""
    out_features = shape[0]
    if name.endswith("." + TARGETS["attn_in"]):
        if out_features % len(ATTN_IN_SLICES):
            raise ConfigError(f"{name}: an attention in-projection of {out_features} rows is not three q/k/v blocks")
        rows = out_features // len(ATTN_IN_SLICES)
        return [WeightSlice(label, i * rows, (i + 1) * rows) for i, label in enumerate(ATTN_IN_SLICES)]
    return [WeightSlice(None, 0, out_features)]


def _split_prefix(prefix: str) -> str:
    """The weight name of a state-key prefix (strips a q/k/v block label of an attention in-projection)."""
    head, _, last = prefix.rpartition(".")
    if last in ATTN_IN_SLICES and head.endswith("." + TARGETS["attn_in"]):
        return head
    return prefix


class RowBlocks(torch.nn.Module):
    """W ↦ [f_1(W[rows_1]); f_2(W[rows_2]); ...]: one adapter per row block (q, k, v of an in-projection)."""

    def __init__(self, parts: list[tuple[WeightSlice, torch.nn.Module]]) -> None:
        super().__init__()
        self.ranges = [(part.start, part.stop) for part, _ in parts]
        self.blocks = torch.nn.ModuleDict({part.label: module for part, module in parts})

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [module(weight[start:stop]) for (start, stop), module in zip(self.ranges, self.blocks.values())], dim=0
        )


def _assemble(parts: list[tuple[WeightSlice, torch.nn.Module]]) -> torch.nn.Module:
    if len(parts) == 1 and parts[0][0].label is None:
        return parts[0][1]
    return RowBlocks(parts)


def _submodule(root: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _owner(model: torch.nn.Module, weight_name: str) -> tuple[torch.nn.Module, str]:
    module_path, attr = weight_name.rsplit(".", 1)
    return model.get_submodule(module_path), attr


def _tower_blocks(model: torch.nn.Module, tower: str) -> tuple[str, list[torch.nn.Module]] | None:
    for path in TOWER_BLOCKS[tower]:
        blocks = _submodule(model, path)
        if isinstance(blocks, (torch.nn.ModuleList, torch.nn.Sequential)):
            return path, list(blocks)
    return None


def select_targets(
    model: torch.nn.Module, method: str, towers: str, targets: Iterable[str], blocks: list[int] | None
) -> list[str]:
    """The names of the weights (as in ``model.state_dict()``) that the options select, tower by tower, block by block.

    ConfigError (naming ``method`` and the option) when a tower has no transformer blocks, a block index does not
    exist in a tower, or nothing matches. Looks at names and shapes only (works on a "meta" model).
    """
    names: list[str] = []
    for tower in ("image", "text") if towers == "both" else (towers,):
        found = _tower_blocks(model, tower)
        if found is None:
            raise ConfigError(
                f"method {method!r}: option 'towers' is {towers!r} but the model's {tower} tower has no transformer "
                f"residual blocks (looked for {' / '.join(TOWER_BLOCKS[tower])})"
            )
        path, tower_blocks = found
        count = len(tower_blocks)
        if blocks is None:
            indices = list(range(count))
        else:
            for index in blocks:
                if not -count <= index < count:
                    raise ConfigError(
                        f"method {method!r}: option 'blocks' lists block {index}, but the {tower} tower has {count} "
                        f"blocks (valid: 0..{count - 1} or -{count}..-1)"
                    )
            indices = sorted({index % count for index in blocks})
        for index in indices:
            for target in targets:
                weight_name = f"{path}.{index}.{TARGETS[target]}"
                module_path, attr = weight_name.rsplit(".", 1)
                module = _submodule(model, module_path)
                weight = getattr(module, attr, None) if module is not None else None
                if isinstance(weight, torch.Tensor) and weight.ndim == 2:
                    names.append(weight_name)
    if not names:
        raise ConfigError(
            f"method {method!r}: no weight matches option 'targets' = {list(targets)!r} in towers {towers!r} "
            f"(blocks {blocks!r})"
        )
    return names


def adapter_seed(seed: int, *parts: object) -> int:
    """A 63-bit generator seed from a hash of (seed, parts): one independent stream per block (or shape)."""
    text = ":".join(str(p) for p in ("adapter-init", seed, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") & (2**63 - 1)


def kaiming_uniform(shape: tuple[int, ...], generator: torch.Generator, rank: int) -> torch.Tensor:
    """torch's ``kaiming_uniform_(a=√rank)`` (fan_in = shape[1]), the reference's init of LoRA's A and of VeRA's
    random matrices: U(±√(6 / ((1 + rank)·fan_in))); at rank 5 that is peft's U(±1/√fan_in)."""
    tensor = torch.empty(shape, dtype=torch.float32)
    return torch.nn.init.kaiming_uniform_(tensor, a=math.sqrt(rank), generator=generator)


def attach_tensors(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Register each tensor on ``module`` under its name: a Parameter trains, anything else is a frozen buffer
    (not persistent: the method state saves it, the model's state dict must not hold it)."""
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.nn.Parameter):
            module.register_parameter(name, tensor)
        else:
            module.register_buffer(name, tensor, persistent=False)


class AdapterMethod(Method):
    """Base of the adapter methods (module docstring). A subclass defines:

    - ``weight_tensors``: the names of its per-block tensors (state keys ``"<weight>[.<q|k|v>].<tensor>"``);
    - :meth:`tensor_keys` when some tensors are shared between blocks (default: the per-block keys);
    - ``frozen_tensors``: tensor names that never train (default: none);
    - :meth:`fresh_tensor`: the initial value of one tensor; :meth:`parametrization`: the module computing a
      block's W' from its W0 rows.
    """

    options: ClassVar[Mapping[str, Any]] = ADAPTER_OPTIONS
    option_help: ClassVar[Mapping[str, str]] = ADAPTER_OPTION_HELP
    weight_tensors: ClassVar[tuple[str, ...]] = ()
    frozen_tensors: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._state: dict[str, torch.Tensor] | None = None  # φ between tasks (None: fresh at the next begin_task)
        self._live: dict[str, torch.Tensor] | None = None  # φ attached to the model during a task, by state key
        self._attached: list[str] = []

    # -- options -------------------------------------------------------------------------------------------------
    def _bad(self, option: str, value: Any, why: str) -> ConfigError:
        return ConfigError(f"method {self.name!r}: option {option!r} {why}, got {value!r}")

    def validate(self) -> None:
        if isinstance(self.rank, bool) or self.rank < 1:
            raise self._bad("rank", self.rank, "must be an integer >= 1")
        if self.towers not in TOWERS:
            raise self._bad("towers", self.towers, f"must be one of {', '.join(TOWERS)}")
        if not self.targets:
            raise self._bad("targets", self.targets, f"must be a non-empty list of {', '.join(TARGETS)}")
        for target in self.targets:
            if not isinstance(target, str) or target not in TARGETS:
                raise self._bad("targets", target, f"must list names from {', '.join(TARGETS)}")
        if len(set(self.targets)) != len(self.targets):
            raise self._bad("targets", self.targets, "lists a target twice")
        self.targets = list(self.targets)  # a private copy: the class default is shared
        if self.blocks is not None:
            if not isinstance(self.blocks, list) or not self.blocks:
                raise self._bad("blocks", self.blocks, "must be null (all blocks) or a non-empty list of block indices")
            for index in self.blocks:
                if isinstance(index, bool) or not isinstance(index, int):
                    raise self._bad("blocks", index, "must list integer block indices")
            self.blocks = list(self.blocks)

    def target_names(self, model: torch.nn.Module) -> list[str]:
        """The adapted weights of ``model`` (ConfigError: bad block, nothing matched, rank above a block's rank)."""
        names = select_targets(model, self.name, self.towers, self.targets, self.blocks)
        for name in names:
            module, attr = _owner(model, name)
            shape = getattr(module, attr).shape
            for part in weight_slices(name, shape):
                out_features, in_features = part.stop - part.start, shape[1]
                if self.rank > min(out_features, in_features):
                    raise ConfigError(
                        f"method {self.name!r}: option 'rank' is {self.rank}, more than min(out, in) = "
                        f"{min(out_features, in_features)} of {part.prefix(name)} ({out_features} × {in_features})"
                    )
        return names

    def check_model(self, model: torch.nn.Module) -> None:
        self.target_names(model)

    # -- what a subclass defines ---------------------------------------------------------------------------------
    def tensor_keys(self, prefix: str, shape: torch.Size) -> dict[str, str]:
        """tensor name → state key, for the tensors of the block with key prefix ``prefix`` (of ``shape``)."""
        return {tensor: f"{prefix}.{tensor}" for tensor in self.weight_tensors}

    def fresh_tensor(self, tensor: str, prefix: str, weight: torch.Tensor, seed: int) -> torch.Tensor:
        """The initial value of ``tensor`` for the block ``prefix`` whose θ0 rows are ``weight`` (meta: shapes)."""
        raise NotImplementedError

    def parametrization(self, tensors: Mapping[str, torch.Tensor]) -> torch.nn.Module:
        """The module with forward(W0 rows of a block) = W' rows, holding ``tensors`` (tensor name → tensor)."""
        raise NotImplementedError

    def adapted_weights(self, state: Mapping[str, torch.Tensor]) -> list[str]:
        """The weight names an adapter state adapts (those with per-block keys), in the state's order."""
        names: dict[str, None] = {}
        for key in state:
            prefix, _, tensor = key.rpartition(".")
            if tensor in self.weight_tensors and prefix:
                names[_split_prefix(prefix)] = None
        return list(names)

    def weight_parametrization(
        self, name: str, weight: torch.Tensor, tensor_for: Any
    ) -> tuple[torch.nn.Module, list[str]]:
        """The module computing W' of the weight ``name`` (θ0 ``weight``) and the state keys it uses; ``tensor_for``
        (tensor name, key, block prefix, θ0 rows of the block) → the tensor to hold."""
        parts: list[tuple[WeightSlice, torch.nn.Module]] = []
        keys: list[str] = []
        for part in weight_slices(name, weight.shape):
            rows = weight[part.start : part.stop]
            prefix = part.prefix(name)
            tensors = {}
            for tensor, key in self.tensor_keys(prefix, rows.shape).items():
                tensors[tensor] = tensor_for(tensor, key, prefix, rows)
                keys.append(key)
            parts.append((part, self.parametrization(tensors)))
        return _assemble(parts), keys

    # -- hooks ---------------------------------------------------------------------------------------------------
    def begin_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        names = self.target_names(model)
        base = ctx.base_state_dict()
        state = self._state
        live: dict[str, torch.Tensor] = {}

        def tensor_for(tensor: str, key: str, prefix: str, rows: torch.Tensor) -> torch.Tensor:
            if key not in live:
                if state is None:
                    value = self.fresh_tensor(tensor, prefix, rows, ctx.seed)
                else:
                    value = state.get(key)
                    if value is None:
                        raise CheckpointError(
                            f"method {self.name!r}: the restored adapter state has no tensor {key} (were the "
                            f"options towers/targets/blocks changed between tasks, or was it saved before q, k and v "
                            f"had adapters of their own?)"
                        )
                value = value.detach().to(device=rows.device, dtype=rows.dtype).clone()
                live[key] = value if tensor in self.frozen_tensors else torch.nn.Parameter(value)
            return live[key]

        for name in names:
            module, attr = _owner(model, name)
            if parametrize.is_parametrized(module, attr):  # left over from a task that never reached end_task
                parametrize.remove_parametrizations(module, attr, leave_parametrized=False)
            weight = getattr(module, attr)
            theta0 = base.get(name)
            if theta0 is None or theta0.shape != weight.shape:
                raise CheckpointError(
                    f"method {self.name!r}: the base state θ0 has no weight {name} of shape {tuple(weight.shape)}"
                )
            with torch.no_grad():
                weight.copy_(theta0)
            module_f, _ = self.weight_parametrization(name, weight.detach(), tensor_for)
            try:
                parametrize.register_parametrization(module, attr, module_f)
            except (RuntimeError, ValueError) as exc:  # parametrize checks that W' has W's shape and dtype
                raise CheckpointError(f"method {self.name!r}: adapter tensors of {name} do not fit it: {exc}") from exc
        if state is not None:
            unexpected = sorted(set(state) - set(live))
            if unexpected:
                raise CheckpointError(
                    f"method {self.name!r}: the restored adapter state has tensors the options do not target: "
                    f"{', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}"
                )
        self._live = live
        self._attached = names

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        if self._live is None:
            raise RuntimeError(f"method {self.name!r}: trainable_parameters before begin_task")
        return [t for t in self._live.values() if isinstance(t, torch.nn.Parameter)]

    def extra_memory_bytes(self, trainable: list[torch.nn.Parameter]) -> int:
        # Frozen adapter tensors (VeRA's projections) are buffers, which the profile does not count as parameters.
        frozen = [t for t in (self._live or {}).values() if not isinstance(t, torch.nn.Parameter)]
        return sum(t.numel() * t.element_size() for t in frozen)

    def end_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        if self._live is None:
            raise RuntimeError(f"method {self.name!r}: end_task without begin_task")
        for name in self._attached:
            module, attr = _owner(model, name)
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
        self._state = {key: tensor.detach().clone() for key, tensor in self._live.items()}
        self._live = None
        self._attached = []

    # -- state across tasks ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self._state or {})

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        # Checked against the model at the next begin_task, where the targeted weights are known.
        self._state = {key: tensor.detach().clone() for key, tensor in state.items()} or None


def fold_adapter_state(
    base_state: Mapping[str, torch.Tensor], adapter_state: Mapping[str, torch.Tensor], method: AdapterMethod
) -> dict[str, torch.Tensor]:
    """The deployable plain open_clip state dict W' = f(θ0, φ) from θ0 and a saved adapter state φ of ``method``.

    Same keys and shapes as ``base_state``; the adapted weights are new tensors, every other entry is θ0's own
    tensor (not a copy). It computes exactly what ``method.end_task`` leaves in the model. CheckpointError when φ
    names a weight θ0 lacks, misses one of a weight's tensors, or holds tensors no adapted weight uses.
    """
    folded = dict(base_state)
    used: set[str] = set()

    def tensor_for(tensor: str, key: str, prefix: str, rows: torch.Tensor) -> torch.Tensor:
        value = adapter_state.get(key)
        if value is None:
            raise CheckpointError(f"method {method.name!r}: the adapter state lacks {key}")
        return value.to(device=rows.device, dtype=rows.dtype)

    for name in method.adapted_weights(adapter_state):
        weight = base_state.get(name)
        if weight is None:
            raise CheckpointError(f"method {method.name!r}: the adapter state adapts {name}, which θ0 does not hold")
        module_f, keys = method.weight_parametrization(name, weight, tensor_for)
        with torch.no_grad():
            folded[name] = module_f(weight)
        used.update(keys)
    unused = sorted(set(adapter_state) - used)
    if unused:
        raise CheckpointError(f"method {method.name!r}: the adapter state holds tensors of no weight: {unused[:3]}")
    return folded
