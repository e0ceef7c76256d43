"""One function per pipeline stage. Each takes the Snakemake job object, the plan and a logger.

The Snakemake scripts in ``workflow/scripts`` are one-line calls into here; the stages in turn only wire files
to the library (data, model, train, methods, evaluate, metrics, plots), where the logic is tested.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from fomoflux import io
from fomoflux.errors import DataError
from fomoflux.plan import Plan

Job = Any  # the `snakemake` object injected into scripts


def _manifests(dataset_dirs) -> list[Path]:
    return [Path(d) / "manifest.parquet" for d in dataset_dirs]


# ---- data ------------------------------------------------------------------------------------------------


def download_archive(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.data.download import download

    source = job.params.source
    log.info("downloading %s -> %s", source["url"], job.output[0])
    digest = download(source["url"], Path(job.output[0]), source.get("sha256"), retries=source.get("retries", 3))
    log.info("sha256 %s", digest)
    if not source.get("sha256"):
        # No published checksum: record the one seen on first download, so it can be pinned in the config.
        io.write_text(f"{job.output[0]}.sha256", f"{digest}  {Path(job.output[0]).name}\n")


def shard_dataset(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.data.shards import build_dataset

    bench = plan.benchmark
    archive = Path(job.input.archive[0]) if job.input.archive else None
    manifest = build_dataset(
        plan.registry[job.wildcards.dataset],
        Path(job.output[0]),
        seed=bench["seed"],
        image_size=bench["image_size"],
        scale=bench["scale"],
        archive=archive,
        shard_size=bench["shard_size"],
        # Snakemake removed the stale folder before the job; what is there now is ours to replace.
        overwrite=True,
    )
    log.info("wrote %s", manifest)


def build_catalog(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.data.catalog import build_catalog as build

    manifests = [Path(d) / "manifest.parquet" for d in job.input]
    build(manifests, Path(job.output[0]))
    log.info("catalog of %d datasets -> %s", len(manifests), job.output[0])


def build_stream(job: Job, plan: Plan, log: logging.Logger) -> None:
    stream = plan.streams[job.wildcards.stream]
    io.write_json(job.output.tasks, [list(t) for t in stream.tasks])
    io.write_json(job.output.ordering, list(stream.entries))
    log.info("stream %s: %d entries in %d tasks", stream.name, len(stream.entries), stream.num_tasks)


# ---- samples -----------------------------------------------------------------------------------------------


def replay_sample(n_rows: int, draws: int, seed: int, task: int) -> list[int] | None:
    """Row indices of the pool's replay sample for one task: ``draws`` rows without replacement (sorted), seeded
    by (seed, task); None when the pool is no larger than that.

    A task draws at most steps x pool-share samples from the pool, so decoding the whole pool per task (1.3M pairs
    in the paper's setting) would be wasted work. Uniform draws from a uniform sample are uniform draws from the pool.
    """
    if draws >= n_rows:
        return None
    import numpy as np

    chosen = np.random.default_rng([seed, task, 0x9001]).choice(n_rows, size=draws, replace=False)
    return sorted(chosen.tolist())


def _load(manifests: list[Path], image_size: int, *, split: str, dataset: str | None = None,
          entries: list[str] | None = None, keep: Callable[[int], list[int] | None] | None = None):
    """Decode the samples of one dataset or of stream entries, from the manifests of a job's input datasets.
    ``keep(n_rows)`` may choose which of the selected rows to decode."""
    from fomoflux.data.catalog import select_rows
    from fomoflux.data.loading import load_samples

    rows = select_rows(manifests, split=split, dataset=dataset, entries=entries)
    if rows.height == 0:
        return None
    chosen = keep(rows.height) if keep is not None else None
    if chosen is not None:
        rows = rows[chosen]
    # Manifests name shards relative to the folder that holds the dataset folders.
    return load_samples(manifests[0].parent.parent, rows, image_size)


def _model(plan: Plan, checkpoint: str | Path | None, device: str = "cpu"):
    from fomoflux.model import create_model, register_architecture

    if plan.model.config:
        register_architecture(plan.model.config)
    return create_model(plan.model.arch, checkpoint, device=device)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---- model -------------------------------------------------------------------------------------------------


def pretrain_base(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.model import save_checkpoint
    from fomoflux.train.loop import pretrain_base as pretrain

    cfg = dict(job.params.pretrain)
    pool = _load(_manifests([job.input.pool]), plan.benchmark["image_size"], split="train", dataset=cfg["dataset"])
    if pool is None:
        raise DataError(f"{job.input.pool}: the pretraining pool {cfg['dataset']!r} has no training samples")
    log.info("pretraining %s on %d pool samples for %d steps", plan.model.arch, len(pool), cfg["steps"])
    model, train_log = pretrain(
        plan.model.arch,
        pool,
        steps=cfg["steps"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        weight_decay=cfg["weight_decay"],
        warmup_fraction=cfg["warmup_fraction"],
        seed=cfg["seed"],
        device=_device(),
    )
    io.write_parquet(job.output.log, train_log)
    save_checkpoint(model, job.output.checkpoint, metadata={"arch": plan.model.arch, "stage": "pretrain_base"})


# ---- training ----------------------------------------------------------------------------------------------


def train_task(job: Job, plan: Plan, log: logging.Logger) -> None:
    from fomoflux.methods import TaskContext, get_method, load_method_state, save_method_state
    from fomoflux.model import save_checkpoint
    from fomoflux.train.loop import TaskUpdateConfig, run_task_update

    spec = job.params.spec
    task = spec["task"]
    device = _device()
    manifests = _manifests(job.input.datasets)
    image_size = plan.benchmark["image_size"]
    run = plan.runs[spec["run"]]
    stream = plan.streams[run.stream]
    training = spec["training"]

    model, tokenizer = _model(plan, job.input.checkpoint, device)
    # The full options (the spec holds only those training depends on, for invalidation).
    method = get_method(spec["method"], dict(run.method_options))
    if "state" in job.input.keys():
        load_method_state(method, job.input.state)
    # num_tasks stays None: an update must not depend on how long the stream will become (see RunPlan.task_spec).
    # The library counts tasks from 0 as the paper does (t = 0 is the first update, which has no buffer); the
    # pipeline's task folders count from 1 because task 0 there is the base model.
    ctx = TaskContext(task_index=task - 1, num_tasks=None, base_state=job.input.base, device=device, seed=spec["seed"])
    steps = int(io.read_json(job.input.budget)["steps"])  # from the run's compute budget (rule run_budget)
    sources = {"update": None, "buffer": None, "pretrain": None}
    if run.updates_weights:
        sources["update"] = _load(manifests, image_size, split="train", entries=spec["entries"])
        past = [e for t in range(1, task) for e in stream.task(t)]
        if past and training["mixture"]["buffer"] > 0:
            sources["buffer"] = _load(manifests, image_size, split="train", entries=past)
        if training["mixture"]["pretrain"] > 0:
            # An upper bound of what the pool's share of the task's steps draws.
            draws = steps * training["batch_size"]
            sources["pretrain"] = _load(
                manifests, image_size, split="train", dataset=plan.pool_dataset,
                keep=lambda n: replay_sample(n, draws, spec["seed"], task),
            )
    counts = {k: (len(v) if v is not None else 0) for k, v in sources.items()}
    log.info("run %s task %d/%d: %s, sources %s", run.name, task, stream.num_tasks, spec["method"], counts)

    cfg = TaskUpdateConfig(
        steps=steps,
        batch_size=training["batch_size"],
        lr=training["lr"],
        weight_decay=training["weight_decay"],
        warmup_fraction=training["warmup_fraction"],
        min_lr_ratio=training["min_lr_ratio"],
        grad_clip=training["grad_clip"],
        mixture=training["mixture"],
        seed=spec["seed"],
        task_index=task - 1,
        schedule=training["schedule"],
        schedule_options=dict(training.get("schedule_options", {})),
        device=device,
    )
    started = time.perf_counter()
    train_log = run_task_update(model, tokenizer, method, sources, cfg, context=ctx)
    log.info("task update took %.1f s", time.perf_counter() - started)

    # The checkpoint is written last: its presence is what marks the task as done.
    io.write_parquet(job.output.log, train_log)
    save_method_state(method, job.output.state)
    save_checkpoint(
        model,
        job.output.checkpoint,
        metadata={"arch": plan.model.arch, "run": run.name, "task": str(task), "method": spec["method"]},
    )


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
    from fomoflux.methods.merging import merge_weights

    spec = dict(job.params.merge)
    checkpoints = list(job.input.checkpoints)
    weights = merge_weights(spec, len(checkpoints))
    started = time.perf_counter()
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
    device = _device()
    manifests = _manifests(job.input.datasets)
    model, tokenizer = _model(plan, job.input.checkpoint, device)
    model.eval()
    subset_cfg = params["subset"]
    datasets = []
    for name in params["datasets"]:
        spec = plan.registry[name]
        samples = _load(manifests, plan.benchmark["image_size"], split="test", dataset=name)
        if samples is None:
            raise DataError(f"dataset {name!r} has no test split to evaluate")
        if not params["full"]:
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
    table = evaluate_datasets(model, tokenizer, datasets, batch_size=plan.evaluation["batch_size"], device=device)
    table = table.with_columns(pl.lit(not params["full"]).alias("subset"))
    log.info("evaluated %d datasets in %.1f s\n%s", len(datasets), time.perf_counter() - started, table)
    io.write_parquet(job.output[0], table)


# ---- report ------------------------------------------------------------------------------------------------


def aggregate_run(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.metrics import matrix_from_evals, summarize

    run = job.wildcards.run
    evals = [pl.read_parquet(p) for p in job.input]
    tasks = job.params.tasks
    if job.params.updates:
        by_task = dict(enumerate(evals))
    else:
        # The zero-shot reference: the base model's evaluation at every task.
        by_task = {t: evals[0] for t in range(tasks + 1)}
    subset_flags = {t: bool(frame["subset"][0]) if "subset" in frame.columns else False for t, frame in by_task.items()}
    matrix = matrix_from_evals(run, by_task, subset_flags)
    summary = summarize(matrix)
    io.write_parquet(job.output.metrics, matrix)
    io.write_parquet(job.output.summary, summary)
    log.info("%s", summary)


def results_db(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.metrics import write_results_db

    matrices = [pl.read_parquet(p) for p in job.input.metrics]
    summaries = [pl.read_parquet(p) for p in job.input.summary]
    write_results_db(Path(job.output[0]), matrices, summaries)


def plot_trajectories(job: Job, plan: Plan, log: logging.Logger) -> None:
    import polars as pl

    from fomoflux.plots import plot_trajectories as plot

    summary = pl.concat([pl.read_parquet(p) for p in job.input], how="diagonal_relaxed")
    plot(summary, Path(job.output.png), Path(job.output.pdf), title=job.params.figures.get("title"))


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
                     "memory_ratio": budget.get("memory_ratio", 1.0)})
    plot(pl.DataFrame(rows), Path(job.output.png), Path(job.output.pdf))
