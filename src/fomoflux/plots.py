"""Paper-ready figures: A_ZS vs A_KA trajectories across runs (every point on the fixed evaluation subset), the same
plane on the full test sets (the base model and each run's last task), the task × dataset heatmap of one run,
learning-rate schedules against their final A_KA / A_ZS, and the steps per task each method's compute budget buys.

Each figure is written as a vector PDF (TrueType fonts embedded) and a 200 dpi PNG, both atomically. Figures are
built on :class:`matplotlib.figure.Figure` directly (no pyplot global state; Agg for PNG, the PDF backend for PDF), so
plotting is safe in long-lived processes and never needs a display. Colours are the Okabe-Ito colour-blind-safe
palette (runs) and cividis (heatmap).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # never try a GUI backend (harmless when pyplot is not imported at all)

import polars as pl  # noqa: E402
from matplotlib import rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from fomoflux.io import atomic_path  # noqa: E402

# Matplotlib mathtext: the subscripts of the paper's notation, in the PNG and (as text) in the PDF.
X_LABEL = r"Knowledge accumulation $A_{KA}$ (%)"
Y_LABEL = r"Zero-shot retention $A_{ZS}$ (%)"

# training.budget mode -> what the budget equalises (fomoflux.budget, stages.run_budget).
BUDGET_MODES = {
    "maf": "equal memory-adjusted FLOPs",
    "flops": "equal FLOPs",
    "fixed": "training.steps for every method",
    "table": "steps per task from budget.table",
}

# Okabe & Ito (2008) without black (black marks the zero-shot start); yellow last, it is the weakest on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")

RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "pdf.fonttype": 42,  # TrueType: text stays text in the PDF (editable, searchable)
    "ps.fonttype": 42,
    "axes.spines.top": False,
    "axes.spines.right": False,
}

__all__ = ["plot_trajectories", "plot_full_test_sets", "plot_heatmap", "plot_schedules", "plot_budgets", "run_style",
           "X_LABEL", "Y_LABEL", "BUDGET_MODES", "FULL_TEST_SETS_TITLE"]

FULL_TEST_SETS_TITLE = "Full test sets: the base model and each run's last task"


def run_style(index: int) -> dict:
    """Colour / marker / line style of the index-th run: distinct for the first 7·4 runs."""
    return {
        "color": PALETTE[index % len(PALETTE)],
        "marker": MARKERS[(index + index // len(PALETTE)) % len(MARKERS)],
        "linestyle": LINESTYLES[(index // len(PALETTE)) % len(LINESTYLES)],
    }


def _save(fig: Figure, out_png: str | os.PathLike, out_pdf: str | os.PathLike) -> None:
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=200, bbox_inches="tight")
    with atomic_path(out_pdf) as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None, "ModDate": None})


def _require(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing} (has {frame.columns})")


def plot_trajectories(summary: pl.DataFrame, out_png, out_pdf, *, title: str | None = None,
                      zero_shot_runs: Sequence[str] = ()) -> Figure:
    """A_ZS (y) against A_KA (x), in %, one line per run from its task-0 (zero-shot) point to its final task.

    The zero-shot start is a black star (one legend entry shared by all runs), the final point a larger marker in the
    run's colour with a black edge. Rows with a null A_KA or A_ZS are skipped.

    ``zero_shot_runs``: runs that never update the model (method ``zeroshot``: the base model's evaluation at every
    task). Their trajectory is one point, hidden under the start star, so each is drawn instead as black dotted
    reference lines through its final (A_KA, A_ZS) across the whole plot, labelled with its name and scores: a
    trajectory above the horizontal line retains more than the base model, right of the vertical one knows more.
    Names not in ``summary`` are ignored. Returns the figure (already written to ``out_png`` and ``out_pdf``).
    """
    _require(summary, ("run", "task", "A_KA", "A_ZS"), "plot_trajectories")
    if summary.height == 0:
        raise ValueError("plot_trajectories: the summary is empty, there is nothing to plot")
    if "subset" in summary.columns:
        mixed = summary.group_by("run").agg(pl.col("subset").n_unique().alias("kinds")).filter(pl.col("kinds") > 1)
        if mixed.height:
            raise ValueError(f"plot_trajectories: runs {sorted(mixed['run'].to_list())} mix fixed-subset and "
                             "full-test-set points; a trajectory's points must come from one evaluation set")
    points = summary.select("run", "task", "A_KA", "A_ZS").drop_nulls().drop_nans().sort("run", "task")
    if points.height == 0:
        raise ValueError(
            "plot_trajectories: every row of the summary has a null A_KA or A_ZS, there is nothing to plot"
        )
    runs = list(dict.fromkeys(summary["run"].to_list()))  # order of first appearance
    runs = [r for r in runs if r in set(points["run"].to_list())]
    references = [r for r in runs if r in set(zero_shot_runs)]
    runs = [r for r in runs if r not in set(references)]

    with rc_context(RC):
        # Beside the axes when a legend inside would hide points: more than four curves (a base model's reference
        # lines count, their label is long), or long run names.
        curves = len(runs) + len(references)
        many = curves > 4 or (curves > 2 and max(len(r) for r in runs + references) > 14)
        fig = Figure(figsize=(6.4 if not many else 8.4, 4.8), layout="constrained")
        ax = fig.add_subplot()
        handles = []
        for k, run in enumerate(references):
            last = points.filter(pl.col("run") == run).row(-1, named=True)
            x, y = 100 * last["A_KA"], 100 * last["A_ZS"]
            dotted = (0, (1, 2 + 2 * k))  # several base models (seldom): denser to sparser dots
            ax.axhline(y, color="black", linestyle=dotted, linewidth=1.0, zorder=1)
            ax.axvline(x, color="black", linestyle=dotted, linewidth=1.0, zorder=1)
            handles.append(Line2D([], [], color="black", linestyle=dotted, linewidth=1.0,
                                  label=f"{run} (base model): $A_{{KA}}$ {x:.1f}, $A_{{ZS}}$ {y:.1f}"))
            ax.plot([x], [y], linestyle="none", marker="*", markersize=13, color="black", zorder=5)
        for i, run in enumerate(runs):
            pts = points.filter(pl.col("run") == run)
            x = (pts["A_KA"] * 100).to_list()
            y = (pts["A_ZS"] * 100).to_list()
            style = run_style(i)
            (line,) = ax.plot(
                x, y, color=style["color"], linestyle=style["linestyle"], linewidth=1.6,
                marker=style["marker"], markersize=4, label=run, zorder=2,
            )
            ax.plot(
                [x[-1]], [y[-1]], linestyle="none", marker=style["marker"], markersize=10,
                markerfacecolor=style["color"], markeredgecolor="black", markeredgewidth=1.0, zorder=4,
            )
            handles.append(line)
            if pts["task"][0] == 0:
                ax.plot([x[0]], [y[0]], linestyle="none", marker="*", markersize=13, color="black", zorder=5)
        has_start = points.filter(pl.col("task") == 0).height > 0 or bool(references)
        extra = []
        if has_start:
            extra.append(
                Line2D([], [], linestyle="none", marker="*", markersize=11, color="black", label="zero-shot (task 0)")
            )
        extra.append(
            Line2D([], [], linestyle="none", marker="o", markersize=9, markerfacecolor="lightgrey",
                   markeredgecolor="black", label="final task")
        )
        legend_kw = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0)} if many else {"loc": "best"}
        ax.legend(handles=handles + extra, frameon=False, **legend_kw)
        ax.set_xlabel(X_LABEL)
        ax.set_ylabel(Y_LABEL)
        ax.grid(True, color="0.9", linewidth=0.6, zorder=0)
        ax.margins(0.08)
        if title:
            ax.set_title(title)
        _save(fig, out_png, out_pdf)
    return fig


def plot_full_test_sets(summary: pl.DataFrame, out_png, out_pdf, *, zero_shot_runs: Sequence[str] = ()) -> Figure:
    """The A_KA–A_ZS plane of :func:`plot_trajectories` on the full test sets: each run from the base model's
    full-test-set point (task 0, the black star) straight to its last task's, with no points between (the tasks
    between are scored on the fixed subset only, in the trajectories figure). ``summary``: full-test-set summaries
    (``summary_full``); a row on the fixed subset is an error."""
    if "subset" in summary.columns and summary["subset"].any():
        runs = sorted(set(summary.filter(pl.col("subset"))["run"].to_list()))
        raise ValueError(f"plot_full_test_sets: runs {runs} have fixed-subset rows; this figure shows full-test-set "
                         "scores only")
    return plot_trajectories(summary, out_png, out_pdf, title=FULL_TEST_SETS_TITLE, zero_shot_runs=zero_shot_runs)


def plot_heatmap(matrix: pl.DataFrame, run: str, out_png, out_pdf) -> None:
    """Task × dataset heatmap (in %) of the primary metric of one run.

    Rows are tasks (0 = zero-shot at the top), columns datasets: adaptation datasets first, then evaluation datasets,
    each in order of first appearance, split by a separator line. Cells are annotated when the grid is small; a dataset
    not evaluated at some task is left blank (grey).
    """
    import numpy as np

    _require(matrix, ("run", "task", "dataset", "role", "value", "primary"), "plot_heatmap")
    if matrix.height == 0:
        raise ValueError("plot_heatmap: the metric matrix is empty, there is nothing to plot")
    rows = matrix.filter((pl.col("run") == run) & pl.col("primary"))
    if rows.height == 0:
        known = sorted(set(matrix["run"].to_list()))
        raise ValueError(f"plot_heatmap: no primary metrics for run {run!r} (runs in the matrix: {known})")
    rows = rows.sort("task", maintain_order=True)

    roles = dict(zip(rows["dataset"].to_list(), rows["role"].to_list()))
    order = list(dict.fromkeys(rows["dataset"].to_list()))
    adaptation = [d for d in order if roles[d] == "adaptation"]
    others = [d for d in order if roles[d] != "adaptation"]
    datasets = adaptation + others
    tasks = sorted(set(rows["task"].to_list()))
    col = {d: j for j, d in enumerate(datasets)}
    row = {t: i for i, t in enumerate(tasks)}
    grid = np.full((len(tasks), len(datasets)), np.nan)
    for t, d, v in rows.select("task", "dataset", "value").iter_rows():
        grid[row[t], col[d]] = 100.0 * v if v is not None else np.nan

    n_rows, n_cols = grid.shape
    annotate = n_rows * n_cols <= 600 and n_cols <= 40
    with rc_context(RC):
        width = min(max(5.0, 2.2 + 0.34 * n_cols), 30.0)
        height = min(max(3.0, 1.9 + 0.28 * n_rows), 30.0)
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
        cmap = matplotlib.colormaps["cividis"].with_extremes(bad="0.85")
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=100.0, aspect="auto",
                          interpolation="nearest")
        cbar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
        cbar.set_label("Primary metric (%)")
        ax.set_xticks(range(n_cols), datasets, rotation=60, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n_rows), [str(t) for t in tasks])
        ax.set_xlabel("Dataset")
        ax.set_ylabel("Task (0 = zero-shot)")
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if annotate:
            size = 7 if n_cols > 20 else 8
            for i in range(n_rows):
                for j in range(n_cols):
                    v = grid[i, j]
                    if not math.isnan(v):
                        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=size,
                                color="black" if v >= 55 else "white")
        # role groups: a separator and a label above each group
        groups = [("adaptation", 0, len(adaptation)), ("evaluation", len(adaptation), n_cols)]
        if adaptation and others:
            ax.axvline(len(adaptation) - 0.5, color="white", linewidth=3.0)
            ax.axvline(len(adaptation) - 0.5, color="black", linewidth=1.2)
        for label, lo, hi in groups:
            if hi > lo:
                ax.text((lo + hi - 1) / 2, -0.6, label, ha="center", va="bottom", fontsize=10, fontweight="bold",
                        transform=ax.transData, clip_on=False)
        ax.set_title(f"{run}: primary metric per task", pad=18)
        _save(fig, out_png, out_pdf)


def _spans_decades(values: Sequence[float], decades: float = 2.0) -> bool:
    """Whether the positive ``values`` span more than ``decades`` powers of ten (the switch to a log axis)."""
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) > min(positive) * 10.0**decades


def _global_steps(curve: pl.DataFrame) -> tuple[list[int], list[float], list[float]]:
    """x (global step), lr and task-boundary positions of one run's (task, step, lr) rows.

    A task's steps are offset by the number of steps of the tasks before it, each counted as its largest logged step
    + 1 (the training loop always logs a task's last step, so this is the task's step count even when it logs only
    every k-th step; with every step logged, x is the plain cumulative index).
    """
    rows = curve.sort("task", "step")
    xs: list[int] = []
    lrs: list[float] = []
    boundaries: list[float] = []
    offset = 0
    for _, part in rows.group_by("task", maintain_order=True):
        if xs:
            boundaries.append(offset - 0.5)
        steps = part["step"].to_list()
        xs.extend(offset + s for s in steps)
        lrs.extend(part["lr"].to_list())
        offset += steps[-1] + 1
    return xs, lrs, boundaries


def plot_schedules(final: pl.DataFrame, lr_curves: pl.DataFrame, out_png: str | os.PathLike,
                   out_pdf: str | os.PathLike, *, title: str | None = None) -> Figure:
    """Learning-rate schedules side by side with where they end up: the lr they trained with, and final A_KA / A_ZS.

    Left panel: the lr of every training step against the global step (task 1's steps, then task 2's, ...), for one
    representative run per schedule (the first by run name), one line per schedule; thin grey vertical lines mark
    task boundaries. The y axis is logarithmic when the positive lrs span more than two decades (symlog, linear
    below the smallest positive lr, when some step trains at lr 0, e.g. the end of a cooldown), linear otherwise.

    Right panel: each schedule as one point in the A_KA–A_ZS plane (in %, the plane of :func:`plot_trajectories`),
    at the mean over its runs, with min–max error bars on both axes when it has several runs (seeds); each point is
    labelled with the schedule's name (and its number of runs when > 1), in the same colour as its lr curve.
    Schedules keep their order of first appearance in ``final`` (then ``lr_curves``) for colours and legend.

    ``final``: columns run, schedule, A_KA, A_ZS (fractions in [0, 1]; rows with a null or NaN score are skipped).
    ``lr_curves``: columns run, schedule, task (1-based), step (0-based within the task), lr (the lr the step used).
    Returns the figure (already written to ``out_png`` and ``out_pdf``).
    """
    _require(final, ("run", "schedule", "A_KA", "A_ZS"), "plot_schedules (final)")
    _require(lr_curves, ("run", "schedule", "task", "step", "lr"), "plot_schedules (lr_curves)")
    if final.height == 0:
        raise ValueError("plot_schedules: the final-scores frame is empty, there is nothing to plot")
    if lr_curves.height == 0:
        raise ValueError("plot_schedules: the lr-curves frame is empty, there is nothing to plot")
    scores = final.select("run", "schedule", "A_KA", "A_ZS").drop_nulls().drop_nans()
    if scores.height == 0:
        raise ValueError("plot_schedules: every row of the final scores has a null A_KA or A_ZS, nothing to plot")
    for column in ("A_KA", "A_ZS"):
        low, high = scores[column].min(), scores[column].max()
        if low < 0.0 or high > 1.0:
            raise ValueError(f"plot_schedules: {column} must be fractions in [0, 1], got values in [{low}, {high}] "
                             f"(percentages?)")
    curves = lr_curves.select("run", "schedule", "task", "step", "lr").drop_nulls().drop_nans()
    if curves.height == 0:
        raise ValueError("plot_schedules: every row of the lr curves has a null lr, there is nothing to plot")
    if curves["lr"].min() < 0.0:
        raise ValueError(f"plot_schedules: learning rates must be >= 0, got {curves['lr'].min()}")
    duplicated = curves.filter(pl.struct("run", "task", "step").is_duplicated())
    if duplicated.height:
        run, task, step = duplicated.select("run", "task", "step").row(0)
        raise ValueError(f"plot_schedules: run {run!r} logs step {step} of task {task} more than once "
                         f"(concatenated logs of a resumed run?)")

    schedules = list(dict.fromkeys(final["schedule"].to_list() + curves["schedule"].to_list()))
    colour = {s: run_style(i)["color"] for i, s in enumerate(schedules)}
    marker = {s: run_style(i)["marker"] for i, s in enumerate(schedules)}
    # lines of different schedules coincide during warmup: the dash pattern tells them apart where colour cannot
    dashes = {s: LINESTYLES[i % len(LINESTYLES)] for i, s in enumerate(schedules)}

    with rc_context(RC):
        fig = Figure(figsize=(11.0, 4.4), layout="constrained")
        ax_lr, ax_acc = fig.subplots(1, 2, width_ratios=(1.35, 1.0))

        all_lrs: list[float] = []
        boundaries: set[float] = set()
        for schedule in schedules:
            runs = curves.filter(pl.col("schedule") == schedule)
            if runs.height == 0:
                continue
            representative = min(runs["run"].unique().to_list())
            xs, lrs, edges = _global_steps(runs.filter(pl.col("run") == representative))
            all_lrs.extend(lrs)
            boundaries.update(edges)
            ax_lr.plot(xs, lrs, color=colour[schedule], linestyle=dashes[schedule], linewidth=1.6,
                       label=f"{schedule} ({representative})", zorder=3)
        for edge in sorted(boundaries):
            ax_lr.axvline(edge, color="0.6", linewidth=0.6, zorder=1)
        if _spans_decades(all_lrs) and min(all_lrs) > 0.0:
            ax_lr.set_yscale("log")
        else:
            if _spans_decades(all_lrs):  # a log axis would drop the lr-0 steps: linear below the smallest positive lr
                ax_lr.set_yscale("symlog", linthresh=min(v for v in all_lrs if v > 0))
            ax_lr.set_ylim(bottom=0.0)  # lrs are >= 0: no empty negative half
        ax_lr.set_xlabel("Global training step (tasks concatenated)")
        ax_lr.set_ylabel("Learning rate")
        ax_lr.set_title("Learning rate of one run per schedule")
        ax_lr.grid(True, axis="y", color="0.9", linewidth=0.6, zorder=0)
        ax_lr.legend(frameon=False, loc="best")

        stats = (
            scores.group_by("schedule", maintain_order=True)
            .agg(
                pl.len().alias("n"),
                *(pl.col(c).mean().mul(100.0).alias(f"{c}_mean") for c in ("A_KA", "A_ZS")),
                *(pl.col(c).min().mul(100.0).alias(f"{c}_min") for c in ("A_KA", "A_ZS")),
                *(pl.col(c).max().mul(100.0).alias(f"{c}_max") for c in ("A_KA", "A_ZS")),
            )
        )
        by_schedule = {row["schedule"]: row for row in stats.iter_rows(named=True)}
        for schedule in schedules:
            row = by_schedule.get(schedule)
            if row is None:
                continue
            x, y = row["A_KA_mean"], row["A_ZS_mean"]
            spread = row["n"] > 1
            ax_acc.errorbar(
                [x], [y],
                xerr=[[x - row["A_KA_min"]], [row["A_KA_max"] - x]] if spread else None,
                yerr=[[y - row["A_ZS_min"]], [row["A_ZS_max"] - y]] if spread else None,
                linestyle="none", marker=marker[schedule], markersize=9, color=colour[schedule],
                markeredgecolor="black", markeredgewidth=0.8, ecolor=colour[schedule], elinewidth=1.2, capsize=3,
                zorder=3,
            )
            label = f"{schedule} (n={row['n']})" if spread else schedule
            ax_acc.annotate(label, (x, y), xytext=(7, 6), textcoords="offset points", fontsize=9,
                            color=colour[schedule], fontweight="bold", zorder=4)
        ax_acc.set_xlabel(X_LABEL)
        ax_acc.set_ylabel(Y_LABEL)
        ax_acc.set_title("Final scores (mean, min–max over runs)")
        ax_acc.grid(True, color="0.9", linewidth=0.6, zorder=0)
        ax_acc.margins(0.25)
        if title:
            fig.suptitle(title)
        _save(fig, out_png, out_pdf)
    return fig


def plot_budgets(budgets: pl.DataFrame, out_png: str | os.PathLike, out_pdf: str | os.PathLike, *,
                 title: str | None = None) -> Figure:
    """Compute budget versus steps per method: how many steps per task each run's equal-MAF budget buys.

    One horizontal bar per run, labelled "run (method)", its length the run's steps per task; bars are sorted by steps
    (most steps at the top, ties by run name) and coloured by method (runs of one method, e.g. seeds, share a
    colour). A dashed vertical line marks full fine-tuning's steps per task (``reference_steps``), labelled "full
    fine-tuning" above the axes, and each bar ends with "N steps · FLOPs ×a.aa · mem ×b.bb": its steps per task, and
    its FLOPs per step and peak memory relative to full fine-tuning. The x axis is logarithmic when the steps (and
    reference) span more than two decades (a method with a costly per-task pass, such as EWC, can get far fewer
    steps), linear from 0 otherwise.

    ``budgets``: columns run, method, steps (>= 1), reference_steps (>= 1), flops_ratio and memory_ratio (> 0), and
    mode (``training.budget``: maf, flops, fixed or table, as in the run's budget.json), which the x-axis label names
    ("Training steps per task (budget: maf, equal memory-adjusted FLOPs)"; every mode, when runs differ).
    Returns the figure (already written to ``out_png`` and ``out_pdf``).
    """
    columns = ("run", "method", "steps", "reference_steps", "flops_ratio", "memory_ratio", "mode")
    _require(budgets, columns, "plot_budgets")
    if budgets.height == 0:
        raise ValueError("plot_budgets: the budgets frame is empty, there is nothing to plot")
    rows = budgets.select(columns)
    nulls = [c for c in columns if rows[c].null_count()]
    if nulls:
        raise ValueError(f"plot_budgets: columns {nulls} have null values")
    modes = list(dict.fromkeys(rows["mode"].to_list()))
    unknown = [m for m in modes if m not in BUDGET_MODES]
    if unknown:
        raise ValueError(f"plot_budgets: mode must be one of {', '.join(BUDGET_MODES)}, got {unknown}")
    for column, low in (("steps", 1), ("reference_steps", 1)):
        if rows[column].min() < low:
            raise ValueError(f"plot_budgets: {column} must be >= {low}, got {rows[column].min()}")
    for column in ("flops_ratio", "memory_ratio"):
        values = rows[column].to_list()
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"plot_budgets: {column} must be finite and > 0, got {values}")
    rows = rows.sort("steps", "run", descending=[False, True])  # barh draws upwards: the largest budget ends on top
    methods = list(dict.fromkeys(budgets["method"].to_list()))
    colour = {m: run_style(i)["color"] for i, m in enumerate(methods)}
    references = sorted(set(rows["reference_steps"].to_list()))
    steps = rows["steps"].to_list()
    log_x = _spans_decades(steps + references)

    with rc_context(RC):
        n = rows.height
        fig = Figure(figsize=(7.6, min(max(2.2, 1.3 + 0.42 * n), 30.0)), layout="constrained")
        ax = fig.add_subplot()
        # a log axis has no 0: bars start one decade-step below the smallest budget
        base = 10.0 ** math.floor(math.log10(min(steps + references) / 2.0)) if log_x else 0.0
        positions = list(range(n))
        ax.barh(positions, [s - base for s in steps], left=base, height=0.62,
                color=[colour[m] for m in rows["method"].to_list()], edgecolor="black", linewidth=0.6, zorder=2)
        labels = [r if r == m else f"{r} ({m})" for r, m in zip(rows["run"].to_list(), rows["method"].to_list())]
        ax.set_yticks(positions, labels)
        for y, (value, flops, memory) in enumerate(rows.select("steps", "flops_ratio", "memory_ratio").iter_rows()):
            # clip_on=False: the note may run past the (hidden) right spine; the saved bbox grows to hold it
            ax.annotate(f"{value} steps · FLOPs ×{flops:.2f} · mem ×{memory:.2f}", (value, y), xytext=(4, 0),
                        textcoords="offset points", va="center", ha="left", fontsize=8, annotation_clip=False,
                        bbox={"boxstyle": "square,pad=0.15", "facecolor": "white", "edgecolor": "none"}, zorder=4)
        top = max(steps + references)
        if log_x:
            ax.set_xscale("log")
            ax.set_xlim(base, top * 1.5)
        else:
            ax.set_xlim(0.0, top * 1.04)
        ax.set_ylim(-0.6, n - 0.4)
        label_axes = ax.get_xaxis_transform()  # x in data, y in axes fraction
        for reference in references:
            ax.axvline(reference, color="black", linestyle="--", linewidth=1.1, zorder=3)
            text = "full fine-tuning" if len(references) == 1 else f"full fine-tuning ({reference})"
            ax.text(reference, 1.01, text, transform=label_axes, ha="center", va="bottom", fontsize=9)
        named = "; ".join(f"{m}, {BUDGET_MODES[m]}" for m in modes)
        ax.set_xlabel(f"Training steps per task (budget: {named})")
        ax.grid(True, axis="x", which="major", color="0.9", linewidth=0.6, zorder=0)
        ax.tick_params(axis="y", length=0)
        ax.set_title(title or "Budget vs steps per method", pad=16)
        _save(fig, out_png, out_pdf)
    return fig
