"""From a validated config to the experiment plan: the registry, the base model, the streams and the runs.

Everything here is checked before any job runs, so a bad config fails in the Snakefile (and in a dry run) with
one message naming the key and value at fault. The Snakefile's input functions and every stage read their
settings from this plan, never from the raw config.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

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
    "warmup_fraction": 0.1,
    "min_lr_ratio": 1e-3,
    "grad_clip": 1.0,
    "schedule": "cosine",
    "threads": 1,
    "mixture": {"pretrain": 0.33, "update": 0.34, "buffer": 0.33},
}
MIXTURE_SOURCES = ("pretrain", "update", "buffer")
DATASET_NAME = re.compile(r"[A-Za-z0-9_-]+")


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

    def task_spec(self, stream: Stream, task: int) -> dict[str, Any]:
        """Everything that determines the update of ``task``: its Snakemake params, so a change reruns it.

        Deliberately not the stream's length: an update sees its own task and the past (the buffer's history),
        never the future, so a stream that grows leaves every finished update valid.
        """
        return {
            "run": self.name,
            "method": self.method,
            "method_options": dict(self.method_options),
            "training": dict(self.training),
            "seed": self.seed,
            "task": task,
            "entries": list(stream.task(task)),
            "history": stream.history_digest(task),
        }


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

    @property
    def pool_dataset(self) -> str | None:
        return _pool_of(self.registry)

    def stream_of(self, run: str) -> Stream:
        return self.streams[self.runs[run].stream]

    def eval_tasks(self, run: str) -> list[int]:
        return list(range(1, self.stream_of(run).num_tasks + 1))

    def is_full_eval(self, run: str, task: int) -> bool:
        """Full test sets before the stream (task 0) and after the last task; the fixed subset in between."""
        return task == 0 or task == self.stream_of(run).num_tasks


def _load_mini_registry(benchmark: Mapping[str, Any]) -> dict[str, DatasetSpec]:
    from fomoflux.data.mini import mini_registry

    registry = mini_registry(image_size=benchmark["image_size"])
    chosen = benchmark.get("datasets", "all")
    if chosen == "all":
        return registry
    unknown = [n for n in chosen if n not in registry]
    if unknown:
        raise ConfigError(f"benchmark.datasets: unknown mini-benchmark dataset(s) {unknown} (known: {sorted(registry)})")
    return {n: registry[n] for n in registry if n in chosen}


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


def _check_method(run: str, method: str, options: Mapping[str, Any]) -> bool:
    from fomoflux.methods import get_method

    try:
        instance = get_method(method, dict(options))
    except ConfigError as err:
        raise ConfigError(f"runs.{run}: {err}") from None
    return bool(instance.updates_weights)


def build_plan(config: Mapping[str, Any], workdir: str | Path = ".") -> Plan:
    """Turn a schema-validated config (defaults filled) into a Plan, checking every cross-reference."""
    workdir = Path(workdir)
    benchmark = config.get("benchmark", {})
    registry = _load_mini_registry(benchmark)
    mini_names = tuple(registry)
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
    if pretrained_file is not None and not (workdir / pretrained_file).is_file():
        raise ConfigError(f"model.pretrained.file: checkpoint {pretrained_file} does not exist")
    pretrain = pretrained.get("pretrain")
    if pretrain is not None:
        pool = pretrain.get("dataset", "pool")
        if pool not in registry or registry[pool].role != "pretraining":
            raise ConfigError(f"model.pretrained.pretrain.dataset: {pool!r} is not a pretraining dataset of the registry")
    model = ModelPlan(model_cfg["name"], model_cfg["arch"], model_config_path, pretrained_file, pretrain)

    streams = {name: build_stream(name, cfg, registry) for name, cfg in config["streams"].items()}

    mixtures = config.get("mixtures", {})
    base_training = {**TRAINING_DEFAULTS, **config.get("training", {})}
    runs: dict[str, RunPlan] = {}
    for name, raw in config["runs"].items():
        where = f"runs.{name}"
        stream = raw.get("stream")
        if stream is None:
            if len(streams) != 1:
                raise ConfigError(f"{where}: name a 'stream' (the config defines {sorted(streams)})")
            stream = next(iter(streams))
        if stream not in streams:
            raise ConfigError(f"{where}.stream: unknown stream {stream!r} (defined: {sorted(streams)})")
        training = {**base_training, **raw.get("training", {})}
        training["mixture"] = _resolve_mixture(training["mixture"], mixtures, f"{where}.training")
        if training["mixture"]["pretrain"] > 0 and _pool_of(registry) is None:
            raise ConfigError(f"{where}.training.mixture: replays the pretraining pool, but no pretraining dataset is registered")
        options = raw.get("method_options", {})
        updates = _check_method(name, raw["method"], options)
        runs[name] = RunPlan(name, raw["method"], options, stream, int(raw.get("seed", 0)), training, updates)

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

    return Plan(
        results=Path(config.get("results", "results")),
        registry=registry,
        model=model,
        streams=streams,
        runs=runs,
        eval_datasets=tuple(eval_datasets),
        benchmark=benchmark,
        evaluation=evaluation,
        figures=config.get("figures", {}),
        mini_datasets=mini_names,
    )


def _pool_of(registry: Mapping[str, DatasetSpec]) -> str | None:
    return next((n for n, s in registry.items() if s.role == "pretraining"), None)

