"""train/buffer.py: the replay buffer's policies against independent references (a scalar Algorithm R, a slot-by-slot
water-filling), their statistical claims (uniform inclusion), the incremental property, class balance, stability
under a shrinking quota, and the errors."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import polars as pl
import pytest

from fomoflux.errors import ConfigError, DataError
from fomoflux.train.buffer import BUFFER_POLICIES, advance_reservoir, check_buffer, class_quotas, select_buffer

MASK64 = (1 << 64) - 1


# -- toy manifest rows -------------------------------------------------------------------------------------------
def stream_rows(tasks: list[list[tuple[str, str, int]]], seed: int = 0) -> pl.DataFrame:
    """Manifest rows of a stream: ``tasks[t]`` lists (dataset, class_name, count) of task t + 1. Each dataset's
    samples get distinct indices drawn at random, so a task sorted by (dataset, index) interleaves its classes."""
    rng = np.random.default_rng(seed)
    total_per_dataset: dict[str, int] = {}
    for task in tasks:
        for dataset, _, count in task:
            total_per_dataset[dataset] = total_per_dataset.get(dataset, 0) + count
    free = {name: list(rng.permutation(total * 3)[:total]) for name, total in total_per_dataset.items()}
    records = []
    for task_number, task in enumerate(tasks, start=1):
        for dataset, class_name, count in task:
            class_id = sum(map(ord, class_name)) % 97
            for _ in range(count):
                index = int(free[dataset].pop())
                records.append({
                    "dataset": dataset, "split": "train", "index": index, "key": f"{dataset}/{index:06d}",
                    "shard": f"{dataset}/train-000000.tar", "class_id": class_id, "class_name": class_name,
                    "caption": f"a photo of a {class_name}.", "captions": [f"a photo of a {class_name}."],
                    "task": task_number,
                })
    frame = pl.DataFrame(records, schema_overrides={"index": pl.Int64, "task": pl.Int64})
    return frame.sort(["task", "dataset", "index"])


def flat_rows(n: int, tasks: int = 1) -> pl.DataFrame:
    """``n`` rows of one dataset, one class per row, split evenly (in order) into ``tasks`` tasks."""
    per_task = -(-n // tasks)
    return pl.DataFrame({
        "task": [1 + i // per_task for i in range(n)], "dataset": ["d"] * n, "index": list(range(n)),
        "class_name": [f"c{i}" for i in range(n)], "key": [f"k{i}" for i in range(n)],
    })


def keys(frame: pl.DataFrame) -> list[str]:
    return frame["key"].to_list()


def per_class(frame: pl.DataFrame) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for row in frame.iter_rows(named=True):
        out.setdefault((row["dataset"], row["class_name"]), set()).add(row["key"])
    return out


# -- independent references --------------------------------------------------------------------------------------
def splitmix_scalar(key: int, counter: int) -> int:
    """SplitMix64 in Python ints: mix(key + (counter + 1) * GAMMA) mod 2**64."""
    z = (key + (counter + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def reservoir_scalar(n: int, size: int, seed: int) -> list[int]:
    """Algorithm R, one row at a time, with the draw recipe of advance_reservoir's docstring."""
    digest = hashlib.blake2b(f"fomoflux.buffer.reservoir:{seed}".encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "little")
    slots: list[int] = []
    for i in range(n):
        if i < size:
            slots.append(i)
            continue
        j = splitmix_scalar(key, i) % (i + 1)
        if j < size:
            slots[j] = i
    return slots


def quotas_slot_by_slot(counts: list[int], size: int) -> list[int]:
    """Water-filling one slot at a time: the next slot goes to the class with the fewest kept rows that still has
    rows, ties to the class that appeared first."""
    quotas = [0] * len(counts)
    for _ in range(size):
        open_classes = [c for c in range(len(counts)) if quotas[c] < counts[c]]
        if not open_classes:
            break
        quotas[min(open_classes, key=lambda c: (quotas[c], c))] += 1
    return quotas


# -- config ------------------------------------------------------------------------------------------------------
def test_check_buffer_normalises():
    assert check_buffer({"policy": "all"}) == {"policy": "all", "size": None}
    assert check_buffer({"policy": "all", "size": None}) == {"policy": "all", "size": None}
    assert check_buffer({"policy": "reservoir", "size": 5}) == {"policy": "reservoir", "size": 5}
    assert check_buffer({"policy": "class_quota", "size": np.int64(3)}) == {"policy": "class_quota", "size": 3}
    assert BUFFER_POLICIES == ("all", "reservoir", "class_quota")


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ({"policy": "fifo", "size": 3}, "'fifo'"),
        ({"size": 3}, "buffer.policy"),
        ({"policy": "reservoir"}, "buffer.size"),
        ({"policy": "reservoir", "size": 0}, "got 0"),
        ({"policy": "class_quota", "size": -2}, "got -2"),
        ({"policy": "class_quota", "size": 2.5}, "got 2.5"),
        ({"policy": "reservoir", "size": True}, "got True"),
        ({"policy": "reservoir", "size": "10"}, "got '10'"),
        ({"policy": "all", "size": 10}, "takes no size"),
        ({"policy": "all", "capacity": 10}, "'capacity'"),
        (["all"], "['all']"),
    ],
)
def test_check_buffer_errors(spec, named):
    with pytest.raises(ConfigError) as err:
        check_buffer(spec)
    assert named in str(err.value)


# -- every policy ------------------------------------------------------------------------------------------------
def test_all_keeps_every_row():
    rows = stream_rows([[("a", "x", 4), ("b", "y", 3)], [("a", "z", 5)]])
    assert select_buffer(rows, policy="all", size=None, seed=0).equals(rows)


@pytest.mark.parametrize("policy", ["reservoir", "class_quota"])
@pytest.mark.parametrize("size", [1, 7, 29, 30, 31, 500])
def test_bounds_and_order(policy, size):
    rows = stream_rows([[("a", "x", 6), ("b", "y", 9)], [("a", "z", 4)], [("c", "x", 11)]])
    assert rows.height == 30
    out = select_buffer(rows, policy=policy, size=size, seed=11)
    assert out.height == min(size, rows.height)
    assert out.schema == rows.schema
    # A filtered frame: the kept rows in their original order, unchanged.
    position = {key: i for i, key in enumerate(keys(rows))}
    kept = [position[key] for key in keys(out)]
    assert kept == sorted(set(kept))
    assert out.equals(rows[kept])


@pytest.mark.parametrize("policy", BUFFER_POLICIES)
def test_empty_rows(policy):
    rows = stream_rows([[("a", "x", 3)]]).clear()
    out = select_buffer(rows, policy=policy, size=None if policy == "all" else 4, seed=0)
    assert out.height == 0 and out.schema == rows.schema


@pytest.mark.parametrize("policy", ["reservoir", "class_quota"])
def test_deterministic_and_seeded(policy):
    rows = stream_rows([[("a", "x", 40), ("a", "y", 40)], [("b", "x", 40)]])
    first = keys(select_buffer(rows, policy=policy, size=30, seed=5))
    assert keys(select_buffer(rows, policy=policy, size=30, seed=5)) == first
    assert keys(select_buffer(rows.clone(), policy=policy, size=30, seed=5)) == first
    others = {tuple(keys(select_buffer(rows, policy=policy, size=30, seed=s))) for s in range(6, 10)}
    assert tuple(first) not in others and len(others) > 1


# -- reservoir ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "size", "seed"), [(1, 1, 0), (10, 1, 3), (10, 10, 1), (5, 9, 2), (64, 7, 4),
                                                 (300, 25, 12345), (300, 299, -7), (1000, 3, 2**40)])
def test_reservoir_matches_scalar_algorithm_r(n, size, seed):
    expected = reservoir_scalar(n, size, seed)
    held = advance_reservoir(np.empty(0, dtype=np.int64), 0, n, size=size, seed=seed)
    assert held.dtype == np.int64
    assert held.tolist() == expected
    rows = flat_rows(n)
    out = select_buffer(rows, policy="reservoir", size=size, seed=seed)
    assert keys(out) == [f"k{i}" for i in sorted(expected)]


def test_reservoir_incremental_equals_from_scratch():
    task_sizes = [3, 50, 1, 0, 200, 17, 64]
    size, seed = 20, 9
    held, seen = np.empty(0, dtype=np.int64), 0
    for count in task_sizes:
        held = advance_reservoir(held, seen, count, size=size, seed=seed)
        seen += count
        scratch = advance_reservoir(np.empty(0, dtype=np.int64), 0, seen, size=size, seed=seed)
        assert held.tolist() == scratch.tolist()
        assert held.tolist() == reservoir_scalar(seen, size, seed)


def test_reservoir_buffer_continues_the_previous_task():
    """select_buffer on a growing stream: the rows of task <= t still held after task t + 1 were all held after t
    (a reservoir only evicts), and what it holds is exactly the continued reservoir."""
    tasks = [[("a", "x", 30), ("b", "y", 25)], [("a", "z", 40)], [("c", "w", 5)], [("b", "v", 60), ("c", "u", 9)]]
    rows = stream_rows(tasks, seed=3)
    size, seed = 24, 1
    held, seen, previous = np.empty(0, dtype=np.int64), 0, set()
    for t in range(1, len(tasks) + 1):
        prefix = rows.filter(pl.col("task") <= t)
        held = advance_reservoir(held, seen, prefix.height - seen, size=size, seed=seed)
        seen = prefix.height
        out = select_buffer(prefix, policy="reservoir", size=size, seed=seed)
        assert set(keys(out)) == set(keys(prefix[np.sort(held)]))
        old = set(keys(out.filter(pl.col("task") < t)))
        assert old <= previous
        previous = set(keys(out))


def test_reservoir_inclusion_is_uniform():
    n, size, trials = 40, 10, 4000
    hits = np.zeros(n)
    for seed in range(trials):
        hits[advance_reservoir(np.empty(0, dtype=np.int64), 0, n, size=size, seed=seed)] += 1
    frequency = hits / trials
    # Binomial sd of one row's frequency: sqrt(0.25 * 0.75 / 4000) ~ 0.007; 0.035 is five sd.
    assert np.abs(frequency - size / n).max() < 0.035
    # The first `size` rows (initial slots) and the last rows (late writers) are no different from the middle.
    assert abs(frequency[:size].mean() - frequency[-size:].mean()) < 0.03


def test_reservoir_tasks_are_held_in_proportion_to_their_rows():
    rows = stream_rows([[("a", "x", 10)], [("b", "y", 30)], [("a", "z", 60)]])
    size, trials = 20, 400
    held = np.zeros(3)
    for seed in range(trials):
        out = select_buffer(rows, policy="reservoir", size=size, seed=seed)
        # A task can be absent from one small buffer: count tasks 1..3 with zeros.
        held += np.bincount(out["task"].to_numpy() - 1, minlength=3)
    mean = held / trials
    expected = size * np.array([10, 30, 60]) / 100
    # sd of a task's mean count over 400 trials is below 0.12; 0.5 is over four sd.
    assert np.abs(mean - expected).max() < 0.5, (mean, expected)


def test_advance_reservoir_errors():
    with pytest.raises(ConfigError, match="shape"):
        advance_reservoir(np.arange(3), 5, 4, size=4, seed=0)
    with pytest.raises(ConfigError, match="size >= 1"):
        advance_reservoir(np.empty(0), 0, 4, size=0, seed=0)


# -- class quota -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("counts", "size", "expected"),
    [
        ([10, 10, 10], 7, [3, 2, 2]),
        ([100, 2, 100], 10, [4, 2, 4]),
        ([50, 3, 50, 50], 40, [13, 3, 12, 12]),
        ([1, 1, 30, 2], 12, [1, 1, 8, 2]),
        ([4, 5], 100, [4, 5]),
        ([0, 6, 6], 5, [0, 3, 2]),
    ],
)
def test_class_quotas_known(counts, size, expected):
    assert class_quotas(counts, size).tolist() == expected


def test_class_quotas_match_slot_by_slot_water_filling():
    rng = np.random.default_rng(0)
    for _ in range(300):
        counts = rng.integers(0, 30, size=int(rng.integers(1, 12))).tolist()
        size = int(rng.integers(1, 200))
        quotas = class_quotas(counts, size)
        assert quotas.tolist() == quotas_slot_by_slot(counts, size), (counts, size)
        assert quotas.sum() == min(size, sum(counts))


def test_class_quota_balance():
    # Ten classes over three datasets and three tasks, each with at least 20 rows; "x" occurs in two datasets and
    # must count as two classes.
    tasks = [[("a", "x", 25), ("a", "y", 20), ("b", "x", 31)], [("b", "q", 22), ("c", "r", 40), ("a", "s", 20)],
             [("c", "t", 27), ("c", "u", 20), ("a", "v", 33), ("b", "w", 21)]]
    rows = stream_rows(tasks, seed=1)
    first_seen = list(dict.fromkeys(zip(rows["dataset"], rows["class_name"])))
    assert len(first_seen) == 10
    for size in (10, 37, 121, 200):
        out = select_buffer(rows, policy="class_quota", size=size, seed=2)
        counts = {cls: len(held) for cls, held in per_class(out).items()}
        values = [counts.get(cls, 0) for cls in first_seen]
        assert sum(values) == size
        assert max(values) - min(values) <= 1, (size, values)
        # The remainder goes one each to the classes that appeared first.
        assert values == sorted(values, reverse=True), (size, values)


def test_class_quota_small_class_water_fills():
    rows = stream_rows([[("a", "big1", 50), ("a", "tiny", 3)], [("b", "big2", 50), ("b", "big3", 50)]], seed=4)
    out = select_buffer(rows, policy="class_quota", size=40, seed=0)
    counts = {cls: len(held) for cls, held in per_class(out).items()}
    # Share 10 each; "tiny" keeps its 3 rows and its 7 spare slots go to the other three (3 / 2 / 2).
    assert counts == {("a", "big1"): 13, ("a", "tiny"): 3, ("b", "big2"): 12, ("b", "big3"): 12}
    assert per_class(out)[("a", "tiny")] == per_class(rows)[("a", "tiny")]


def test_class_quota_smaller_quota_keeps_a_subset():
    rows = stream_rows([[("a", "x", 40), ("a", "y", 35), ("b", "x", 50)]], seed=5)
    previous = None
    for size in (120, 90, 61, 30, 12, 4):
        held = per_class(select_buffer(rows, policy="class_quota", size=size, seed=8))
        if previous is not None:
            for cls, kept in held.items():
                assert kept <= previous[cls], (size, cls)
        previous = held


def test_class_quota_old_classes_shrink_to_subsets_as_the_stream_grows():
    tasks = [[("a", "x", 30), ("b", "y", 30)], [("a", "z", 30)], [("b", "x", 30), ("c", "w", 30)]]
    rows = stream_rows(tasks, seed=6)
    previous = None
    for t in range(1, len(tasks) + 1):
        held = per_class(select_buffer(rows.filter(pl.col("task") <= t), policy="class_quota", size=24, seed=3))
        if previous is not None:
            for cls, kept in previous.items():
                assert held[cls] <= kept, (t, cls)
        previous = held


def test_class_quota_picks_vary_with_seed_and_cover_the_class():
    rows = stream_rows([[("a", "x", 20)]])
    picks = [set(keys(select_buffer(rows, policy="class_quota", size=5, seed=s))) for s in range(60)]
    assert len({frozenset(p) for p in picks}) > 50
    # Every row gets picked by some seed: the in-class choice is not biased towards low or high indices.
    assert set().union(*picks) == set(keys(rows))


# -- errors ------------------------------------------------------------------------------------------------------
def test_select_buffer_config_errors():
    rows = flat_rows(5)
    with pytest.raises(ConfigError, match="'lru'"):
        select_buffer(rows, policy="lru", size=3, seed=0)
    with pytest.raises(ConfigError, match="buffer.size"):
        select_buffer(rows, policy="reservoir", size=None, seed=0)
    with pytest.raises(ConfigError, match="seed"):
        select_buffer(rows, policy="reservoir", size=3, seed="0")


def test_select_buffer_missing_columns():
    rows = flat_rows(5).drop("class_name", "index")
    with pytest.raises(ValueError, match="index") as err:
        select_buffer(rows, policy="reservoir", size=3, seed=0)
    assert "class_name" not in str(err.value)
    with pytest.raises(ValueError, match="index, class_name"):
        select_buffer(rows, policy="class_quota", size=3, seed=0)
    # "all" reads no column.
    assert select_buffer(rows, policy="all", size=None, seed=0).equals(rows)


@pytest.mark.parametrize("policy", ["reservoir", "class_quota"])
def test_select_buffer_rejects_rows_out_of_stream_order(policy):
    rows = stream_rows([[("a", "x", 5), ("b", "y", 5)], [("a", "z", 5)]])
    shuffled = rows.reverse()
    with pytest.raises(ValueError, match="stream order.*row 1"):
        select_buffer(shuffled, policy=policy, size=3, seed=0)
    # Task ascending but a task's rows not sorted by dataset.
    swapped = pl.concat([rows.filter(pl.col("dataset") == "b"), rows.filter(pl.col("dataset") == "a")])
    with pytest.raises(ValueError, match="dataset='a'"):
        select_buffer(swapped, policy=policy, size=3, seed=0)


def test_select_buffer_null_class_is_a_data_error():
    rows = flat_rows(6).with_columns(
        pl.when(pl.col("index") == 4).then(None).otherwise(pl.col("class_name")).alias("class_name")
    )
    with pytest.raises(DataError, match="'class_name' is null in row 4.*index=4"):
        select_buffer(rows, policy="class_quota", size=3, seed=0)
    # The reservoir does not read class_name.
    assert select_buffer(rows, policy="reservoir", size=3, seed=0).height == 3


# -- speed -------------------------------------------------------------------------------------------------------
def test_speed_full_stream_of_18000_classes():
    """Printed, not asserted: the shared test machine's load varies. 18,000 classes x 100 samples over 20 tasks."""
    classes, per_class_rows, tasks = 18_000, 100, 20
    n = classes * per_class_rows
    position = pl.int_range(0, n, dtype=pl.Int64)
    task = position // (n // tasks)
    rows = pl.select(
        task=task + 1, dataset=pl.lit("d") + task.cast(pl.String), index=position,
        class_name=(position // per_class_rows).cast(pl.String),
    )
    for policy in ("reservoir", "class_quota"):
        started = time.perf_counter()
        out = select_buffer(rows, policy=policy, size=50_000, seed=0)
        print(f"\n{policy}: {n:,} rows -> {out.height:,} in {time.perf_counter() - started:.3f} s")
        assert out.height == 50_000
