"""One function per pipeline stage. Each takes the Snakemake job object, the plan and a logger.

The Snakemake scripts in ``workflow/scripts`` are one-line calls into here; the stages in turn only wire files
to the library (data, model, train, methods, evaluate, metrics, plots), where the logic is tested.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fomoflux import io
from fomoflux.device import DistributedContext, resolve_device, resolve_precision
from fomoflux.errors import DataError
from fomoflux.pipeline.plan import Plan
from fomoflux.pipeline.task_data import (
    load_buffer,
    load_samples,
    manifest_paths,
    replay_sample,
    select_rows,
)

Job = Any  # the `snakemake` object injected into scripts


# ---- data ------------------------------------------------------------------------------------------------


def checksum_record(archive: str | Path) -> Path:
    """Where the SHA-256 seen on an archive's first download is recorded (sha256sum format)."""
    return Path(f"{archive}.sha256")


def download_archive(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.data.download import download, verify_or_record

    source = job.params.source
    log.info("downloading %s -> %s", source["url"], job.output[0])
    digest = download(source["url"], Path(job.output[0]), source.get("sha256"), retries=source.get("retries", 3))
    # The release publishes no checksums: the first download records its digest, every later one (and every
    # sharding job) is verified against it, so a silently changed file on the server is caught.
    verify_or_record(Path(job.output[0]), checksum_record(job.output[0]), digest=digest)
    log.info("sha256 %s (recorded in %s)", digest, checksum_record(job.output[0]))


def shard_dataset(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.data.download import verify_or_record
    from fomoflux.data.release import SkipLog
    from fomoflux.data.shards import build_dataset

    bench = plan.benchmark
    spec = plan.registry[job.wildcards.dataset]
    archive = Path(job.input.archive[0]) if job.input.archive else None
    if spec.obtained_by == "download" and archive is not None:
        verify_or_record(archive, checksum_record(archive))
    skipped = SkipLog()
    manifest = build_dataset(
        spec,
        Path(job.output[0]),
        seed=bench["seed"],
        image_size=bench["image_size"],
        scale=bench["scale"],
        archive=archive,
        shard_size=bench["shard_size"],
        on_bad_sample=bench.get("on_bad_sample", "error"),
        skipped=skipped,
        max_image_side=bench["max_image_side"],
        workers=job.threads,
        # Snakemake removed the stale folder before the job; what is there now is ours to replace.
        overwrite=True,
    )
    if skipped.count:
        log.warning("skipped %d undecodable sample(s) (benchmark.on_bad_sample = skip), e.g. %s", skipped.count,
                    "; ".join(f"{member}: {reason}" for member, reason in skipped.items[:5]))
    log.info("wrote %s", manifest)


def build_catalog(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.data.catalog import build_catalog as build

    manifests = [Path(d) / "manifest.parquet" for d in job.input]
    build(manifests, Path(job.output[0]))
    log.info("catalog of %d datasets -> %s", len(manifests), job.output[0])


def build_stream(job: Job, plan: Plan, log: logging.Logger) -> None:
    stream = plan.streams[job.wildcards.stream]
    if stream.ordered_by_plan:
        entries, tasks = list(stream.entries), [list(t) for t in stream.tasks]
    else:
        entries, tasks = _order_stream_from_data(job, plan, stream, log)
    io.write_json(job.output.tasks, [list(t) for t in tasks])
    io.write_json(job.output.ordering, entries)
    log.info("stream %s (%s): %d entries in %d tasks", stream.name, stream.config.get("ordering"), len(entries),
             len(tasks))


def _order_stream_from_data(job: Job, plan: Plan, stream, log: logging.Logger):
    import polars as pl

    from fomoflux.stream import order_from_data

    inputs: dict[str, Any] = {}
    if "pool" in stream.needs:
        inputs["pool_manifests"] = manifest_paths([job.input.pool])
    if "class_accuracy" in stream.needs:
        frame = pl.read_parquet(job.input.class_accuracy)
        accuracy = dict(zip(frame["entry"].to_list(), frame["accuracy"].to_list()))
        absent = [e for e in stream.entries if e not in accuracy]
        if absent:
            # A class without evaluation samples has no measured accuracy: it is ranked hardest, and said so.
            log.warning("%d class(es) have no samples to measure zero-shot accuracy on; ranked last, e.g. %s",
                        len(absent), absent[:5])
            accuracy.update({e: -1.0 for e in absent})
        inputs["class_accuracy"] = accuracy
    if "base_model" in stream.needs:
        from fomoflux.orderings import class_text_embeddings

        device = _compute_device(log, "auto")
        model, tokenizer = _model(plan, job.input.checkpoint, device)
        specs = [plan.registry[name] for name in stream.datasets()]
        inputs["embeddings"] = class_text_embeddings(model, tokenizer, specs, list(stream.entries), device=device).cpu()
    if "manifests" in stream.needs:
        rows = select_rows(manifest_paths(job.input.datasets), plan, split="train", entries=list(stream.entries))
        counts = rows.group_by("dataset", "class_name").len()
        found = {f"{d}+++{c}": n for d, c, n in counts.iter_rows()}
        inputs["sample_counts"] = {e: found.get(e, 0) for e in stream.entries}
    return order_from_data(stream, **inputs)


# ---- samples -----------------------------------------------------------------------------------------------


def _data_workers(setting: Any, device, threads: int) -> int:
    from fomoflux.pipeline.resources import data_workers

    return data_workers(setting, threads, on_gpu=getattr(device, "type", str(device)) == "cuda")


def _model(plan: Plan, checkpoint: str | Path | None, device: str = "cpu"):
    from fomoflux.model import create_model, register_architecture

    if plan.model.config:
        register_architecture(plan.model.config)
    return create_model(plan.model.arch, checkpoint, device=device)


def _compute_device(log: logging.Logger, precision: str):
    """The job's device (``fomoflux.device.resolve_device``: FOMOFLUX_DEVICE, else a visible GPU, else the CPU),
    logged with what ``precision`` means on it."""
    device = resolve_device()
    log.info("device %s, precision %s (%s)", device, precision, resolve_precision(device, precision))
    return device


def _tracking_target(
    plan: Plan, name: str, part: str, *, step_offset: int = 0, config: Mapping[str, Any] | None = None
):
    """What a job tracks (``fomoflux.tracking``), or None with tracking off. Read from the plan, never from params:
    switching tracking on or off reruns nothing."""
    from fomoflux.tracking import TrackingTarget, tracking_dir, tracking_enabled

    if not tracking_enabled(plan.tracking):
        return None
    return TrackingTarget(settings=dict(plan.tracking), run=name, folder=str(tracking_dir(plan.results, name)),
                          part=part, step_offset=step_offset, config=dict(config or {}))


def _run_budget_file(plan: Plan, run: str) -> dict[str, Any] | None:
    """A run's budget.json when it has one (runs that train), for the run's settings (config.json, tracking)."""
    path = Path(plan.results) / "runs" / run / "budget.json"
    return io.read_json(path) if path.is_file() else None


# ---- model -------------------------------------------------------------------------------------------------


def pretrain_base(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.model import save_checkpoint
    from fomoflux.train.loop import pretrain_base as pretrain

    cfg = dict(job.params.pretrain)
    pool = load_samples(manifest_paths([job.input.pool]), plan, split="train", dataset=cfg["dataset"])
    if pool is None:
        raise DataError(f"{job.input.pool}: the pretraining pool {cfg['dataset']!r} has no training samples")
    log.info("pretraining %s on %d pool samples for %d steps", plan.model.arch, len(pool), cfg["steps"])
    # The pretraining settings have no precision key: the base model trains as `auto` says (bf16 on CUDA).
    precision = "auto"
    device = _compute_device(log, precision)
    name = f"pretrain_base-{plan.model.name}"
    model, train_log = pretrain(
        plan.model.arch,
        pool,
        steps=cfg["steps"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        warmup_fraction=cfg["warmup_fraction"],
        seed=cfg["seed"],
        device=str(device),
        precision=precision,
        data_workers=_data_workers("auto", device, job.threads),
        label=f"pretrain_base {plan.model.name} ({plan.model.arch})",
        tracking=_tracking_target(plan, name, "pretrain", config={"model": plan.model.name, "arch": plan.model.arch,
                                                                   "pretrain": cfg}),
    )
    io.write_parquet(job.output.log, train_log)
    save_checkpoint(model, job.output.checkpoint, metadata={"arch": plan.model.arch, "stage": "pretrain_base"})


def import_checkpoint(job: Job, plan: Plan, log: logging.Logger) -> None:
    """θ0 from the config's local checkpoint: loaded strictly into the architecture (a wrong file fails here, not
    in the first training job), stored as safetensors like a pipeline-pretrained base."""
    from fomoflux.model import save_checkpoint

    source = Path(job.params.file)
    if not source.is_file():
        raise DataError(f"model.pretrained.file: checkpoint {source} does not exist")
    model, _ = _model(plan, source)
    save_checkpoint(model, job.output.checkpoint, metadata={"arch": plan.model.arch, "stage": "import_checkpoint",
                                                            "source": str(source)})
    log.info("imported %s (%s) -> %s", source, plan.model.arch, job.output.checkpoint)


def class_accuracy(job: Job, plan: Plan, log: logging.Logger) -> None:
    """Per-class zero-shot accuracy of θ0 on every adaptation dataset (test split, else train)."""
    import polars as pl

    from fomoflux.orderings import per_class_accuracy

    device = _compute_device(log, "auto")
    manifests = manifest_paths(job.input.datasets)
    model, tokenizer = _model(plan, job.input.checkpoint, device)
    model.eval()
    frames = []
    for name, spec in plan.registry.items():
        if spec.role != "adaptation" or not spec.classnames:
            continue
        split = "test" if "test" in spec.splits else "train"
        samples = load_samples(manifests, plan, split=split, dataset=name)
        if samples is None:
            log.warning("dataset %s has no %s samples: its classes get no accuracy", name, split)
            continue
        frames.append(per_class_accuracy(model, tokenizer, spec, samples, batch_size=job.params.batch_size,
                                         device=device))
    table = pl.concat(frames) if frames else pl.DataFrame()
    io.write_parquet(job.output[0], table)
    log.info("per-class zero-shot accuracy of %d classes -> %s", table.height, job.output[0])


# ---- training ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskOutputs:
    """Where a task update's results go, as plain paths: a worker process cannot be handed the Snakemake job."""

    log: str
    state: str
    checkpoint: str
    metadata: Mapping[str, str]


def write_task_outputs(outputs: TaskOutputs, train_log, method, model) -> None:
    """Write the training log, the method state and the checkpoint of a finished task update, in that order."""
    from fomoflux.methods import save_method_state
    from fomoflux.model import save_checkpoint

    # The checkpoint is written last: its presence is what marks the task as done.
    io.write_parquet(outputs.log, train_log)
    save_method_state(method, outputs.state)
    save_checkpoint(model, outputs.checkpoint, metadata=dict(outputs.metadata))


def task_update_worker(
    dist: DistributedContext, private: bytes, tokenizer, sources: Mapping[str, Any], cfg, outputs: TaskOutputs
) -> None:
    """One rank of a data-parallel task update (``fomoflux.device.run_distributed`` calls it in each worker).

    ``private`` is the pickled (model, method, TaskContext): unpickling gives this worker its own copy, which it
    trains on its own device; ``sources`` are shared read-only by all workers. Rank 0 alone writes ``outputs`` (the
    ranks end with identical weights and method state).
    """
    from fomoflux.train.loop import run_task_update

    model, method, context = pickle.loads(private)
    context.device = dist.device
    cfg = replace(cfg, device=str(dist.device), progress=dist.is_main)
    train_log = run_task_update(model.to(dist.device), tokenizer, method, sources, cfg, context=context)
    if dist.is_main:
        write_task_outputs(outputs, train_log, method, model)


def train_task(job: Job, plan: Plan, log: logging.Logger) -> None:
    """One task update of a run. With ``training.gpus`` > 1 it runs data-parallel in that many worker processes.

    Why worker processes spawned from here (``fomoflux.device.run_distributed``, i.e. ``torch.multiprocessing``)
    rather than ``torch.distributed.run``: a worker's exception comes back here with its traceback, into the job's
    log, while the other workers are stopped instead of waiting forever in a collective; every method works
    unchanged (gradients are averaged explicitly, not by DDP hooks); and one job is one Snakemake job on one node,
    which is what the per-task GPU counts of the paper's settings need. The workers get the samples' index only
    (``DiskSamples``, a few arrays of byte offsets) and each reads just its slice of every batch from the shards.
    Multi-node updates would need torchrun/srun; no setting of the benchmark asks for more than one node.
    """
    import torch

    from fomoflux.device import check_gpus, run_distributed, split_batch_size
    from fomoflux.methods import TaskContext, get_method, load_method_state
    from fomoflux.pipeline.plan import OPERATIONAL_TRAINING_KEYS, TRAINING_DEFAULTS
    from fomoflux.train.loop import TaskUpdateConfig, run_task_update

    spec = job.params.spec
    task = spec["task"]
    manifests = manifest_paths(job.input.datasets)
    run = plan.runs[spec["run"]]
    stream = plan.streams[run.stream]
    training = spec["training"]
    gpus = training.get("gpus", 1)  # keys at their defaults are left out of the spec (plan._spec_training)
    operational = {k: run.training.get(k, TRAINING_DEFAULTS[k]) for k in OPERATIONAL_TRAINING_KEYS}
    device = _compute_device(log, training.get("precision", "auto"))
    check_gpus(device, gpus)
    if stream.ordered_by_plan:
        task_entries = [list(stream.task(t)) for t in range(1, task + 1)]
    else:
        task_entries = io.read_json(job.input.stream_tasks)[:task]

    # With several workers this process only prepares: the model stays on the CPU and each worker moves its copy.
    model, tokenizer = _model(plan, job.input.checkpoint, device if gpus == 1 else torch.device("cpu"))
    # The full options (the spec holds only those training depends on, for invalidation).
    method = get_method(spec["method"], dict(run.method_options))
    if "state" in job.input:
        load_method_state(method, job.input.state)
    # num_tasks stays None: an update must not depend on how long the stream will become (see RunPlan.task_spec).
    # The library counts tasks from 0 as the paper does (t = 0 is the first update, which has no buffer); the
    # pipeline's task folders count from 1 because task 0 there is the base model.
    ctx = TaskContext(task_index=task - 1, num_tasks=None, base_state=str(job.input.base), device=device,
                      seed=spec["seed"])
    steps = int(io.read_json(job.input.budget)["steps"])  # from the run's compute budget (rule run_budget)
    sources = {"update": None, "buffer": None, "pretrain": None}
    if run.updates_weights:
        sources["update"] = load_samples(manifests, plan, split="train", entries=task_entries[-1])
        if task > 1 and training["mixture"]["buffer"] > 0:
            sources["buffer"] = load_buffer(manifests, plan, task_entries[:-1], training["buffer"], spec["seed"])
        if training["mixture"]["pretrain"] > 0:
            from fomoflux.train.mixture import source_batch_sizes

            # What the pool's share of the task's batches can draw at most (steps x its samples per batch).
            available = [k for k, v in sources.items() if v is not None] + ["pretrain"]
            share = source_batch_sizes(training["batch_size"], training["mixture"], task - 1, available=available)
            draws = steps * share["pretrain"]
            sources["pretrain"] = load_samples(
                manifests, plan, split="train", dataset=plan.pool_dataset,
                keep=lambda n: replay_sample(n, draws, spec["seed"], task),
            )
    counts = {k: (len(v) if v is not None else 0) for k, v in sources.items()}
    log.info("run %s task %d/%d: %s, sources %s (samples on disk, read per batch)", run.name, task,
             stream.num_tasks, spec["method"], counts)

    cfg = TaskUpdateConfig(
        steps=steps,
        batch_size=training["batch_size"],
        lr=training["lr"],
        weight_decay=training["weight_decay"],
        optimizer=training["optimizer"]["convention"],
        betas=tuple(training["optimizer"]["betas"]),
        eps=training["optimizer"]["eps"],
        warmup_fraction=training["warmup_fraction"],
        min_lr_ratio=training["min_lr_ratio"],
        grad_clip=training["grad_clip"],
        mixture=training["mixture"],
        seed=spec["seed"],
        task_index=task - 1,
        schedule=training["schedule"],
        schedule_options=dict(training.get("schedule_options", {})),
        device=str(device),
        precision=training.get("precision", "auto"),
        augmentation=training.get("augmentation"),
        # Operational keys are not in the spec (plan.OPERATIONAL_TRAINING_KEYS): they come from the run's settings.
        data_workers=_data_workers(operational["data_workers"], device, max(1, int(job.threads) // gpus)),
        log_every=int(operational["log_every"]),
        compile=bool(operational["compile"]),
        grad_checkpointing=bool(operational["grad_checkpointing"]),
        resume_dir=str(resume_dir(plan, run.name, task)),
        resume_key=_resume_key(spec, job),
        resume_every_s=60.0 * float(operational["resume"].get("every_minutes", 10.0)),
        resume_every_steps=int(operational["resume"].get("every_steps", 0)),
    )
    cfg = replace(
        cfg,
        label=f"run {run.name} task {task}/{stream.num_tasks} [{spec['method']}]",
        # One tracked curve per run: task t's steps follow task t-1's (every task of a run has the same steps).
        tracking=_tracking_target(plan, run.name, f"task{task:03d}", step_offset=(task - 1) * steps,
                                  config=_run_settings(plan, run.name)),
    )
    log.info("data: %d loader worker(s), augmentation %s; mid-task snapshots in %s", cfg.data_workers,
             (cfg.augmentation or {}).get("kind", "none"), cfg.resume_dir)
    outputs = TaskOutputs(
        log=str(job.output.log),
        state=str(job.output.state),
        checkpoint=str(job.output.checkpoint),
        metadata={"arch": plan.model.arch, "run": run.name, "task": str(task), "method": spec["method"]},
    )
    started = time.perf_counter()
    if gpus == 1:
        train_log = run_task_update(model, tokenizer, method, sources, cfg, context=ctx)
        log.info("task update took %.1f s", time.perf_counter() - started)
        write_task_outputs(outputs, train_log, method, model)
        _clear_snapshots(cfg)
        return

    per_rank = split_batch_size(cfg.batch_size, gpus)  # fails here, before any worker starts
    threads = max(1, int(job.threads) // gpus)
    log.info("data-parallel task update: %d workers on %s, %d samples of each %d-sample batch per worker, %d "
             "thread(s) each", gpus, "cuda:0.." if device.type == "cuda" else "the CPU (gloo)", per_rank,
             cfg.batch_size, threads)
    # Model, method and context are pickled to bytes so that every worker unpickles a private copy: handed over
    # as objects, their CPU tensors would be shared memory, and the ranks would all step the same weights.
    private = pickle.dumps((model, method, ctx), protocol=pickle.HIGHEST_PROTOCOL)
    run_distributed(task_update_worker, gpus, device_type=device.type, threads=threads,
                    args=(private, tokenizer, sources, cfg, outputs))
    log.info("task update took %.1f s (outputs written by rank 0)", time.perf_counter() - started)
    _clear_snapshots(cfg)


def resume_dir(plan: Plan, run: str, task: int) -> Path:
    """Where a task update keeps its mid-task snapshots: outside every declared output, so Snakemake's cleanup of a
    failed job leaves them for the retry (``fomoflux.train.resume``)."""
    return Path(plan.results) / "resume" / run / f"task{task:03d}"


def _resume_key(spec: Mapping[str, Any], job: Job) -> str:
    """What a snapshot must match to be resumed: the task's settings and the identity (size, mtime) of every input
    file, so a snapshot of other settings or of a since rebuilt input is never continued."""
    import hashlib
    import json

    files = []
    for path in job.input:
        path = Path(path)
        if path.is_file():
            stat = path.stat()
            files.append([str(path), stat.st_size, stat.st_mtime_ns])
    blob = json.dumps({"spec": spec, "inputs": sorted(files)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _clear_snapshots(cfg) -> None:
    """The task's outputs are complete: its snapshots are no longer needed."""
    from fomoflux.train.resume import Snapshots

    if cfg.resume_dir is not None:
        Snapshots(cfg.resume_dir, cfg.resume_key).clear()


# ---- budgets and merges -----------------------------------------------------------------------------------


def profile_method(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.budget import profile_step

    spec = job.params.spec
    if plan.model.config:
        from fomoflux.model import register_architecture

        register_architecture(plan.model.config)
    profile = profile_step(
        plan.model.arch,
        spec["method"],
        spec["options"],
        batch_size=spec["batch_size"],
        memory=spec["memory"],
        extra_pass_samples=spec["extra_pass_samples"],
    )
    log.info("%s: %.3f GFLOPs/sample, peak %.1f MiB (%s), %d of %d parameters trained", spec["method"],
             profile.gflops_per_sample, profile.peak_memory_bytes / 2**20, profile.memory_measure,
             profile.trainable_params, profile.total_params)
    io.write_json(job.output[0], profile.to_dict())


def run_budget(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.budget import StepProfile, budget_steps

    training = job.params.training
    if training["budget"] == "fixed":
        budget = {"steps": int(training["steps"]), "reference_steps": int(training["steps"]), "mode": "fixed"}
    elif training["budget"] == "table":
        # Steps taken as given (budget.table, e.g. the paper's Tab. 4); `steps` stays full fine-tuning's.
        budget = {"steps": int(training["table_steps"]), "reference_steps": int(training["steps"]), "mode": "table"}
    else:
        reference = StepProfile.from_dict(io.read_json(job.input.reference))
        method = StepProfile.from_dict(io.read_json(job.input.method))
        steps = budget_steps(int(training["steps"]), reference, method, memory_adjusted=training["budget"] == "maf")
        budget = {**steps, "mode": training["budget"]}
    log.info("run %s: %d steps per task (%s budget of %d full fine-tuning steps)", job.wildcards.run, budget["steps"],
             budget["mode"], budget["reference_steps"])
    io.write_json(job.output[0], budget)


def merge_task(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.merge import merge_checkpoints
    from fomoflux.methods.merging import merge_is_copy, merge_weights

    spec = dict(job.params.merge)
    checkpoints = list(job.input.checkpoints)
    weights = merge_weights(spec, len(checkpoints))
    started = time.perf_counter()
    if merge_is_copy(spec, len(checkpoints)):
        # Nothing to merge (the reference's unrolled merge of [θ1], its offline merge after task 1): θ1 as is.
        from safetensors.torch import load_file

        state = load_file(checkpoints[0])
    else:
        state = merge_checkpoints(
            job.input.base, checkpoints, weights, operator=spec["operator"], options=spec["operator_options"],
            lines=spec["lines"], seed=spec["seed"],
        )
    log.info("%s merge (%s) of %d checkpoints, weights %s, in %.1f s", spec["kind"], spec["operator"],
             len(checkpoints), [round(w, 4) for w in weights], time.perf_counter() - started)
    io.write_safetensors(job.output[0], state, metadata={"arch": plan.model.arch, "run": job.wildcards.run,
                                                         "task": str(int(job.wildcards.task)), "merge": spec["kind"]})


# ---- evaluation --------------------------------------------------------------------------------------------


def evaluate(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.evaluate import evaluate_datasets, stratified_subset

    params = job.params.eval
    device = _compute_device(log, "auto")
    manifests = manifest_paths(job.input.datasets)
    model, tokenizer = _model(plan, job.input.checkpoint, device)
    model.eval()
    subset_cfg = params["subset"]
    datasets = []
    for name in params["datasets"]:
        spec = plan.registry[name]
        if plan.validation["enabled"] and spec.role == "adaptation":
            # Validation mode: adaptation datasets are scored on their held-out training samples, never on test.
            samples = load_samples(manifests, plan, split="train", dataset=name, part="validation")
        else:
            samples = load_samples(manifests, plan, split="test", dataset=name)
        if samples is None:
            raise DataError(f"dataset {name!r} has no {'validation' if plan.validation['enabled'] else 'test'} "
                            "samples to evaluate")
        if not params["full"]:
            # The fixed subset: drawn from this dataset's own class ids and the seed only, so it is the same at
            # every trajectory point (the base model's and every task's), whichever other datasets are evaluated.
            samples = samples.select(
                stratified_subset(
                    samples.class_ids,
                    subset_cfg["seed"],
                    min_size=subset_cfg["min_size"],
                    per_class=subset_cfg["per_class"],
                    fraction=subset_cfg["fraction"],
                )
            )
        datasets.append((spec, samples))
    started = time.perf_counter()
    workers = _data_workers(plan.evaluation.get("data_workers", "auto"), device, job.threads)
    label = "evaluate " + " ".join(f"{key} {value}" for key, value in job.wildcards.items())
    table = evaluate_datasets(model, tokenizer, datasets, batch_size=plan.evaluation["batch_size"], device=device,
                              workers=workers, label=label)
    table = table.with_columns(pl.lit(not params["full"]).alias("subset"))
    log.info("evaluated %d datasets (%s) in %.1f s\n%s", len(datasets),
             "full test sets" if params["full"] else "fixed subset", time.perf_counter() - started, table)
    io.write_parquet(job.output[0], table)


# ---- report ------------------------------------------------------------------------------------------------


def aggregate_run(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.metrics import run_tables

    run = job.wildcards.run
    evals = [pl.read_parquet(p) for p in job.input.subset]
    full = [pl.read_parquet(p) for p in job.input.full]
    tasks = job.params.tasks
    if job.params.updates:
        by_task = dict(enumerate(evals))
        full_by_task = {0: full[0], tasks: full[1]}
    else:
        # The zero-shot reference: the base model's evaluations at every task.
        by_task = {t: evals[0] for t in range(tasks + 1)}
        full_by_task = {0: full[0], tasks: full[0]}
    tables = run_tables(run, by_task, full_by_task)
    matrix, summary = tables.metrics, tables.summary
    io.write_parquet(job.output.metrics, matrix)
    io.write_parquet(job.output.summary, summary)
    io.write_parquet(job.output.metrics_full, tables.metrics_full)
    io.write_parquet(job.output.summary_full, tables.summary_full)
    log.info("trajectory (fixed subset):\n%s\nfull test sets:\n%s", summary, tables.summary_full)
    target = _tracking_target(plan, run, "eval", config=_run_settings(plan, run))
    if target is not None:
        # The evaluation matrix per task, beside the run's training curves (replacing an earlier aggregation's).
        with target.open(fresh=True) as tracker:
            tracker.log_config()
            tracker.log_evaluation(matrix, summary)
        log.info("tracked the evaluation of %d tasks in %s", summary.height, target.folder)


def _run_settings(plan: Plan, run: str) -> dict[str, Any]:
    from fomoflux.tracking import run_settings

    return run_settings(plan, run, _run_budget_file(plan, run))


def run_config(job: Job, plan: Plan, log: logging.Logger) -> None:
    """``runs/<run>/config.json``: the run's resolved settings and its steps per task (its budget, for runs that
    train); what the ``runs`` table of the results database is made of."""
    from fomoflux.tracking import run_settings

    budget = io.read_json(job.input.budget) if "budget" in job.input.keys() else None
    io.write_json(job.output[0], run_settings(plan, job.wildcards.run, budget))
    log.info("settings of run %s -> %s", job.wildcards.run, job.output[0])


def open_clip_config(job: Job, plan: Plan, log: logging.Logger) -> None:
    """open_clip's model-folder config for the base model's architecture (``fomoflux.model.open_clip_config``),
    beside the base checkpoint; the task folders get copies of it."""
    from fomoflux.model import register_architecture, write_open_clip_config

    if plan.model.config:
        register_architecture(plan.model.config)
    write_open_clip_config(job.output[0], plan.model.arch)
    log.info("open_clip folder config of %s -> %s", plan.model.arch, job.output[0])


def results_db(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.metrics import write_results_db

    matrices = [pl.read_parquet(p) for p in job.input.metrics]
    summaries = [pl.read_parquet(p) for p in job.input.summary]
    runs = [io.read_json(p) for p in job.input.configs] if "configs" in job.input.keys() else None
    write_results_db(Path(job.output[0]), matrices, summaries, runs=runs,
                     full_matrices=[pl.read_parquet(p) for p in job.input.metrics_full],
                     full_summaries=[pl.read_parquet(p) for p in job.input.summary_full])


def plot_trajectories(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.plots import plot_trajectories as plot

    summary = pl.concat([pl.read_parquet(p) for p in job.input], how="diagonal_relaxed")
    plot(summary, Path(job.output.png), Path(job.output.pdf), title=job.params.figures.get("title"),
         zero_shot_runs=_zero_shot_runs(plan))


def plot_full_test_sets(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.plots import plot_full_test_sets as plot

    summary = pl.concat([pl.read_parquet(p) for p in job.input], how="diagonal_relaxed")
    plot(summary, Path(job.output.png), Path(job.output.pdf), zero_shot_runs=_zero_shot_runs(plan))


def _zero_shot_runs(plan: Plan, labels: dict | None = None) -> list[str]:
    """The runs that never update the model (the base model's scores at every task), by their label in a figure."""
    labels = labels or {}
    return [labels.get(name, name) for name, run in plan.runs.items() if not run.updates_weights]


def plot_heatmap(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.plots import plot_heatmap as plot

    matrix = pl.read_parquet(job.input[0])
    plot(matrix, job.wildcards.run, Path(job.output.png), Path(job.output.pdf))


def plot_schedules(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.plots import plot_schedules as plot

    schedules = job.params.schedules
    summary = pl.concat([pl.read_parquet(p) for p in job.input.summaries], how="diagonal_relaxed")
    final = (
        summary.filter(pl.col("run").is_in([r for r, run in plan.runs.items() if run.updates_weights]))
        .sort("task").group_by("run").last()
        .with_columns(pl.col("run").replace_strict(schedules, return_dtype=pl.String).alias("schedule"))
        .select("run", "schedule", "A_KA", "A_ZS")
    )
    curves = []
    for path in job.input.logs:
        # .../runs/<run>/task<NNN>/train_log.parquet
        folder = Path(path).parent
        run, task = folder.parent.name, int(folder.name.removeprefix("task"))
        frame = pl.read_parquet(path).select("step", "lr")
        curves.append(frame.with_columns(pl.lit(run).alias("run"), pl.lit(schedules[run]).alias("schedule"),
                                         pl.lit(task).alias("task")))
    lr_curves = pl.concat(curves).select("run", "schedule", "task", "step", "lr")
    plot(final, lr_curves, Path(job.output.png), Path(job.output.pdf))


def plot_budgets(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.plots import plot_budgets as plot

    rows = []
    for path in job.input:
        run = Path(path).parent.name
        budget = io.read_json(path)
        rows.append({"run": run, "method": job.params.methods[run], "steps": budget["steps"],
                     "reference_steps": budget["reference_steps"], "flops_ratio": budget.get("flops_ratio", 1.0),
                     "memory_ratio": budget.get("memory_ratio", 1.0), "mode": budget["mode"]})
    plot(pl.DataFrame(rows), Path(job.output.png), Path(job.output.pdf))


def plot_comparison(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.plots import plot_trajectories as plot

    comparison = job.params.comparison
    summary = pl.concat([pl.read_parquet(p) for p in job.input], how="diagonal_relaxed")
    labels = comparison.get("labels", {})
    if labels:
        summary = summary.with_columns(pl.col("run").replace(labels))
    plot(summary, Path(job.output.png), Path(job.output.pdf), title=comparison.get("title", job.wildcards.comparison),
         zero_shot_runs=_zero_shot_runs(plan, labels))


def score_tables(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.tables import write_score_tables

    summary = pl.concat([pl.read_parquet(p) for p in job.input.summary], how="diagonal_relaxed")
    final = write_score_tables(summary, job.params.runs, Path(job.output.csv), Path(job.output.html))
    log.info("trajectories' last points (fixed subset):\n%s", final)
    summary_full = pl.concat([pl.read_parquet(p) for p in job.input.summary_full], how="diagonal_relaxed")
    final_full = write_score_tables(summary_full, job.params.runs, Path(job.output.full_csv),
                                    Path(job.output.full_html), full=True)
    log.info("full test sets:\n%s", final_full)
