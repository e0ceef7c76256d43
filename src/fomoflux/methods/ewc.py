"""Elastic Weight Consolidation (Kirkpatrick et al., 2017) with an online, decayed Fisher: full fine-tuning plus

    P(θ) = λ/2 · Σ_p F_p (θ_p − θ*_p)²

where, after task t ends, F ← γ·F + F_t and θ* ← θ_t, the weights reached after task t. (The reference release never
records θ* and silently pulls towards θ0 instead; anchoring on the latest weights is EWC's definition.) Before the
first task has ended there is no Fisher and no penalty.

F_t is the diagonal empirical Fisher on at most N = ``fisher_samples`` samples of the finished task's update data,
drawn without replacement (a generator seeded by a hash of (seed, task index)): n = min(task samples, N) of them,
split into k = max(1, ⌊n/B⌋) mini-batches of nearly equal size, B = ``fisher_batch_size``. Each batch holds B to
2B − 1 samples (all n when n < B), so no batch is a lone sample:

    F_t = (1/k) · Σ_b (∂L_b/∂θ)²

with L_b the symmetric CLIP contrastive loss (``open_clip.ClipLoss``, the model's own temperature) of batch b, each
image paired with its first caption. This is the batch-gradient estimate, not the per-sample one: a contrastive loss
needs negatives, and a single image-caption pair alone has none (its loss is identically zero), so the squared
gradient is taken per mini-batch. The pass runs in eval mode at θ_t and leaves weights and ``.grad`` untouched.

The Fisher and the anchor cover every floating-point parameter trained in the task and cross tasks through
``state_dict()`` as ``fisher.<parameter name>`` and ``anchor.<parameter name>`` (two copies of the trained
parameters: :meth:`EWC.extra_memory_bytes`). :meth:`EWC.fisher_batches` gives the pass size to the compute budget.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from fomoflux.data.sampleset import SampleSet
from fomoflux.errors import ConfigError
from fomoflux.methods.anchored import AnchoredMethod, tensor_bytes
from fomoflux.methods.base import TaskContext, register_method

if TYPE_CHECKING:
    from fomoflux.data.loading import DiskSamples
from fomoflux.preprocess import Normalizer

__all__ = ["EWC", "accumulate_fisher", "estimate_fisher", "fisher_batch_count", "fisher_batches_indices", "fisher_seed"]


def fisher_seed(seed: int, task_index: int) -> int:
    """The 63-bit seed of the generator that draws task ``task_index``'s Fisher samples."""
    digest = hashlib.blake2b(f"ewc-fisher:{seed}:{task_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def fisher_batch_count(n_task_samples: int, max_samples: int, batch_size: int) -> int:
    """k = max(1, ⌊min(n, N)/B⌋) mini-batches; 0 when fewer than two samples are available (no contrastive loss)."""
    n = min(n_task_samples, max_samples)
    return 0 if n < 2 else max(1, n // batch_size)


def fisher_batches_indices(
    n_task_samples: int, max_samples: int, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """The sample indices of each Fisher mini-batch: min(n, N) indices without replacement, split evenly."""
    k = fisher_batch_count(n_task_samples, max_samples, batch_size)
    if k == 0:
        return []
    chosen = torch.randperm(n_task_samples, generator=generator)[: min(n_task_samples, max_samples)]
    return list(torch.tensor_split(chosen, k))


def accumulate_fisher(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    samples: "SampleSet | DiskSamples",
    tokenizer,
    batches: list[torch.Tensor],
    into: list[torch.Tensor],
    device: torch.device | str,
) -> None:
    """Add (1/k) · Σ_b (∂L_b/∂θ)² over the k ``batches`` of ``samples`` into ``into`` (aligned with ``params``).

    Only ``params`` get gradients during the pass; the model's mode and ``requires_grad`` flags are restored after.
    """
    import open_clip

    if not batches:
        return
    device = torch.device(device)
    normalizer = Normalizer.for_model(model, device)
    loss_fn = open_clip.ClipLoss()
    chosen = torch.cat(batches)
    tokens = tokenizer(samples.first_captions(chosen.tolist())).long()
    size = getattr(getattr(model, "visual", None), "image_size", None)
    size = size if isinstance(size, int) or size is None else size[0]
    starts = [0]
    for batch in batches:
        starts.append(starts[-1] + len(batch))

    was_training = model.training
    flags = {p: p.requires_grad for p in model.parameters()}
    wanted = {id(p) for p in params}
    try:
        model.eval()  # the Fisher of the deterministic network at θ_t (no dropout draws)
        for p in model.parameters():
            p.requires_grad_(id(p) in wanted)
        weight = 1.0 / len(batches)
        for b, batch in enumerate(batches):
            # The evaluation transform (no augmentation): the Fisher of the deterministic network's inputs.
            images = normalizer(samples.eval_images(batch.tolist(), size) if size else samples.images[batch])
            out = model(images, tokens[starts[b] : starts[b + 1]].to(device))
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            present = [i for i, g in enumerate(grads) if g is not None]
            if len(present) == len(params):
                torch._foreach_addcmul_(into, list(grads), list(grads), value=weight)
            elif present:
                used = [grads[i] for i in present]
                torch._foreach_addcmul_([into[i] for i in present], used, used, value=weight)
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)


def estimate_fisher(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    samples: SampleSet,
    tokenizer,
    *,
    max_samples: int,
    batch_size: int,
    seed: int,
    task_index: int,
    device: torch.device | str = "cpu",
) -> list[torch.Tensor]:
    """F_t for ``params`` (module docstring): the same draw and pass as :meth:`EWC.end_task`, into fresh zeros."""
    generator = torch.Generator().manual_seed(fisher_seed(seed, task_index))
    batches = fisher_batches_indices(len(samples), max_samples, batch_size, generator)
    fisher = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in params]
    accumulate_fisher(model, params, samples, tokenizer, batches, fisher, device)
    return fisher


@register_method("ewc")
class EWC(AnchoredMethod):
    summary = ("Elastic Weight Consolidation (Kirkpatrick et al., 2017): full fine-tuning plus λ/2 · Σ F (θ − θ*)², "
               "with an online, decayed diagonal Fisher F and θ* the weights after the previous task.")
    options: ClassVar[dict[str, Any]] = {"lam": 1.0, "gamma": 1.0, "fisher_samples": 50000, "fisher_batch_size": 64}
    option_help: ClassVar[dict[str, str]] = {
        "lam": "λ >= 0, the penalty's strength",
        "gamma": "decay γ in [0, 1] of the online Fisher: F ← γ·F + F_t after each task",
        "fisher_samples": "at most this many samples of the finished task estimate its Fisher F_t",
        "fisher_batch_size": "mini-batch size of the Fisher pass, >= 2 (a contrastive loss needs negatives)",
    }
    importance_key = "fisher"

    def validate(self) -> None:
        if not (0.0 <= self.lam < math.inf):
            raise ConfigError(f"method 'ewc': option 'lam' must be a finite number >= 0, got {self.lam}")
        if not (0.0 <= self.gamma <= 1.0):
            raise ConfigError(f"method 'ewc': option 'gamma' must lie in [0, 1], got {self.gamma}")
        if isinstance(self.fisher_samples, bool) or self.fisher_samples < 1:
            raise ConfigError(
                f"method 'ewc': option 'fisher_samples' must be an integer >= 1, got {self.fisher_samples!r}"
            )
        if isinstance(self.fisher_batch_size, bool) or self.fisher_batch_size < 2:
            raise ConfigError(
                f"method 'ewc': option 'fisher_batch_size' must be an integer >= 2 (a contrastive batch needs "
                f"negatives), got {self.fisher_batch_size!r}"
            )

    def penalty_scale(self) -> float:
        return 0.5 * self.lam

    def extra_memory_bytes(self, trainable: list[torch.nn.Parameter]) -> int:
        # the Fisher and the anchor: one copy each of the trained floating-point parameters
        return 2 * tensor_bytes(p for p in trainable if p.is_floating_point())

    def fisher_batches(self, n_task_samples: int) -> int:
        """The forward+backward mini-batches ``end_task`` runs for a task of ``n_task_samples`` update samples."""
        return fisher_batch_count(n_task_samples, self.fisher_samples, self.fisher_batch_size)

    @torch.no_grad()
    def end_task(self, model: torch.nn.Module, ctx: TaskContext) -> None:
        named = self._named_tracked(model)
        samples = (ctx.sources or {}).get("update")
        if samples is None or len(samples) < 2:
            found = "none" if samples is None else f"{len(samples)} sample(s)"
            raise ConfigError(
                f"method 'ewc': the Fisher estimate needs at least 2 samples of the task's update data "
                f"(ctx.sources['update']), got {found}"
            )
        if ctx.tokenizer is None:
            raise ConfigError("method 'ewc': the Fisher estimate needs the model's tokenizer in the task context")
        names = [name for name, _ in named]
        params = [p for _, p in named]
        if self.importance is None:
            fisher = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in params]
        else:
            # F ← γ·F first, then F_t is added batch by batch: no third copy of the parameters is ever held
            fisher = [self.importance[name] for name in names]
            torch._foreach_mul_(fisher, self.gamma)
        generator = torch.Generator().manual_seed(fisher_seed(ctx.seed, ctx.task_index))
        batches = fisher_batches_indices(len(samples), self.fisher_samples, self.fisher_batch_size, generator)
        with torch.enable_grad():
            accumulate_fisher(model, params, samples, ctx.tokenizer, batches, fisher, params[0].device)
        if self.anchor is None:
            anchor = [p.detach().clone(memory_format=torch.contiguous_format) for p in params]
        else:
            anchor = [self.anchor[name] for name in names]
            torch._foreach_copy_(anchor, [p.detach() for p in params])
        self._set_state(dict(zip(names, fisher)), dict(zip(names, anchor)))

