"""Streams: an ordering of ``DATASET+++classname`` entries (the FoMo-in-Flux format) cut into tasks.

Orderings (``streams.<name>.ordering``), each optionally ``reverse``-d:

- known when the plan is built (the DAG lists each task's classes): ``random`` (seeded), ``dataset_incremental``
  (each dataset one contiguous block, datasets by release year), ``time_incremental`` (datasets by release year, the
  classes of same-year datasets interleaved), ``file`` (a FiF ordering file: ``path`` to one of the paper's 29 or
  of the user's, or ``release: random_sequence_1``, the paper's stream, shipped with fomoflux; ``complete`` also
  requires every streamed class of the segment's datasets) and ``entries`` (an explicit list);
- computed by the ``build_stream`` stage from data (the DAG orders them after what they read):
  ``concept_frequency`` (how often each class's concept occurs in the pretraining pool's captions, rare first),
  ``easy_to_hard`` (the base model's per-class zero-shot accuracy, easy first) and ``concept_similarity`` (a
  nearest-neighbour chain over the base model's text embeddings of the class prompts).

Chunking: by class count (``tasks: T``, the paper's rule, or ``classes_per_task: k``) or, with ``chunk_by: samples``
and ``tasks: T``, into T contiguous chunks of about equal training-sample counts (read from the manifests, so also a
stage). The number of tasks is always known when the plan is built, so the DAG's shape never waits for data.

A stream may be the concatenation of *segments* of plan-time orderings: new data arriving for a deployed model is a
new segment; with a fixed ``classes_per_task`` it appends tasks and leaves every earlier task exactly as it was, so
the pipeline reruns only the new task updates.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from fomoflux.data.registry import DatasetSpec, split_entry
from fomoflux.errors import ConfigError

PLAN_ORDERINGS = ("random", "dataset_incremental", "time_incremental", "file", "entries")
DATA_ORDERINGS = ("concept_frequency", "easy_to_hard", "concept_similarity")
ORDERINGS = PLAN_ORDERINGS + DATA_ORDERINGS
# What a data-dependent stream's build_stream stage reads (besides nothing for plan-time streams).
ORDERING_NEEDS = {
    "concept_frequency": "pool",
    "easy_to_hard": "class_accuracy",
    "concept_similarity": "base_model",
}
CHUNK_BY = ("classes", "samples")


@dataclass(frozen=True)
class Stream:
    """A stream as the plan knows it.

    entries:   the ordered stream; for a data-dependent stream (``tasks`` is None) its classes in registry order,
               to be ordered by the build_stream stage.
    tasks:     the entries of each task, or None until the build_stream stage has written them.
    num_tasks: the number of tasks (known in both cases).
    config:    the stream's settings, as the build_stream stage receives them.
    needs:     what the build_stream stage reads: "pool", "class_accuracy", "base_model", "manifests".
    """

    name: str
    entries: tuple[str, ...]
    tasks: tuple[tuple[str, ...], ...] | None
    num_tasks: int
    config: Mapping[str, Any] = field(default_factory=dict)
    needs: frozenset[str] = frozenset()

    @property
    def ordered_by_plan(self) -> bool:
        """True when the plan knows every task's classes (no stage has to order or chunk the stream)."""
        return self.tasks is not None

    def task(self, index: int) -> tuple[str, ...]:
        """Entries of task ``index`` (1-based: task 1 is the first update)."""
        if self.tasks is None:
            raise ConfigError(f"stream {self.name!r} is ordered by a stage; read its tasks from tasks.json")
        return self.tasks[index - 1]

    def history_digest(self, index: int) -> str:
        """A digest of tasks 1..index-1 (the buffer's content when task ``index`` trains)."""
        digest = hashlib.sha256()
        for task in (self.tasks or ())[: index - 1]:
            digest.update(json.dumps(task).encode())
        return digest.hexdigest()[:16]

    def definition_digest(self) -> str:
        """A digest of what determines a stage-ordered stream: its settings and its classes."""
        blob = json.dumps({"config": self.config, "entries": self.entries}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def datasets_until(self, index: int) -> list[str]:
        """Datasets whose classes occur in tasks 1..index (what that task's update and buffer read); every dataset
        of the stream when the order is not known yet."""
        if self.tasks is None:
            return self.datasets()
        return list(self._datasets_by_task[min(index, len(self.tasks)) - 1]) if index > 0 else []

    @cached_property
    def _datasets_by_task(self) -> tuple[tuple[str, ...], ...]:
        # Computed once: the DAG asks for every task of every run, and a paper-scale task has ~920 entries.
        seen: set[str] = set()
        out = []
        for task in self.tasks or ():
            seen.update(split_entry(e)[0] for e in task)
            out.append(tuple(sorted(seen)))
        return tuple(out)

    def datasets(self) -> list[str]:
        return list(self._datasets)

    @cached_property
    def _datasets(self) -> tuple[str, ...]:
        # Asked once per task update of a stage-ordered stream (datasets_until); 18k entries are split once.
        return tuple(sorted({split_entry(e)[0] for e in self.entries}))


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
            raise ConfigError(
                f"{where}.datasets: {name!r} is an {registry[name].role} dataset, not an adaptation dataset"
            )
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"{where}.datasets: a dataset is listed twice ({chosen})")
    return list(chosen)


def read_ordering_file(path: str | Path) -> list[str]:
    """A FiF ordering file: one JSON list of ``DATASET+++classname`` strings (see fomoflux.orderings.stream_file)."""
    from fomoflux import orderings

    return orderings.read_stream_file(path)


def _file_segment(segment: Mapping[str, Any], registry: Mapping[str, DatasetSpec], where: str) -> list[str]:
    """The entries of an ``ordering: file`` segment (a ``path`` or a shipped ``release`` stream), checked against
    the segment's datasets; every error names the file and the first entry at fault."""
    from fomoflux import orderings

    if ("path" in segment) == ("release" in segment):
        raise ConfigError(f"{where}: ordering 'file' needs exactly one of 'path' (an ordering file) or 'release' "
                          f"(a release stream shipped with fomoflux: {', '.join(orderings.RELEASE_STREAMS)})")
    if "release" in segment:
        name = segment["release"]
        try:
            entries = orderings.read_release_stream(name)
        except ConfigError as err:
            raise ConfigError(f"{where}.release: {err}") from None
        source = f"{where}: release stream {name!r} ({orderings.release_stream_path(name)})"
    else:
        try:
            entries = orderings.read_stream_file(segment["path"])
        except ConfigError as err:
            raise ConfigError(f"{where}.path: {err}") from None
        source = f"{where}: stream file {segment['path']}"
    datasets = _segment_datasets(segment, registry, where)
    orderings.check_stream_file(entries, registry, datasets, source, complete=bool(segment.get("complete", False)))
    return entries


def candidate_entries(segment: Mapping[str, Any], registry: Mapping[str, DatasetSpec], where: str) -> list[str]:
    """The classes an ordering covers, in registry order: every streamed class of the segment's datasets."""
    return [e for name in _segment_datasets(segment, registry, where) for e in registry[name].entries()]


def _check_file_keys(segment: Mapping[str, Any], where: str) -> None:
    # Keys that only mean something to a file ordering; elsewhere they would be silently ignored.
    for key in ("release", "complete"):
        if key in segment and segment.get("ordering") != "file":
            raise ConfigError(f"{where}.{key}: only ordering 'file' takes {key!r} "
                              f"(this one is {segment.get('ordering')!r})")


def order_segment(segment: Mapping[str, Any], registry: Mapping[str, DatasetSpec], where: str) -> list[str]:
    """A plan-time ordering of one segment (``reverse`` applied)."""
    from fomoflux import orderings

    ordering = segment.get("ordering")
    seed = int(segment.get("seed", 0))
    _check_file_keys(segment, where)
    if ordering == "random":
        out = orderings.random_order(candidate_entries(segment, registry, where), seed)
    elif ordering in ("dataset_incremental", "time_incremental"):
        specs = [registry[name] for name in _segment_datasets(segment, registry, where)]
        build = orderings.dataset_incremental if ordering == "dataset_incremental" else orderings.time_incremental
        try:
            out = build(specs, seed)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
    elif ordering == "file":
        out = _file_segment(segment, registry, where)
    elif ordering == "entries":
        if "entries" not in segment:
            raise ConfigError(f"{where}: ordering 'entries' needs an 'entries' list")
        out = list(segment["entries"])
    elif ordering in DATA_ORDERINGS:
        raise ConfigError(f"{where}.ordering: {ordering!r} is computed from data by a stage; it cannot be a segment "
                          "of a growing stream (give it as the stream's only ordering)")
    else:
        raise ConfigError(f"{where}.ordering: unknown ordering {ordering!r} (known: {', '.join(ORDERINGS)})")
    return out[::-1] if segment.get("reverse") else out


def validate_entries(entries: Sequence[str], registry: Mapping[str, DatasetSpec], where: str) -> None:
    """Every entry names an adaptation dataset of the registry and one of its streamed classes; no entry twice
    (``fomoflux.orderings.stream_file.check_stream_file`` over every adaptation dataset)."""
    from fomoflux.orderings.stream_file import check_stream_file

    adaptation = [name for name, spec in registry.items() if spec.role == "adaptation"]
    check_stream_file(entries, registry, adaptation, where, complete=False)


def chunk(
    entries: Sequence[str], *, classes_per_task: int | None = None, tasks: int | None = None
) -> list[tuple[str, ...]]:
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


def _task_count(n_entries: int, cfg: Mapping[str, Any], where: str) -> int:
    if (cfg.get("classes_per_task") is None) == (cfg.get("tasks") is None):
        raise ConfigError(f"{where}: give exactly one of 'classes_per_task' or 'tasks'")
    if cfg.get("tasks") is not None:
        if cfg["tasks"] > n_entries:
            raise ConfigError(f"{where}.tasks: a stream of {n_entries} classes cannot be cut into {cfg['tasks']} tasks")
        return int(cfg["tasks"])
    return math.ceil(n_entries / int(cfg["classes_per_task"]))


def build_stream(name: str, cfg: Mapping[str, Any], registry: Mapping[str, DatasetSpec]) -> Stream:
    where = f"streams.{name}"
    chunk_by = cfg.get("chunk_by", "classes")
    if chunk_by not in CHUNK_BY:
        raise ConfigError(f"{where}.chunk_by: {chunk_by!r} is not one of {', '.join(CHUNK_BY)}")
    if chunk_by == "samples" and cfg.get("tasks") is None:
        raise ConfigError(f"{where}: chunk_by 'samples' cuts the stream into a number of tasks: give 'tasks'")
    if "segments" in cfg:
        if "ordering" in cfg:
            raise ConfigError(f"{where}: give either 'ordering' (one segment) or 'segments', not both")
        segments = [(f"{where}.segments[{i}]", seg) for i, seg in enumerate(cfg["segments"])]
    else:
        if "ordering" not in cfg:
            raise ConfigError(f"{where}: needs an 'ordering' ({', '.join(ORDERINGS)}) or 'segments'")
        segments = [(where, cfg)]

    ordering = cfg.get("ordering")
    if ordering in DATA_ORDERINGS:
        _check_file_keys(cfg, where)
        entries = candidate_entries(cfg, registry, where)
        needs = {ORDERING_NEEDS[ordering]}
    else:
        entries = [e for seg_where, segment in segments for e in order_segment(segment, registry, seg_where)]
        needs = set()
    if not entries:
        raise ConfigError(f"{where}: the stream has no entries")
    validate_entries(entries, registry, where)
    if chunk_by == "samples":
        needs.add("manifests")
    num_tasks = _task_count(len(entries), cfg, where)
    stage_config = {
        "ordering": ordering or "segments",
        "seed": int(cfg.get("seed", 0)),
        "reverse": bool(cfg.get("reverse", False)),
        "chunk_by": chunk_by,
        "tasks": cfg.get("tasks"),
        "classes_per_task": cfg.get("classes_per_task"),
    }
    if needs:
        return Stream(name, tuple(entries), None, num_tasks, stage_config, frozenset(needs))
    tasks = chunk(entries, classes_per_task=cfg.get("classes_per_task"), tasks=cfg.get("tasks"))
    return Stream(name, tuple(entries), tuple(tasks), len(tasks), stage_config)


def order_from_data(stream: Stream, *, pool_manifests: Sequence[Path] = (), class_accuracy=None, embeddings=None,
                    sample_counts: Mapping[str, int] | None = None) -> tuple[list[str], list[tuple[str, ...]]]:
    """The ordered entries and tasks of a stage-built stream, from the data its ordering reads.

    ``class_accuracy``: entry -> base-model zero-shot accuracy; ``embeddings``: text embeddings in entry order;
    ``sample_counts``: entry -> training samples (for chunk_by samples).
    """
    from fomoflux import orderings

    cfg = stream.config
    seed, entries = cfg["seed"], list(stream.entries)
    ordering = cfg["ordering"]
    if ordering == "concept_frequency":
        concepts = [orderings.concept(split_entry(e)[1]) for e in entries]
        found = orderings.concept_frequencies(list(pool_manifests), sorted(set(concepts)))
        ordered = orderings.frequency_order(entries, {e: found.get(c, 0) for e, c in zip(entries, concepts)}, seed)
    elif ordering == "easy_to_hard":
        ordered = orderings.easy_to_hard(entries, class_accuracy, seed)
    elif ordering == "concept_similarity":
        ordered = orderings.similarity_chain(entries, embeddings, seed)
    else:  # a plan-time ordering that is stage-built only for its chunking
        ordered = entries
    if cfg["reverse"] and ordering in DATA_ORDERINGS:
        ordered = orderings.reverse(ordered)
    if cfg["chunk_by"] == "samples":
        tasks = orderings.chunk_by_samples(ordered, sample_counts or {}, cfg["tasks"])
    else:
        tasks = chunk(ordered, classes_per_task=cfg["classes_per_task"], tasks=cfg["tasks"])
    if len(tasks) != stream.num_tasks:
        raise ConfigError(f"stream {stream.name!r}: {len(tasks)} tasks built, the plan expects {stream.num_tasks}")
    return ordered, tasks
