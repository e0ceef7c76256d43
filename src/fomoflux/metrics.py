"""The metric matrix of a run, its A_KA / A_ZS / GM summary, and the cross-run results database.

Metric matrix (long table, one row per (run, task, dataset, metric)):
    run, task (0 = base model before the stream, t = after task t), dataset, role ("adaptation" | "evaluation"), kind,
    metric ("top1" | "R@1" | "R@5"), value (in [0, 1]), n, primary (bool), subset (bool: fixed subset vs full set).

Summary (one row per (run, task)):
    run, task, A_KA (mean primary metric over adaptation datasets), A_ZS (mean over evaluation datasets),
    GM = sqrt(A_KA · A_ZS), n_adaptation, n_evaluation, subset. Values in [0, 1]; A_KA / A_ZS / GM are null when the
    task has no dataset of that role.

Two kinds of each, never mixed: a run's trajectory (tasks 0..T, every point on the same fixed evaluation subset of
each dataset, so its points compare one to one) and its full-test-set scores (the base model, task 0, and the last
task T only). :func:`run_tables` builds both from the evaluations and refuses an evaluation of the other kind;
:func:`summarize` refuses a run whose matrix mixes the two.

Results database (duckdb): tables ``metrics`` and ``summary`` (the trajectories, fixed subset) and ``metrics_full``
and ``summary_full`` (full test sets) across runs; views ``final`` and ``final_full`` = the last task of each run in
each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl

from fomoflux.evaluate import EVAL_SCHEMA
from fomoflux.io import atomic_path

EVAL_COLUMNS = ("dataset", "role", "kind", "metric", "value", "n", "primary")

MATRIX_SCHEMA: dict[str, pl.DataType] = {
    "run": pl.String,
    "task": pl.Int64,
    **EVAL_SCHEMA,
    "subset": pl.Boolean,
}

SUMMARY_SCHEMA: dict[str, pl.DataType] = {
    "run": pl.String,
    "task": pl.Int64,
    "A_KA": pl.Float64,
    "A_ZS": pl.Float64,
    "GM": pl.Float64,
    "n_adaptation": pl.Int64,
    "n_evaluation": pl.Int64,
    "subset": pl.Boolean,
}

# The `runs` table: one row per run, from its runs/<run>/config.json (fomoflux.tracking.run_settings), so runs of a
# grid can be selected by setting. *_json columns are duckdb JSON (json_extract(method_options, '$.rank')).
RUNS_SCHEMA: dict[str, pl.DataType] = {
    "run": pl.String,
    "method": pl.String,
    "method_options": pl.String,
    "stream": pl.String,
    "ordering": pl.String,
    "tasks": pl.Int64,
    "seed": pl.Int64,
    "lr": pl.Float64,
    "batch_size": pl.Int64,
    "weight_decay": pl.Float64,
    "schedule": pl.String,
    "schedule_options": pl.String,
    "mixture": pl.String,
    "budget": pl.String,
    "steps_per_task": pl.Int64,
    "training": pl.String,
}
_RUNS_JSON_COLUMNS = ("method_options", "schedule_options", "mixture", "training")

ROLES = ("adaptation", "evaluation")

__all__ = ["MATRIX_SCHEMA", "RUNS_SCHEMA", "SUMMARY_SCHEMA", "matrix_from_evals", "read_results_db", "run_tables",
           "runs_frame", "summarize", "write_results_db"]


def _check_columns(frame: pl.DataFrame, needed: Sequence[str], what: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing} (has {frame.columns})")


def _check_unique(frame: pl.DataFrame, keys: list[str], what: str) -> None:
    dupes = frame.group_by(keys).len().filter(pl.col("len") > 1)
    if dupes.height:
        raise ValueError(f"{what}: duplicate rows for {keys}: {dupes.drop('len').head(5).to_dicts()}")


def matrix_from_evals(run: str, evals: Mapping[int, pl.DataFrame], *, subset: bool) -> pl.DataFrame:
    """Stack per-task ``evaluate_datasets`` frames into the run's metric matrix, sorted by task (row order kept within
    a task).

    ``evals[t]`` is the evaluation after task t (t = 0: the base model); ``subset`` says whether all of them are on the
    fixed subset (True) or all on the full test sets (False): one matrix is one kind (module docstring).
    """
    if not run:
        raise ValueError("matrix_from_evals: empty run name")
    parts = []
    for task in sorted(evals):
        if int(task) != task or task < 0:
            raise ValueError(f"matrix_from_evals({run!r}): task must be an int >= 0, got {task!r}")
        frame = evals[task]
        _check_columns(frame, EVAL_COLUMNS, f"matrix_from_evals({run!r}), task {task}")
        parts.append(
            frame.select(EVAL_COLUMNS).with_columns(
                pl.lit(run).alias("run"),
                pl.lit(int(task)).alias("task"),
                pl.lit(bool(subset)).alias("subset"),
            )
        )
    if not parts:
        return pl.DataFrame(schema=MATRIX_SCHEMA)
    matrix = pl.concat(parts, how="vertical_relaxed").select(
        [pl.col(name).cast(dtype) for name, dtype in MATRIX_SCHEMA.items()]
    )
    _check_unique(matrix, ["task", "dataset", "metric"], f"matrix_from_evals({run!r})")
    return matrix


class RunTables(NamedTuple):
    """A run's trajectory (fixed subset, tasks 0..T) and its full-test-set scores (tasks 0 and T), kept apart."""

    metrics: pl.DataFrame
    summary: pl.DataFrame
    metrics_full: pl.DataFrame
    summary_full: pl.DataFrame


def run_tables(run: str, trajectory: Mapping[int, pl.DataFrame], full: Mapping[int, pl.DataFrame]) -> RunTables:
    """The run's metric matrices and summaries of both kinds from its evaluations (``evaluate_datasets`` frames
    with the ``subset`` column the evaluate stage adds), task -> frame.

    ``trajectory``: the evaluations on the fixed subset, one per trajectory point (task 0 = the base model);
    ``full``: those on the full test sets (the base model and the last task). An evaluation of the wrong kind, or
    one that does not say which it is, is an error naming the run and the task: a trajectory never mixes the two.
    """
    for kind, evals, want in (("trajectory", trajectory, True), ("full-test-set", full, False)):
        for task, frame in evals.items():
            if "subset" not in frame.columns:
                raise ValueError(f"run {run!r}, task {task}: the evaluation has no 'subset' column, so it is unknown "
                                 "whether it is on the fixed subset or the full test sets (rerun it)")
            flags = frame["subset"].unique().to_list()
            if flags != [want]:
                found = "the full test sets" if flags == [False] else "the fixed subset" if flags == [True] else "both"
                raise ValueError(f"run {run!r}, task {task}: a {kind} evaluation must be on "
                                 f"{'the fixed subset' if want else 'the full test sets'}, this one is on {found}")
    metrics = matrix_from_evals(run, trajectory, subset=True)
    metrics_full = matrix_from_evals(run, full, subset=False)
    return RunTables(metrics, summarize(metrics), metrics_full, summarize(metrics_full))


def summarize(matrix: pl.DataFrame) -> pl.DataFrame:
    """Per (run, task): A_KA, A_ZS, GM = sqrt(A_KA·A_ZS), n_adaptation, n_evaluation, subset; sorted by run, task."""
    _check_columns(matrix, list(MATRIX_SCHEMA), "summarize")
    mixed = matrix.group_by("run").agg(pl.col("subset").n_unique().alias("kinds")).filter(pl.col("kinds") > 1)
    if mixed.height:
        raise ValueError(f"summarize: runs {sorted(mixed['run'].to_list())} mix fixed-subset and full-test-set "
                         "evaluations; a trajectory is on one or the other (summarize each kind apart)")
    primary = matrix.filter(pl.col("primary"))
    _check_unique(primary, ["run", "task", "dataset"], "summarize (primary metrics)")
    bad_roles = primary.filter(~pl.col("role").is_in(ROLES))["role"].unique().to_list()
    if bad_roles:
        raise ValueError(f"summarize: roles must be one of {ROLES}, got {bad_roles}")
    tasks = matrix.select("run", "task", "subset").group_by("run", "task").agg(pl.col("subset").all())
    per_role = primary.group_by("run", "task").agg(
        pl.col("value").filter(pl.col("role") == "adaptation").mean().alias("A_KA"),
        pl.col("value").filter(pl.col("role") == "evaluation").mean().alias("A_ZS"),
        (pl.col("role") == "adaptation").sum().cast(pl.Int64).alias("n_adaptation"),
        (pl.col("role") == "evaluation").sum().cast(pl.Int64).alias("n_evaluation"),
    )
    summary = (
        tasks.join(per_role, on=["run", "task"], how="left")
        .with_columns(
            pl.col("n_adaptation").fill_null(0),
            pl.col("n_evaluation").fill_null(0),
            (pl.col("A_KA") * pl.col("A_ZS")).sqrt().alias("GM"),
        )
        .select([pl.col(name).cast(dtype) for name, dtype in SUMMARY_SCHEMA.items()])
        .sort("run", "task")
    )
    return summary


def _stack(frames: Sequence[pl.DataFrame], schema: dict[str, pl.DataType], what: str) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    for frame in frames:
        _check_columns(frame, list(schema), f"write_results_db ({what})")
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat([f.select(list(schema)) for f in frames], how="vertical_relaxed").select(
        [pl.col(name).cast(dtype) for name, dtype in schema.items()]
    )


def runs_frame(settings: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """The ``runs`` table (``RUNS_SCHEMA``) from each run's resolved settings (``fomoflux.tracking.run_settings``)."""
    import json

    def as_json(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    rows = []
    for item in settings:
        training = item["training"]
        rows.append({
            "run": item["run"], "method": item["method"], "method_options": as_json(item["method_options"]),
            "stream": item["stream"], "ordering": item.get("stream_ordering"), "tasks": item.get("tasks"),
            "seed": item["seed"], "lr": training["lr"], "batch_size": training["batch_size"],
            "weight_decay": training["weight_decay"], "schedule": training["schedule"],
            "schedule_options": as_json(training.get("schedule_options", {})),
            "mixture": as_json(training["mixture"]), "budget": training["budget"],
            "steps_per_task": item["steps_per_task"], "training": as_json(training),
        })
    return pl.DataFrame(rows, schema=RUNS_SCHEMA)


def _check_kind(frame: pl.DataFrame, subset: bool, what: str) -> None:
    wrong = frame.filter(pl.col("subset") != subset)
    if wrong.height:
        found = sorted(set(wrong["run"].to_list()))
        raise ValueError(f"write_results_db ({what}): runs {found} have rows on "
                         f"{'the full test sets' if subset else 'the fixed subset'}; this table holds only "
                         f"{'fixed-subset' if subset else 'full-test-set'} results")


def write_results_db(path: str | os.PathLike, matrices: Sequence[pl.DataFrame], summaries: Sequence[pl.DataFrame],
                     runs: Sequence[Mapping[str, Any]] | None = None, *,
                     full_matrices: Sequence[pl.DataFrame] = (), full_summaries: Sequence[pl.DataFrame] = ()) -> None:
    """Write one duckdb file with tables ``metrics``, ``summary`` (the trajectories, on the fixed subset),
    ``metrics_full``, ``summary_full`` (full test sets: the base model and each run's last task), ``runs`` and views
    ``final`` and ``final_full`` (the last task of each run in ``summary`` / ``summary_full``).

    Each table holds one kind of result (:func:`run_tables`); a frame of the other kind is an error.
    ``runs``: each run's resolved settings (``fomoflux.tracking.run_settings``, as in runs/<run>/config.json); the
    table is empty without them. Its option, mixture and training columns are JSON, e.g. ``SELECT r.run, f.A_KA
    FROM final f JOIN runs r USING (run) WHERE r.method = 'lora' AND json_extract(r.method_options, '$.rank') = 4``.

    Built in a temporary file beside ``path`` and renamed over it, so a reader never sees a half-written database.
    """
    import duckdb

    tables: dict[str, pl.DataFrame] = {}
    for name, frames, schema, subset in (("metrics", matrices, MATRIX_SCHEMA, True),
                                         ("summary", summaries, SUMMARY_SCHEMA, True),
                                         ("metrics_full", full_matrices, MATRIX_SCHEMA, False),
                                         ("summary_full", full_summaries, SUMMARY_SCHEMA, False)):
        table = _stack(frames, schema, name)
        _check_kind(table, subset, name)
        keys = ["run", "task", "dataset", "metric"] if schema is MATRIX_SCHEMA else ["run", "task"]
        _check_unique(table, keys, f"write_results_db ({name})")
        tables[name] = table.sort("run", "task", maintain_order=True) if schema is MATRIX_SCHEMA else table
    run_table = runs_frame(runs or []).sort("run")
    _check_unique(run_table, ["run"], "write_results_db (runs)")

    with atomic_path(path) as tmp:
        tmp.unlink()  # duckdb creates the file itself; an empty file is not a database
        wal = Path(f"{tmp}.wal")
        try:
            con = duckdb.connect(str(tmp))
            try:
                for name, table in tables.items():
                    con.register(f"{name}_src", table.to_arrow())
                    con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_src")
                    con.unregister(f"{name}_src")
                con.register("runs_src", run_table.to_arrow())
                columns = ", ".join(f"CAST({name} AS JSON) AS {name}" if name in _RUNS_JSON_COLUMNS else name
                                    for name in RUNS_SCHEMA)
                con.execute(f"CREATE TABLE runs AS SELECT {columns} FROM runs_src")
                con.unregister("runs_src")
                for view, table in (("final", "summary"), ("final_full", "summary_full")):
                    con.execute(
                        f"CREATE VIEW {view} AS SELECT s.* FROM {table} s "
                        f"WHERE s.task = (SELECT max(l.task) FROM {table} l WHERE l.run = s.run) ORDER BY s.run"
                    )
                con.execute("CHECKPOINT")
            finally:
                con.close()
        finally:
            wal.unlink(missing_ok=True)


def read_results_db(path: str | os.PathLike) -> dict[str, pl.DataFrame]:
    """The ``metrics``, ``summary``, ``final`` and (when there) ``runs``, ``metrics_full``, ``summary_full`` and
    ``final_full`` relations of a results database as polars frames (read-only)."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = {row[0] for row in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        optional = ("runs", "metrics_full", "summary_full", "final_full")
        names = ("metrics", "summary", "final") + tuple(name for name in optional if name in tables)
        return {name: con.sql(f"SELECT * FROM {name}").pl() for name in names}
    finally:
        con.close()
