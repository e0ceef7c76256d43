"""One FoMo-in-Flux task update: S optimizer steps on contrastive batches mixed from pretrain / update / buffer data.

Per task (BENCHMARK.md, "One task update"):

- a fresh AdamW over ``method.trainable_parameters(model)`` (every other model parameter is frozen for the task
  and its ``requires_grad`` restored afterwards), grouped and set up as ``cfg.optimizer`` says
  (``fomoflux.train.optimizer``): ``reference`` (default), the release's — weight decay on every trained parameter,
  betas (0.9, 0.999), eps 1e-8, no clamp of the temperature; or ``open_clip`` — no decay on biases, norms, rank < 2
  embeddings and ``logit_scale``, betas (0.9, 0.98), eps 1e-6; betas and eps configurable;
- the lr of step n from the task's schedule (default: cosine with linear warmup, restarted every task), set on the
  optimizer before the step and logged as used;
- loss = symmetric CLIP InfoNCE (``open_clip.ClipLoss``) with the model's learnable temperature, plus
  ``method.penalty(model)``; gradient-norm clipping (``grad_clip``; the log holds the norm before clipping);
  after ``optimizer.step()`` (open_clip convention only) the temperature is clamped to [0, ln 100], then
  ``method.after_step``;
- each batch holds ``source_batch_sizes(...)`` samples per source (``fomoflux.train.mixture``), drawn uniformly
  with replacement within each source (a task shorter than S·count is thus repeated: virtual epochs), one of each
  sample's captions drawn uniformly, all mixed into ONE contrastive batch, each image through the training transform
  (``cfg.augmentation``: the paper's RandomResizedCrop, or none).

Determinism: step n's draws (sample indices, caption choices, crop boxes) come from fresh ``torch.Generator``s
seeded by a hash of (``rng_salt``, seed, task_index, n), never from global RNG state; the optimizer is created fresh
and the model is only changed by the steps. A task update is therefore a pure function of (input weights, method
state, sources, cfg): re-running an interrupted task from its input checkpoint, or from a mid-task snapshot
(``fomoflux.train.resume``), reproduces it bit for bit on CPU (same torch build and thread count), and any step's
batch can be reconstructed alone with :func:`draw_batch`.

Data: batches are built by :class:`fomoflux.train.data.TaskBatches` in ``cfg.data_workers`` DataLoader workers that
read and decode only the batch's samples (sources may be on disk, ``DiskSamples``); the loop normalises the uint8
images on the device (``fomoflux.preprocess.Normalizer``). Host synchronisation happens only every ``log_every``
steps: the losses and the gradient norm are summed on the device and one log row holds their means over the
interval. Threads are the caller's business (``torch.set_num_threads``).

Precision: the forward pass and the loss run under ``fomoflux.device.autocast(device, cfg.precision)`` (``auto``:
bf16 on CUDA, plain fp32 on the CPU, so CPU runs are unchanged); backward, clipping and the optimizer step run
outside it, and parameters, gradients and optimizer state stay fp32 (TF32 matmuls on CUDA). On CUDA and the CPU
AdamW is torch's fused kernel (the same update as the per-tensor loop, in one pass: on the CPU it cut the step of
fomo-tiny-vit's earlier 4 + 3-block version by ~15 %; the 6.3M-entry token embedding is 86 % of the weights of
today's 3 + 2 blocks); ``cfg.compile`` compiles the forward pass with ``torch.compile`` and
``cfg.grad_checkpointing`` turns on open_clip's activation checkpointing.

Data parallelism: inside a ``torch.distributed`` process group of W > 1 ranks (``fomoflux.device.run_distributed``)
every rank draws the same full batch of the step but reads and decodes only its contiguous slice of B/W samples,
trains on it, computes the
full-batch contrastive loss over features gathered from all ranks, and averages the gradients of the trained
parameters before clipping (:func:`_average_gradients` says why that is the full-batch gradient). Every rank then
holds the same weights; rank 0 shows the progress and writes the tracking.

Progress and tracking use the interval's one synchronisation: each log row is a progress report (a plain
timestamped line in a log file, tqdm's bar on a terminal: ``fomoflux.progress``, labelled with ``cfg.label``) and,
with ``cfg.tracking``, a point of the run's TensorBoard / W&B curves (``fomoflux.tracking``).
"""

from __future__ import annotations

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
from fomoflux.progress import progress as make_progress
from fomoflux.seeding import step_seed
from fomoflux.tracking import TrackingTarget
from fomoflux.train.data import Augmentation, TaskBatches, batch_loader
from fomoflux.train.mixture import SOURCES, validate_ratios
from fomoflux.train.optimizer import adamw, fused_adamw_supported, optimizer_convention
from fomoflux.train.resume import Snapshots, TaskInterrupted
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
    # Host seconds spent waiting for the data loader since the previous row: with the GPU busy in between, the
    # time the GPU would idle for want of data (0 when the loader keeps up).
    "data_wait_s": pl.Float64,
}

# Gradients are all-reduced in flat buckets of at most this many elements: few collectives per step (one per
# parameter would be ~200 for ViT-B/16), with a bounded extra buffer (64 MiB in fp32).
_GRAD_BUCKET_NUMEL = 1 << 24


def _default_mixture() -> dict[str, float]:
    return {"pretrain": 0.33, "update": 0.34, "buffer": 0.33}


@dataclass
class TaskUpdateConfig:
    """Hyper-parameters of one task update (defaults: the paper's, except ``steps`` which the stream sets).

    ``optimizer``: AdamW's convention, ``reference`` or ``open_clip`` (``fomoflux.train.optimizer``); ``betas`` and
    ``eps`` left None take the convention's values.
    """

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
    optimizer: str = "reference"
    betas: tuple[float, float] | None = None
    eps: float | None = None
    log_every: int = 10
    device: str = "cpu"
    progress: bool = True
    rng_salt: str = "task-update"
    precision: str = "auto"
    augmentation: dict[str, Any] | None = None  # training.augmentation; None: the evaluation transform
    data_workers: int = 0
    prefetch_factor: int = 4
    compile: bool = False
    grad_checkpointing: bool = False
    # Mid-task snapshots (fomoflux.train.resume): folder (None: off), key, and how often.
    resume_dir: str | None = None
    resume_key: str = ""
    resume_every_s: float = 600.0
    resume_every_steps: int = 0
    # What the progress lines say runs (default "task <task_index>"), and where the curves are tracked (None: off).
    label: str = ""
    tracking: TrackingTarget | None = None

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
        if self.data_workers < 0:
            raise bad("data_workers", "must be >= 0")
        Augmentation.from_config(self.augmentation)  # raises ConfigError naming the key
        if self.precision not in PRECISIONS:
            raise ConfigError(f"training.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        self.mixture = validate_ratios(self.mixture)
        chosen = optimizer_convention(self.optimizer, "task update: optimizer")
        self.betas = tuple(chosen.betas if self.betas is None else self.betas)  # type: ignore[assignment]
        if self.eps is None:
            self.eps = chosen.eps

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


def draw_batch(
    sources: Mapping[str, Any], tokenizer, cfg: TaskUpdateConfig, step: int, image_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch that :func:`run_task_update` trains on at ``step`` (for inspection and benchmarks)."""
    return _task_batches(sources, tokenizer, cfg, image_size).draw(step)


def _task_batches(sources, tokenizer, cfg: TaskUpdateConfig, image_size: int | None, rank: int = 0,
                  world_size: int = 1) -> TaskBatches:
    return TaskBatches(sources, tokenizer, cfg.batch_size, cfg.mixture, cfg.task_index, cfg.seed, cfg.rng_salt,
                       image_size=image_size, augmentation=Augmentation.from_config(cfg.augmentation), rank=rank,
                       world_size=world_size)


def _empty_log() -> pl.DataFrame:
    return pl.DataFrame(schema=LOG_SCHEMA)


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
    sources: Mapping[str, Any],
    cfg: TaskUpdateConfig,
    context: TaskContext | None = None,
) -> pl.DataFrame:
    """Train ``model`` in place for one task (module docstring); returns the training log (``LOG_SCHEMA``).

    ``sources``: ``{"pretrain"|"update"|"buffer": DiskSamples | SampleSet | None}``, at any stored image size (the
    transforms produce the model's resolution). ``context`` gives the method what the config does not (num_tasks,
    θ0); by default one is built from ``cfg``. The loop fills in its ``sources`` and ``tokenizer``. A method with
    ``updates_weights = False`` gets nothing called and the log is empty (with the same columns), as it is for
    ``steps = 0`` after begin/end_task.

    With ``cfg.resume_dir`` the update saves mid-task snapshots there and, when one of the same ``resume_key``
    exists, continues from it (``fomoflux.train.resume``); after SIGTERM it raises TaskInterrupted once saved.

    Inside a process group of W > 1 ranks this is one rank of a data-parallel update (module docstring); every rank
    must call it with the same arguments. Raises ConfigError naming training.batch_size and training.gpus when
    ``cfg.batch_size`` does not divide by W.
    """
    if not method.updates_weights:
        return _empty_log()
    rank, world_size = distributed_rank_world()
    split_batch_size(cfg.batch_size, world_size)  # ConfigError naming batch_size and gpus when it does not divide
    device = torch.device(cfg.device)
    if context is None:
        context = TaskContext(task_index=cfg.task_index, num_tasks=cfg.num_tasks, device=device, seed=cfg.seed)
    elif context.task_index != cfg.task_index:
        raise ConfigError(f"task update: context task_index {context.task_index} != cfg task_index {cfg.task_index}")
    context.sources = sources
    context.tokenizer = tokenizer

    image_size = _model_image_size(model)
    if image_size is not None and image_size[0] != image_size[1]:
        raise ConfigError(f"task update: the model expects non-square {image_size[0]}x{image_size[1]} images")
    batches = _task_batches(sources, tokenizer, cfg, image_size[0] if image_size else None, rank, world_size)
    schedule = cfg.make_schedule()
    context.batch_counts = dict(batches.counts)
    context.lr_at = schedule.lr
    if device.type == "cuda":
        # fp32 matmuls and convolutions in TF32 (bf16 autocast covers most of the forward pass anyway)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

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

    normalizer = Normalizer.for_model(model, device)
    loss_fn = _contrastive_loss(rank, world_size)
    optimizer = adamw(model, params, lr=cfg.lr, weight_decay=cfg.weight_decay, convention_name=cfg.optimizer,
                      betas=cfg.betas, eps=cfg.eps, fused=fused_adamw_supported(device, params))
    logit_scale = getattr(model, "logit_scale", None)
    max_logit_scale = optimizer_convention(cfg.optimizer).max_logit_scale
    clip = cfg.grad_clip if cfg.grad_clip else math.inf
    counts = [batches.counts[name] for name in SOURCES]
    log: dict[str, list] = {key: [] for key in LOG_SCHEMA}
    # Sums since the last log row, on the device: loss, contrastive, penalty, grad norm, and the step count.
    sums = torch.zeros(5, dtype=torch.float64, device=device)

    snapshots = None
    first_step = 0
    if cfg.resume_dir is not None:
        snapshots = Snapshots(cfg.resume_dir, cfg.resume_key, every_s=cfg.resume_every_s,
                              every_steps=cfg.resume_every_steps)
        saved = snapshots.load()
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            method.load_task_state(model, saved["method"])
            log = saved["log"]
            sums.copy_(saved["sums"])
            first_step = int(saved["step"]) + 1
            if rank == 0:
                print(f"{cfg.label or f'task {cfg.task_index}'}: resuming after step {first_step - 1} from "
                      f"{snapshots.path}", file=sys.stderr)
        snapshots.install_signal_handlers()

    if cfg.grad_checkpointing and hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    forward = torch.compile(model) if cfg.compile else model
    loader = batch_loader(batches, range(first_step, cfg.steps), workers=cfg.data_workers,
                          pin_memory=device.type == "cuda", prefetch_factor=cfg.prefetch_factor)

    model.train()
    bar = make_progress(cfg.steps, cfg.label or f"task {cfg.task_index} [{method.name}]", unit="step",
                        initial=first_step, enabled=cfg.progress and cfg.steps > 0 and rank == 0, interval_s=None)
    # The log says when training starts (data selected, model built), not only at the first report log_every steps
    # later: a job's log then shows where a slow or killed job was.
    if first_step < cfg.steps:
        bar.message(f"training steps {first_step + 1}-{cfg.steps}")
    tracker = None
    start = time.perf_counter()
    waited = 0.0
    try:
        if cfg.tracking is not None and rank == 0:
            # A resumed update keeps the curve its interrupted attempt tracked; a fresh one replaces an earlier one's.
            tracker = cfg.tracking.open(fresh=first_step == 0)
        for step in range(first_step, cfg.steps):
            before = time.perf_counter()
            images_u8, tokens = next(loader)
            waited += time.perf_counter() - before
            lr = schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = normalizer(images_u8)
            tokens = tokens.to(device, non_blocking=True)

            with autocast(device, cfg.precision):
                out = forward(images, tokens)
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
            if max_logit_scale is not None and logit_scale is not None and logit_scale.requires_grad:
                with torch.no_grad():
                    logit_scale.clamp_(0, max_logit_scale)
            method.after_step(model, step)

            with torch.no_grad():
                zero = torch.zeros((), device=device)
                sums += torch.stack([loss.detach().double(), contrastive.detach().double(),
                                     (zero if penalty is None else penalty.detach()).double(),
                                     grad_norm.detach().double(), torch.ones((), device=device).double()])
            bar.advance(1)
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                # The one host synchronisation of the interval.
                if logit_scale is None:
                    scale = sums.new_full((1,), math.nan)
                else:
                    scale = logit_scale.detach().double().reshape(1)
                total, contrastive_sum, penalty_sum, norm_sum, n, scale_value = torch.cat([sums, scale]).tolist()
                sums.zero_()
                values = (
                    cfg.task_index, step, lr, total / n, contrastive_sum / n, penalty_sum / n, scale_value,
                    norm_sum / n, *counts, time.perf_counter() - start, waited,
                )
                waited = 0.0
                for key, value in zip(LOG_SCHEMA, values):
                    log[key].append(value)
                row = dict(zip(LOG_SCHEMA, values))
                bar.report(loss=row["loss"], lr=lr, grad_norm=row["grad_norm"])
                if tracker is not None:
                    tracker.log_training(row)
                may_snapshot = snapshots is not None and step < cfg.steps - 1
                if may_snapshot and _snapshot_due(snapshots, step, world_size, device):
                    if rank == 0:
                        snapshots.save(step, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                              "method": method.task_state(), "log": log, "sums": sums.cpu()})
                    if world_size > 1:
                        import torch.distributed as dist

                        dist.barrier()
                    if snapshots.stop_requested:
                        raise TaskInterrupted(f"task {cfg.task_index} stopped by SIGTERM after step {step}; its "
                                              f"state is saved in {snapshots.path}")
    finally:
        bar.close()
        if tracker is not None:
            tracker.close()
        del loader  # stops the DataLoader workers
        if snapshots is not None:
            snapshots.restore_signal_handlers()
        if cfg.grad_checkpointing and hasattr(model, "set_grad_checkpointing"):
            model.set_grad_checkpointing(False)
        optimizer.zero_grad(set_to_none=True)
        for p, flag in frozen_flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    method.end_task(model, context)
    return pl.DataFrame(log, schema=LOG_SCHEMA)


def _snapshot_due(snapshots: Snapshots, step: int, world_size: int, device: torch.device) -> bool:
    """Whether to snapshot after ``step``; across ranks, if any rank says so (a signal may reach one rank first)."""
    due = snapshots.due(step)
    if world_size == 1:
        return due
    import torch.distributed as dist

    flag = torch.tensor([float(due), float(snapshots.stop_requested)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag[1] and snapshots.signalled is None:
        import signal

        snapshots.signalled = signal.SIGTERM
    return bool(flag[0])


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
    log_every: int = 10,
    device: str = "cpu",
    progress: bool = True,
    precision: str = "auto",
    data_workers: int = 0,
    label: str = "",
    tracking: TrackingTarget | None = None,
) -> tuple[torch.nn.Module, pl.DataFrame]:
    """The embedded benchmark's base model θ0: ``arch`` from a random init seeded by ``seed``, trained with full
    fine-tuning on ``pool`` alone (mixture {"pretrain": 1.0}) with ``precision`` (``training.precision``), on the
    evaluation transform (no augmentation: the pool's images are drawn at the model's resolution), with open_clip's
    AdamW convention: θ0 stands in for an open_clip-pretrained CLIP, so it is pretrained the way open_clip pretrains.
    ``label``: what the progress lines say (default "pretrain_base <arch>"). Returns (model, training log)."""
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
        optimizer="open_clip",
        precision=precision,
        data_workers=data_workers,
        label=label or f"pretrain_base {arch}",
        tracking=tracking,
    )
    log = run_task_update(model, tokenizer, get_method("finetune"), {"pretrain": pool}, cfg)
    model.eval()
    return model, log
