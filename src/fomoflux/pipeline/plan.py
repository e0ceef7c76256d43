"""From a validated config to the experiment plan: the registry, the base model, the streams and the runs.

Everything here is checked before any job runs, so a bad config fails in the Snakefile (and in a dry run) with
one message naming the key and value at fault. The Snakefile's input functions and every stage read their
settings from this plan, never from the raw config.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from fomoflux.data.registry import DatasetSpec, spec_from_config
from fomoflux.errors import ConfigError
from fomoflux.stream import Stream, build_stream

# Training defaults of the embedded mini benchmark; a config's `training:` overrides them, a run's `training:`
# overrides those. (The paper's values for ViT-B/16 are in config/fomo_in_flux.yaml.)
TRAINING_DEFAULTS: dict[str, Any] = {
    "steps": 40,
    "batch_size": 128,
    "lr": 1e-4,
    "weight_decay": 0.2,
    # AdamW as the reference builds it (fomoflux.train.optimizer); the plan fills in betas and eps.
    "optimizer": {"convention": "reference"},
    "warmup_fraction": 0.1,
    "min_lr_ratio": 1e-3,
    "grad_clip": 1.0,
    "schedule": "cosine",
    "schedule_options": {},
    "budget": "maf",
    "threads": 1,
    "gpus": 1,
    "precision": "auto",
    "mixture": {"pretrain": 0.33, "update": 0.34, "buffer": 0.33},
    "buffer": {"policy": "all", "size": None},
    # The paper's training transform (RandomResizedCrop, bicubic); kind "none" trains on the evaluation transform.
    "augmentation": {"kind": "random_resized_crop", "scale": [0.9, 1.0], "ratio": [0.75, 4 / 3]},
    "data_workers": "auto",
    "log_every": 10,
    "compile": False,
    "grad_checkpointing": False,
    "resume": {"every_minutes": 10.0, "every_steps": 0},
}
# Training keys that change how a task update runs, never what it computes (on the CPU, bit for bit; on GPUs up to
# kernel choice): they never enter a task's spec, so changing them retrains nothing.
OPERATIONAL_TRAINING_KEYS = frozenset({"data_workers", "log_every", "compile", "grad_checkpointing", "resume"})
MIXTURE_SOURCES = ("pretrain", "update", "buffer")
# How a run's steps per task follow from full fine-tuning's `steps` (fomoflux.budget): equal Memory-Adjusted FLOPs,
# equal FLOPs, the configured steps as they are, or the run's entry of `budget.table` (e.g. the paper's Tab. 4).
BUDGET_MODES = ("maf", "flops", "fixed", "table")
# The modes that compare step profiles (the others need none).
PROFILED_BUDGET_MODES = ("maf", "flops")
DATASET_NAME = re.compile(r"[A-Za-z0-9_-]+")
RUN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class ModelPlan:
    name: str
    arch: str
    config: str | None
    pretrained_file: str | None
    pretrain: Mapping[str, Any] | None

    @property
    def pretrained_by_pipeline(self) -> bool:
        return self.pretrain is not None


@dataclass(frozen=True)
class RunPlan:
    name: str
    method: str
    method_options: Mapping[str, Any]
    stream: str
    seed: int
    training: Mapping[str, Any]
    updates_weights: bool
    # What the method instance tells the DAG (fomoflux.methods): the options training depends on, whether state
    # crosses tasks, where a task starts and what is deployed, and the settings of each merge it needs.
    training_options: Mapping[str, Any] = field(default_factory=dict)
    keeps_state: bool = False
    init_from: str = "latest"
    deploy_from: str = "latest"
    merges: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The step whose cost the budget profiles: a merging method's update is plain fine-tuning.
    profile_method: str = ""
    profile_options: Mapping[str, Any] = field(default_factory=dict)

    def task_spec(self, stream: Stream, task: int) -> dict[str, Any]:
        """Everything that determines the update of ``task``: its Snakemake params, so a change reruns it.

        Deliberately not the stream's length: an update sees its own task and the past (the buffer's history),
        never the future, so a stream that grows leaves every finished update valid. Deploy-only merge settings
        are not here either (they are the merge jobs' params).
        """
        spec = {
            "run": self.name,
            "method": self.method,
            "method_options": dict(self.training_options),
            "training": _spec_training(self.training),
            "seed": self.seed,
            "task": task,
        }
        if stream.ordered_by_plan:
            spec.update(entries=list(stream.task(task)), history=stream.history_digest(task))
        else:
            # Ordered by a stage: the task reads its classes from the stream's tasks.json (an input, so a new order
            # reruns it); what the order is computed from is the stream's definition.
            spec.update(entries=None, stream=stream.name, stream_definition=stream.definition_digest())
        return spec

    def profile_key(self) -> str:
        """Names the cost profile of this run's training step: equal for runs whose step costs the same."""
        return profile_key(self.profile_method or self.method, self.profile_options, self.training["batch_size"])


# Training keys added after results existed: at these values they reproduce what those results were made with, so
# they enter a task's spec only when set otherwise (adding a key must not retrain every finished task).
_SPEC_DEFAULTS_OMITTED = {"gpus": 1, "precision": "auto"}


def _spec_training(training: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in training.items() if k not in OPERATIONAL_TRAINING_KEYS
            and not (k in _SPEC_DEFAULTS_OMITTED and v == _SPEC_DEFAULTS_OMITTED[k])}


def profile_key(method: str, options: Mapping[str, Any], batch_size: int) -> str:
    import hashlib
    import json

    blob = json.dumps({"method": method, "options": options, "batch": batch_size}, sort_keys=True, default=str)
    return f"{method}-b{batch_size}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Plan:
    results: Path
    registry: Mapping[str, DatasetSpec]
    model: ModelPlan
    streams: Mapping[str, Stream]
    runs: Mapping[str, RunPlan]
    eval_datasets: tuple[str, ...]
    benchmark: Mapping[str, Any]
    evaluation: Mapping[str, Any]
    figures: Mapping[str, Any]
    mini_datasets: tuple[str, ...] = field(default=())
    budget: Mapping[str, Any] = field(default_factory=lambda: {"memory": "counted", "extra_pass_samples": None,
                                                               "table": {}})
    pool: str | None = None
    validation: Mapping[str, Any] = field(default_factory=lambda: {"enabled": False, "fraction": 0.1, "seed": 0})
    # Files the config names that are not there (a local checkpoint, local dataset copies): reported in one message.
    missing: tuple[str, ...] = ()
    # `tracking:` (fomoflux.tracking), defaults filled in. Deliberately in no task spec or job param: tracking is a
    # side effect, and switching it on or off must rerun (and invalidate) nothing.
    tracking: Mapping[str, Any] = field(default_factory=lambda: {"tensorboard": False, "wandb": {
        "project": None, "entity": None, "mode": "offline"}})

    @cached_property
    def profiles(self) -> dict[str, dict[str, Any]]:
        """Every step profile the runs' budgets need, by key: what to measure."""
        out: dict[str, dict[str, Any]] = {}
        for run in self.runs.values():
            if not run.updates_weights or run.training["budget"] not in PROFILED_BUDGET_MODES:
                continue
            batch = run.training["batch_size"]
            out[run.profile_key()] = {"method": run.profile_method, "options": dict(run.profile_options),
                                      "batch_size": batch}
            out[self.reference_profile_key(run.name)] = {"method": "finetune", "options": {}, "batch_size": batch}
        return out

    def reference_profile_key(self, run: str) -> str:
        return profile_key("finetune", {}, self.runs[run].training["batch_size"])

    def budget_settings(self, run: str) -> dict[str, Any]:
        """What a run's budget is computed from (rule run_budget's params): full fine-tuning's steps, the mode and
        the batch size, and in mode ``table`` the run's steps per task from ``budget.table``."""
        training = self.runs[run].training
        settings = {k: training[k] for k in ("steps", "budget", "batch_size")}
        if training["budget"] == "table":
            settings["table_steps"] = int(self.budget["table"][run])
        return settings

    @property
    def pool_dataset(self) -> str | None:
        return self.pool

    def missing_report(self) -> str:
        """One readable message listing every missing input file, or "" when nothing is missing."""
        if not self.missing:
            return ""
        lines = "\n".join(f"  - {item}" for item in self.missing)
        return f"{len(self.missing)} input(s) named in the config are missing:\n{lines}"

    def stream_of(self, run: str) -> Stream:
        return self.streams[self.runs[run].stream]

    def eval_tasks(self, run: str) -> list[int]:
        """The tasks after which a run's checkpoint is scored on the fixed subset (its trajectory, with the base
        model as task 0)."""
        return list(range(1, self.stream_of(run).num_tasks + 1))

    def full_eval_task(self, run: str) -> int:
        """The one task after which a run is also scored on the full test sets: its last (the base model's full
        evaluation is the other full-test-set point)."""
        return self.stream_of(run).num_tasks


def _load_benchmark_registry(benchmark: Mapping[str, Any]) -> dict[str, DatasetSpec]:
    """The registry of ``benchmark.name``: the mini benchmark's generated datasets or the 63 FoMo-in-Flux datasets."""
    chosen = benchmark.get("datasets", "all")
    if benchmark.get("name", "mini") == "fomo_in_flux":
        from fomoflux.data.fomo_in_flux import fif_registry

        fif = benchmark.get("fomo_in_flux", {})
        sources: dict[str, dict[str, Any]] = {}
        for name, url in fif.get("urls", {}).items():
            sources[name] = {"download": {"url": url, "format": "fomo_in_flux"}}
        for name, path in fif.get("local", {}).items():
            if name in sources:
                raise ConfigError(f"benchmark.fomo_in_flux: dataset {name!r} has both a mirror URL and a local copy")
            sources[name] = {"local": {"path": path, "format": "fomo_in_flux"}}
        try:
            registry = fif_registry(chosen, sources=sources)
        except ConfigError as err:
            raise ConfigError(f"benchmark: {err}") from None
        for name, digest in fif.get("sha256", {}).items():
            if name not in registry:
                raise ConfigError(f"benchmark.fomo_in_flux.sha256: unknown dataset {name!r}")
            spec = registry[name]
            if spec.obtained_by == "download":
                registry[name] = replace(spec, source={"download": {**spec.source["download"], "sha256": digest}})
        if fif.get("annotations"):
            for name, spec in registry.items():
                kind = spec.obtained_by
                registry[name] = replace(spec, source={kind: {**spec.source[kind], "annotations": fif["annotations"]}})
        return registry

    from fomoflux.data.mini import mini_registry

    registry = mini_registry(image_size=benchmark["image_size"])
    if chosen == "all":
        return registry
    unknown = [n for n in chosen if n not in registry]
    if unknown:
        raise ConfigError(
            f"benchmark.datasets: unknown mini-benchmark dataset(s) {unknown} (known: {sorted(registry)})"
        )
    return {n: registry[n] for n in registry if n in chosen}


def _missing_files(registry: Mapping[str, DatasetSpec], model: ModelPlan, workdir: Path) -> list[str]:
    missing = []
    if model.pretrained_file is not None and not (workdir / model.pretrained_file).is_file():
        missing.append(f"model.pretrained.file: checkpoint {model.pretrained_file} (the base model's weights)")
    for name, spec in registry.items():
        if spec.obtained_by == "local":
            path = spec.source["local"]["path"]
            if not (workdir / path).exists():
                missing.append(f"dataset {name}: local copy {path}")
        if spec.obtained_by == "webdataset":
            from fomoflux.data.pool import expand_shards
            from fomoflux.errors import DataError

            try:
                expand_shards(spec.source["webdataset"]["urls"], workdir)
            except (DataError, ConfigError) as err:
                missing.append(f"dataset {name}: webdataset shards: {err}")
        annotations = spec.source[spec.obtained_by].get("annotations") if spec.obtained_by in ("local", "download") \
            else None
        if annotations and not (workdir / annotations).is_dir():
            missing.append(f"dataset {name}: annotation folder {annotations}")
    return sorted(set(missing), key=missing.index)


def _resolve_mixture(value: Any, mixtures: Mapping[str, Any], where: str) -> dict[str, float]:
    if isinstance(value, str):
        if value not in mixtures:
            raise ConfigError(f"{where}.mixture: unknown mixture {value!r} (defined: {sorted(mixtures) or 'none'})")
        value = mixtures[value]
    ratios = {source: float(value.get(source, 0.0)) for source in MIXTURE_SOURCES}
    total = sum(ratios.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"{where}.mixture: ratios {ratios} sum to {total:g}, not 1")
    return ratios


def _method_plan(run: str, method: str, options: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """Build the run's method once, check it against the model's shapes, and keep what the DAG needs."""
    from fomoflux.methods import get_method
    from fomoflux.methods.merging import MergeMethod

    try:
        instance = get_method(method, dict(options))
        if model is not None:
            instance.check_model(model)
    except ConfigError as err:
        raise ConfigError(f"runs.{run}: {err}") from None
    merges: dict[str, Any] = {}
    init_from = deploy_from = "latest"
    profile_method, profile_options = method, instance.training_options()
    if isinstance(instance, MergeMethod):
        init_from, deploy_from = instance.init_from, instance.deploy_from
        merges = {kind: instance.merge_spec(kind) for kind in instance.merge_kinds()}
        profile_method, profile_options = "finetune", {}
    return {
        "updates_weights": bool(instance.updates_weights),
        "training_options": instance.training_options(),
        "keeps_state": instance.keeps_state,
        "init_from": init_from,
        "deploy_from": deploy_from,
        "merges": merges,
        "profile_method": profile_method,
        "profile_options": profile_options,
    }


def _meta_model(model: ModelPlan, workdir: Path):
    """The base architecture on device "meta" (shapes only, no memory): what methods check their options against."""
    from fomoflux.model import create_model, register_architecture

    try:
        if model.config:
            register_architecture(workdir / model.config)
        return create_model(model.arch, device="meta")[0]
    except ConfigError as err:
        raise ConfigError(f"model.arch: {err}") from None


def _model_check_record(model: ModelPlan, workdir: Path, config: Mapping[str, Any]) -> Path:
    """Where a passed check of the runs' method options against the model's shapes is recorded: keyed by the
    architecture (and its JSON config's content), every run's and grid's method and options, and the package
    version, so any change to one of them checks again."""
    import hashlib
    import importlib.util

    model_config = (workdir / model.config).read_text() if model.config else ""
    # The checks are code in the methods package: any edit there checks again.
    methods_dir = Path(next(iter(importlib.util.find_spec("fomoflux.methods").submodule_search_locations)))
    code = hashlib.sha256(b"".join(f.read_bytes() for f in sorted(methods_dir.glob("*.py")))).hexdigest()
    blob = json_compact({
        "arch": model.arch, "model_config": model_config, "code": code,
        **{
            part: {name: [raw.get("method"), raw.get("method_options", {})] for name, raw in entries.items()}
            for part, entries in (("runs", config.get("runs", {})), ("grids", config.get("grids", {})))
        },
    })
    return workdir / ".snakemake" / "fomoflux" / "model_checks" / hashlib.sha256(blob.encode()).hexdigest()[:20]


def _sweep_values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json_compact(value)
    return re.sub(r"[^A-Za-z0-9_.-]+", "", text)


def json_compact(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def expand_grids(grids: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Runs from ``grids``: each grid is a run whose values may be lists; the runs are the product of all lists.

    Swept keys: ``method``, ``stream``, ``seed``, and every key of ``method_options`` and ``training``. A run is
    named ``<grid>-<method>[-<key><value>...][-s<seed>]`` from its swept values (so a name says what differs).
    """
    import itertools

    runs: dict[str, dict[str, Any]] = {}
    for grid, raw in grids.items():
        axes: list[tuple[tuple[str, ...], list[Any]]] = []
        for key in ("method", "stream"):
            if key in raw:
                axes.append(((key,), _sweep_values(raw[key])))
        for section in ("method_options", "training"):
            for key, value in raw.get(section, {}).items():
                axes.append(((section, key), _sweep_values(value)))
        if "seed" in raw:
            axes.append((("seed",), _sweep_values(raw["seed"])))
        for path, values in axes:
            if not values:
                raise ConfigError(f"grids.{grid}.{'.'.join(path)}: an empty list sweeps nothing")
        for combo in itertools.product(*(values for _, values in axes)):
            run: dict[str, Any] = {"method_options": {}, "training": {}}
            parts = [grid]
            for (path, values), value in zip(axes, combo):
                if len(path) == 1:
                    run[path[0]] = value
                else:
                    run[path[0]][path[1]] = value
                if path == ("method",):
                    parts.append(_label(value))
                elif len(values) > 1:
                    short = "s" if path == ("seed",) else path[-1]
                    parts.append(f"{short}{_label(value)}")
            name = "-".join(parts)
            if name in runs:
                raise ConfigError(
                    f"grids.{grid}: two runs would be named {name!r}; give the swept values distinct labels"
                )
            runs[name] = run
    return runs


def build_plan(config: Mapping[str, Any], workdir: str | Path = ".", *, check_against_model: bool = True) -> Plan:
    """Turn a schema-validated config (defaults filled) into a Plan, checking every cross-reference.

    ``check_against_model``: check each method's options against the model's shapes (a shapes-only model, built with
    open_clip). The Snakefile does; jobs rebuilding the plan skip it, as the check passed when the DAG was built and
    importing open_clip costs seconds in every small job.
    """
    workdir = Path(workdir)
    benchmark = {"name": "mini", **config.get("benchmark", {})}
    registry = _load_benchmark_registry(benchmark)
    mini_names = tuple(registry) if benchmark["name"] == "mini" else ()
    for name, raw in config.get("datasets", {}).items():
        registry[name] = spec_from_config(name, raw)
    for name in registry:
        # Dataset names are path components beside the catalog file: no dots, no separators.
        if not DATASET_NAME.fullmatch(name):
            raise ConfigError(f"datasets: name {name!r} must match {DATASET_NAME.pattern}")

    model_cfg = config["model"]
    pretrained = model_cfg["pretrained"]
    model_config_path = model_cfg.get("config")
    if model_config_path and not (workdir / model_config_path).is_file():
        raise ConfigError(f"model.config: model config file {model_config_path} does not exist")
    pretrained_file = pretrained.get("file")
    pretrain = pretrained.get("pretrain")
    if pretrain is not None:
        pool = pretrain.get("dataset", "pool")
        if pool not in registry or registry[pool].role != "pretraining":
            raise ConfigError(
                f"model.pretrained.pretrain.dataset: {pool!r} is not a pretraining dataset of the registry"
            )
    model = ModelPlan(model_cfg["name"], model_cfg["arch"], model_config_path, pretrained_file, pretrain)

    streams = {name: build_stream(name, cfg, registry) for name, cfg in config["streams"].items()}
    pool = _choose_pool(registry, config.get("pool"))
    for name, stream in streams.items():
        if "pool" in stream.needs and pool is None:
            raise ConfigError(f"streams.{name}: concept_frequency counts concepts in the pretraining pool's captions, "
                              "but no pretraining dataset is registered")

    mixtures = config.get("mixtures", {})
    base_training = {**TRAINING_DEFAULTS, **config.get("training", {})}
    # Checking options against the model's shapes needs open_clip (seconds to import); a check that passed for the
    # same architecture and the same methods and options is remembered, so later dry runs skip it.
    check_record = _model_check_record(model, workdir, config) if check_against_model else None
    meta_model = _meta_model(model, workdir) if check_record is not None and not check_record.exists() else None
    declared = dict(config.get("runs", {}))
    for name, raw in expand_grids(config.get("grids", {})).items():
        if name in declared:
            raise ConfigError(f"grids: run {name!r} is also declared under runs")
        declared[name] = raw
    if not declared:
        raise ConfigError("runs: the config declares no run (neither under runs nor grids)")
    runs: dict[str, RunPlan] = {}
    for name, raw in declared.items():
        if not RUN_NAME.fullmatch(name):
            raise ConfigError(f"runs: name {name!r} must match {RUN_NAME.pattern}")
        where = f"runs.{name}"
        stream = raw.get("stream")
        if stream is None:
            if len(streams) != 1:
                raise ConfigError(f"{where}: name a 'stream' (the config defines {sorted(streams)})")
            stream = next(iter(streams))
        if stream not in streams:
            raise ConfigError(f"{where}.stream: unknown stream {stream!r} (defined: {sorted(streams)})")
        unknown = sorted(set(raw.get("training", {})) - set(TRAINING_DEFAULTS))
        if unknown:
            raise ConfigError(
                f"{where}.training: unknown key {unknown[0]!r} (known: {', '.join(sorted(TRAINING_DEFAULTS))})"
            )
        training = {**base_training, **raw.get("training", {})}
        training["mixture"] = _resolve_mixture(training["mixture"], mixtures, f"{where}.training")
        training["buffer"] = _check_buffer(training["buffer"], f"{where}.training.buffer")
        if training["mixture"]["pretrain"] > 0 and pool is None:
            raise ConfigError(
                f"{where}.training.mixture: replays the pretraining pool, but no pretraining dataset is registered"
            )
        if training["budget"] not in BUDGET_MODES:
            raise ConfigError(
                f"{where}.training.budget: {training['budget']!r} is not one of {', '.join(BUDGET_MODES)}"
            )
        training["optimizer"] = _resolve_optimizer(training["optimizer"], f"{where}.training.optimizer")
        _check_schedule(where, training)
        if "method" not in raw:
            raise ConfigError(f"{where}: no method given")
        options = raw.get("method_options", {})
        method = _method_plan(name, raw["method"], options, meta_model)
        oneshot = method["merges"].get("oneshot")
        if oneshot is not None and oneshot.get("weights") is not None:
            expected = streams[stream].num_tasks + (1 if oneshot.get("include_base") else 0)
            if len(oneshot["weights"]) != expected:
                raise ConfigError(
                    f"{where}.method_options.weights: {len(oneshot['weights'])} weights for {expected} merged models "
                    f"({streams[stream].num_tasks} tasks{' + θ0' if oneshot.get('include_base') else ''})"
                )
        runs[name] = RunPlan(name, raw["method"], options, stream, int(raw.get("seed", 0)), training, **method)
    budget = _budget_settings(config.get("budget", {}), runs)

    if meta_model is not None and check_record is not None:
        from fomoflux.io import write_text

        write_text(check_record, "checked\n")

    evaluation = config.get("evaluation", {})
    chosen = evaluation.get("datasets", "all")
    if chosen == "all":
        eval_datasets = [n for n, s in registry.items() if s.kind in ("classification", "retrieval")]
    else:
        for n in chosen:
            if n not in registry:
                raise ConfigError(f"evaluation.datasets: unknown dataset {n!r} (known: {', '.join(sorted(registry))})")
            if registry[n].kind == "pretraining":
                raise ConfigError(f"evaluation.datasets: {n!r} is the pretraining pool, it has no test set to evaluate")
        eval_datasets = list(chosen)

    figures = config.get("figures", {})
    for comparison, spec in figures.get("comparisons", {}).items():
        for run in spec["runs"]:
            if run not in runs:
                raise ConfigError(
                    f"figures.comparisons.{comparison}.runs: unknown run {run!r} (runs: {', '.join(runs)})"
                )

    return Plan(
        results=Path(config.get("results", "results")),
        registry=registry,
        model=model,
        streams=streams,
        runs=runs,
        eval_datasets=tuple(eval_datasets),
        benchmark=benchmark,
        evaluation=evaluation,
        figures=figures,
        mini_datasets=mini_names,
        budget=budget,
        pool=pool,
        validation={"enabled": False, "fraction": 0.1, "seed": 0, **config.get("validation", {})},
        missing=tuple(_missing_files(registry, model, workdir)),
        tracking=_tracking_settings(config.get("tracking"), check_packages=check_against_model),
    )


def _tracking_settings(raw: Mapping[str, Any] | None, *, check_packages: bool) -> dict[str, Any]:
    from fomoflux.tracking import check_tracking_packages, tracking_settings

    settings = tracking_settings(raw)
    if check_packages:
        check_tracking_packages(settings)
    return settings


def _resolve_optimizer(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    from fomoflux.train.optimizer import resolve_optimizer

    return resolve_optimizer(raw, where)


def _budget_settings(raw: Mapping[str, Any], runs: Mapping[str, RunPlan]) -> dict[str, Any]:
    """``budget:`` with defaults; every run in mode ``table`` must have its steps per task in ``budget.table``.

    Entries for runs not in table mode (or not declared) are unused, so one table can serve several configs."""
    budget = {"memory": "counted", "extra_pass_samples": None, **raw}
    table = dict(budget.get("table") or {})
    for run, steps in table.items():
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"budget.table.{run}: steps per task must be an integer >= 1, got {steps!r}")
    for name, run in runs.items():
        if run.updates_weights and run.training["budget"] == "table" and name not in table:
            listed = ", ".join(sorted(table)) or "none"
            raise ConfigError(f"runs.{name}.training.budget: 'table' takes the run's steps per task from "
                              f"budget.table, which has no entry {name!r} (entries: {listed})")
    budget["table"] = table
    return budget


def _check_schedule(where: str, training: Mapping[str, Any]) -> None:
    """Build the run's lr schedule once (first task) so a bad name, option or warmup fails before any job runs."""
    from fomoflux.train.schedule import make_schedule

    try:
        make_schedule(
            training["schedule"],
            total_steps=training["steps"],
            base_lr=training["lr"],
            warmup_fraction=training["warmup_fraction"],
            min_lr_ratio=training["min_lr_ratio"],
            **dict(training.get("schedule_options", {})),
        )
    except ConfigError as err:
        raise ConfigError(f"{where}.training: {err}") from None


def _choose_pool(registry: Mapping[str, DatasetSpec], chosen: str | None) -> str | None:
    """The replayed pretraining dataset: ``pool`` from the config, else the only one registered."""
    pools = [n for n, s in registry.items() if s.role == "pretraining"]
    if chosen is not None:
        if chosen not in pools:
            raise ConfigError(
                f"pool: {chosen!r} is not a pretraining dataset of the registry (those are: {pools or 'none'})"
            )
        return chosen
    if len(pools) > 1:
        raise ConfigError(
            f"pool: several pretraining datasets are registered ({', '.join(pools)}); name the replayed one"
        )
    return pools[0] if pools else None


def _check_buffer(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    from fomoflux.train.buffer import check_buffer

    try:
        return check_buffer({"policy": "all", "size": None, **raw})
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None

