"""Building a task's sample list at paper scale: 18,381 stream classes over 41 datasets, cut into 20 tasks.

    .venv/bin/python benchmarks/bench_catalog.py [--rows-per-class 60] [--test-rows-per-class 10] [--tasks 20]

Writes synthetic manifests (MANIFEST_SCHEMA, no images: the catalog reads only manifests) for the benchmark's
datasets with their real class counts — the stream's classes from
``/work/shared/reference/fomo_in_flux/streams/random_sequence_1.json`` and the evaluation-only datasets from
``classnames/*.json`` when that folder exists, else 18,381 synthetic classes over 41 datasets plus 22
evaluation-only ones — builds the duckdb catalog with ``build_catalog``, cuts the stream into T tasks and times
``select_rows(..., split="train", entries=task)`` for every task on both paths:

- catalog: the duckdb file (what evaluation and ad-hoc queries use);
- manifests: the list of manifest files of the datasets of tasks 1..t (what a ``train_task`` job reads).

Also times the buffer case: all entries of tasks 1..T-1 when task T trains. Target: < 1 s per task.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from _timing import interleaved_rounds, markdown_table, median

from fomoflux.data.catalog import build_catalog, select_rows
from fomoflux.data.registry import split_entry
from fomoflux.data.shards import MANIFEST_NAME, MANIFEST_SCHEMA
from fomoflux.stream import chunk, read_ordering_file

REFERENCE = Path("/work/shared/reference/fomo_in_flux")
STREAM_FILE = REFERENCE / "streams" / "random_sequence_1.json"
SHARD_SIZE = 2000  # the pipeline's default shard_size (config: benchmark.shard_size)

Classes = dict[str, list[str]]  # dataset -> class names


def reference_classes(reference: Path) -> tuple[Classes, Classes, list[str]] | None:
    """(stream datasets' classes, evaluation-only datasets' classes, stream order) from the paper's files, or None
    when they are absent. A classnames file that is not a JSON list of ``dataset+++class`` strings is skipped (the
    folder also holds helper files in another format)."""
    stream_file = reference / "streams" / "random_sequence_1.json"
    if not stream_file.is_file():
        return None
    stream = read_ordering_file(stream_file)
    adaptation: Classes = {}
    for entry in stream:
        dataset, name = split_entry(entry)
        adaptation.setdefault(dataset, []).append(name)
    # Stream datasets are spelled differently in the classnames files (iNATURALIST2021 vs inaturalist2021,
    # SNAKECLEF vs snake_clef): compare lower-cased names without underscores.
    in_stream = {d.lower().replace("_", "") for d in adaptation}
    evaluation: Classes = {}
    for path in sorted((reference / "classnames").glob("*.json")):
        try:
            entries = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if not isinstance(entries, list) or not all(isinstance(e, str) and "+++" in e for e in entries):
            continue
        dataset = split_entry(entries[0])[0]
        if dataset.lower().replace("_", "") not in in_stream:
            evaluation[dataset] = [split_entry(e)[1] for e in entries]
    return adaptation, evaluation, stream


def synthetic_classes(seed: int) -> tuple[Classes, Classes, list[str]]:
    """18,381 classes over 41 adaptation datasets (a few large, many small, like the paper's) and 22
    evaluation-only datasets, with a seeded random stream order of the adaptation classes."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(mean=0.0, sigma=1.3, size=41)
    counts = np.maximum(7, np.floor(weights / weights.sum() * 18_381)).astype(int)
    counts[np.argmax(counts)] += 18_381 - counts.sum()  # exact total
    adaptation = {f"ADAPT{d:02d}": [f"class {c} of dataset {d}" for c in range(n)] for d, n in enumerate(counts)}
    evaluation = {f"eval{d:02d}": [f"eval class {c}" for c in range(int(n))]
                  for d, n in enumerate(rng.integers(5, 1001, size=22))}
    entries = [f"{d}+++{c}" for d, names in adaptation.items() for c in names]
    return adaptation, evaluation, [entries[i] for i in rng.permutation(len(entries))]


def manifest_split(dataset: str, split: str, classes: list[str], per_class: int, first_index: int,
                   rng: np.random.Generator) -> pa.Table:
    """``per_class`` rows of every class in one split, classes interleaved over the indices as in a real dataset
    (so a class's rows spread over many shards), two captions per row."""
    n = len(classes) * per_class
    class_id = rng.permutation(np.repeat(np.arange(len(classes), dtype=np.int32), per_class))
    index = np.arange(first_index, first_index + n, dtype=np.int64)
    class_name = pa.array(classes, pa.string()).take(pa.array(class_id))
    first = pc.binary_join_element_wise("a photo of a ", class_name, ".", "")
    second = pc.binary_join_element_wise("a ", class_name, " in the wild.", "")
    # Interleave the two captions: row i's list is values[2i : 2i + 2].
    values = pa.concat_arrays([first, second]).take(pa.array(np.arange(2 * n).reshape(2, n).T.ravel()))
    captions = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), values)
    keys = [f"{dataset}/{split}/{i:08d}" for i in range(first_index, first_index + n)]
    shards = [
        f"{dataset}/{split}-{(i - first_index) // SHARD_SIZE:06d}.tar" for i in range(first_index, first_index + n)
    ]
    return pa.table(
        {"dataset": pa.array([dataset] * n), "split": pa.array([split] * n), "index": index, "key": keys,
         "shard": shards, "class_id": class_id, "class_name": class_name, "caption": first, "captions": captions,
         # The image's format, size and member offsets (the catalog never reads them).
         "image_format": pa.array(["jpg"] * n),
         **{name: np.zeros(n, np.int64) for name in MANIFEST_SCHEMA.names[10:]}},
        schema=MANIFEST_SCHEMA,
    )


def write_manifests(root: Path, adaptation: Classes, evaluation: Classes, train_per_class: int,
                    test_per_class: int, seed: int) -> dict[str, Path]:
    """One ``<root>/<dataset>/manifest.parquet`` per dataset (train + test rows for adaptation datasets, test rows
    only for evaluation-only ones); returns dataset -> manifest path."""
    rng = np.random.default_rng(seed)
    manifests: dict[str, Path] = {}
    for dataset, classes in {**adaptation, **evaluation}.items():
        parts = []
        if dataset in adaptation:
            parts.append(manifest_split(dataset, "train", classes, train_per_class, 0, rng))
        parts.append(manifest_split(dataset, "test", classes, test_per_class, 0, rng))
        path = root / dataset / MANIFEST_NAME
        path.parent.mkdir(parents=True)
        pq.write_table(pa.concat_tables(parts), path)
        manifests[dataset] = path
    return manifests


def timed(run: Callable[[], int]) -> Callable[[], tuple[float, int]]:
    """``run`` wrapped to return (seconds it took, what it returned)."""
    def timed_run() -> tuple[float, int]:
        start = time.perf_counter()
        result = run()
        return time.perf_counter() - start, result
    return timed_run


def datasets_of(entries: list[str]) -> list[str]:
    return sorted({split_entry(e)[0] for e in entries})


def selections(catalog: Path, manifests: dict[str, Path], tasks: list[list[str]], entries: list[str],
               upto: int) -> dict[str, Callable[[], tuple[float, int]]]:
    """Timed ``select_rows(split="train", entries=entries)`` on both paths, returning (seconds, rows). The
    manifests path gets what a train_task job of task ``upto`` declares: the manifests of the datasets of tasks
    1..upto (``Stream.datasets_until``)."""
    paths = [manifests[d] for d in datasets_of([e for t in tasks[:upto] for e in t])]
    return {
        "catalog": timed(lambda: select_rows(catalog, split="train", entries=entries).height),
        "manifests": timed(lambda: select_rows(paths, split="train", entries=entries).height),
    }


def measure(runs: dict[str, Callable[[], tuple[float, int]]], repeats: int, expected_rows: int) -> dict[str, float]:
    """Median seconds of each run over ``repeats`` interleaved rounds; a wrong row count stops the benchmark."""
    results = interleaved_rounds(runs, rounds=repeats, warmup=0)
    for name, outcomes in results.items():
        wrong = {rows for _, rows in outcomes if rows != expected_rows}
        if wrong:
            raise SystemExit(f"{name}: select_rows gave {sorted(wrong)} rows, expected {expected_rows}")
    return {name: median(s for s, _ in outcomes) for name, outcomes in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-class", type=int, default=60, help="training rows per class")
    parser.add_argument("--test-rows-per-class", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per measurement")
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    args = parser.parse_args()

    found = reference_classes(args.reference)
    adaptation, evaluation, stream = found if found is not None else synthetic_classes(args.seed)
    tasks = [list(t) for t in chunk(stream, tasks=args.tasks)]
    source = f"paper's class lists ({args.reference})" if found is not None else "synthetic class lists"
    n_classes = sum(len(c) for c in adaptation.values())
    print(f"{source}: {len(adaptation)} stream datasets with {n_classes:,} classes + {len(evaluation)} "
          f"evaluation-only datasets = {len(adaptation) + len(evaluation)} datasets; {len(tasks)} tasks of "
          f"{len(tasks[-1])}-{len(tasks[0])} classes")

    with tempfile.TemporaryDirectory(prefix="bench_catalog_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        manifests = write_manifests(root / "data", adaptation, evaluation, args.rows_per_class,
                                    args.test_rows_per_class, args.seed)
        written_s = time.perf_counter() - start
        catalog = root / "catalog.duckdb"
        start = time.perf_counter()
        build_catalog(sorted(manifests.values()), catalog)
        build_s = time.perf_counter() - start
        n_rows = sum(pq.read_metadata(p).num_rows for p in manifests.values())
        print(f"{n_rows:,} manifest rows ({args.rows_per_class} train + {args.test_rows_per_class} test per class) "
              f"written in {written_s:.1f} s; build_catalog {build_s:.1f} s "
              f"({catalog.stat().st_size / 2**20:.0f} MiB)")

        # Warm-up: imports, lazy initialisation, the OS page cache of the files.
        measure(selections(catalog, manifests, tasks, tasks[0], 1), 1, args.rows_per_class * len(tasks[0]))
        per_task: dict[str, list[float]] = {"catalog": [], "manifests": []}
        for t, entries in enumerate(tasks, start=1):
            runs = selections(catalog, manifests, tasks, entries, t)
            for name, seconds in measure(runs, args.repeats, args.rows_per_class * len(entries)).items():
                per_task[name].append(seconds)
        buffer = [e for t in tasks[:-1] for e in t]
        buffer_s = measure(selections(catalog, manifests, tasks, buffer, len(tasks)), args.repeats,
                           args.rows_per_class * len(buffer))

    print(f"\nselect_rows(split='train', entries=task): median of {args.repeats} rounds per task, over "
          f"{len(tasks)} tasks of ~{args.rows_per_class * len(tasks[0]):,} rows (target < 1 s)")
    print(markdown_table(
        ["path", "task median (s)", "task max (s)", f"buffer at task {len(tasks)} (s)"],
        [[name, f"{median(seconds):.3f}", f"{max(seconds):.3f}", f"{buffer_s[name]:.3f}"]
         for name, seconds in per_task.items()],
    ))
    print(f"buffer: {len(buffer):,} entries of tasks 1..{len(tasks) - 1}, {args.rows_per_class * len(buffer):,} rows. "
          f"The manifests path reads the manifests of the datasets of tasks 1..t: {len(datasets_of(tasks[0]))} at "
          f"task 1, {len(datasets_of(stream))} at task {len(tasks)}.")


if __name__ == "__main__":
    main()
