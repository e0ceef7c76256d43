"""One FoMo-in-Flux task update: S optimizer steps on contrastive batches mixed from pretrain / update / buffer data.

Per task (BENCHMARK.md, "One task update"):

- a fresh AdamW over ``method.trainable_parameters(model)`` (every other model parameter is frozen for the task
  and its ``requires_grad`` restored afterwards); weight decay on matrices only — biases, norms, embeddings of
  rank < 2 and ``logit_scale`` are not decayed (open_clip's convention); betas (0.9, 0.98), eps 1e-6 (open_clip's
  ViT defaults; both configurable);
- the lr of step n from the task's schedule (default: cosine with linear warmup, restarted every task), set on the
  optimizer before the step and logged as used;
- loss = symmetric CLIP InfoNCE (``open_clip.ClipLoss``) with the model's learnable temperature, plus
  ``method.penalty(model)``; gradient-norm clipping (``grad_clip``; the log holds the norm before clipping);
  after ``optimizer.step()`` the temperature is clamped to ≤ ln 100 as in open_clip, then ``method.after_step``;
- each batch holds ``source_batch_sizes(...)`` samples per source (``fomoflux.train.mixture``), drawn uniformly
  with replacement within each source (a task shorter than S·count is thus repeated: virtual epochs), one of each
  sample's captions drawn uniformly, all mixed into ONE contrastive batch.

Determinism: step n's draws (sample indices, caption choices) come from a fresh ``torch.Generator`` seeded by a
hash of (``rng_salt``, seed, task_index, n), never from global RNG state; the optimizer is created fresh and the
model is only changed by the steps. A task update is therefore a pure function of (input weights, method state,
sources, cfg): re-running an interrupted task from its input checkpoint reproduces it bit for bit on CPU (same
torch build and thread count), and any step's batch can be reconstructed alone with :func:`draw_batch`.

Speed: every distinct caption of the task is tokenised once, up front (one tokenizer call), into a token table;
a step only indexes tensors (no Python loop over samples) and normalises the uint8 images with
``fomoflux.preprocess.Normalizer`` on the device. Threads are the caller's business (``torch.set_num_threads``).

Precision: the forward pass and the loss run under ``fomoflux.device.autocast(device, cfg.precision)`` (``auto``:
bf16 on CUDA, plain fp32 on the CPU, so CPU runs are unchanged); backward, clipping and the optimizer step run
outside it, and parameters, gradients and optimizer state stay fp32.

Data parallelism: inside a ``torch.distributed`` process group of W > 1 ranks (``fomoflux.device.run_distributed``)
every rank draws the same full batch of the step, trains on its contiguous slice of B/W samples, computes the
full-batch contrastive loss over features gathered from all ranks, and averages the gradients of the trained
parameters before clipping (:func:`_average_gradients` says why that is the full-batch gradient). Every rank then
holds the same weights; rank 0 shows the progress bar.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import torch

from fomoflux.data.sampleset import SampleSet
from fomoflux.device import PRECISIONS, autocast, distributed_rank_world, split_batch_size
from fomoflux.errors import ConfigError
from fomoflux.methods.base import Method, TaskContext
from fomoflux.preprocess import Normalizer
from fomoflux.train.mixture import SOURCES, source_batch_sizes, validate_ratios
from fomoflux.train.schedule import LRSchedule, make_schedule

__all__ = [
    "LOG_SCHEMA",
    "TaskBatches",
    "TaskUpdateConfig",
    "draw_batch",
    "pretrain_base",
    "run_task_update",
    "step_seed",
]

LOG_SCHEMA: dict[str, Any] = {
    "task_index": pl.Int64,
    "step": pl.Int64,
    "lr": pl.Float64,
    "loss": pl.Float64,
    "contrastive_loss": pl.Float64,
    "penalty": pl.Float64,
    "logit_scale": pl.Float64,
    "grad_norm": pl.Float64,
    "n_pretrain": pl.Int64,
    "n_update": pl.Int64,
    "n_buffer": pl.Int64,
    "elapsed_s": pl.Float64,
}

MAX_LOGIT_SCALE = math.log(100.0)
# Gradients are all-reduced in flat buckets of at most this many elements: few collectives per step (one per
# parameter would be ~200 for ViT-B/16), with a bounded extra buffer (64 MiB in fp32).
_GRAD_BUCKET_NUMEL = 1 << 24


def _default_mixture() -> dict[str, float]:
    return {"pretrain": 0.33, "update": 0.34, "buffer": 0.33}


@dataclass
class TaskUpdateConfig:
    """Hyper-parameters of one task update (defaults: the paper's, except ``steps`` which the stream sets)."""

    steps: int
    batch_size: int = 512
    lr: float = 1e-5
    weight_decay: float = 0.2
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 1e-3
    grad_clip: float | None = 1.0
    mixture: dict[str, float] = field(default_factory=_default_mixture)
    seed: int = 0
    task_index: int = 0
    num_tasks: int | None = None
    schedule: str = "cosine"
    schedule_options: dict[str, Any] = field(default_factory=dict)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    log_every: int = 1
    device: str = "cpu"
    progress: bool = True
    rng_salt: str = "task-update"
    precision: str = "auto"

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"task update: {key} {why}, got {getattr(self, key)!r}")

        if not isinstance(self.steps, int) or self.steps < 0:
            raise bad("steps", "must be an integer >= 0")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise bad("batch_size", "must be an integer >= 1")
        if not self.lr > 0:
            raise bad("lr", "must be > 0")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must be >= 0")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise bad("grad_clip", "must be >= 0 or None (0 / None: no clipping)")
        if self.task_index < 0:
            raise bad("task_index", "must be >= 0")
        if self.log_every < 1:
            raise bad("log_every", "must be >= 1")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"training.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        self.mixture = validate_ratios(self.mixture)
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    def make_schedule(self) -> LRSchedule:
        return make_schedule(
            self.schedule,
            total_steps=self.steps,
            base_lr=self.lr,
            warmup_fraction=self.warmup_fraction,
            min_lr_ratio=self.min_lr_ratio,
            task_index=self.task_index,
            num_tasks=self.num_tasks,
            **self.schedule_options,
        )


def step_seed(seed: int, task_index: int, step: int, salt: str = "task-update") -> int:
    """The 63-bit seed of one step's generator: a hash of (salt, seed, task_index, step)."""
    digest = hashlib.blake2b(f"{salt}:{seed}:{task_index}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass
class _SourceTable:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    caption_start: torch.Tensor  # int64 [N]: first entry of the sample's captions in caption_rows
    caption_count: torch.Tensor  # int64 [N]
    caption_rows: torch.Tensor  # int64 [sum of counts]: row in the token table


class TaskBatches:
    """The task's sources, pre-tokenised, and the per-source counts of every batch; draws batches by step."""

    def __init__(
        self,
        sources: Mapping[str, SampleSet | None],
        tokenizer,
        batch_size: int,
        mixture: Mapping[str, float],
        task_index: int,
        seed: int,
        salt: str = "task-update",
    ) -> None:
        unknown = sorted(set(sources) - set(SOURCES))
        if unknown:
            raise ConfigError(f"task update: unknown source {unknown[0]!r}; sources are {', '.join(SOURCES)}")
        available = [name for name in SOURCES if sources.get(name) is not None and len(sources[name]) > 0]
        self.counts = source_batch_sizes(batch_size, mixture, task_index, available=available)
        self.task_index, self.seed, self.salt = task_index, seed, salt

        distinct: dict[str, int] = {}
        self.tables: dict[str, _SourceTable] = {}
        for name in SOURCES:
            if self.counts[name] == 0:
                continue
            samples = sources[name]
            assert samples is not None
            rows: list[int] = []
            counts: list[int] = []
            for captions in samples.captions:
                counts.append(len(captions))
                rows.extend(distinct.setdefault(c, len(distinct)) for c in captions)
            count = torch.tensor(counts, dtype=torch.long)
            self.tables[name] = _SourceTable(
                images=samples.images,
                caption_start=torch.cumsum(count, 0) - count,
                caption_count=count,
                caption_rows=torch.tensor(rows, dtype=torch.long),
            )
        self.tokens = tokenizer(list(distinct)).long() if distinct else torch.zeros(0, 1, dtype=torch.long)
        shapes = {tuple(t.images.shape[-2:]) for t in self.tables.values()}
        if len(shapes) > 1:
            raise ConfigError(f"task update: sources have different image sizes {sorted(shapes)}")
        self.image_size = shapes.pop() if shapes else None

    def draw(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step ``step``'s batch: (uint8 images [B,3,H,W], token ids [B,L]), sources in the order of SOURCES."""
        gen = torch.Generator().manual_seed(step_seed(self.seed, self.task_index, step, self.salt))
        images, rows = [], []
        for name, table in self.tables.items():
            n = self.counts[name]
            idx = torch.randint(table.images.shape[0], (n,), generator=gen)
            count = table.caption_count[idx]
            pick = torch.minimum((torch.rand(n, generator=gen, dtype=torch.float64) * count).long(), count - 1)
            rows.append(table.caption_rows[table.caption_start[idx] + pick])
            images.append(table.images[idx])
        return torch.cat(images), self.tokens[torch.cat(rows)]


def draw_batch(
    sources: Mapping[str, SampleSet | None], tokenizer, cfg: TaskUpdateConfig, step: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch that :func:`run_task_update` trains on at ``step`` (for inspection and benchmarks)."""
    batches = TaskBatches(sources, tokenizer, cfg.batch_size, cfg.mixture, cfg.task_index, cfg.seed, cfg.rng_salt)
    return batches.draw(step)


def _empty_log() -> pl.DataFrame:
    return pl.DataFrame(schema=LOG_SCHEMA)


def _param_groups(model: torch.nn.Module, params: list[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = [], []
    for p in params:
        n = names.get(id(p), "")
        skip = p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
        (no_decay if skip else decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _model_image_size(model: torch.nn.Module) -> tuple[int, int] | None:
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is None:
        return None
    return (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[return-value]


def _gradient_buckets(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``grads`` in order, grouped into runs of one dtype and device of at most _GRAD_BUCKET_NUMEL elements each
    (a tensor larger than that is a bucket of its own)."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for grad in grads:
        last = buckets[-1] if buckets else None
        fits = last is not None and size + grad.numel() <= _GRAD_BUCKET_NUMEL
        if fits and last[0].dtype == grad.dtype and last[0].device == grad.device:
            last.append(grad)
            size += grad.numel()
        else:
            buckets.append([grad])
            size = grad.numel()
    return buckets


def _average_gradients(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Replace every rank's gradients of ``params`` by their mean over the ``world_size`` ranks (in place).

    Why the mean is the full-batch gradient ∂L/∂θ (with the loss of :func:`run_task_update`): every rank computes the
    same full-batch loss L from features all-gathered with gradient. The backward of that all_gather sums, over the
    W ranks, the gradient each rank's identical L gives to the local features, so rank r's gradient is W·∂L/∂θ|_r,
    where |_r is the part of ∂L/∂θ that flows through the features of rank r's slice. The mean over ranks is
    Σ_r ∂L/∂θ|_r = ∂L/∂θ. Terms computed alike on every rank from parameters alone (logit_scale's direct use in the
    logits, a method's penalty) give each rank the full gradient once, and their mean is that gradient again.
    A parameter without a gradient has none on any rank (the graphs are the same), so the ranks reduce the same
    buckets in the same order.
    """
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    for bucket in _gradient_buckets(grads):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world_size)
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


def _contrastive_loss(rank: int, world_size: int):
    """open_clip's symmetric InfoNCE; across W > 1 ranks the full-batch loss over features gathered with gradient."""
    import open_clip

    if world_size == 1:
        return open_clip.ClipLoss()
    return open_clip.ClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=world_size)


def run_task_update(
    model: torch.nn.Module,
    tokenizer,
    method: Method,
    sources: Mapping[str, SampleSet | None],
    cfg: TaskUpdateConfig,
    context: TaskContext | None = None,
) -> pl.DataFrame:
    """Train ``model`` in place for one task (module docstring); returns the training log (``LOG_SCHEMA``).

    ``context`` gives the method what the config does not (num_tasks, θ0); by default one is built from ``cfg``.
    The loop fills in its ``sources`` and ``tokenizer``. A method with ``updates_weights = False`` gets nothing
    called and the log is empty (with the same columns), as it is for ``steps = 0`` after begin/end_task.

    Inside a process group of W > 1 ranks this is one rank of a data-parallel update (module docstring); every rank
    must call it with the same arguments. Raises ConfigError naming training.batch_size and training.gpus when
    ``cfg.batch_size`` does not divide by W.
    """
    if not method.updates_weights:
        return _empty_log()
    rank, world_size = distributed_rank_world()
    local_batch = split_batch_size(cfg.batch_size, world_size)
    device = torch.device(cfg.device)
    if context is None:
        context = TaskContext(task_index=cfg.task_index, num_tasks=cfg.num_tasks, device=device, seed=cfg.seed)
    elif context.task_index != cfg.task_index:
        raise ConfigError(f"task update: context task_index {context.task_index} != cfg task_index {cfg.task_index}")
    context.sources = sources
    context.tokenizer = tokenizer

    batches = TaskBatches(sources, tokenizer, cfg.batch_size, cfg.mixture, cfg.task_index, cfg.seed, cfg.rng_salt)
    expected = _model_image_size(model)
    if expected is not None and batches.image_size is not None and tuple(batches.image_size) != tuple(expected):
        raise ConfigError(
            f"task update: samples are {batches.image_size[0]}x{batches.image_size[1]} but the model expects "
            f"{expected[0]}x{expected[1]} images"
        )
    schedule = cfg.make_schedule()

    model.to(device)
    was_training = model.training
    method.begin_task(model, context)
    params = list(method.trainable_parameters(model))
    if not params:
        raise ConfigError(f"method {method.name!r} has no trainable parameters")
    trainable = {id(p) for p in params}
    frozen_flags = {}
    for p in model.parameters():
        frozen_flags[p] = p.requires_grad
        p.requires_grad_(id(p) in trainable)
    for p in params:
        p.requires_grad_(True)

    from tqdm import tqdm

    normalizer = Normalizer.for_model(model, device)
    loss_fn = _contrastive_loss(rank, world_size)
    optimizer = torch.optim.AdamW(
        _param_groups(model, params, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps
    )
    logit_scale = getattr(model, "logit_scale", None)
    clip = cfg.grad_clip if cfg.grad_clip else math.inf
    counts = [batches.counts[name] for name in SOURCES]
    log: dict[str, list] = {key: [] for key in LOG_SCHEMA}

    model.train()
    bar = tqdm(total=cfg.steps, desc=f"task {cfg.task_index} [{method.name}]", file=sys.stderr,
               disable=not cfg.progress or cfg.steps == 0 or rank != 0, mininterval=1.0, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        for step in range(cfg.steps):
            lr = schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images_u8, tokens = batches.draw(step)
            if world_size > 1:
                # Every rank drew the same full batch (same step seed); each trains on its own contiguous slice, so
                # the gathered features are the full batch in its drawn order.
                mine = slice(rank * local_batch, (rank + 1) * local_batch)
                images_u8, tokens = images_u8[mine], tokens[mine]
            images = normalizer(images_u8)
            tokens = tokens.to(device, non_blocking=True)

            with autocast(device, cfg.precision):
                out = model(images, tokens)
                contrastive = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            # The penalty stays outside autocast, so it is fp32 whatever ops a method uses (a sum of many small
            # terms over the weights, which bf16's 8-bit mantissa would blur).
            penalty = method.penalty(model)
            loss = contrastive if penalty is None else contrastive + penalty

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world_size > 1:
                _average_gradients(params, world_size)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            if logit_scale is not None and logit_scale.requires_grad:
                with torch.no_grad():
                    logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            method.after_step(model, step)

            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                values = (
                    cfg.task_index, step, lr, loss.item(), contrastive.item(),
                    0.0 if penalty is None else float(penalty.item()),
                    float(logit_scale.item()) if logit_scale is not None else float("nan"),
                    float(grad_norm.item()), *counts, time.perf_counter() - start,
                )
                for key, value in zip(LOG_SCHEMA, values):
                    log[key].append(value)
                bar.set_postfix(loss=f"{values[3]:.4f}", lr=f"{lr:.2e}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
        optimizer.zero_grad(set_to_none=True)
        for p, flag in frozen_flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    method.end_task(model, context)
    return pl.DataFrame(log, schema=LOG_SCHEMA)


def pretrain_base(
    arch: str,
    pool: SampleSet,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    *,
    weight_decay: float = 0.2,
    warmup_fraction: float = 0.1,
    min_lr_ratio: float = 1e-3,
    grad_clip: float | None = 1.0,
    schedule: str = "cosine",
    log_every: int = 1,
    device: str = "cpu",
    progress: bool = True,
    precision: str = "auto",
) -> tuple[torch.nn.Module, pl.DataFrame]:
    """The embedded benchmark's base model θ0: ``arch`` from a random init seeded by ``seed``, trained with full
    fine-tuning on ``pool`` alone (mixture {"pretrain": 1.0}) with ``precision`` (``training.precision``).
    Returns (model, training log)."""
    from fomoflux.methods import get_method
    from fomoflux.model import create_model

    model, tokenizer = create_model(arch, device=device, seed=seed)
    cfg = TaskUpdateConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_fraction=warmup_fraction,
        min_lr_ratio=min_lr_ratio,
        grad_clip=grad_clip,
        mixture={"pretrain": 1.0},
        seed=seed,
        task_index=0,
        schedule=schedule,
        log_every=log_every,
        device=device,
        progress=progress,
        rng_salt="pretrain-base",
        precision=precision,
    )
    log = run_task_update(model, tokenizer, get_method("finetune"), {"pretrain": pool}, cfg)
    model.eval()
    return model, log
