"""Paper-ready figures: A_ZS vs A_KA trajectories across runs, and the task × dataset heatmap of one run.

Each figure is written as a vector PDF (TrueType fonts embedded) and a 200 dpi PNG, both atomically. Figures are
built on :class:`matplotlib.figure.Figure` directly (no pyplot global state; Agg for PNG, the PDF backend for PDF), so
plotting is safe in long-lived processes and never needs a display. Colours are the Okabe-Ito colour-blind-safe
palette (runs) and cividis (heatmap).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # never try a GUI backend (harmless when pyplot is not imported at all)

import polars as pl  # noqa: E402
from matplotlib import rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from fomoflux.io import atomic_path  # noqa: E402

X_LABEL = "Knowledge accumulation A_KA (%)"
Y_LABEL = "Zero-shot retention A_ZS (%)"

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

__all__ = ["plot_trajectories", "plot_heatmap", "run_style", "X_LABEL", "Y_LABEL"]


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


def plot_trajectories(summary: pl.DataFrame, out_png, out_pdf, *, title: str | None = None) -> None:
    """A_ZS (y) against A_KA (x), in %, one line per run from its task-0 (zero-shot) point to its final task.

    The zero-shot start is a black star (one legend entry shared by all runs), the final point a larger marker in the
    run's colour with a black edge. Rows with a null A_KA or A_ZS are skipped.
    """
    _require(summary, ("run", "task", "A_KA", "A_ZS"), "plot_trajectories")
    if summary.height == 0:
        raise ValueError("plot_trajectories: the summary is empty, there is nothing to plot")
    points = summary.select("run", "task", "A_KA", "A_ZS").drop_nulls().drop_nans().sort("run", "task")
    if points.height == 0:
        raise ValueError("plot_trajectories: every row of the summary has a null A_KA or A_ZS, there is nothing to plot")
    runs = list(dict.fromkeys(summary["run"].to_list()))  # order of first appearance
    runs = [r for r in runs if r in set(points["run"].to_list())]

    with rc_context(RC):
        many = len(runs) > 8
        fig = Figure(figsize=(6.4 if not many else 8.4, 4.8), layout="constrained")
        ax = fig.add_subplot()
        handles = []
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
        has_start = points.filter(pl.col("task") == 0).height > 0
        extra = []
        if has_start:
            extra.append(Line2D([], [], linestyle="none", marker="*", markersize=11, color="black", label="zero-shot (task 0)"))
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
