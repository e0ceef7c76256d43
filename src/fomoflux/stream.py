"""Streams: an ordering of ``DATASET+++classname`` entries (the FoMo-in-Flux format) cut into tasks.

A stream is the concatenation of *segments*; each segment orders the classes of some datasets (seeded random
permutation, a FiF ordering file, or an explicit list). New data arriving for a deployed model is a new segment:
with a fixed ``classes_per_task`` it appends tasks and leaves every earlier task exactly as it was, so the pipeline
reruns only the new task updates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fomoflux.data.registry import DatasetSpec, split_entry
from fomoflux.errors import ConfigError


@dataclass(frozen=True)
class Stream:
    name: str
    entries: tuple[str, ...]
    tasks: tuple[tuple[str, ...], ...]

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def task(self, index: int) -> tuple[str, ...]:
        """Entries of task ``index`` (1-based: task 1 is the first update)."""
        return self.tasks[index - 1]

    def history_digest(self, index: int) -> str:
        """A digest of tasks 1..index-1 (the buffer's content when task ``index`` trains)."""
        digest = hashlib.sha256()
        for task in self.tasks[: index - 1]:
            digest.update(json.dumps(task).encode())
        return digest.hexdigest()[:16]

    def datasets_until(self, index: int) -> list[str]:
        """Datasets whose classes occur in tasks 1..index (what that task's update and buffer read)."""
        names = {split_entry(e)[0] for task in self.tasks[:index] for e in task}
        return sorted(names)


def adaptation_datasets(registry: Mapping[str, DatasetSpec]) -> list[str]:
    return [name for name, spec in registry.items() if spec.role == "adaptation"]


def _segment_datasets(segment: Mapping[str, Any], registry: Mapping[str, DatasetSpec], where: str) -> list[str]:
    chosen = segment.get("datasets", "all")
    if chosen == "all":
        return adaptation_datasets(registry)
    for name in chosen:
        if name not in registry:
            raise ConfigError(f"{where}.datasets: unknown dataset {name!r} (known: {', '.join(sorted(registry))})")
        if registry[name].role != "adaptation":
            raise ConfigError(f"{where}.datasets: {name!r} is an {registry[name].role} dataset, not an adaptation dataset")
    return list(chosen)


def read_ordering_file(path: str | Path) -> list[str]:
    """A FiF ordering file: one JSON list of ``DATASET+++classname`` strings."""
    try:
        with open(path) as handle:
            entries = json.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"stream ordering file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"stream ordering file {path} is not valid JSON: {err}") from None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ConfigError(f"stream ordering file {path} must hold a JSON list of 'DATASET+++classname' strings")
    return entries


def order_segment(segment: Mapping[str, Any], registry: Mapping[str, DatasetSpec], where: str) -> list[str]:
    ordering = segment.get("ordering")
    if ordering == "random":
        pool = [e for name in _segment_datasets(segment, registry, where) for e in registry[name].entries()]
        permutation = np.random.default_rng(int(segment.get("seed", 0))).permutation(len(pool))
        return [pool[i] for i in permutation]
    if ordering == "file":
        if "path" not in segment:
            raise ConfigError(f"{where}: ordering 'file' needs a 'path'")
        return read_ordering_file(segment["path"])
    if ordering == "entries":
        if "entries" not in segment:
            raise ConfigError(f"{where}: ordering 'entries' needs an 'entries' list")
        return list(segment["entries"])
    raise ConfigError(f"{where}.ordering: unknown ordering {ordering!r} (known: random, file, entries)")


def validate_entries(entries: Sequence[str], registry: Mapping[str, DatasetSpec], where: str) -> None:
    """Every entry names an adaptation dataset of the registry and one of its classes; no entry twice."""
    seen: set[str] = set()
    classes = {name: set(spec.classnames) for name, spec in registry.items()}
    for position, entry in enumerate(entries):
        dataset, classname = split_entry(entry)
        if dataset not in registry:
            raise ConfigError(f"{where}: entry {position} {entry!r}: unknown dataset {dataset!r}")
        if registry[dataset].role != "adaptation":
            raise ConfigError(f"{where}: entry {position} {entry!r}: {dataset!r} is not an adaptation dataset")
        if classname not in classes[dataset]:
            raise ConfigError(f"{where}: entry {position} {entry!r}: dataset {dataset!r} has no class {classname!r}")
        if entry in seen:
            raise ConfigError(f"{where}: entry {position} {entry!r} occurs twice in the stream")
        seen.add(entry)


def chunk(entries: Sequence[str], *, classes_per_task: int | None = None, tasks: int | None = None) -> list[tuple[str, ...]]:
    """Cut a stream into tasks by class count.

    ``tasks=T``: the paper's rule, ``len // T`` classes per task with the first ``len % T`` tasks taking one more.
    ``classes_per_task=k``: consecutive chunks of k (the last may be shorter); appending entries appends tasks.
    """
    if (classes_per_task is None) == (tasks is None):
        raise ConfigError("a stream needs exactly one of 'classes_per_task' or 'tasks'")
    if classes_per_task is not None:
        return [tuple(entries[i : i + classes_per_task]) for i in range(0, len(entries), classes_per_task)]
    if tasks > len(entries):
        raise ConfigError(f"a stream of {len(entries)} classes cannot be cut into {tasks} tasks")
    base, extra = divmod(len(entries), tasks)
    out, start = [], 0
    for t in range(tasks):
        size = base + (1 if t < extra else 0)
        out.append(tuple(entries[start : start + size]))
        start += size
    return out


def build_stream(name: str, cfg: Mapping[str, Any], registry: Mapping[str, DatasetSpec]) -> Stream:
    where = f"streams.{name}"
    if "segments" in cfg:
        if "ordering" in cfg:
            raise ConfigError(f"{where}: give either 'ordering' (one segment) or 'segments', not both")
        segments = [(f"{where}.segments[{i}]", seg) for i, seg in enumerate(cfg["segments"])]
    else:
        if "ordering" not in cfg:
            raise ConfigError(f"{where}: needs an 'ordering' (random, file, entries) or 'segments'")
        segments = [(where, cfg)]
    entries: list[str] = []
    for seg_where, segment in segments:
        entries.extend(order_segment(segment, registry, seg_where))
    if not entries:
        raise ConfigError(f"{where}: the stream has no entries")
    validate_entries(entries, registry, where)
    tasks = chunk(entries, classes_per_task=cfg.get("classes_per_task"), tasks=cfg.get("tasks"))
    return Stream(name=name, entries=tuple(entries), tasks=tuple(tasks))
