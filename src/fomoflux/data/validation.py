"""Validation mode: a seeded per-class split of the training data, for hyperparameter searches.

Which training samples are held out depends only on (seed, dataset, sample index) and the class sizes, never on
which task or job asks: a task update and the evaluation after it always agree on the split, and a sample's fate
does not change when other datasets are added.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fomoflux.errors import ConfigError
from fomoflux.seeding import sample_hashes

if TYPE_CHECKING:
    import polars as pl

def held_out_count(n: int | np.ndarray, fraction: float) -> int | np.ndarray:
    """How many of a class's n training samples are held out: ⌈fraction·n⌉, at least one, but never the class's
    last sample (none of a class with one sample). ``n`` may be an array of class sizes (elementwise)."""
    n = np.asarray(n, dtype=np.int64)
    count = np.where(n < 2, 0, np.minimum(n - 1, np.maximum(1, np.ceil(fraction * n).astype(np.int64))))
    return int(count) if count.ndim == 0 else count


def validation_mask(rows: pl.DataFrame, *, fraction: float, seed: int) -> np.ndarray:
    """Boolean array over ``rows`` (manifest rows of training splits): True for the held-out validation samples.

    Per class (dataset, class_name), the ``held_out_count`` samples with the smallest seeded key are held out.
    Rows without a class (caption-only data) are never held out.
    """
    import polars as pl

    if not 0 < fraction < 1:
        raise ConfigError(f"validation.fraction must be in (0, 1), got {fraction}")
    for column in ("dataset", "index", "class_name"):
        if column not in rows.columns:
            raise ValueError(f"validation_mask: rows lack column {column!r}")
    if rows.height == 0:
        return np.zeros(0, dtype=bool)
    keyed = rows.select("dataset", "class_name").with_columns(
        pl.Series("key", sample_hashes(rows, seed, "validation")),
        pl.int_range(pl.len()).alias("row"),
    )
    ranked = keyed.with_columns(
        pl.col("key").rank("ordinal").over("dataset", "class_name").alias("rank"),
        pl.len().over("dataset", "class_name").alias("n"),
    )
    counts = held_out_count(ranked["n"].to_numpy(), fraction)
    mask = (ranked["rank"].to_numpy() <= counts) & ranked["class_name"].is_not_null().to_numpy()
    out = np.zeros(rows.height, dtype=bool)
    out[ranked["row"].to_numpy()] = mask
    return out


def split_rows(rows: pl.DataFrame, part: str, *, fraction: float, seed: int) -> pl.DataFrame:
    """The ``part`` ("train" or "validation") of training rows under the seeded split."""
    if part not in ("train", "validation"):
        raise ConfigError(f"split_rows: part must be 'train' or 'validation', got {part!r}")
    mask = validation_mask(rows, fraction=fraction, seed=seed)
    return rows.filter(mask if part == "validation" else ~mask)
