"""Score tables of the report: each run's final A_KA / A_ZS / GM (and every task's), as CSV and as an HTML page.

Two kinds, never in one table: the trajectories' scores (every task on the fixed evaluation subset,
``tables/final_scores``) and the full-test-set scores (the base model and each run's last task,
``tables/full_test_sets``, with ``full=True``).

The CSV is for scripts and spreadsheets (fractions in [0, 1], full precision); the HTML page is what
``snakemake --report`` shows (values in %, one decimal, the best value per column in bold, the zero-shot base model's
row marked). Both come from the runs' summary tables (:func:`fomoflux.metrics.summarize`), so they hold exactly what
``fomoflux.duckdb``'s ``final`` view holds.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence

import polars as pl

from fomoflux.io import atomic_path, write_text

SCORES = ("A_KA", "A_ZS", "GM")
SETTINGS = ("method", "stream", "schedule", "seed")

__all__ = ["SCORES", "SETTINGS", "final_scores", "write_score_tables"]


def final_scores(summary: pl.DataFrame, runs: Mapping[str, Mapping[str, object]]) -> pl.DataFrame:
    """One row per run of ``runs`` (in its order): the run's settings (:data:`SETTINGS`), its last task and the
    A_KA / A_ZS / GM after it (fractions; null where the run has no dataset of that role).

    ``runs``: run name -> {method, stream, schedule, seed}. A run without any summary row is an error naming it.
    """
    missing_columns = [c for c in ("run", "task", *SCORES) if c not in summary.columns]
    if missing_columns:
        raise ValueError(f"final_scores: the summary lacks columns {missing_columns} (has {summary.columns})")
    if not runs:
        raise ValueError("final_scores: no runs given")
    rows = []
    for name, settings in runs.items():
        missing = [k for k in SETTINGS if k not in settings]
        if missing:
            raise ValueError(f"final_scores: run {name!r} lacks settings {missing} (has {sorted(settings)})")
        own = summary.filter(pl.col("run") == name)
        if own.height == 0:
            known = sorted(set(summary["run"].to_list()))
            raise ValueError(f"final_scores: run {name!r} has no summary rows (runs in the summary: {known})")
        last = own.sort("task").row(-1, named=True)
        rows.append({"run": name, **{k: settings[k] for k in SETTINGS}, "task": last["task"],
                     **{score: last[score] for score in SCORES}})
    schema = {"run": pl.String, "method": pl.String, "stream": pl.String, "schedule": pl.String, "seed": pl.Int64,
              "task": pl.Int64, **{score: pl.Float64 for score in SCORES}}
    return pl.DataFrame(rows, schema=schema)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100.0 * value:.1f}"


def _html_table(frame: pl.DataFrame, caption: str, *, bold_best: Sequence[str], mark: Sequence[str]) -> str:
    """An HTML table of ``frame``: scores in %, the best of each ``bold_best`` column in bold, the rows of the
    ``mark`` runs in italics."""
    best = {c: frame[c].max() for c in bold_best if frame[c].null_count() < frame.height}
    head = "".join(f"<th>{html.escape(c)}{' (%)' if c in SCORES else ''}</th>" for c in frame.columns)
    body = []
    for row in frame.iter_rows(named=True):
        cells = []
        for column, value in row.items():
            if column in SCORES:
                text = _percent(value)
                if column in best and value is not None and value == best[column]:
                    text = f"<b>{text}</b>"
                cells.append(f'<td class="num">{text}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        css = ' class="reference"' if row["run"] in mark else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return (f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; color: #222; }
table { border-collapse: collapse; margin: 0 0 2em 0; }
caption { text-align: left; font-weight: bold; padding: 0 0 0.5em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.reference td { font-style: italic; color: #555; }
p { max-width: 60em; }
"""


def write_score_tables(summary: pl.DataFrame, runs: Mapping[str, Mapping[str, object]], out_csv: str | os.PathLike,
                       out_html: str | os.PathLike, *, title: str | None = None, full: bool = False) -> pl.DataFrame:
    """Write the final scores of every run (:func:`final_scores`) as CSV and, with every task's scores per run
    below them, as one self-contained HTML page (atomically). Runs whose method is ``zeroshot`` (the base model)
    are marked in the page. Returns the final-scores frame.

    ``full``: ``summary`` holds the full-test-set scores (tasks 0 and the last) rather than the trajectories' (the
    fixed subset); the page says which, and a summary row of the other kind (its ``subset`` column) is an error.
    """
    if "subset" in summary.columns and summary.filter(pl.col("subset") == full).height:
        wrong = sorted(set(summary.filter(pl.col("subset") == full)["run"].to_list()))
        raise ValueError(f"write_score_tables: runs {wrong} have {'fixed-subset' if full else 'full-test-set'} rows; "
                         f"this table holds {'full-test-set' if full else 'fixed-subset'} scores only")
    final = final_scores(summary, runs)
    with atomic_path(out_csv) as tmp:
        final.write_csv(tmp, float_precision=6)
    reference = [name for name, settings in runs.items() if settings["method"] == "zeroshot"]
    per_task = (
        summary.filter(pl.col("run").is_in(list(runs)))
        .select("run", "task", *SCORES)
        .sort(pl.col("run").replace_strict({r: i for i, r in enumerate(runs)}, return_dtype=pl.Int64), "task")
    )
    heading = html.escape(title or ("Full test sets" if full else "Final scores"))
    scored_on = ("the full test sets of every dataset (scored for the base model and after each run's last task "
                 "only; the trajectories use the fixed evaluation subset, tables/final_scores)" if full else
                 "the fixed evaluation subset of every dataset, the same at every task (the full test sets are in "
                 "tables/full_test_sets)")
    page = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{heading}</title><style>{STYLE}</style></head><body>",
        f"<h1>{heading}</h1>",
        "<p>A_KA: knowledge accumulation, the mean primary metric over the adaptation datasets; A_ZS: zero-shot "
        f"retention, the mean over the evaluation datasets; GM: their geometric mean. Scored on {scored_on}. In %, "
        "after each run's last task; the best value of each column in bold"
        + ("; the base model (no update) in italics" if reference else "") + ".</p>",
        _html_table(final, "Final scores per run" + (" (full test sets)" if full else ""), bold_best=SCORES,
                    mark=reference),
        _html_table(per_task, "The base model (task 0) and the last task, full test sets" if full else
                    "Scores after every task (task 0: the base model)", bold_best=(), mark=reference),
        "</body></html>",
    ]
    write_text(out_html, "\n".join(page) + "\n")
    return final
