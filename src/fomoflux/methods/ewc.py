"""Elastic Weight Consolidation (Kirkpatrick et al., 2017) with an online, decayed Fisher: full fine-tuning plus

    P(θ) = λ/2 · Σ_p F_p (θ_p − θ*_p)²

where, after task t ends, F ← γ·F + F_t and θ* ← θ_t, the weights reached after task t. Before the first task has
ended there is no Fisher and no penalty. Defaults are the reference release's (``configs/config.yaml``, ``ewc``):
λ = 1, γ = 1, at most 50,000 Fisher samples.

F_t, the diagonal empirical Fisher of the finished task, follows the reference's ``continual_lib/ewc.py``:

- the pass runs k = min(⌈N / B⌉, ⌊n / b⌋) mini-batches of b samples of the task's update data, N =
  ``fisher_samples``, B the training batch size, n the task's update samples. b is ``fisher_batch_size``, by default
  the update data's share of the training batch (the batch size of the reference's task loader: 175 of 512 at the
  paper's mixture, 259 at task 0 where the buffer's share goes to update and pretraining). The reference divides N by
  B, not by b, so at the paper's settings the pass sees 98 · 175 = 17,150 samples, not 50,000. The k·b samples are
  drawn without replacement (a generator seeded by a hash of (seed, task index)), as the first k batches of the
  reference's shuffled, drop-last loader are. With fewer than b update samples the reference has no batch and
  divides by zero; here the pass is one batch of all n (n >= 2).
- F_t = (1/k) · Σ_b (∂L_b/∂θ)²: the squared gradient of each mini-batch's mean loss, averaged over batches (the
  reference's ``fim_avg: batch``; a contrastive loss has no per-sample form: one image-caption pair has no negatives).
- L_b is the symmetric CLIP contrastive loss (``open_clip.ClipLoss``) of the batch's cosine similarities times a
  logit scale s: with ``fisher_logit_scale`` "raw" (the reference) s is the ``logit_scale`` parameter itself
  (≈ ln 100 ≈ 4.6 for a pretrained CLIP: the reference's Fisher pass omits the exp its training loss applies); with
  "exp" s = exp(logit_scale) (≈ 100), the temperature training uses.
- every trained floating-point parameter gets a Fisher (the reference: every parameter of both towers and the logit
  scale); the pass leaves weights and ``.grad`` untouched.

Where this module differs from the reference, besides the empty-loader case: the reference trains every task from θ0
and evaluates θ0 (its ``end_task`` skips the base class's weight bookkeeping, a defect BENCHMARK.md names); here task
t + 1 starts from θ_t, and θ* is θ_t as in the reference. The Fisher pass reads the evaluation transform (no
RandomResizedCrop) and each sample's first caption, where the reference's loader applies the training transform and
its caption draw; it runs in eval mode in fp32 where the reference keeps train mode under fp16 autocast (open_clip's
CLIP has no dropout, so the mode changes nothing there).

The Fisher and the anchor cross tasks through ``state_dict()`` as ``fisher.<parameter name>`` and
``anchor.<parameter name>`` (two copies of the trained parameters: :meth:`EWC.extra_memory_bytes`).
:meth:`EWC.fisher_pass` gives the pass's size to the compute budget.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from fomoflux.data.sampleset import SampleSet
from fomoflux.errors import ConfigError
from fomoflux.methods.anchored import AnchoredMethod, tensor_bytes
from fomoflux.methods.base import TaskContext, register_method

if TYPE_CHECKING:
    from fomoflux.data.loading import DiskSamples
from fomoflux.preprocess import Normalizer

__all__ = [
    "EWC",
    "FISHER_LOGIT_SCALES",
    "accumulate_fisher",
    "estimate_fisher",
    "fisher_batches_indices",
    "fisher_pass_shape",
    "fisher_seed",
]

FISHER_LOGIT_SCALES = ("raw", "exp")


def fisher_seed(seed: int, task_index: int) -> int:
    """The 63-bit seed of the generator that draws task ``task_index``'s Fisher samples."""
    digest = hashlib.blake2b(f"ewc-fisher:{seed}:{task_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def fisher_pass_shape(n_task_samples: int, max_samples: int, train_batch_size: int,
                      pass_batch_size: int) -> tuple[int, int]:
    """(k, b) of the Fisher pass (module docstring): k = min(⌈N / B⌉, ⌊n / b⌋) batches of b samples; one batch of all
    n when n < b; (0, 0) when fewer than two samples are available (no contrastive loss)."""
    if n_task_samples < 2:
        return 0, 0
    batches = min(math.ceil(max_samples / train_batch_size), n_task_samples // pass_batch_size)
    if batches == 0:
        return 1, n_task_samples
    return batches, pass_batch_size


def fisher_batches_indices(n_task_samples: int, batches: int, batch_size: int,
                           generator: torch.Generator) -> list[torch.Tensor]:
    """The sample indices of each of ``batches`` Fisher mini-batches of ``batch_size``: drawn without replacement."""
    if batches == 0:
        return []
    if batches * batch_size > n_task_samples:
        raise ValueError(f"ewc: {batches} batches of {batch_size} need more than the {n_task_samples} samples")
    chosen = torch.randperm(n_task_samples, generator=generator)[: batches * batch_size]
    return list(chosen.view(batches, batch_size))


def accumulate_fisher(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    samples: SampleSet | DiskSamples,
    tokenizer,
    batches: list[torch.Tensor],
    into: list[torch.Tensor],
    device: torch.device | str,
    logit_scale: str = "raw",
) -> None:
    """Add (1/k) · Σ_b (∂L_b/∂θ)² over the k ``batches`` of ``samples`` into ``into`` (aligned with ``params``), with
    L_b's logit scale as ``logit_scale`` says ("raw" or "exp", module docstring).

    Only ``params`` get gradients during the pass; the model's mode and ``requires_grad`` flags are restored after.
    """
    import open_clip

    if logit_scale not in FISHER_LOGIT_SCALES:
        raise ConfigError(f"method 'ewc': option 'fisher_logit_scale' must be one of {', '.join(FISHER_LOGIT_SCALES)}, "
                          f"got {logit_scale!r}")
    if not batches:
        return
    raw_scale = getattr(model, "logit_scale", None)
    if logit_scale == "raw" and not isinstance(raw_scale, torch.Tensor):
        raise ConfigError("method 'ewc': fisher_logit_scale 'raw' needs a model with a logit_scale parameter")
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
            scale = raw_scale if logit_scale == "raw" else out["logit_scale"]
            loss = loss_fn(out["image_features"], out["text_features"], scale)
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
    train_batch_size: int,
    pass_batch_size: int,
    seed: int,
    task_index: int,
    logit_scale: str = "raw",
    device: torch.device | str = "cpu",
) -> list[torch.Tensor]:
    """F_t for ``params`` (module docstring): the same draw and pass as :meth:`EWC.end_task`, into fresh zeros."""
    generator = torch.Generator().manual_seed(fisher_seed(seed, task_index))
    batches, batch_size = fisher_pass_shape(len(samples), max_samples, train_batch_size, pass_batch_size)
    drawn = fisher_batches_indices(len(samples), batches, batch_size, generator)
    fisher = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in params]
    accumulate_fisher(model, params, samples, tokenizer, drawn, fisher, device, logit_scale)
    return fisher


@register_method("ewc")
class EWC(AnchoredMethod):
    summary = ("Elastic Weight Consolidation (Kirkpatrick et al., 2017): full fine-tuning plus λ/2 · Σ F (θ − θ*)², "
               "with an online, decayed diagonal Fisher F and θ* the weights after the previous task.")
    options: ClassVar[dict[str, Any]] = {
        "lam": 1.0,
        "gamma": 1.0,
        "fisher_samples": 50000,
        "fisher_batch_size": None,
        "fisher_logit_scale": "raw",
    }
    option_help: ClassVar[dict[str, str]] = {
        "lam": "λ >= 0, the penalty's strength (the reference's e_lambda)",
        "gamma": "decay γ in [0, 1] of the online Fisher: F ← γ·F + F_t after each task",
        "fisher_samples": "N (the reference's max_fim_samples): the Fisher pass runs min(⌈N / training batch size⌉, "
                          "⌊update samples / fisher_batch_size⌋) mini-batches, as the reference does",
        "fisher_batch_size": "mini-batch size of the Fisher pass, an integer >= 2; null (the reference): the update "
                             "data's share of the training batch",
        "fisher_logit_scale": "logit scale of the Fisher pass's contrastive loss: 'raw' (the reference) multiplies the "
                              "cosine similarities by the logit_scale parameter itself (≈ 4.6), 'exp' by "
                              "exp(logit_scale) (≈ 100) as training does",
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
        size = self.fisher_batch_size
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 2):
            raise ConfigError(
                f"method 'ewc': option 'fisher_batch_size' must be null or an integer >= 2 (a contrastive batch "
                f"needs negatives), got {size!r}"
            )
        if self.fisher_logit_scale not in FISHER_LOGIT_SCALES:
            raise ConfigError(
                f"method 'ewc': option 'fisher_logit_scale' must be one of {', '.join(FISHER_LOGIT_SCALES)}, got "
                f"{self.fisher_logit_scale!r}"
            )

    def penalty_scale(self) -> float:
        return 0.5 * self.lam

    def extra_memory_bytes(self, trainable: list[torch.nn.Parameter]) -> int:
        # the Fisher and the anchor: one copy each of the trained floating-point parameters
        return 2 * tensor_bytes(p for p in trainable if p.is_floating_point())

    def fisher_pass(self, n_task_samples: int, batch_counts: Mapping[str, int]) -> tuple[int, int]:
        """(batches, batch size) of the Fisher pass over ``n_task_samples`` update samples, for training batches
        holding ``batch_counts`` samples per source (the loop's ``source_batch_sizes``). ConfigError when the
        default batch size, the update share, is below 2."""
        train_batch_size = sum(batch_counts.values())
        pass_batch_size = self.fisher_batch_size
        if pass_batch_size is None:
            pass_batch_size = int(batch_counts.get("update", 0))
            if pass_batch_size < 2:
                raise ConfigError(
                    f"method 'ewc': the Fisher pass's batch size defaults to the update data's share of the training "
                    f"batch, {pass_batch_size} of {train_batch_size} here; a contrastive batch needs 2 or more, so "
                    f"set option 'fisher_batch_size'"
                )
        return fisher_pass_shape(n_task_samples, self.fisher_samples, train_batch_size, pass_batch_size)

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
        if not ctx.batch_counts:
            raise ConfigError("method 'ewc': the Fisher pass's size needs the training batch's composition "
                              "(ctx.batch_counts), which the task context lacks")
        names = [name for name, _ in named]
        params = [p for _, p in named]
        if self.importance is None:
            fisher = [torch.zeros_like(p, memory_format=torch.contiguous_format) for p in params]
        else:
            # F ← γ·F first, then F_t is added batch by batch: no third copy of the parameters is ever held
            fisher = [self.importance[name] for name in names]
            torch._foreach_mul_(fisher, self.gamma)
        batches, batch_size = self.fisher_pass(len(samples), ctx.batch_counts)
        generator = torch.Generator().manual_seed(fisher_seed(ctx.seed, ctx.task_index))
        drawn = fisher_batches_indices(len(samples), batches, batch_size, generator)
        with torch.enable_grad():
            accumulate_fisher(model, params, samples, ctx.tokenizer, drawn, fisher, params[0].device,
                              self.fisher_logit_scale)
        if self.anchor is None:
            anchor = [p.detach().clone(memory_format=torch.contiguous_format) for p in params]
        else:
            anchor = [self.anchor[name] for name in names]
            torch._foreach_copy_(anchor, [p.detach() for p in params])
        self._set_state(dict(zip(names, fisher)), dict(zip(names, anchor)))
