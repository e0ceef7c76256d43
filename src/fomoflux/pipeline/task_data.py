"""A job's samples: manifest rows of its input datasets, selected by dataset, stream entries and split, held as
rows and read from the shards when a batch needs them (``fomoflux.data.loading.DiskSamples``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fomoflux.pipeline.plan import Plan


def manifest_paths(dataset_dirs) -> list[Path]:
    """The manifest of each of a job's input dataset folders."""
    return [Path(d) / "manifest.parquet" for d in dataset_dirs]


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


def select_rows(manifests: list[Path], plan: Plan, *, split: str, dataset: str | None = None,
            entries: list[str] | None = None, part: str = "train"):
    """Manifest rows of one dataset or of stream entries. In validation mode, rows of a training split are cut into
    the seeded train / validation parts and ``part`` says which one is wanted."""
    from fomoflux.data.catalog import select_rows
    from fomoflux.data.loading import READ_COLUMNS

    # Only what reading the samples later needs (no captions: they are read with the images).
    rows = select_rows(manifests, split=split, dataset=dataset, entries=entries,
                       columns=[*READ_COLUMNS, "class_name"])
    validation = plan.validation
    if validation["enabled"] and split == "train" and (dataset is None or plan.registry[dataset].role == "adaptation"):
        from fomoflux.data.validation import split_rows

        rows = split_rows(rows, part, fraction=validation["fraction"], seed=validation["seed"])
    return rows


def samples_on_disk(manifests: list[Path], rows):
    """Manifest rows as samples on disk, read lazily (``DiskSamples``; None for no rows)."""
    from fomoflux.data.loading import disk_samples

    # Manifests name shards relative to the folder that holds the dataset folders.
    return disk_samples(manifests[0].parent.parent, rows)


def load_samples(manifests: list[Path], plan: Plan, *, split: str, dataset: str | None = None,
          entries: list[str] | None = None, keep: Callable[[int], list[int] | None] | None = None,
          part: str = "train"):
    """The samples of one dataset or of stream entries, from the manifests of a job's input datasets, as samples on
    disk: only their manifest rows are held, and images are read when a batch needs them. ``keep(n_rows)`` may
    choose which of the selected rows to keep."""
    rows = select_rows(manifests, plan, split=split, dataset=dataset, entries=entries, part=part)
    chosen = keep(rows.height) if keep is not None and rows.height else None
    if chosen is not None:
        rows = rows[chosen]
    return samples_on_disk(manifests, rows)


def load_buffer(manifests: list[Path], plan: Plan, past_tasks: list[list[str]], buffer: dict, seed: int):
    """The replay buffer when the next task trains: every training sample of the past tasks, or the bounded
    selection of ``buffer`` (reservoir / per-class quota) over them in stream order. Only what the buffer holds is
    decoded."""
    import polars as pl

    from fomoflux.train.buffer import select_buffer

    past = [e for entries in past_tasks for e in entries]
    rows = select_rows(manifests, plan, split="train", entries=past)
    if buffer["policy"] != "all":
        task_of = pl.DataFrame(
            {"entry": past, "task": [t for t, entries in enumerate(past_tasks, 1) for _ in entries]},
            schema={"entry": pl.String, "task": pl.Int64},
        )
        rows = (
            rows.with_columns((pl.col("dataset") + "+++" + pl.col("class_name")).alias("entry"))
            .join(task_of, on="entry", how="left")
            .drop("entry")
            .sort("task", "dataset", "index")
        )
        rows = select_buffer(rows, policy=buffer["policy"], size=buffer["size"], seed=seed).drop("task")
    return samples_on_disk(manifests, rows)
