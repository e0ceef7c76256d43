# Configuration, path templates and input functions. Logic lives in the fomoflux package; this file only
# connects the plan to Snakemake.
import dataclasses
import errno
import functools
import json
import math
import os

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from fomoflux.pipeline import resources as job_resources
from fomoflux.pipeline import versions
from fomoflux.config_schema import validate_config
from fomoflux.errors import FomofluxError
from fomoflux.pipeline.plan import PROFILED_BUDGET_MODES, build_plan
from fomoflux.tracking import run_settings

try:
    # Defaults filled, and a violation is one line naming the key path and what is allowed there (Snakemake's
    # snakemake.utils.validate prints the whole sub-schema instead).
    validate_config(config, workflow.source_path("../../config/schema/config.schema.yaml"))
    PLAN = build_plan(config)
    CLUSTER = job_resources.ResourceSettings.from_config(config.get("cluster"))
except FomofluxError as err:
    _sources = [os.path.relpath(f) for f in workflow.configfiles] + (
        ["--config"] if workflow.config_settings.config else []
    )
    raise WorkflowError(f"invalid configuration ({' + '.join(_sources) or 'no config file'}): {err}") from None

if PLAN.missing:
    # One message for everything missing. A dry run still lists the whole DAG; a real run stops before any job
    # (onstart runs only for real runs, after the DAG is built and before the first job is scheduled).
    logger.warning(f"fomoflux: {PLAN.missing_report()}")

    onstart:
        raise WorkflowError(f"fomoflux: not starting: {PLAN.missing_report()}")


onerror:
    # Through SLURM, a killed job's reason (memory or time limit, cancellation, preemption) is only in its SLURM
    # log; say it where the user looks, at the end of Snakemake's output.
    from fomoflux.pipeline.slurm import failure_report

    # Snakemake 9 passes its log files as a list (older versions: one path).
    logs = [log] if isinstance(log, (str, Path)) else list(log or [])
    text = "".join(Path(p).read_text(errors="replace") for p in logs if Path(p).is_file())
    for line in failure_report(text):
        logger.error(f"fomoflux: {line}")


# The slurm profile takes partition and account from these variables (its default-resources); unset means "the
# cluster's default partition" and "the plugin's account guess", which an empty value gives.
for _variable in ("FOMOFLUX_SLURM_PARTITION", "FOMOFLUX_SLURM_ACCOUNT"):
    os.environ.setdefault(_variable, "")

# One software environment for every rule (used with --software-deployment-method conda); the pinned
# requirements are the same ones scripts/setup.sh installs. Untested (no conda where this project is tested): see
# environment.yml.
CONDA_ENV = "../../environment.yml"
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    # The conda environment holds the dependencies only (Snakemake builds it from a copy of environment.yml, where
    # `-e .` would name the wrong folder): jobs, which inherit this process's environment, import fomoflux from
    # this checkout.
    _src = Path(workflow.current_basedir.join("../../src").get_path_or_uri(secret_free=True)).resolve()
    # (update(), not os.environ[...] =: the linter takes that for a variable the workflow needs from the user.)
    os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [str(_src), os.environ.get("PYTHONPATH")])))

RESULTS = str(PLAN.results)
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"

# What experiments on the same benchmark and base model share (config key data_root, default: results): downloads,
# shards, the catalog and the base model with its evaluations. Outputs there are keyed by dataset and model name,
# and Snakemake's params trigger regenerates one whose settings differ, so a shared folder is never silently stale.
DATA_ROOT = str(config.get("data_root", RESULTS))
DATASET_DIR = f"{DATA_ROOT}/data/{{dataset}}"
ARCHIVE = f"{DATA_ROOT}/downloads/{{dataset}}.archive"
CATALOG = f"{DATA_ROOT}/data/catalog.duckdb"
ORDERING = f"{RESULTS}/streams/{{stream}}/ordering.json"
TASKS = f"{RESULTS}/streams/{{stream}}/tasks.json"
BASE_CHECKPOINT = f"{DATA_ROOT}/models/{{model}}/base.safetensors"
BASE_LOG = f"{DATA_ROOT}/models/{{model}}/pretrain_log.parquet"
# Evaluations: every trajectory point (the base model, task 0, and every task) on the same fixed subset of each
# dataset; the full test sets for the base model and each run's last task, reported apart (never in a trajectory).
BASE_EVAL = f"{DATA_ROOT}/models/{{model}}/eval.parquet"
BASE_EVAL_FULL = f"{DATA_ROOT}/models/{{model}}/eval_full.parquet"
CLASS_ACCURACY = f"{DATA_ROOT}/models/{{model}}/class_accuracy.parquet"
TASK_DIR = f"{RESULTS}/runs/{{run}}/task{{task}}"
TASK_MERGE = f"{TASK_DIR}/merge_{{kind}}.safetensors"
PROFILE = f"{RESULTS}/profiles/{{model}}/{{profile}}.json"
RUN_BUDGET = f"{RESULTS}/runs/{{run}}/budget.json"
TASK_EVAL = f"{RESULTS}/runs/{{run}}/eval/task{{task}}.parquet"
TASK_EVAL_FULL = f"{RESULTS}/runs/{{run}}/eval_full/task{{task}}.parquet"
RUN_METRICS = f"{RESULTS}/runs/{{run}}/metrics.parquet"
RUN_SUMMARY = f"{RESULTS}/runs/{{run}}/summary.parquet"
RUN_METRICS_FULL = f"{RESULTS}/runs/{{run}}/metrics_full.parquet"
RUN_SUMMARY_FULL = f"{RESULTS}/runs/{{run}}/summary_full.parquet"
RESULTS_DB = f"{RESULTS}/fomoflux.duckdb"
FIGURE_TRAJECTORIES = f"{RESULTS}/figures/trajectories.{{ext}}"
FIGURE_FULL_SCORES = f"{RESULTS}/figures/full_test_sets.{{ext}}"
FIGURE_HEATMAP = f"{RESULTS}/figures/heatmap_{{run}}.{{ext}}"
FIGURE_SCHEDULES = f"{RESULTS}/figures/schedules.{{ext}}"
FIGURE_BUDGETS = f"{RESULTS}/figures/budgets.{{ext}}"
FIGURE_COMPARISON = f"{RESULTS}/figures/compare_{{comparison}}.{{ext}}"
SCORE_TABLE = f"{RESULTS}/tables/final_scores.{{ext}}"
FULL_SCORE_TABLE = f"{RESULTS}/tables/full_test_sets.{{ext}}"
FIGURE_EXTS = ["png", "pdf"]
# open_clip's model-folder config beside each checkpoint (`local-dir:` loading) and each run's resolved settings
# (workflow/rules/export.smk).
TASK_OPEN_CLIP_CONFIG = f"{TASK_DIR}/open_clip_config.json"
BASE_OPEN_CLIP_CONFIG = BASE_CHECKPOINT.replace("base.safetensors", "open_clip_config.json")
RUN_CONFIG = f"{RESULTS}/runs/{{run}}/config.json"


wildcard_constraints:
    dataset=r"[A-Za-z0-9_-]+",
    stream=r"[A-Za-z0-9_.-]+",
    model=r"[A-Za-z0-9_.-]+",
    run=r"[A-Za-z0-9_.-]+",
    task=r"\d{3}",
    ext=r"png|pdf",
    kind=r"sequential|oneshot|anchored",
    profile=r"[A-Za-z0-9_.-]+",
    comparison=r"[A-Za-z0-9_.-]+",


def task_name(task):
    return f"{int(task):03d}"


def all_targets():
    runs = list(PLAN.runs)
    return [
        expand(ORDERING, stream=list(PLAN.streams)),
        CATALOG,
        RESULTS_DB,
        expand(FIGURE_TRAJECTORIES, ext=FIGURE_EXTS),
        expand(FIGURE_FULL_SCORES, ext=FIGURE_EXTS),
        expand(FIGURE_HEATMAP, run=runs, ext=FIGURE_EXTS),
        # Comparing schedules takes two: with one (the default config: cosine everywhere) the figure is not made.
        expand(FIGURE_SCHEDULES, ext=FIGURE_EXTS) if len(trained_schedules()) >= 2 else [],
        expand(FIGURE_BUDGETS, ext=FIGURE_EXTS) if trained_runs() else [],
        expand(FIGURE_COMPARISON, comparison=list(PLAN.figures.get("comparisons", {})), ext=FIGURE_EXTS),
        expand(RUN_CONFIG, run=runs),
        open_clip_configs(),
        expand(SCORE_TABLE, ext=["csv", "html"]),
        expand(FULL_SCORE_TABLE, ext=["csv", "html"]),
    ]


def trained_runs():
    return [name for name, run in PLAN.runs.items() if run.updates_weights]


def open_clip_configs():
    """open_clip_config.json beside the base model and every task checkpoint of the runs that train."""
    tasks = [f"{folder}/open_clip_config.json" for run in trained_runs() for folder in run_task_dirs(run)]
    return [BASE_OPEN_CLIP_CONFIG.format(model=PLAN.model.name), *tasks]


def trained_schedules():
    """The distinct learning-rate schedules of the runs that train (what figures/schedules compares)."""
    return sorted({PLAN.runs[run].training["schedule"] for run in trained_runs()})


# ---- data --------------------------------------------------------------------------------------------------


def dataset_dir(name):
    return DATASET_DIR.format(dataset=name)


def get_archive(wildcards):
    """What a dataset is sharded from: its downloaded archive, or its local copy (when it is there: a missing copy
    is reported once for the whole config, see PLAN.missing)."""
    spec = PLAN.registry[wildcards.dataset]
    if spec.obtained_by == "download":
        return [ARCHIVE.format(dataset=wildcards.dataset)]
    if spec.obtained_by == "local" and Path(spec.source["local"]["path"]).exists():
        return [spec.source["local"]["path"]]
    return []


def shard_threads(wildcards):
    return job_resources.shard_workers(
        PLAN.registry[wildcards.dataset],
        threads=PLAN.benchmark["shard_threads"],
        shard_size=PLAN.benchmark["shard_size"],
        scale=PLAN.benchmark["scale"],
    )


def dataset_params(wildcards):
    """What determines a dataset's shards (a change regenerates that dataset only)."""
    spec = PLAN.registry[wildcards.dataset]
    # A dataset's year and its unstreamed classes shape streams, not shards: left out, so setting them keeps shards.
    params = {"spec": repr(dataclasses.replace(spec, year=None, unstreamed=())), "version": versions.DATA}
    # Not shard_threads: the shards are the same bytes whatever the number of workers. Not image_size for imports:
    # they keep the source's pixels (bounded by max_image_side), so a new model resolution reuses them.
    if spec.obtained_by == "generate":
        keys = ("seed", "scale", "image_size", "shard_size", "max_image_side")
    else:
        keys = ("shard_size", "on_bad_sample", "max_image_side")
    params.update({k: PLAN.benchmark[k] for k in keys})
    return params


def all_dataset_dirs():
    return [dataset_dir(name) for name in PLAN.registry]


# ---- model and stream ------------------------------------------------------------------------------------


def base_checkpoint():
    """θ0: pretrained by the pipeline, or imported (checked and converted to safetensors) from the local file."""
    return BASE_CHECKPOINT.format(model=PLAN.model.name)


def pretrained_file_input():
    path = PLAN.model.pretrained_file
    return [path] if path and Path(path).is_file() else []


def class_accuracy_inputs():
    """The base model and every adaptation dataset (easy-to-hard orderings rank their classes by it)."""
    names = [n for n, s in PLAN.registry.items() if s.role == "adaptation"]
    return {"datasets": [dataset_dir(n) for n in names], "checkpoint": base_checkpoint()}


def stream_inputs(wildcards):
    """What a stage-ordered stream is computed from (nothing for a stream the plan orders)."""
    stream = PLAN.streams[wildcards.stream]
    inputs = {}
    if "pool" in stream.needs:
        inputs["pool"] = dataset_dir(PLAN.pool)
    if "class_accuracy" in stream.needs:
        inputs["class_accuracy"] = CLASS_ACCURACY.format(model=PLAN.model.name)
    if "base_model" in stream.needs:
        inputs["checkpoint"] = base_checkpoint()
        inputs["model_config"] = model_config_input()
    if "manifests" in stream.needs:
        inputs["datasets"] = [dataset_dir(n) for n in stream.datasets()]
    return inputs


def stream_params(wildcards):
    stream = PLAN.streams[wildcards.stream]
    if stream.ordered_by_plan:
        return {"tasks": [list(t) for t in stream.tasks]}
    return {"config": dict(stream.config), "definition": stream.definition_digest(), "version": versions.STREAM}


def model_config_input():
    return [PLAN.model.config] if PLAN.model.config else []


def pool_dir():
    return dataset_dir(PLAN.model.pretrain["dataset"])


# ---- training --------------------------------------------------------------------------------------------


def task_spec(wildcards):
    run = PLAN.runs[wildcards.run]
    return {**run.task_spec(PLAN.streams[run.stream], int(wildcards.task)), **validation_param()}


def task_checkpoint(run, task):
    return f"{TASK_DIR.format(run=run, task=task_name(task))}/model.safetensors"


def merge_checkpoint(run, task, kind):
    """The merge of `kind` after `task`; before the first task every merge is θ0."""
    if int(task) == 0:
        return base_checkpoint()
    return TASK_MERGE.format(run=run, task=task_name(task), kind=kind)


def deployed_checkpoint(run, task):
    """What is evaluated after `task`: the trained weights, or the run's deploy merge of them."""
    deploy = PLAN.runs[run].deploy_from
    if deploy == "latest":
        return task_checkpoint(run, task)
    return merge_checkpoint(run, task, deploy)


def previous_task(wildcards):
    """Where task t starts (the method's init: task t-1's weights, θ0, or a merge after task t-1), and the method
    state of task t-1 for methods that keep one. Task 1 starts from the base model."""
    run = PLAN.runs[wildcards.run]
    previous = int(wildcards.task) - 1
    init = run.init_from
    if previous == 0 or init == "base":
        inputs = {"checkpoint": base_checkpoint()}
    elif init == "latest":
        inputs = {"checkpoint": task_checkpoint(wildcards.run, previous)}
    else:
        inputs = {"checkpoint": merge_checkpoint(wildcards.run, previous, init)}
    if previous > 0 and run.keeps_state:
        folder = TASK_DIR.format(run=wildcards.run, task=task_name(previous))
        inputs["state"] = f"{folder}/method_state.safetensors"
    return inputs


def run_budget(wildcards):
    return RUN_BUDGET.format(run=wildcards.run)


def profile_path(key):
    return PROFILE.format(model=PLAN.model.name, profile=key)


def budget_profiles(wildcards):
    """The two step profiles a run's budget compares: full fine-tuning's and the run's method's."""
    run = PLAN.runs[wildcards.run]
    if run.training["budget"] not in PROFILED_BUDGET_MODES:  # fixed / table: steps as given, nothing to compare
        return {}
    reference = PLAN.reference_profile_key(run.name)
    return {"reference": profile_path(reference), "method": profile_path(run.profile_key())}


def profile_spec(wildcards):
    """The method, options and batch a profile measures (the plan knows each key its runs use)."""
    return dict(
        PLAN.profiles[wildcards.profile],
        memory=PLAN.budget["memory"],
        extra_pass_samples=PLAN.budget["extra_pass_samples"],
        version=versions.BUDGET,
    )


def merge_inputs(wildcards):
    """A merge after task t, in the reference's order (fomoflux.methods.merging.merge_input_sequence): sequential
    [θ_t, m_{t-1}] (m_0 = θ0, or θ_1 alone after task 1 when it starts from the first expert), anchored [θ_t, θ0],
    oneshot [θ0?, θ_1..θ_t]."""
    from fomoflux.methods.merging import merge_input_sequence

    spec = PLAN.runs[wildcards.run].merges[wildcards.kind]
    checkpoints = []
    for what, task in merge_input_sequence(spec, int(wildcards.task)):
        if what == "merge":
            checkpoints.append(merge_checkpoint(wildcards.run, task, wildcards.kind))
        else:
            checkpoints.append(base_checkpoint() if task == 0 else task_checkpoint(wildcards.run, task))
    return {"base": base_checkpoint(), "checkpoints": checkpoints}


def merge_params(wildcards):
    return dict(
        PLAN.runs[wildcards.run].merges[wildcards.kind], seed=PLAN.runs[wildcards.run].seed, version=versions.MERGE
    )


def training_data(wildcards):
    """The datasets this task's update and buffer read (classes of tasks 1..t), the pool if replayed, and θ0.

    Only what the task reads: a stream that grows or a new evaluation dataset leaves finished updates valid.
    What it trains on exactly (its entries, the buffer's history) is in its params.
    """
    run = PLAN.runs[wildcards.run]
    stream = PLAN.streams[run.stream]
    names = stream.datasets_until(int(wildcards.task))
    if run.training["mixture"]["pretrain"] > 0:
        names.append(PLAN.pool_dataset)
    inputs = {"datasets": [dataset_dir(n) for n in names], "base": base_checkpoint(), "budget": run_budget(wildcards)}
    if not stream.ordered_by_plan:
        inputs["stream_tasks"] = TASKS.format(stream=stream.name)
    return inputs


def run_task_dirs(run):
    stream = PLAN.stream_of(run)
    return [TASK_DIR.format(run=run, task=task_name(t)) for t in range(1, stream.num_tasks + 1)]


# ---- evaluation and report -------------------------------------------------------------------------------


def validation_param():
    """Validation mode changes what is trained and evaluated on; when off it adds nothing, so caches stay valid."""
    return {"validation": dict(PLAN.validation)} if PLAN.validation["enabled"] else {}


def eval_params(full):
    return {
        "datasets": list(PLAN.eval_datasets),
        "full": full,
        "subset": dict(PLAN.evaluation["subset"]),
        "version": versions.EVAL,
        **validation_param(),
    }


def eval_inputs(wildcards):
    return {"datasets": [dataset_dir(n) for n in PLAN.eval_datasets]}


def run_evals(wildcards):
    """The fixed-subset evaluation files of a run's trajectory, task 0 (the base model) first. A run that never
    updates its weights (the zero-shot reference) is the base model at every task: it reuses the base evaluation
    instead of copies."""
    run = PLAN.runs[wildcards.run]
    base = BASE_EVAL.format(model=PLAN.model.name)
    if not run.updates_weights:
        return [base]
    return [base] + [TASK_EVAL.format(run=wildcards.run, task=task_name(t)) for t in PLAN.eval_tasks(wildcards.run)]


def run_full_evals(wildcards):
    """The full-test-set evaluation files of a run: the base model's, then its last task's (none of its own for
    the zero-shot reference, which is the base model)."""
    run = PLAN.runs[wildcards.run]
    base = BASE_EVAL_FULL.format(model=PLAN.model.name)
    if not run.updates_weights:
        return [base]
    return [base, TASK_EVAL_FULL.format(run=wildcards.run, task=task_name(PLAN.full_eval_task(wildcards.run)))]


def run_outputs(kind):
    template = {
        "metrics": RUN_METRICS,
        "summary": RUN_SUMMARY,
        "metrics_full": RUN_METRICS_FULL,
        "summary_full": RUN_SUMMARY_FULL,
    }[kind]
    return [template.format(run=r) for r in PLAN.runs]


def trained_task_logs(wildcards):
    """The training logs of every task of every run that trains (the lr each step used)."""
    return [f"{folder}/train_log.parquet" for run in trained_runs() for folder in run_task_dirs(run)]


def budgeted_runs(wildcards):
    return [RUN_BUDGET.format(run=run) for run in trained_runs()]


# ---- cluster resources -----------------------------------------------------------------------------------
# What GPU jobs ask the scheduler for (fomoflux.pipeline.resources): scaled from the run's model, budget and data, and
# growing with `attempt` so that a job the scheduler killed for memory or time is retried with more. CPU-only stages
# take the profile's default-resources. Functions that read a job's inputs give Snakemake's "<TBD>" while those do
# not exist yet (a dry run); Snakemake evaluates them again right before the job is submitted.


def _require(*paths):
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(errno.ENOENT, "not there yet", str(path))


@functools.cache
def _model_params():
    """Parameter count of the architecture (a shapes-only model): for jobs without a step profile."""
    from fomoflux.model import create_model, register_architecture

    if PLAN.model.config:
        register_architecture(PLAN.model.config)
    model, _ = create_model(PLAN.model.arch, device="meta")
    return sum(p.numel() for p in model.parameters())


def _step_profile(run):
    """The run's method step profile (FLOPs per step, parameters); None for a fixed budget or before it exists."""
    path = Path(profile_path(PLAN.runs[run].profile_key()))
    return json.loads(path.read_text()) if path.exists() else None


@functools.cache
def _manifest_rows(folder, split):
    """Rows of a finished dataset (asked for only once its job is ready): every evaluation job reads the same
    manifests, so each is counted once per Snakemake run."""
    return job_resources.manifest_rows([folder], split=split)


def _task_steps(input):
    _require(input.budget)
    return int(json.loads(Path(input.budget).read_text())["steps"])


def train_gpus(wildcards):
    return int(PLAN.runs[wildcards.run].training.get("gpus", 1))


def train_cpus_per_gpu(wildcards, threads):
    return job_resources.cpus_per_gpu(threads, train_gpus(wildcards))


def train_mem_mb(wildcards, input, attempt, threads):
    run = PLAN.runs[wildcards.run]
    steps = _task_steps(input)
    _require(*input.datasets)
    pool = dataset_dir(PLAN.pool_dataset) if run.training["mixture"]["pretrain"] > 0 else None
    profile = _step_profile(wildcards.run)
    gpus = train_gpus(wildcards)
    return job_resources.task_memory_mb(
        CLUSTER,
        params=profile["total_params"] if profile else _model_params(),
        image_size=PLAN.benchmark["image_size"],
        batch_size=run.training["batch_size"],
        # The index of every row the task may select: its datasets' training rows and the pool's draws.
        data_rows=sum(_manifest_rows(d, "train") for d in input.datasets if d != pool)
        + (min(_manifest_rows(pool, "train"), steps * run.training["batch_size"]) if pool else 0),
        loader_workers=job_resources.data_workers(run.training["data_workers"], max(1, threads // gpus), True),
        workers=gpus,
        attempt=attempt,
    )


def train_runtime(wildcards, input, attempt):
    steps = _task_steps(input)
    profile = _step_profile(wildcards.run)
    flops = steps * profile["flops_per_step"] if profile else 0
    return job_resources.runtime_minutes(CLUSTER, flops=flops, gpus=train_gpus(wildcards), attempt=attempt)


def eval_mem_mb(wildcards, input, attempt, threads):
    _require(*input.datasets)
    split = None if PLAN.validation["enabled"] else "test"
    return job_resources.eval_memory_mb(
        CLUSTER,
        params=_model_params(),
        image_size=PLAN.benchmark["image_size"],
        batch_size=PLAN.evaluation["batch_size"],
        loader_workers=job_resources.data_workers(PLAN.evaluation.get("data_workers", "auto"), threads, True),
        rows=sum(_manifest_rows(d, split) for d in input.datasets),
        attempt=attempt,
    )


def gpu_runtime(wildcards, attempt):
    return CLUSTER.min_runtime * attempt


def pretrain_mem_mb(wildcards, input, attempt, threads):
    _require(input.pool)
    return job_resources.task_memory_mb(
        CLUSTER,
        params=_model_params(),
        image_size=PLAN.benchmark["image_size"],
        batch_size=PLAN.model.pretrain["batch_size"],
        data_rows=_manifest_rows(input.pool, "train"),
        loader_workers=job_resources.data_workers("auto", threads, True),
        attempt=attempt,
    )


def pretrain_runtime(wildcards, attempt):
    return CLUSTER.pretrain_runtime * attempt


def merge_mem_mb(wildcards, input, attempt):
    # Merges stream tensor by tensor: the merged model, one input model and the operator's work tensors.
    _require(*input)  # evaluated when the job is ready: a dry run does not construct the model for this
    return math.ceil((CLUSTER.base_memory_mb * 2**20 + 4 * 4 * _model_params()) / 2**20) * attempt


# ---- report and export ---------------------------------------------------------------------------------------


def report_labels(figure, run="all runs", method="all methods"):
    """The labels of a report item (workflow/rules/report.smk)."""
    return {"figure": figure, "run": run, "method": method}


def run_methods(runs):
    return ", ".join(sorted({PLAN.runs[r].method for r in runs}))


def comparison_runs(comparison):
    return PLAN.figures["comparisons"][comparison]["runs"]


def run_config_inputs(wildcards):
    """The run's budget (its steps per task), for runs that train (workflow/rules/export.smk)."""
    return {"budget": RUN_BUDGET.format(run=wildcards.run)} if PLAN.runs[wildcards.run].updates_weights else {}
