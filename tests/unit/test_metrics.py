"""The metric matrix, the A_KA / A_ZS / GM summary and the duckdb results database."""

from __future__ import annotations

import math

import duckdb
import polars as pl
import pytest

from fomoflux.metrics import (
    MATRIX_SCHEMA,
    SUMMARY_SCHEMA,
    matrix_from_evals,
    read_results_db,
    summarize,
    write_results_db,
)


def _eval(values: dict[str, float]) -> pl.DataFrame:
    """adaptation: a1, a2 (top1), fs (retrieval, R@5 primary); evaluation: e1 (top1), mc (retrieval)."""
    rows = [
        ("a1", "adaptation", "classification", "top1", values["a1"], True),
        ("a2", "adaptation", "classification", "top1", values["a2"], True),
        ("fs", "adaptation", "retrieval", "R@1", 0.99, False),  # non-primary: must not count
        ("fs", "adaptation", "retrieval", "R@5", values["fs"], True),
        ("e1", "evaluation", "classification", "top1", values["e1"], True),
        ("mc", "evaluation", "retrieval", "R@1", 0.01, False),
        ("mc", "evaluation", "retrieval", "R@5", values["mc"], True),
    ]
    return pl.DataFrame(
        [dict(dataset=d, role=r, kind=k, metric=m, value=v, n=10, primary=p) for d, r, k, m, v, p in rows]
    )


@pytest.fixture
def matrix_a():
    evals = {
        2: _eval(dict(a1=0.9, a2=0.7, fs=0.5, e1=0.4, mc=0.2)),
        0: _eval(dict(a1=0.3, a2=0.0, fs=0.3, e1=0.6, mc=0.4)),
        1: _eval(dict(a1=0.6, a2=0.3, fs=0.3, e1=0.5, mc=0.3)),
    }
    return matrix_from_evals("run_a", evals, {0: True, 1: True, 2: False})


@pytest.fixture
def matrix_b():
    evals = {0: _eval(dict(a1=0.3, a2=0.0, fs=0.3, e1=0.6, mc=0.4)), 1: _eval(dict(a1=0.5, a2=0.5, fs=0.5, e1=0.5, mc=0.5))}
    return matrix_from_evals("run_b", evals, {0: True, 1: False})


def test_matrix_from_evals(matrix_a):
    assert matrix_a.schema == pl.Schema(MATRIX_SCHEMA)
    assert matrix_a.height == 21
    assert matrix_a["task"].to_list() == [0] * 7 + [1] * 7 + [2] * 7
    assert set(matrix_a["run"]) == {"run_a"}
    assert matrix_a.filter(pl.col("task") == 2)["subset"].to_list() == [False] * 7
    assert matrix_a.filter(pl.col("task") < 2)["subset"].all()
    with pytest.raises(ValueError, match=r"no subset flag for tasks \[1\]"):
        matrix_from_evals("r", {0: _eval(dict(a1=0, a2=0, fs=0, e1=0, mc=0)), 1: _eval(dict(a1=0, a2=0, fs=0, e1=0, mc=0))}, {0: True})
    dup = pl.concat([_eval(dict(a1=0, a2=0, fs=0, e1=0, mc=0))] * 2)
    with pytest.raises(ValueError, match="duplicate"):
        matrix_from_evals("r", {0: dup}, {0: True})
    with pytest.raises(ValueError, match="missing columns"):
        matrix_from_evals("r", {0: dup.drop("primary")}, {0: True})


def test_summarize_hand_made(matrix_a, matrix_b):
    summary = summarize(pl.concat([matrix_b, matrix_a]))
    assert summary.schema == pl.Schema(SUMMARY_SCHEMA)
    assert summary.select("run", "task").rows() == [("run_a", 0), ("run_a", 1), ("run_a", 2), ("run_b", 0), ("run_b", 1)]
    expected = {  # (A_KA, A_ZS) by hand: mean of primary metrics per role
        ("run_a", 0): ((0.3 + 0.0 + 0.3) / 3, (0.6 + 0.4) / 2),
        ("run_a", 1): ((0.6 + 0.3 + 0.3) / 3, (0.5 + 0.3) / 2),
        ("run_a", 2): ((0.9 + 0.7 + 0.5) / 3, (0.4 + 0.2) / 2),
        ("run_b", 1): (0.5, 0.5),
    }
    for row in summary.iter_rows(named=True):
        assert row["n_adaptation"] == 3 and row["n_evaluation"] == 2
        if (row["run"], row["task"]) in expected:
            ka, zs = expected[(row["run"], row["task"])]
            assert row["A_KA"] == pytest.approx(ka)
            assert row["A_ZS"] == pytest.approx(zs)
            assert row["GM"] == pytest.approx(math.sqrt(ka * zs))
    assert summary.filter(pl.col("run") == "run_a")["subset"].to_list() == [True, True, False]


def test_summarize_role_missing_gives_null(matrix_a):
    only_adapt = matrix_a.filter(pl.col("role") == "adaptation")
    summary = summarize(only_adapt)
    assert summary["A_ZS"].null_count() == 3 and summary["GM"].null_count() == 3
    assert summary["n_evaluation"].to_list() == [0, 0, 0]
    assert summary["A_KA"].to_list()[0] == pytest.approx(0.2)


def test_results_db_queryable_from_fresh_connection(tmp_path, matrix_a, matrix_b):
    summaries = [summarize(matrix_a), summarize(matrix_b)]
    path = tmp_path / "out" / "results.duckdb"
    write_results_db(path, [matrix_a, matrix_b], summaries)
    write_results_db(path, [matrix_a, matrix_b], summaries)  # overwriting an existing database is fine
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.duckdb"]  # no temp / wal files left

    con = duckdb.connect(str(path), read_only=True)
    try:
        final = con.execute("SELECT run, task, A_KA, A_ZS FROM final ORDER BY run").fetchall()
        assert [(r, t) for r, t, _, _ in final] == [("run_a", 2), ("run_b", 1)]
        assert final[0][2] == pytest.approx(0.7) and final[0][3] == pytest.approx(0.3)
        assert con.execute("SELECT count(*) FROM metrics").fetchone()[0] == matrix_a.height + matrix_b.height
        assert con.execute("SELECT count(*) FROM summary").fetchone()[0] == 5
        assert con.execute(
            "SELECT value FROM metrics WHERE run = 'run_a' AND task = 2 AND dataset = 'fs' AND metric = 'R@5'"
        ).fetchone()[0] == pytest.approx(0.5)
    finally:
        con.close()
    frames = read_results_db(path)
    assert frames["final"].height == 2 and frames["metrics"].schema["primary"] == pl.Boolean


def test_results_db_failed_write_keeps_old_file(tmp_path, matrix_a):
    path = tmp_path / "results.duckdb"
    write_results_db(path, [matrix_a], [summarize(matrix_a)])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="duplicate"):
        write_results_db(path, [matrix_a, matrix_a], [summarize(matrix_a)])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.duckdb"]


def test_results_db_empty(tmp_path):
    path = tmp_path / "empty.duckdb"
    write_results_db(path, [], [])
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM final").fetchone()[0] == 0
        assert [c[0] for c in con.execute("DESCRIBE summary").fetchall()] == list(SUMMARY_SCHEMA)
    finally:
        con.close()
