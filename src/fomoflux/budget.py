"""Compute budgets: profile a method's training step, then give every method the same budget per task.

FoMo-in-Flux (BENCHMARK.md, "Compute budget") equalises methods by *Memory-Adjusted FLOPs*::

    MAF(method) = FLOPs per step × peak memory(method) / peak memory(full fine-tuning)
    steps(method) = floor(S_FT · MAF(FT) / MAF(method))

with S_FT full fine-tuning's steps per task (the run's configured ``steps``). A method with a one-off pass per task
(EWC's Fisher estimate) pays for it out of the same budget: ``steps = floor((S_FT·MAF(FT) − MAF(pass)) / MAF(method))``.

Profiling (:func:`profile_step`) runs one real training step of the method — ``begin_task``, the contrastive loss,
the method's penalty, backward — under ``torch.utils.flop_counter.FlopCounterMode``. Two memory measures:

- ``counted`` (default; any machine, deterministic): the model is built on device ``meta`` (shapes, no storage, no
  arithmetic: ViT-B/16 at B = 512 profiles in about a second on a CPU), and peak memory is counted as
  parameters + gradients of the trainable parameters + AdamW's two moments + the method's own tensors
  (``Method.extra_memory_bytes``) + every tensor autograd saves for the backward pass (``saved_tensors_hooks``).
  It is the memory the step needs at its peak (end of forward) in the model's dtype, reproducible bit for bit;
- ``cuda`` (GPU only): the same step really run on the GPU, ``torch.cuda.max_memory_allocated``.

Budgets are part of the DAG (rules ``profile_method`` and ``run_budget``): training reads its step count from the
run's budget file, so a change of method option that changes the cost changes the steps, and nothing else. Modes
(``training.budget``): ``maf`` (above), ``flops`` (memory ratio 1), and two that profile nothing: ``fixed``
(``training.steps`` for every method) and ``table`` (the run's entry of ``budget.table``, e.g. the paper's Tab. 4,
whose steps differ from what ``maf`` profiles here; see config/fomo_in_flux.yaml).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fomoflux.errors import ConfigError

__all__ = ["StepProfile", "profile_step", "budget_steps", "MEMORY_MEASURES"]

MEMORY_MEASURES = ("counted", "cuda")
# The data mixture a per-task pass sized by the training batch's composition (EWC's Fisher) is priced at.
PAPER_MIXTURE = {"pretrain": 0.33, "update": 0.34, "buffer": 0.33}


@dataclass(frozen=True)
class StepProfile:
    """The cost of one training step of ``method`` on ``arch`` at ``batch_size`` (and of its per-task extra pass)."""

    arch: str
    method: str
    method_options: Mapping[str, Any]
    batch_size: int
    flops_per_step: int
    peak_memory_bytes: int
    memory_measure: str
    trainable_params: int
    total_params: int
    extra_pass_flops: int = 0  # per task, e.g. EWC's Fisher estimate
    extra_pass_memory_bytes: int = 0

    @property
    def gflops_per_sample(self) -> float:
        return self.flops_per_step / self.batch_size / 1e9

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["method_options"] = dict(self.method_options)
        out["gflops_per_sample"] = self.gflops_per_sample
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepProfile:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _measure_step(model, tokenizer_len: int, method, trainable, batch_size: int, device: torch.device,
                  image_size: tuple[int, int], gen: torch.Generator | None) -> tuple[int, int]:
    """FLOPs of one forward+backward (+penalty) and the bytes autograd saved for backward."""
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    context = getattr(model, "context_length", 77)
    if device.type == "meta":
        images = torch.empty(batch_size, 3, *image_size, device=device)
        tokens = torch.empty(batch_size, context, dtype=torch.long, device=device)
    else:
        images = torch.randn(batch_size, 3, *image_size, generator=gen).to(device)
        tokens = torch.randint(0, tokenizer_len, (batch_size, context), generator=gen).to(device)
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        # A tensor saved by several ops is held once; parameters are already counted as such.
        if not isinstance(tensor, torch.nn.Parameter):
            saved[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    loss_fn = open_clip.ClipLoss()
    with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(images, tokens)
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        penalty = method.penalty(model)
        if penalty is not None:
            loss = loss + penalty
        loss.backward()
    for p in trainable:
        p.grad = None
    return int(counter.get_total_flops()), sum(saved.values())


def profile_step(
    arch: str,
    method_name: str,
    method_options: Mapping[str, Any] | None = None,
    *,
    batch_size: int,
    memory: str = "counted",
    extra_pass_samples: int | None = None,
    seed: int = 0,
) -> StepProfile:
    """Profile one training step of ``method_name`` on the open_clip architecture ``arch`` (module docstring).

    ``extra_pass_samples``: the task size a per-task pass (EWC's Fisher) is priced at; None: the method's own cap.
    """
    from fomoflux.methods import TaskContext, get_method
    from fomoflux.model import architecture_config, create_model

    if memory not in MEMORY_MEASURES:
        raise ConfigError(f"budget.memory: {memory!r} is not one of {', '.join(MEMORY_MEASURES)}")
    if memory == "cuda" and not torch.cuda.is_available():
        raise ConfigError("budget.memory: 'cuda' needs a GPU, and none is visible (use 'counted')")
    device = torch.device("meta" if memory == "counted" else "cuda")
    method = get_method(method_name, dict(method_options or {}))
    model, _ = create_model(arch, device=device, seed=seed)
    cfg = architecture_config(arch)
    size = cfg["vision_cfg"]["image_size"]
    image_size = (size, size) if isinstance(size, int) else tuple(size)
    vocab = cfg["text_cfg"].get("vocab_size", 49408)
    gen = torch.Generator().manual_seed(seed) if device.type != "meta" else None

    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ctx = TaskContext(task_index=0, base_state=base, device=device, seed=seed)
    method.check_model(model)
    model.train()
    method.begin_task(model, ctx)
    trainable = list(method.trainable_parameters(model))
    if not trainable:
        raise ConfigError(f"method {method_name!r} has no trainable parameters")
    keep = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    flops, saved_bytes = _measure_step(model, vocab, method, trainable, batch_size, device, image_size, gen)
    params_bytes = _tensor_bytes(model.parameters())
    trainable_bytes = _tensor_bytes(trainable)
    if device.type == "cuda":
        peak = int(torch.cuda.max_memory_allocated())
        # AdamW's moments are allocated at the first optimizer step, after the measured forward/backward.
        peak += 2 * trainable_bytes + method.extra_memory_bytes(trainable)
    else:
        peak = params_bytes + trainable_bytes * 3 + method.extra_memory_bytes(trainable) + saved_bytes

    extra_flops = extra_memory = 0
    fisher_pass = getattr(method, "fisher_pass", None)
    if fisher_pass is not None:
        from fomoflux.train.mixture import source_batch_sizes

        samples = extra_pass_samples if extra_pass_samples is not None else method.fisher_samples
        # The pass is sized by the training batch's composition; the profile knows the batch size but not the run's
        # mixture, so it is priced at the paper's (a task after the first: 175 update samples of 512).
        counts = source_batch_sizes(batch_size, PAPER_MIXTURE, task_index=1)
        batches, pass_batch = (int(v) for v in fisher_pass(samples, counts))
        if batches:
            pass_flops, pass_saved = _measure_step(model, vocab, _NoPenalty(), trainable, pass_batch, device,
                                                   image_size, gen)
            extra_flops = batches * pass_flops
            extra_memory = params_bytes + trainable_bytes * 2 + method.extra_memory_bytes(trainable) + pass_saved
    return StepProfile(
        arch=arch,
        method=method_name,
        method_options=dict(method_options or {}),
        batch_size=batch_size,
        flops_per_step=flops,
        peak_memory_bytes=int(peak),
        memory_measure=memory,
        trainable_params=sum(p.numel() for p in trainable),
        total_params=sum(p.numel() for p in model.parameters()),
        extra_pass_flops=int(extra_flops),
        extra_pass_memory_bytes=int(extra_memory),
    )


class _NoPenalty:
    """Stands in for the method during its extra pass (a Fisher pass is loss + backward, no penalty)."""

    def penalty(self, model):
        return None


def budget_steps(reference_steps: int, reference: StepProfile, method: StepProfile, *,
                 memory_adjusted: bool = True) -> dict[str, Any]:
    """Steps per task for ``method`` under full fine-tuning's budget (module docstring), and the numbers behind them.

    ``memory_adjusted=False`` equalises plain FLOPs (the memory ratio is taken as 1, and reported so).
    """
    if reference_steps < 1:
        raise ConfigError(f"training.steps (full fine-tuning's steps per task) must be >= 1, got {reference_steps}")
    ft_maf = float(reference.flops_per_step)
    # The method's peak memory is its peak over the whole task, the extra pass included, and both the steps and
    # the pass are priced at it: the pass's batch size is a free choice, so a small one must not make it cheap.
    peak = max(method.peak_memory_bytes, method.extra_pass_memory_bytes)
    memory_ratio = peak / reference.peak_memory_bytes if memory_adjusted else 1.0
    maf = method.flops_per_step * memory_ratio
    pass_maf = method.extra_pass_flops * memory_ratio
    budget = reference_steps * ft_maf
    steps = math.floor((budget - pass_maf) / maf + 1e-9) if maf > 0 else reference_steps
    if steps < 1:
        raise ConfigError(
            f"method {method.method!r}: its per-task pass costs {pass_maf / budget:.1%} of full fine-tuning's budget "
            f"({reference_steps} steps), leaving no training step; raise training.steps or lower the pass size"
        )
    return {
        "steps": int(steps),
        "reference_steps": int(reference_steps),
        "budget_maf": budget,
        "maf_per_step": maf,
        "extra_pass_maf": pass_maf,
        "flops_ratio": method.flops_per_step / reference.flops_per_step,
        "memory_ratio": memory_ratio,
    }
