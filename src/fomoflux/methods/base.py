"""The interface of a continual-learning method, and the registry of methods by name.

A method is one small class (one module in ``fomoflux.methods``) that the task loop drives through hooks; the loop
itself never changes for a new method. The order of calls in one task update (``fomoflux.train.loop``)::

    method.begin_task(model, ctx)             # e.g. reset to θ0 (ZS-merge), add adapters (LoRA), snapshot θ*
    params = method.trainable_parameters(model)   # the rest of the model is frozen (requires_grad=False) for the task
    for step in range(S):
        loss = clip_loss(batch) + (method.penalty(model) or 0)     # regularisers (EWC, SI) add their term here
        loss.backward(); clip_grad_norm_(params); optimizer.step()
        method.after_step(model, step)        # p.grad still holds this step's (clipped) gradient (SI's path integral)
    method.end_task(model, ctx)               # e.g. merge (EMA-merge, FT-merge), fold adapters in, Fisher (EWC)

After ``end_task`` the model holds the weights to deploy / evaluate and to save as the task's checkpoint.
State that must survive to the next task beyond those weights (EWC's Fisher and anchors, SI's Ω, a merge's
running average) lives in the method and goes through ``state_dict()`` / ``load_state_dict()``; the pipeline
saves it beside the checkpoint (:func:`save_method_state` / :func:`load_method_state`) and restores it into a
freshly constructed method before the next task. Methods with ``updates_weights = False`` (zero-shot) get no
hook calls and no steps at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from fomoflux.errors import CheckpointError
from fomoflux.registry import Registry, resolve_options

__all__ = [
    "TaskContext",
    "Method",
    "register_method",
    "get_method",
    "available_methods",
    "method_class",
    "save_method_state",
    "load_method_state",
]


@dataclass
class TaskContext:
    """What a method may know about the task being trained.

    base_state: θ0's state_dict — a dict, a path to a safetensors checkpoint, or a zero-argument callable; resolved
                lazily (and once) by :meth:`base_state_dict`, so methods that never need θ0 cost nothing.
    sources / tokenizer: the task's data (``{"pretrain"|"update"|"buffer": SampleSet | None}``) and the model's
                tokenizer; filled in by the loop, for methods that pass over the data themselves (EWC's Fisher).
    batch_counts: the samples each training batch draws per source (``source_batch_sizes``; their sum is the batch
                size); filled in by the loop (EWC's Fisher pass is sized by it, as the reference's is).
    lr_at:      step -> the lr the optimizer uses at that step; filled in by the loop (SI's path integral).
    """

    task_index: int
    num_tasks: int | None = None
    base_state: Any = None
    device: str | torch.device = "cpu"
    sources: Mapping[str, Any] | None = None
    tokenizer: Any = None
    seed: int = 0
    batch_counts: Mapping[str, int] | None = None
    lr_at: Callable[[int], float] | None = None
    _base_cache: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """θ0 on ``device`` (CheckpointError when no base state was given or it cannot be read)."""
        if self._base_cache is None:
            source = self.base_state
            if source is None:
                raise CheckpointError("this method needs the base model θ0 but the task context has no base_state")
            if callable(source):
                source = source()
            if isinstance(source, (str, Path)):
                from fomoflux.model import load_state_dict_file

                source = load_state_dict_file(source)
            self._base_cache = {k: v.to(self.device) for k, v in dict(source).items()}
        return self._base_cache


class Method:
    """Base class: full fine-tuning semantics with no-op hooks. Subclasses override what they need.

    Options are declared as a class-level dict of defaults (``options = {"weight": 0.5}``) with one help string
    per option in ``option_help`` (what ``fomoflux methods`` prints; tests/unit/test_cli.py requires one for every
    option); ``__init__`` checks the given names and types (``fomoflux.registry.resolve_options``: unknown →
    ConfigError naming method and option) and sets each option as an attribute. Override :meth:`validate` for range
    checks. ``summary`` is the one-paragraph description listed for the method (default: the class docstring, else
    the module docstring's first paragraph).
    """

    name: ClassVar[str] = ""
    updates_weights: ClassVar[bool] = True
    options: ClassVar[Mapping[str, Any]] = {}
    option_help: ClassVar[Mapping[str, str]] = {}
    summary: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        values = resolve_options(f"method {self.name!r}", self.options, options)
        for key, value in values.items():
            setattr(self, key, value)
        self.validate()

    def validate(self) -> None:
        """Check option values (raise ConfigError)."""

    def check_model(self, model: torch.nn.Module) -> None:
        """Check the options against the model the run updates (e.g. a LoRA rank larger than a layer) and raise
        ConfigError naming the option. The plan calls this on a parameter-free copy of the model (device "meta")
        before any job runs, so it must only look at shapes and names, never at values."""

    def training_options(self) -> dict[str, Any]:
        """The options a task update depends on (its Snakemake params: a change reruns the run's training chain)."""
        return {key: getattr(self, key) for key in self.options}

    @property
    def keeps_state(self) -> bool:
        """Whether state crosses tasks beyond the weights (then task t also reads task t-1's method state)."""
        return type(self).state_dict is not Method.state_dict

    def config(self) -> dict[str, Any]:
        """The method's name and effective options (for logs and checkpoint metadata)."""
        return {"name": self.name, **{key: getattr(self, key) for key in self.options}}

    def extra_memory_bytes(self, trainable: list[torch.nn.Parameter]) -> int:
        """Bytes the method holds on the training device beyond model, gradients and optimizer state, for a task
        that trains ``trainable`` (e.g. EWC's Fisher and anchor: two copies). Read by the compute-budget profile."""
        return 0

    # -- hooks ---------------------------------------------------------------------------------------------------
    def begin_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        """Before the first step (the model holds the task's input weights)."""

    def trainable_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates; the loop freezes every other model parameter for the task."""
        return [p for p in model.parameters()]

    def penalty(self, model: torch.nn.Module) -> torch.Tensor | None:
        """A regularisation term added to the contrastive loss each step (None: no term)."""
        return None

    def after_step(self, model: torch.nn.Module, step: int) -> None:
        """After ``optimizer.step()`` of step ``step`` (gradients are still in ``p.grad``)."""

    def end_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        """After the last step; leaves the deployable weights in ``model``."""

    # -- state within a task (mid-task snapshots) ------------------------------------------------------------------
    def task_state(self) -> dict[str, torch.Tensor]:
        """What ``after_step`` has accumulated since ``begin_task`` beyond the weights (SI's path integral), for a
        mid-task snapshot (``fomoflux.train.resume``). A resumed update calls ``begin_task`` on the task's input
        weights, loads the snapshot's weights, then :meth:`load_task_state`."""
        return {}

    def load_task_state(self, model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            raise CheckpointError(f"method {self.name!r} keeps no in-task state but was given {sorted(state)[:3]}")

    # -- state across tasks ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            raise CheckpointError(f"method {self.name!r} keeps no state but was given {sorted(state)[:3]}")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.options)
        return f"{type(self).__name__}({opts})"


METHODS: Registry[type[Method]] = Registry("method", base=Method)


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a :class:`Method` subclass available under ``name``."""
    return METHODS.register(name)


def available_methods() -> list[str]:
    return METHODS.names()


def method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def get_method(name: str, options: Mapping[str, Any] | None = None) -> Method:
    """A fresh instance of the method ``name`` with ``options`` (ConfigError on unknown name or option)."""
    return method_class(name)(**dict(options or {}))


def save_method_state(method: Method, path: str | Path) -> None:
    """Write ``method.state_dict()`` as safetensors (atomic), tagged with the method's name and options."""
    import json

    from fomoflux.io import write_safetensors

    meta = {"method": method.name, "config": json.dumps(method.config(), sort_keys=True, default=str)}
    write_safetensors(path, method.state_dict(), metadata=meta)


def load_method_state(method: Method, path: str | Path) -> None:
    """Restore a state written by :func:`save_method_state` (CheckpointError on a missing file or another method)."""
    from fomoflux.model import load_state_dict_file, read_checkpoint_metadata

    meta = read_checkpoint_metadata(path)
    if meta.get("method") != method.name:
        raise CheckpointError(f"method state {path} belongs to method {meta.get('method')!r}, not {method.name!r}")
    method.load_state_dict(load_state_dict_file(path))
