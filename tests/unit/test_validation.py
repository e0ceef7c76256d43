"""Validation mode: the seeded per-class split of training data."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fomoflux.data.validation import held_out_count, split_rows, validation_mask
from fomoflux.errors import ConfigError


def rows(per_class: dict[tuple[str, str], int]) -> pl.DataFrame:
    data = {"dataset": [], "index": [], "class_name": []}
    next_index: dict[str, int] = {}
    for (dataset, cls), n in per_class.items():
        for _ in range(n):
            data["dataset"].append(dataset)
            data["index"].append(next_index.get(dataset, 0))
            data["class_name"].append(cls)
            next_index[dataset] = next_index.get(dataset, 0) + 1
    return pl.DataFrame(data)


def test_held_out_counts_per_class():
    assert [held_out_count(n, 0.1) for n in (0, 1, 2, 10, 11, 100)] == [0, 0, 1, 1, 2, 10]
    assert held_out_count(3, 0.9) == 2  # never the class's last sample


def test_split_is_per_class_disjoint_and_seeded():
    frame = rows({("A", "x"): 40, ("A", "y"): 7, ("B", "x"): 1, ("B", "z"): 25})
    mask = validation_mask(frame, fraction=0.2, seed=0)
    held = frame.filter(mask).group_by("dataset", "class_name").len()
    assert dict(zip(zip(held["dataset"], held["class_name"]), held["len"])) == {
        ("A", "x"): 8, ("A", "y"): 2, ("B", "z"): 5}
    train, val = split_rows(frame, "train", fraction=0.2, seed=0), split_rows(frame, "validation", fraction=0.2, seed=0)
    assert train.height + val.height == frame.height and train.join(val, on=["dataset", "index"]).height == 0
    assert np.array_equal(mask, validation_mask(frame, fraction=0.2, seed=0))
    assert not np.array_equal(mask, validation_mask(frame, fraction=0.2, seed=1))


def test_a_samples_fate_does_not_depend_on_other_rows():
    frame = rows({("A", "x"): 30, ("B", "y"): 30})
    alone = split_rows(frame.filter(pl.col("dataset") == "A"), "validation", fraction=0.1, seed=4)
    together = split_rows(frame, "validation", fraction=0.1, seed=4).filter(pl.col("dataset") == "A")
    assert alone.equals(together)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=0)
    assert sorted(split_rows(shuffled, "validation", fraction=0.1, seed=4)["index"].to_list()) == \
        sorted(split_rows(frame, "validation", fraction=0.1, seed=4)["index"].to_list())


def test_bad_arguments():
    with pytest.raises(ConfigError, match="fraction"):
        validation_mask(rows({("A", "x"): 3}), fraction=1.0, seed=0)
    with pytest.raises(ConfigError, match="part"):
        split_rows(rows({("A", "x"): 3}), "test", fraction=0.5, seed=0)
    with pytest.raises(ValueError, match="class_name"):
        validation_mask(pl.DataFrame({"dataset": ["A"], "index": [0]}), fraction=0.5, seed=0)
