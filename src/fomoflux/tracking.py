"""Experiment tracking: TensorBoard and Weights & Biases views of a run's training and evaluation.

Config (``tracking:``, off by default)::

    tracking:
      tensorboard: true                 # event files under <results>/tracking/<run>/ (needs the tensorboard package)
      wandb: {project: fomo, entity: null, mode: offline}   # wandb package; project null = off

One tracked run per fomoflux run. Its training curves (loss, contrastive loss, penalty, lr, gradient norm, logit
scale, data wait) come from the task updates, every ``training.log_every`` steps, at the global step
``(task - 1) * steps_per_task + step``, so the tasks of a run follow each other on one axis; its evaluation (A_KA,
A_ZS, GM and every dataset's metric after each task, task 0 = the base model) comes from the run's aggregation,
indexed by task (``eval/*`` tags; in W&B against the ``task`` metric).

Tracking is a side effect, not a declared output: nothing in the DAG reads it, the setting is in no job's params
(switching it on or off reruns nothing, and invalidates no result), and only jobs that run while it is on are
recorded. Each job writes its own TensorBoard event file, named by what wrote it (``...task003``, ``...eval``), and
replaces the files of an earlier run of the same job, so a rerun task does not show twice; a task resumed from a
mid-task snapshot keeps the file of its interrupted attempt. In W&B, the jobs of one fomoflux run join one W&B run
(one id, kept in ``wandb/run_id`` of the run's tracking folder, ``resume="allow"``); offline runs are uploaded with
``wandb sync <results>/tracking/<run>/wandb/offline-run-*``. W&B keeps a history in step order, so there a rerun
task's rows (steps already logged) are dropped, and evaluation rows take the steps after the last logged one
(charted against ``task``).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fomoflux.errors import ConfigError

__all__ = [
    "TRACKING_DEFAULTS",
    "Tracker",
    "TrackingTarget",
    "check_tracking_packages",
    "run_settings",
    "tracking_dir",
    "tracking_enabled",
    "tracking_settings",
]

WANDB_MODES = ("online", "offline")
TRACKING_DEFAULTS: dict[str, Any] = {
    "tensorboard": False,
    "wandb": {"project": None, "entity": None, "mode": "offline"},
}
# What of a training-log row (fomoflux.train.loop.LOG_SCHEMA) is tracked, under train/<name>.
TRAIN_SCALARS = ("loss", "contrastive_loss", "penalty", "lr", "grad_norm", "logit_scale", "data_wait_s")
EVENT_PREFIX = "events.out.tfevents."


def tracking_settings(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``tracking:`` config with defaults filled in, checked (ConfigError naming the key)."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(TRACKING_DEFAULTS))
    if unknown:
        raise ConfigError(f"tracking: unknown key {unknown[0]!r} (known: {', '.join(TRACKING_DEFAULTS)})")
    tensorboard = raw.get("tensorboard", False)
    if not isinstance(tensorboard, bool):
        raise ConfigError(f"tracking.tensorboard: must be true or false, got {tensorboard!r}")
    wandb = {**TRACKING_DEFAULTS["wandb"], **(raw.get("wandb") or {})}
    unknown = sorted(set(wandb) - set(TRACKING_DEFAULTS["wandb"]))
    if unknown:
        raise ConfigError(f"tracking.wandb: unknown key {unknown[0]!r} (known: project, entity, mode)")
    if wandb["mode"] not in WANDB_MODES:
        raise ConfigError(f"tracking.wandb.mode: {wandb['mode']!r} is not one of {', '.join(WANDB_MODES)}")
    for key in ("project", "entity"):
        if wandb[key] is not None and not (isinstance(wandb[key], str) and wandb[key]):
            raise ConfigError(f"tracking.wandb.{key}: must be a non-empty string or null, got {wandb[key]!r}")
    return {"tensorboard": tensorboard, "wandb": wandb}


def check_tracking_packages(settings: Mapping[str, Any]) -> None:
    """ConfigError naming the key when a tracker that is on has no package installed (checked when the DAG is built,
    so a run does not fail in its first training job)."""
    import importlib.util

    if settings.get("tensorboard") and importlib.util.find_spec("tensorboard") is None:
        raise _missing_package("tracking.tensorboard", "tensorboard")
    if (settings.get("wandb") or {}).get("project") is not None and importlib.util.find_spec("wandb") is None:
        raise _missing_package("tracking.wandb.project", "wandb")


def tracking_enabled(settings: Mapping[str, Any]) -> bool:
    return bool(settings.get("tensorboard")) or (settings.get("wandb") or {}).get("project") is not None


def tracking_dir(results: str | Path, run: str) -> Path:
    """Where a run's tracking goes: ``<results>/tracking/<run>`` (``tensorboard --logdir <results>/tracking``)."""
    return Path(results) / "tracking" / run


def run_settings(plan, run: str, budget: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved settings of one run (``runs/<run>/config.json``, the ``runs`` table, the tracker's config):
    method and all its options, the stream, the seed, every training setting with the defaults filled in, and the
    steps per task of its compute budget (``budget``: the run's budget.json; None for a run that does not train)."""
    spec = plan.runs[run]
    stream = plan.streams[spec.stream]
    return {
        "run": run,
        "method": spec.method,
        "method_options": dict(spec.method_options),
        "stream": spec.stream,
        "stream_ordering": stream.config.get("ordering"),
        "tasks": stream.num_tasks,
        "seed": spec.seed,
        "updates_weights": spec.updates_weights,
        "training": _plain(spec.training),
        "steps_per_task": int(budget["steps"]) if budget is not None else 0,
        "budget": dict(budget) if budget is not None else None,
        "model": {"name": plan.model.name, "arch": plan.model.arch},
        "benchmark": plan.benchmark.get("name", "mini"),
        "validation": bool(plan.validation["enabled"]),
    }


def _plain(value: Any) -> Any:
    """JSON-ready copy (tuples -> lists, mappings -> dicts)."""
    return json.loads(json.dumps(value, default=str))


def _missing_package(key: str, package: str) -> ConfigError:
    return ConfigError(f"{key} is on, but the {package!r} package is not installed: `pip install {package}` into "
                       f"this environment, or switch {key} off")


def _wandb_id(run: str, folder: Path) -> str:
    """The W&B run id every job of the fomoflux run uses: made by the first job (the run's name and a random
    suffix, so two results folders with a run of the same name are two W&B runs) and kept in ``wandb/run_id`` of
    the run's tracking folder, which every job finds, on whatever node and under whatever mount path it runs.
    W&B ids are at most 64 characters, none of / \\ # ? % :."""
    from fomoflux.io import write_text

    record = folder / "wandb" / "run_id"
    if record.is_file() and record.read_text().strip():
        return record.read_text().strip()
    run_id = f"{re.sub(r'[^A-Za-z0-9_.-]', '', run)[:50]}-{uuid.uuid4().hex[:10]}"
    write_text(record, run_id + "\n")
    return run_id


class _TensorBoard:
    def __init__(self, folder: Path, part: str, fresh: bool) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing_package("tracking.tensorboard", "tensorboard") from None
        folder.mkdir(parents=True, exist_ok=True)
        if fresh:
            # An earlier run of the same job (a rerun task, a rebuilt aggregation): its points would show twice.
            for old in folder.glob(f"{EVENT_PREFIX}*.{part}"):
                old.unlink(missing_ok=True)
        self.writer = SummaryWriter(log_dir=str(folder), filename_suffix=f".{part}")

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def text(self, tag: str, text: str) -> None:
        self.writer.add_text(tag, text)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class _Wandb:
    """One job's part of the fomoflux run's W&B run.

    W&B keeps a run's history in step order and drops a row whose step is below the run's last one (also when
    offline runs are synced). Training rows have their global step, increasing from task to task; evaluation rows,
    logged once all tasks are trained, get the steps after the highest step any job of the run has logged (kept in
    ``wandb/last_step``) and are charted against their ``task`` instead.
    """

    def __init__(self, settings: Mapping[str, Any], run: str, folder: Path, config: Mapping[str, Any] | None) -> None:
        try:
            import wandb
        except ImportError:
            raise _missing_package("tracking.wandb.project", "wandb") from None
        (folder / "wandb").mkdir(parents=True, exist_ok=True)
        self.last_step_file = folder / "wandb" / "last_step"
        self.last_step = self._recorded_last_step()
        self.run = wandb.init(project=settings["project"], entity=settings["entity"], mode=settings["mode"],
                              id=_wandb_id(run, folder), name=run, resume="allow", dir=str(folder),
                              config=dict(config or {}))
        self.run.define_metric("task")
        self.run.define_metric("eval/*", step_metric="task")

    def _recorded_last_step(self) -> int:
        try:
            return int(self.last_step_file.read_text().strip())
        except (OSError, ValueError):
            return -1

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)
        self.last_step = max(self.last_step, step)

    def task_scalars(self, values: Mapping[str, float], task: int) -> None:
        step = self.last_step + 1
        self.run.log({**values, "task": task}, step=step)
        self.last_step = step

    def text(self, tag: str, text: str) -> None:
        pass  # the config went to wandb.init

    def close(self) -> None:
        from fomoflux.io import write_text

        self.run.finish()
        write_text(self.last_step_file, f"{max(self.last_step, self._recorded_last_step())}\n")


@dataclass(frozen=True)
class TrackingTarget:
    """What one job tracks, as plain data (it travels to data-parallel workers): the resolved ``tracking:``
    settings, the fomoflux run, its tracking folder, which part of the run this job is (``task003``, ``eval``: the
    event file's suffix), the global step of its first step, and the run's settings (shown by the trackers)."""

    settings: Mapping[str, Any]
    run: str
    folder: str
    part: str
    step_offset: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)

    def open(self, *, fresh: bool = True) -> Tracker | None:
        """The tracker, or None when tracking is off. ``fresh``: the job starts over (its earlier files go)."""
        return Tracker(self, fresh=fresh) if tracking_enabled(self.settings) else None


class Tracker:
    """The open backends of one job (:meth:`TrackingTarget.open`)."""

    def __init__(self, target: TrackingTarget, *, fresh: bool = True) -> None:
        self.target = target
        folder = Path(target.folder)
        self.backends: list[Any] = []
        try:
            if target.settings.get("tensorboard"):
                self.backends.append(_TensorBoard(folder, target.part, fresh))
            wandb = target.settings.get("wandb") or {}
            if wandb.get("project") is not None:
                self.backends.append(_Wandb(wandb, target.run, folder, target.config))
        except BaseException:
            self.close()
            raise

    def log_training(self, row: Mapping[str, Any]) -> None:
        """One training-log row (``LOG_SCHEMA``) at global step ``step_offset + row["step"]``."""
        values = {f"train/{name}": float(row[name]) for name in TRAIN_SCALARS
                  if row.get(name) is not None and not math.isnan(float(row[name]))}
        step = self.target.step_offset + int(row["step"])
        for backend in self.backends:
            backend.scalars(values, step)

    def log_evaluation(self, matrix, summary) -> None:
        """The run's evaluation after every task: ``summary`` (A_KA, A_ZS, GM per task) and the task x dataset
        ``matrix`` (``fomoflux.metrics``), as ``eval/<name>`` and ``eval/<dataset>/<metric>`` by task."""
        by_task: dict[int, dict[str, float]] = {}
        for row in summary.iter_rows(named=True):
            by_task.setdefault(int(row["task"]), {}).update(
                {f"eval/{key}": float(row[key]) for key in ("A_KA", "A_ZS", "GM") if row.get(key) is not None})
        for row in matrix.iter_rows(named=True):
            by_task.setdefault(int(row["task"]), {})[f"eval/{row['dataset']}/{row['metric']}"] = float(row["value"])
        for task in sorted(by_task):
            values = {k: v for k, v in by_task[task].items() if not math.isnan(v)}
            for backend in self.backends:
                if hasattr(backend, "task_scalars"):
                    backend.task_scalars(values, task)
                else:
                    backend.scalars(values, task)

    def log_config(self) -> None:
        text = "```json\n" + json.dumps(_plain(self.target.config), indent=2, sort_keys=True) + "\n```"
        for backend in self.backends:
            backend.text("run_config", text)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends = []

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
