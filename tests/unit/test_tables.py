"""Score tables of the report: final A_KA / A_ZS / GM per run as CSV and HTML, from the runs' summaries."""

from __future__ import annotations

import html.parser

import polars as pl
import pytest

from fomoflux.metrics import SUMMARY_SCHEMA
from fomoflux.tables import final_scores, write_score_tables

RUNS = {
    "finetune": {"method": "finetune", "stream": "random", "schedule": "cosine", "seed": 0},
    "lora": {"method": "lora", "stream": "random", "schedule": "cosine", "seed": 1},
    "zeroshot": {"method": "zeroshot", "stream": "random", "schedule": "-", "seed": 0},
}


def _summary() -> pl.DataFrame:
    rows = []
    for run, (ka, zs) in {"finetune": (0.30, 0.40), "lora": (0.25, 0.46), "zeroshot": (0.10, 0.50)}.items():
        for task in (2, 0, 1):  # out of order: the last task is the largest number, not the last row
            a_ka, a_zs = (0.10, 0.50) if task == 0 else (ka - 0.05 * (2 - task), zs + 0.01 * (2 - task))
            rows.append({"run": run, "task": task, "A_KA": a_ka, "A_ZS": a_zs, "GM": (a_ka * a_zs) ** 0.5,
                         "n_adaptation": 3, "n_evaluation": 2, "subset": True})
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)


def _full_summary() -> pl.DataFrame:
    """Full test sets: the base model (task 0) and the last task (2) only, scored a little apart from the subset."""
    return (_summary().filter(pl.col("task") != 1)
            .with_columns((pl.col("A_KA") + 0.02).alias("A_KA"), pl.lit(False).alias("subset")))


class _Cells(html.parser.HTMLParser):
    """The text of every table cell, per table and row (a real HTML parser: the page must be well formed)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.bold: list[str] = []
        self._cell: list[str] | None = None
        self._in_bold = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "b":
            self._in_bold = True

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "b":
            self._in_bold = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
            if self._in_bold:
                self.bold.append(data)


def test_final_scores_take_each_runs_last_task():
    final = final_scores(_summary(), RUNS)
    assert final["run"].to_list() == list(RUNS)
    assert final["task"].to_list() == [2, 2, 2]
    assert final["A_KA"].to_list() == pytest.approx([0.30, 0.25, 0.10])
    assert final["A_ZS"].to_list() == pytest.approx([0.40, 0.46, 0.50])
    assert final["GM"].to_list() == pytest.approx([(0.30 * 0.40) ** 0.5, (0.25 * 0.46) ** 0.5, (0.10 * 0.50) ** 0.5])
    assert final.row(1, named=True) | {"A_KA": None, "A_ZS": None, "GM": None} == {
        "run": "lora", "method": "lora", "stream": "random", "schedule": "cosine", "seed": 1, "task": 2,
        "A_KA": None, "A_ZS": None, "GM": None}


def test_csv_and_html_tables(tmp_path):
    csv, page = tmp_path / "tables" / "final_scores.csv", tmp_path / "tables" / "final_scores.html"
    write_score_tables(_summary(), RUNS, csv, page, title="Toy <stream>")
    read = pl.read_csv(csv)
    assert read.columns == ["run", "method", "stream", "schedule", "seed", "task", "A_KA", "A_ZS", "GM"]
    assert read["A_KA"].to_list() == pytest.approx([0.30, 0.25, 0.10])  # fractions, as in the duckdb
    text = page.read_text()
    assert "<title>Toy &lt;stream&gt;</title>" in text  # escaped
    cells = _Cells()
    cells.feed(text)
    final, per_task = cells.tables
    assert final[0] == ["run", "method", "stream", "schedule", "seed", "task", "A_KA (%)", "A_ZS (%)", "GM (%)"]
    assert [row[0] for row in final[1:]] == list(RUNS)
    assert final[1][6:] == ["30.0", "40.0", f"{100 * (0.30 * 0.40) ** 0.5:.1f}"]
    # the best of each score column in bold: finetune's A_KA and GM, zeroshot's A_ZS
    assert cells.bold == ["30.0", f"{100 * (0.30 * 0.40) ** 0.5:.1f}", "50.0"]
    assert per_task[0] == ["run", "task", "A_KA (%)", "A_ZS (%)", "GM (%)"]
    assert [(row[0], row[1]) for row in per_task[1:]] == [(r, str(t)) for r in RUNS for t in (0, 1, 2)]
    assert '<tr class="reference"><td>zeroshot</td>' in text
    assert sorted(p.name for p in csv.parent.iterdir()) == ["final_scores.csv", "final_scores.html"]  # no temp files


def test_full_test_set_tables_stand_apart(tmp_path):
    csv, page = tmp_path / "full_test_sets.csv", tmp_path / "full_test_sets.html"
    final = write_score_tables(_full_summary(), RUNS, csv, page, full=True)
    assert final["task"].to_list() == [2, 2, 2]
    assert pl.read_csv(csv)["A_KA"].to_list() == pytest.approx([0.32, 0.27, 0.12])  # the full sets' scores
    text = page.read_text()
    assert "<title>Full test sets</title>" in text and "Scored on the full test sets" in text
    cells = _Cells()
    cells.feed(text)
    assert [(row[0], row[1]) for row in cells.tables[1][1:]] == [(r, str(t)) for r in RUNS for t in (0, 2)]
    # a table of one kind takes no rows of the other
    with pytest.raises(ValueError, match=r"runs \['finetune', 'lora', 'zeroshot'\] have fixed-subset rows"):
        write_score_tables(_summary(), RUNS, tmp_path / "x.csv", tmp_path / "x.html", full=True)
    with pytest.raises(ValueError, match="have full-test-set rows; this table holds fixed-subset scores only"):
        write_score_tables(_full_summary(), RUNS, tmp_path / "x.csv", tmp_path / "x.html")
    assert not (tmp_path / "x.csv").exists()


def test_missing_scores_show_as_a_dash(tmp_path):
    summary = _summary().with_columns(pl.when(pl.col("run") == "lora").then(None).otherwise(pl.col("A_ZS"))
                                      .alias("A_ZS"))
    write_score_tables(summary, RUNS, tmp_path / "s.csv", tmp_path / "s.html")
    cells = _Cells()
    cells.feed((tmp_path / "s.html").read_text())
    assert cells.tables[0][2][7] == "–"


def test_errors_name_the_run_and_the_settings():
    with pytest.raises(ValueError, match=r"run 'ewc' has no summary rows \(runs in the summary: \['finetune', "):
        final_scores(_summary(), {**RUNS, "ewc": RUNS["finetune"]})
    with pytest.raises(ValueError, match=r"run 'lora' lacks settings \['seed'\]"):
        final_scores(_summary(), {"lora": {k: v for k, v in RUNS["lora"].items() if k != "seed"}})
    with pytest.raises(ValueError, match=r"lacks columns \['GM'\]"):
        final_scores(_summary().drop("GM"), RUNS)
    with pytest.raises(ValueError, match="no runs given"):
        final_scores(_summary(), {})
