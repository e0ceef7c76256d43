"""Figures: valid PNG and PDF files written atomically, the data they draw, clear errors on nothing to plot."""

from __future__ import annotations

import math

import polars as pl
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from fomoflux.metrics import matrix_from_evals, summarize
from fomoflux.plots import (
    FULL_TEST_SETS_TITLE,
    X_LABEL,
    Y_LABEL,
    plot_budgets,
    plot_full_test_sets,
    plot_heatmap,
    plot_schedules,
    plot_trajectories,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _matrix(run: str, n_tasks: int, n_adapt: int = 4, n_eval: int = 3, slope: float = 0.05,
            tasks: list[int] | None = None, subset: bool = True) -> pl.DataFrame:
    evals = {}
    for t in range(n_tasks + 1) if tasks is None else tasks:
        rows = [
            dict(dataset=f"adapt{d}", role="adaptation", kind="classification", metric="top1",
                 value=min(1.0, 0.2 + slope * t + 0.01 * d), n=50, primary=True)
            for d in range(n_adapt)
        ]
        rows += [
            dict(dataset=f"eval{d}", role="evaluation", kind="classification", metric="top1",
                 value=max(0.0, 0.6 - slope / 2 * t - 0.01 * d), n=50, primary=True)
            for d in range(n_eval)
        ]
        coco = dict(dataset="coco", role="evaluation", kind="retrieval")
        rows.append(dict(coco, metric="R@1", value=0.1, n=20, primary=False))
        rows.append(dict(coco, metric="R@5", value=0.3, n=20, primary=True))
        evals[t] = pl.DataFrame(rows)
    return matrix_from_evals(run, evals, subset=subset)


def _check_files(png, pdf):
    png_bytes, pdf_bytes = png.read_bytes(), pdf.read_bytes()
    assert len(png_bytes) > 1000 and png_bytes.startswith(PNG_MAGIC)
    assert len(pdf_bytes) > 1000 and pdf_bytes.startswith(b"%PDF-") and b"%%EOF" in pdf_bytes[-64:]
    assert sorted(p.name for p in png.parent.iterdir()) == sorted({png.name, pdf.name})  # no temp files left


def test_trajectories_png_and_pdf(tmp_path):
    matrix = pl.concat([_matrix("finetune", 5, slope=0.08), _matrix("lora", 5, slope=0.02), _matrix("ema", 3)])
    png, pdf = tmp_path / "traj.png", tmp_path / "traj.pdf"
    fig = plot_trajectories(summarize(matrix), png, pdf, title="toy stream")
    _check_files(png, pdf)
    ax = fig.axes[0]
    # the paper's notation as matplotlib math text: subscripts, not "A_KA"
    assert ax.get_xlabel() == X_LABEL == r"Knowledge accumulation $A_{KA}$ (%)"
    assert ax.get_ylabel() == Y_LABEL == r"Zero-shot retention $A_{ZS}$ (%)"
    assert not [ln for ln in ax.lines if list(ln.get_xdata()) == [0, 1]]  # no zero-shot run given: no reference lines


def test_trajectories_show_the_zero_shot_run(tmp_path):
    # A zero-shot run scores the base model at every task: one point, under the start star. It is drawn as dotted
    # reference lines through its scores instead of as a trajectory.
    base = summarize(_matrix("finetune", 3, slope=0.0)).filter(pl.col("task") == 0)
    zeroshot = pl.concat([base.with_columns(pl.lit(t, pl.Int64).alias("task")) for t in range(4)])
    zeroshot = zeroshot.with_columns(pl.lit("zeroshot").alias("run"))
    summary = pl.concat([summarize(_matrix("finetune", 3, slope=0.08)), zeroshot])
    fig = plot_trajectories(summary, tmp_path / "t.png", tmp_path / "t.pdf", zero_shot_runs=["zeroshot", "absent"])
    _check_files(tmp_path / "t.png", tmp_path / "t.pdf")
    ax = fig.axes[0]
    x0, y0 = 100 * base["A_KA"][0], 100 * base["A_ZS"][0]
    # axhline / axvline: data coordinates on one axis, 0..1 (axes fraction) on the other
    horizontal = [ln for ln in ax.lines if list(ln.get_ydata()) == [y0, y0] and list(ln.get_xdata()) == [0, 1]]
    vertical = [ln for ln in ax.lines if list(ln.get_xdata()) == [x0, x0] and list(ln.get_ydata()) == [0, 1]]
    assert len(horizontal) == len(vertical) == 1
    assert horizontal[0].get_color() == vertical[0].get_color() == "black"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"zeroshot (base model): $A_{{KA}}$ {x0:.1f}, $A_{{ZS}}$ {y0:.1f}" in legend
    assert "finetune" in legend and "zeroshot" not in legend  # no trajectory line for the zero-shot run
    assert not [ln for ln in ax.lines if ln.get_label() == "zeroshot"]


def test_trajectories_legend_leaves_the_axes_when_it_would_hide_points(tmp_path):
    # The default run: five trained runs and the base model's reference lines. Inside the axes its legend covered
    # curves; beside them it covers none. Two short-named runs keep it inside.
    def legend_right_of_axes(summary, zero_shot_runs=()):
        fig = plot_trajectories(summary, tmp_path / "t.png", tmp_path / "t.pdf", zero_shot_runs=zero_shot_runs)
        ax = fig.axes[0]
        renderer = FigureCanvasAgg(fig).get_renderer()
        return ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1

    base = summarize(_matrix("finetune", 3, slope=0.0)).filter(pl.col("task") == 0)
    zeroshot = pl.concat([base.with_columns(pl.lit(t, pl.Int64).alias("task")) for t in range(4)])
    zeroshot = zeroshot.with_columns(pl.lit("zeroshot").alias("run"))
    five = pl.concat([summarize(_matrix(run, 3, slope=0.02 * (i + 1)))
                      for i, run in enumerate(["finetune", "ema_merge", "ewc", "lora", "bitfit"])])
    assert legend_right_of_axes(pl.concat([five, zeroshot]), zero_shot_runs=["zeroshot"])
    two = pl.concat([summarize(_matrix(run, 3, slope=0.02 * (i + 1))) for i, run in enumerate(["ft", "lora"])])
    assert not legend_right_of_axes(two)


def test_trajectories_many_runs_and_no_task0(tmp_path):
    matrix = pl.concat([_matrix(f"run{i}", 2, slope=0.01 * i) for i in range(10)])
    summary = summarize(matrix).filter(~((pl.col("run") == "run3") & (pl.col("task") == 0)))
    plot_trajectories(summary, tmp_path / "t.png", tmp_path / "t.pdf")
    _check_files(tmp_path / "t.png", tmp_path / "t.pdf")


def test_full_test_sets_figure_and_no_mixed_trajectory(tmp_path):
    # Full test sets: the base model (task 0) and the last task only, one straight line per run.
    full = summarize(pl.concat([_matrix("finetune", 3, slope=0.08, tasks=[0, 3], subset=False),
                                _matrix("lora", 3, slope=0.02, tasks=[0, 3], subset=False)]))
    fig = plot_full_test_sets(full, tmp_path / "f.png", tmp_path / "f.pdf")
    _check_files(tmp_path / "f.png", tmp_path / "f.pdf")
    ax = fig.axes[0]
    assert ax.get_title() == FULL_TEST_SETS_TITLE
    line = next(ln for ln in ax.lines if ln.get_label() == "finetune")
    expected = full.filter(pl.col("run") == "finetune").sort("task")
    assert list(line.get_xdata()) == pytest.approx((100 * expected["A_KA"]).to_list()) and len(line.get_xdata()) == 2

    trajectory = summarize(_matrix("finetune", 3, slope=0.08))
    with pytest.raises(ValueError, match="fixed-subset rows"):
        plot_full_test_sets(trajectory, tmp_path / "x.png", tmp_path / "x.pdf")
    # a trajectory whose last point is the full-test-set one: different sample sets in one line
    mixed = pl.concat([trajectory.filter(pl.col("task") < 3), full.filter((pl.col("run") == "finetune")
                                                                          & (pl.col("task") == 3))])
    with pytest.raises(ValueError, match=r"runs \['finetune'\] mix fixed-subset and full-test-set points"):
        plot_trajectories(mixed, tmp_path / "x.png", tmp_path / "x.pdf")
    assert not (tmp_path / "x.png").exists()


def test_trajectories_empty_summary_is_a_clear_error(tmp_path):
    empty = summarize(_matrix("x", 1)).clear()
    with pytest.raises(ValueError, match="empty"):
        plot_trajectories(empty, tmp_path / "t.png", tmp_path / "t.pdf")
    assert not list(tmp_path.iterdir())


def test_heatmap_png_and_pdf(tmp_path):
    matrix = pl.concat([_matrix("finetune", 4), _matrix("other", 2)])
    png, pdf = tmp_path / "heat.png", tmp_path / "heat.pdf"
    plot_heatmap(matrix, "finetune", png, pdf)
    _check_files(png, pdf)
    big = _matrix("big", 20, n_adapt=41, n_eval=21)  # the full benchmark's shape: no annotations
    plot_heatmap(big, "big", tmp_path / "big.png", tmp_path / "big.pdf")
    assert (tmp_path / "big.pdf").read_bytes().startswith(b"%PDF-")


def test_heatmap_errors(tmp_path):
    matrix = _matrix("finetune", 2)
    with pytest.raises(ValueError, match="'nope'.*finetune"):
        plot_heatmap(matrix, "nope", tmp_path / "h.png", tmp_path / "h.pdf")
    with pytest.raises(ValueError, match="empty"):
        plot_heatmap(matrix.clear(), "finetune", tmp_path / "h.png", tmp_path / "h.pdf")
    assert not list(tmp_path.iterdir())


# --- learning-rate schedules and compute budgets -----------------------------------------------------------------

LR0, LR_MIN, STEPS = 1e-3, 1e-6, 40


def _cosine_lr(step: int) -> float:
    """FiF cosine of one task (BENCHMARK.md): linear warmup over W = 4 steps, then cosine to LR_MIN."""
    warmup = 4
    if step < warmup:
        return LR0 * (step + 1) / warmup
    progress = (step - warmup + 1) / (STEPS - warmup)
    return LR_MIN + 0.5 * (1.0 + math.cos(math.pi * progress)) * (LR0 - LR_MIN)


def _lr_curves(log_every: int = 1) -> pl.DataFrame:
    """3 schedules × 2 tasks; the cosine schedule has two runs (seeds) whose logs differ, to see which one is drawn."""
    shapes = {
        "cosine": lambda task, step: _cosine_lr(step),
        "constant": lambda task, step: LR0,
        "rsqrt": lambda task, step: LR0 * math.sqrt(4.0 / ((task - 1) * STEPS + step + 4)),
    }
    runs = {"cos-b": "cosine", "cos-a": "cosine", "const": "constant", "rsq": "rsqrt"}
    rows = []
    for run, schedule in runs.items():
        for task in (1, 2):
            logged = sorted(set(range(0, STEPS, log_every)) | {STEPS - 1})  # the loop always logs the last step
            for step in logged:
                lr = shapes[schedule](task, step) * (0.5 if run == "cos-b" else 1.0)
                rows.append({"run": run, "schedule": schedule, "task": task, "step": step, "lr": lr})
    return pl.DataFrame(rows)


FINAL = pl.DataFrame({
    "run": ["cos-b", "cos-a", "const", "rsq"],
    "schedule": ["cosine", "cosine", "constant", "rsqrt"],
    "A_KA": [0.40, 0.46, 0.52, 0.44],
    "A_ZS": [0.55, 0.51, 0.47, 0.57],
})


def _schedule_curve(fig, schedule: str):
    (line,) = [ln for ln in fig.axes[0].lines if ln.get_label().startswith(f"{schedule} (")]
    return line


def test_schedules_png_pdf_and_reproducible_pdf(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        plot_schedules(FINAL, _lr_curves(), tmp_path / name / "s.png", tmp_path / name / "s.pdf", title="toy stream")
        _check_files(tmp_path / name / "s.png", tmp_path / name / "s.pdf")
    assert (tmp_path / "a" / "s.pdf").read_bytes() == (tmp_path / "b" / "s.pdf").read_bytes()
    assert (tmp_path / "a" / "s.png").read_bytes() == (tmp_path / "b" / "s.png").read_bytes()


def test_schedules_lr_panel(tmp_path):
    fig = plot_schedules(FINAL, _lr_curves(), tmp_path / "s.png", tmp_path / "s.pdf")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"  # 1e-3 down to 1e-6: three decades
    cosine = _schedule_curve(fig, "cosine")
    assert cosine.get_label() == "cosine (cos-a)"  # the first run by name, not the first row
    xs, ys = cosine.get_data()
    assert list(xs) == list(range(2 * STEPS))  # task 2 continues where task 1 ended
    expected = [_cosine_lr(s) for s in range(STEPS)] * 2
    assert ys == pytest.approx(expected, rel=1e-12)
    assert ys[STEPS - 1] == pytest.approx(LR_MIN) and ys[STEPS] == pytest.approx(LR0 / 4)  # restart at task 2
    rsqrt_y = _schedule_curve(fig, "rsqrt").get_data()[1]
    assert rsqrt_y[-1] == pytest.approx(LR0 * math.sqrt(4.0 / (2 * STEPS + 3)))
    boundaries = [ln.get_xdata()[0] for ln in ax.lines if ln.get_label().startswith("_")]
    assert boundaries == [STEPS - 0.5]  # one task boundary, shared by the three runs
    assert len([ln for ln in ax.lines if not ln.get_label().startswith("_")]) == 3


def test_schedules_sparse_logs_keep_the_true_step(tmp_path):
    # logged every 7th step (+ the last): x is the step's global index, not the row's
    fig = plot_schedules(FINAL, _lr_curves(log_every=7), tmp_path / "s.png", tmp_path / "s.pdf")
    xs = list(_schedule_curve(fig, "constant").get_xdata())
    per_task = [0, 7, 14, 21, 28, 35, 39]
    assert xs == per_task + [STEPS + s for s in per_task]


def test_schedules_score_panel(tmp_path):
    fig = plot_schedules(FINAL, _lr_curves(), tmp_path / "s.png", tmp_path / "s.pdf")
    ax = fig.axes[1]
    assert (ax.get_xlabel(), ax.get_ylabel()) == (X_LABEL, Y_LABEL)
    points = {}
    for container in ax.containers:
        marker_line, _, bar_lines = container.lines
        points[marker_line.get_color()] = (marker_line.get_xydata()[0], bar_lines)
    cosine_colour = _schedule_curve(fig, "cosine").get_color()
    (x, y), bars = points[cosine_colour]
    assert (x, y) == pytest.approx((43.0, 53.0))  # mean of (40, 46) and (55, 51), in %
    (x_bar,), (y_bar,) = (b.get_segments() for b in bars)  # xerr first, then yerr
    assert x_bar.ravel().tolist() == pytest.approx([40.0, 53.0, 46.0, 53.0])  # min–max
    assert y_bar.ravel().tolist() == pytest.approx([43.0, 51.0, 43.0, 55.0])
    (x, y), bars = points[_schedule_curve(fig, "constant").get_color()]
    assert (x, y) == pytest.approx((52.0, 47.0)) and not bars  # a single run: no error bars
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["constant", "cosine (n=2)", "rsqrt"]


def test_schedules_axis_scales(tmp_path):
    flat = _lr_curves().filter(pl.col("schedule") == "constant")
    fig = plot_schedules(FINAL, flat, tmp_path / "s.png", tmp_path / "s.pdf")
    assert fig.axes[0].get_yscale() == "linear" and fig.axes[0].get_ylim()[0] == 0.0
    # a cooldown to lr 0 on a wide span: symlog keeps the lr-0 step visible
    cooled = _lr_curves().with_columns(
        pl.when((pl.col("run") == "rsq") & (pl.col("task") == 2) & (pl.col("step") == STEPS - 1))
        .then(0.0).otherwise(pl.col("lr")).alias("lr")
    )
    fig = plot_schedules(FINAL, cooled, tmp_path / "s.png", tmp_path / "s.pdf")
    assert fig.axes[0].get_yscale() == "symlog"
    assert fig.axes[0].yaxis.get_transform().linthresh == pytest.approx(LR_MIN)  # cos-b's 0.5·LR_MIN is not drawn


def test_schedules_errors(tmp_path):
    png, pdf = tmp_path / "s.png", tmp_path / "s.pdf"
    with pytest.raises(ValueError, match=r"final.*missing columns \['A_ZS'\]"):
        plot_schedules(FINAL.drop("A_ZS"), _lr_curves(), png, pdf)
    with pytest.raises(ValueError, match=r"lr_curves.*missing columns \['lr'\]"):
        plot_schedules(FINAL, _lr_curves().drop("lr"), png, pdf)
    with pytest.raises(ValueError, match="final-scores frame is empty"):
        plot_schedules(FINAL.clear(), _lr_curves(), png, pdf)
    with pytest.raises(ValueError, match="lr-curves frame is empty"):
        plot_schedules(FINAL, _lr_curves().clear(), png, pdf)
    with pytest.raises(ValueError, match="A_KA must be fractions"):
        plot_schedules(FINAL.with_columns(pl.col("A_KA") * 100), _lr_curves(), png, pdf)
    doubled = pl.concat([_lr_curves(), _lr_curves().head(1)])
    with pytest.raises(ValueError, match="'cos-b' logs step 0 of task 1 more than once"):
        plot_schedules(FINAL, doubled, png, pdf)
    assert not list(tmp_path.iterdir())


BUDGETS = pl.DataFrame({
    "run": ["ft", "lora-s1", "lora-s0", "ewc"],
    "method": ["finetune", "lora", "lora", "ewc"],
    "steps": [1000, 2400, 2400, 7],
    "reference_steps": [1000, 1000, 1000, 1000],
    "flops_ratio": [1.0, 0.62, 0.62, 1.0],
    "memory_ratio": [1.0, 0.675, 0.675, 1.3],
    "mode": ["maf"] * 4,
})


def test_budgets_png_pdf_and_reproducible_pdf(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        plot_budgets(BUDGETS, tmp_path / name / "b.png", tmp_path / name / "b.pdf", title="toy budgets")
        _check_files(tmp_path / name / "b.png", tmp_path / name / "b.pdf")
    assert (tmp_path / "a" / "b.pdf").read_bytes() == (tmp_path / "b" / "b.pdf").read_bytes()
    assert (tmp_path / "a" / "b.png").read_bytes() == (tmp_path / "b" / "b.png").read_bytes()


def test_budgets_bars_reference_and_notes(tmp_path):
    fig = plot_budgets(BUDGETS, tmp_path / "b.png", tmp_path / "b.pdf")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Training steps per task (budget: maf, equal memory-adjusted FLOPs)"
    assert ax.get_xscale() == "log"  # 7 to 2400 steps
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["ewc", "ft (finetune)", "lora-s1 (lora)", "lora-s0 (lora)"]  # bottom to top
    bars = ax.patches
    assert [b.get_x() + b.get_width() for b in bars] == pytest.approx([7, 1000, 2400, 2400])
    assert len({b.get_x() for b in bars}) == 1 and 0 < bars[0].get_x() <= 7  # a log axis starts above 0
    assert bars[2].get_facecolor() == bars[3].get_facecolor() != bars[1].get_facecolor()  # colour by method
    (reference,) = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert list(reference.get_xdata()) == [1000, 1000]
    notes = [t.get_text() for t in ax.texts]
    assert "full fine-tuning" in notes
    assert "7 steps · FLOPs ×1.00 · mem ×1.30" in notes
    assert notes.count("2400 steps · FLOPs ×0.62 · mem ×0.68") == 2  # 0.675 rounds half to even


def test_budgets_linear_axis(tmp_path):
    close = BUDGETS.with_columns(pl.Series("steps", [1000, 1500, 1500, 600]))
    fig = plot_budgets(close, tmp_path / "b.png", tmp_path / "b.pdf")
    ax = fig.axes[0]
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0.0
    assert [b.get_width() for b in ax.patches] == [600, 1000, 1500, 1500]


def test_budgets_axis_names_the_budget_mode(tmp_path):
    fixed = BUDGETS.with_columns(pl.lit("fixed").alias("mode"), pl.lit(1000).alias("steps"))
    fig = plot_budgets(fixed, tmp_path / "b.png", tmp_path / "b.pdf")
    assert fig.axes[0].get_xlabel() == "Training steps per task (budget: fixed, training.steps for every method)"
    mixed = BUDGETS.with_columns(pl.Series("mode", ["flops", "maf", "maf", "flops"]))
    fig = plot_budgets(mixed, tmp_path / "b.png", tmp_path / "b.pdf")
    assert fig.axes[0].get_xlabel() == ("Training steps per task (budget: flops, equal FLOPs; "
                                        "maf, equal memory-adjusted FLOPs)")


def test_budgets_errors(tmp_path):
    png, pdf = tmp_path / "b.png", tmp_path / "b.pdf"
    with pytest.raises(ValueError, match=r"missing columns \['memory_ratio'\]"):
        plot_budgets(BUDGETS.drop("memory_ratio"), png, pdf)
    with pytest.raises(ValueError, match="budgets frame is empty"):
        plot_budgets(BUDGETS.clear(), png, pdf)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        plot_budgets(BUDGETS.with_columns(pl.lit(0).alias("steps")), png, pdf)
    with pytest.raises(ValueError, match="flops_ratio must be finite and > 0"):
        plot_budgets(BUDGETS.with_columns(pl.lit(float("nan")).alias("flops_ratio")), png, pdf)
    with pytest.raises(ValueError, match=r"mode must be one of maf, flops, fixed, table, got \['memory'\]"):
        plot_budgets(BUDGETS.with_columns(pl.lit("memory").alias("mode")), png, pdf)
    assert not list(tmp_path.iterdir())
