"""The sample catalog: every dataset's manifest in one duckdb file, queried to pick the samples of a task or an
evaluation set.

Tables:
    samples   one row per sample, the manifest columns (``fomoflux.data.shards.MANIFEST_SCHEMA``).
    datasets  dataset, split, n_samples, n_classes (distinct class ids; 0 for caption-only sets).

Readers open the file ``read_only`` so that many pipeline jobs can query it at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

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


def _connect(catalog: "Path | Sequence[Path]"):
    """A read-only duckdb connection with a ``samples`` table: the catalog file, or the given manifests in memory.

    Pipeline jobs pass the manifests of exactly the datasets they declare as inputs, so each job depends on
    the data it reads and nothing else (the catalog file covers every dataset and is rebuilt whenever one is
    added); both paths run the same queries below.
    """
    import duckdb

    if isinstance(catalog, (list, tuple)):
        tables = [_read_manifest(Path(path)) for path in catalog]
        merged = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
        con = duckdb.connect()
        con.register("samples", merged)
        return con
    catalog = Path(catalog)
    if not catalog.is_file():
        raise DataError(f"missing catalog {catalog}")
    try:
        return duckdb.connect(str(catalog), read_only=True)
    except duckdb.Error as exc:
        raise DataError(f"cannot open catalog {catalog}: {exc}") from exc


def select_rows(catalog: "Path | Sequence[Path]", *, split: str, dataset: str | None = None,
                entries: list[str] | None = None) -> "pl.DataFrame":
    """The ``split`` rows of one ``dataset``, or of the stream ``entries`` (``DATASET+++classname``: every sample of
    those classes), ordered by (dataset, index). Exactly one of ``dataset`` / ``entries`` must be given.
    ``catalog`` is a catalog file or a list of manifest files (queried in memory).

    A dataset absent from the catalog is a DataError; one without samples in ``split`` gives an empty frame. A stream
    entry without samples in ``split`` (unknown dataset or class) is a DataError naming it."""
    if (dataset is None) == (entries is None):
        raise ValueError("select_rows: give exactly one of dataset= or entries=")
    con = _connect(catalog)
    try:
        if dataset is not None:
            rows = con.sql(
                f'SELECT {_COLUMNS} FROM samples WHERE dataset = ? AND split = ? ORDER BY dataset, "index"',
                params=[dataset, split],
            ).pl()
            if rows.height == 0 and not con.execute("SELECT 1 FROM samples WHERE dataset = ? LIMIT 1",
                                                    [dataset]).fetchall():
                raise DataError(f"catalog {catalog}: unknown dataset {dataset!r}")
            return rows  # empty when the dataset exists but has no such split (e.g. the pool's "test")

        # Thousands of entries: join against a registered Arrow table instead of building an IN-list.
        unique = list(dict.fromkeys(entries or []))
        parsed = [split_entry(entry) for entry in unique]
        wanted = pa.table(
            {"entry": unique, "dataset": [d for d, _ in parsed], "class_name": [c for _, c in parsed]},
            schema=pa.schema([("entry", pa.string()), ("dataset", pa.string()), ("class_name", pa.string())]),
        )
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
            names = [row[0] for row in absent]
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            raise DataError(f"catalog {catalog}: stream entries with no samples in split {split!r}: "
                            f"{', '.join(repr(n) for n in names[:5])}{more}")
        cols = ", ".join(f's."{name}"' for name in MANIFEST_SCHEMA.names)
        return con.sql(
            f"""
            SELECT {cols} FROM samples s
            JOIN wanted w ON s.dataset = w.dataset AND s.class_name = w.class_name
            WHERE s.split = ? ORDER BY s.dataset, s."index"
            """,
            params=[split],
        ).pl()
    finally:
        con.close()
