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
    run_tables,
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
    return matrix_from_evals("run_a", evals, subset=True)


@pytest.fixture
def matrix_b():
    evals = {
        0: _eval(dict(a1=0.3, a2=0.0, fs=0.3, e1=0.6, mc=0.4)),
        1: _eval(dict(a1=0.5, a2=0.5, fs=0.5, e1=0.5, mc=0.5)),
    }
    return matrix_from_evals("run_b", evals, subset=True)


def test_matrix_from_evals(matrix_a):
    assert matrix_a.schema == pl.Schema(MATRIX_SCHEMA)
    assert matrix_a.height == 21
    assert matrix_a["task"].to_list() == [0] * 7 + [1] * 7 + [2] * 7
    assert set(matrix_a["run"]) == {"run_a"}
    assert matrix_a["subset"].to_list() == [True] * 21
    zeros = _eval(dict(a1=0, a2=0, fs=0, e1=0, mc=0))
    assert not matrix_from_evals("r", {0: zeros, 3: zeros}, subset=False)["subset"].any()
    dup = pl.concat([zeros] * 2)
    with pytest.raises(ValueError, match="duplicate"):
        matrix_from_evals("r", {0: dup}, subset=True)
    with pytest.raises(ValueError, match="missing columns"):
        matrix_from_evals("r", {0: dup.drop("primary")}, subset=True)


def test_summarize_hand_made(matrix_a, matrix_b):
    summary = summarize(pl.concat([matrix_b, matrix_a]))
    assert summary.schema == pl.Schema(SUMMARY_SCHEMA)
    assert summary.select("run", "task").rows() == [
        ("run_a", 0), ("run_a", 1), ("run_a", 2), ("run_b", 0), ("run_b", 1)
    ]
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
    assert summary.filter(pl.col("run") == "run_a")["subset"].to_list() == [True, True, True]


def _evaluated(values: dict[str, float], subset: bool) -> pl.DataFrame:
    """An evaluate stage's output: the evaluation with the column saying which sample set it is on."""
    return _eval(values).with_columns(pl.lit(subset).alias("subset"))


def test_run_tables_keep_the_trajectory_and_the_full_test_sets_apart():
    low, high = dict(a1=0.3, a2=0.0, fs=0.3, e1=0.6, mc=0.4), dict(a1=0.9, a2=0.7, fs=0.5, e1=0.4, mc=0.2)
    trajectory = {0: _evaluated(low, True), 1: _evaluated(low, True), 2: _evaluated(high, True)}
    full_high = dict(high, a1=0.8)  # the full test set scores the last task a little differently
    full = {0: _evaluated(low, False), 2: _evaluated(full_high, False)}
    tables = run_tables("run_a", trajectory, full)
    assert tables.metrics["task"].unique().sort().to_list() == [0, 1, 2] and tables.metrics["subset"].all()
    assert tables.summary["task"].to_list() == [0, 1, 2] and tables.summary["subset"].all()
    assert tables.metrics_full["task"].unique().sort().to_list() == [0, 2] and not tables.metrics_full["subset"].any()
    assert tables.summary_full["task"].to_list() == [0, 2] and not tables.summary_full["subset"].any()
    # each kind's last point comes from its own evaluation, never the other's
    assert tables.summary["A_KA"][-1] == pytest.approx((0.9 + 0.7 + 0.5) / 3)
    assert tables.summary_full["A_KA"][-1] == pytest.approx((0.8 + 0.7 + 0.5) / 3)

    # A full-test-set evaluation in a trajectory (what the pipeline did before: task 0 and the last task on the
    # full sets, the tasks between on the subset) is refused, and so is the converse.
    with pytest.raises(ValueError, match=r"run 'run_a', task 2: a trajectory evaluation must be on the fixed subset"):
        run_tables("run_a", {**trajectory, 2: _evaluated(high, False)}, full)
    with pytest.raises(ValueError, match=r"task 0: a full-test-set evaluation must be on the full test sets"):
        run_tables("run_a", trajectory, {**full, 0: _evaluated(low, True)})
    with pytest.raises(ValueError, match="no 'subset' column"):
        run_tables("run_a", {**trajectory, 1: _eval(low)}, full)
    # and a matrix mixing the two kinds cannot be summarised into one trajectory
    mixed = pl.concat([tables.metrics.filter(pl.col("task") < 2), tables.metrics_full.filter(pl.col("task") == 2)])
    with pytest.raises(ValueError, match=r"runs \['run_a'\] mix fixed-subset and full-test-set"):
        summarize(mixed)


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
    assert frames["final_full"].height == 0 and list(frames["summary_full"].columns) == list(SUMMARY_SCHEMA)


def test_results_db_holds_the_full_test_sets_in_tables_of_their_own(tmp_path, matrix_a):
    full = matrix_from_evals("run_a", {0: matrix_a.filter(pl.col("task") == 0).drop("run", "task", "subset"),
                                       2: matrix_a.filter(pl.col("task") == 1).drop("run", "task", "subset")},
                             subset=False)
    path = tmp_path / "results.duckdb"
    write_results_db(path, [matrix_a], [summarize(matrix_a)], full_matrices=[full], full_summaries=[summarize(full)])
    frames = read_results_db(path)
    assert frames["summary"]["task"].to_list() == [0, 1, 2] and frames["summary"]["subset"].all()
    assert frames["summary_full"]["task"].to_list() == [0, 2] and not frames["summary_full"]["subset"].any()
    assert frames["metrics_full"].height == full.height
    assert frames["final"]["A_KA"].to_list() == pytest.approx([(0.9 + 0.7 + 0.5) / 3])
    assert frames["final_full"]["task"].to_list() == [2]
    assert frames["final_full"]["A_KA"].to_list() == pytest.approx([(0.6 + 0.3 + 0.3) / 3])
    # a table of one kind takes no frame of the other
    with pytest.raises(ValueError, match=r"\(summary\): runs \['run_a'\] have rows on the full test sets"):
        write_results_db(tmp_path / "bad.duckdb", [], [summarize(full)])
    with pytest.raises(ValueError, match=r"\(metrics_full\): runs \['run_a'\] have rows on the fixed subset"):
        write_results_db(tmp_path / "bad.duckdb", [], [], full_matrices=[matrix_a])
    assert not (tmp_path / "bad.duckdb").exists()


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
