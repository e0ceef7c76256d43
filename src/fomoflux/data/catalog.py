"""The sample catalog: every dataset's manifest in one duckdb file, queried to pick the samples of a task or an
evaluation set.

Tables:
    samples   one row per sample, the manifest columns (``fomoflux.data.shards.MANIFEST_SCHEMA``).
    datasets  dataset, split, n_samples, n_classes (distinct class ids; 0 for caption-only sets).

Readers open the file ``read_only`` so that many pipeline jobs can query it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from fomoflux.data.registry import split_entry
from fomoflux.data.shards import MANIFEST_SCHEMA
from fomoflux.errors import DataError
from fomoflux.io import atomic_path

if TYPE_CHECKING:
    import polars as pl

_COLUMNS = ", ".join(f'"{name}"' for name in MANIFEST_SCHEMA.names)


def _read_manifest(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError(f"missing manifest {path}") from None
    except Exception as exc:
        raise DataError(f"cannot read manifest {path}: {exc}") from exc
    absent = [name for name in MANIFEST_SCHEMA.names if name not in table.column_names]
    if absent:
        raise DataError(f"manifest {path} lacks column(s) {absent}")
    return table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)


def build_catalog(manifests: list[Path], out: Path) -> None:
    """Write the catalog of ``manifests`` to ``out`` atomically. A dataset found in two manifests is a DataError."""
    import duckdb

    tables = []
    owner: dict[str, Path] = {}
    for path in manifests:
        table = _read_manifest(Path(path))
        for dataset in table.column("dataset").unique().to_pylist():
            if dataset in owner:
                raise DataError(f"dataset {dataset!r} appears in two manifests: {owner[dataset]} and {path}")
            owner[dataset] = Path(path)
        tables.append(table)
    merged = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()

    with atomic_path(out) as tmp:
        # duckdb refuses the empty placeholder file that atomic_path reserves; it creates its own at that name.
        tmp.unlink()
        con = duckdb.connect(str(tmp))
        try:
            con.register("merged", merged)
            con.execute(f"CREATE TABLE samples AS SELECT {_COLUMNS} FROM merged ORDER BY dataset, split, \"index\"")
            con.unregister("merged")
            con.execute(
                """
                CREATE TABLE datasets AS
                SELECT dataset, split, count(*) AS n_samples,
                       count(DISTINCT class_id) FILTER (WHERE class_id >= 0) AS n_classes
                FROM samples GROUP BY dataset, split ORDER BY dataset, split
                """
            )
            con.execute("CHECKPOINT")
        finally:
            con.close()


def _connect(catalog: Path):
    """A read-only duckdb connection to the catalog file; a missing or unreadable file is a DataError."""
    import duckdb

    if not catalog.is_file():
        raise DataError(f"missing catalog {catalog}")
    try:
        return duckdb.connect(str(catalog), read_only=True)
    except duckdb.Error as exc:
        raise DataError(f"cannot open catalog {catalog}: {exc}") from exc


def _wanted(entries: list[str]) -> pa.Table:
    """The distinct stream ``entries`` in order of first occurrence, as (entry, dataset, class_name) columns."""
    unique = list(dict.fromkeys(entries))
    parsed = [split_entry(entry) for entry in unique]
    return pa.table(
        {"entry": unique, "dataset": [d for d, _ in parsed], "class_name": [c for _, c in parsed]},
        schema=pa.schema([("entry", pa.string()), ("dataset", pa.string()), ("class_name", pa.string())]),
    )


def _absent_entries(where: str, split: str, names: list[str]) -> DataError:
    """The DataError for stream entries without samples in ``split``, naming the first five."""
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return DataError(f"{where}: stream entries with no samples in split {split!r}: "
                     f"{', '.join(repr(n) for n in names[:5])}{more}")


def select_rows(catalog: Path | Sequence[Path], *, split: str, dataset: str | None = None,
                entries: list[str] | None = None, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """The ``split`` rows of one ``dataset``, or of the stream ``entries`` (``DATASET+++classname``: every sample of
    those classes), ordered by (dataset, index). Exactly one of ``dataset`` / ``entries`` must be given.
    ``catalog`` is a catalog file or a list of manifest files.

    Pipeline jobs pass the manifests of exactly the datasets they declare as inputs, so each job depends on the
    data it reads and nothing else (the catalog file covers every dataset and is rebuilt whenever one is added).
    Both give the same frame: the manifest columns with ``MANIFEST_SCHEMA``'s types.

    A dataset absent from the catalog is a DataError; one without samples in ``split`` gives an empty frame. A stream
    entry without samples in ``split`` (unknown dataset or class) is a DataError naming it. A malformed entry is a
    ConfigError; a missing or unreadable manifest, or one without the manifest columns, is a DataError naming it.

    ``columns`` keeps only those columns (plus dataset and index, which order the rows). On manifest files the
    others are never read: a job that streams its samples selects a million buffer rows without their captions."""
    if (dataset is None) == (entries is None):
        raise ValueError("select_rows: give exactly one of dataset= or entries=")
    wanted = None if entries is None else _wanted(entries)
    keep = None
    if columns is not None:
        keep = list(dict.fromkeys(["dataset", "index", *columns]))
        unknown = [c for c in keep if c not in MANIFEST_SCHEMA.names]
        if unknown:
            raise ValueError(f"select_rows: unknown manifest column(s) {unknown}")
    if isinstance(catalog, (list, tuple)):
        return _select_from_manifests([Path(path) for path in catalog], split, dataset, wanted, keep)
    rows = _select_from_catalog(Path(catalog), split, dataset, wanted)
    return rows if keep is None else rows.select(keep)


def _select_from_catalog(catalog: Path, split: str, dataset: str | None, wanted: pa.Table | None) -> pl.DataFrame:
    """select_rows on the duckdb catalog file."""
    con = _connect(catalog)
    try:
        if wanted is None:
            # Sorted in polars rather than by ORDER BY: see _sorted_by_dataset_index.
            rows = con.sql(f"SELECT {_COLUMNS} FROM samples WHERE dataset = ? AND split = ?",
                           params=[dataset, split]).pl()
            if rows.height == 0 and not con.execute("SELECT 1 FROM samples WHERE dataset = ? LIMIT 1",
                                                    [dataset]).fetchall():
                raise DataError(f"catalog {catalog}: unknown dataset {dataset!r}")
            return _sorted_by_dataset_index(rows)  # empty when the dataset has no such split (e.g. the pool's "test")

        # Thousands of entries: join against a registered Arrow table instead of building an IN-list.
        con.register("wanted", wanted)
        absent = con.execute(
            """
            SELECT w.entry FROM wanted w
            WHERE NOT EXISTS (SELECT 1 FROM samples s
                              WHERE s.dataset = w.dataset AND s.class_name = w.class_name AND s.split = ?)
            """,
            [split],
        ).fetchall()
        if absent:
            missing = {row[0] for row in absent}
            # Name them in stream order (the query's order is the engine's).
            raise _absent_entries(f"catalog {catalog}", split, [e for e in wanted["entry"].to_pylist() if e in missing])
        cols = ", ".join(f's."{name}"' for name in MANIFEST_SCHEMA.names)
        rows = con.sql(
            f"""
            SELECT {cols} FROM samples s
            JOIN wanted w ON s.dataset = w.dataset AND s.class_name = w.class_name
            WHERE s.split = ?
            """,
            params=[split],
        ).pl()
        return _sorted_by_dataset_index(rows)
    finally:
        con.close()


def _polars_schema() -> dict[str, pl.DataType]:
    """MANIFEST_SCHEMA's columns as polars types (what duckdb's ``.pl()`` gives for them)."""
    import polars as pl

    return dict(pl.from_arrow(MANIFEST_SCHEMA.empty_table()).schema)


def _scan_manifest(path: Path) -> pl.LazyFrame:
    """A lazy scan of one manifest's columns, cast to MANIFEST_SCHEMA's types. Only the parquet footer is read
    here: a missing file, an unreadable footer or absent columns are a DataError naming the file."""
    import polars as pl

    try:
        names = pq.read_schema(path).names
    except FileNotFoundError:
        raise DataError(f"missing manifest {path}") from None
    except Exception as exc:
        raise DataError(f"cannot read manifest {path}: {exc}") from exc
    absent = [name for name in MANIFEST_SCHEMA.names if name not in names]
    if absent:
        raise DataError(f"manifest {path} lacks column(s) {absent}")
    # glob / hive_partitioning off: a manifest path is a file name, never a pattern or a partitioned folder.
    scan = pl.scan_parquet(path, glob=False, hive_partitioning=False)
    return scan.select([pl.col(name).cast(dtype) for name, dtype in _polars_schema().items()])


def _collect(frame: pl.LazyFrame, manifests: list[Path]) -> pl.DataFrame:
    """``frame.collect()``; a read or cast failure is a DataError naming the manifest at fault."""
    import polars as pl

    try:
        return frame.collect()
    except pl.exceptions.PolarsError as exc:
        # Only on failure: find the culprit by reading each manifest alone.
        for path in manifests:
            try:
                _scan_manifest(path).collect()
            except pl.exceptions.PolarsError as single:
                raise DataError(f"cannot read manifest {path}: {single}") from single
        raise DataError(f"cannot read manifests {[str(p) for p in manifests]}: {exc}") from exc


def _sorted_by_dataset_index(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` ordered by (dataset, index).

    Manifests list each split in index order, a job's manifests are usually one per dataset in name order, and the
    catalog table is stored in that order, so rows mostly arrive sorted: checking that (linear) costs a tenth of
    sorting a million rows, which gathers every column, the caption lists included. Where a sort is needed, polars'
    is faster than duckdb's ORDER BY on these wide rows (0.2 vs 0.5 s for the 1M-row buffer of the paper's stream).
    """
    import polars as pl

    if rows.height < 2:
        return rows
    dataset, index = rows["dataset"], rows["index"]
    if dataset.is_sorted():
        new_dataset = pl.Series(dataset.head(-1) != dataset.tail(-1))
        if bool((new_dataset | (index.tail(-1) > index.head(-1))).all()):
            return rows
    return rows.sort("dataset", "index")


def _select_from_manifests(manifests: list[Path], split: str, dataset: str | None,
                           wanted: pa.Table | None, keep: list[str] | None = None) -> pl.DataFrame:
    """select_rows on manifest files, read with polars' lazy parquet scan.

    Faster than loading every manifest whole (what the catalog file is built from) and joining in duckdb: the
    scan decodes the files in parallel, skips row groups and files whose statistics rule out ``dataset`` /
    ``split``, and its result needs no conversion to polars. benchmarks/bench_catalog.py, the paper's 18,381-class
    stream at 60 rows per class in 20 tasks, 41 manifests, loaded 2-core machine: a task's 55k rows 1.0 -> 0.22 s,
    the 1M-row buffer of task 20 2.4 -> 0.38 s.
    """
    import polars as pl

    schema = _polars_schema()
    if not manifests:
        samples = pl.LazyFrame(schema=schema)
    else:
        samples = pl.concat([_scan_manifest(path) for path in manifests], how="vertical")
    in_split = samples.filter(pl.col("split") == split)
    if wanted is None:
        chosen = in_split.filter(pl.col("dataset") == dataset)
        rows = _collect(chosen if keep is None else chosen.select(keep), manifests)
        if rows.height == 0:
            known = samples.filter(pl.col("dataset") == dataset).select("dataset").head(1)
            if _collect(known, manifests).height == 0:
                raise DataError(f"manifests {[str(p) for p in manifests]}: unknown dataset {dataset!r}")
        return _sorted_by_dataset_index(rows)  # empty when the dataset has no such split (e.g. the pool's "test")

    pairs = pl.from_arrow(wanted).lazy()
    on = ["dataset", "class_name"]
    # maintain_order: keep the manifests' order, which is usually the wanted one already (see the sort helper).
    chosen = in_split.join(pairs.select(on), on=on, how="semi", maintain_order="left")
    rows = _collect(chosen if keep is None else chosen.select(list(dict.fromkeys([*keep, *on]))), manifests)
    absent = pairs.join(rows.lazy().select(on), on=on, how="anti", maintain_order="left").collect()
    if keep is not None:
        rows = rows.select(list(dict.fromkeys([*keep, *on])))
    if absent.height:
        raise _absent_entries(f"manifests {[str(p) for p in manifests]}", split, absent["entry"].to_list())
    return _sorted_by_dataset_index(rows)
