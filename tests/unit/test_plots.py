"""Figures: valid, non-empty PNG and PDF files written atomically; clear errors on nothing to plot."""

from __future__ import annotations

import polars as pl
import pytest

from fomoflux.metrics import matrix_from_evals, summarize
from fomoflux.plots import plot_heatmap, plot_trajectories

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _matrix(run: str, n_tasks: int, n_adapt: int = 4, n_eval: int = 3, slope: float = 0.05) -> pl.DataFrame:
    evals = {}
    for t in range(n_tasks + 1):
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
        rows.append(dict(dataset="coco", role="evaluation", kind="retrieval", metric="R@1", value=0.1, n=20, primary=False))
        rows.append(dict(dataset="coco", role="evaluation", kind="retrieval", metric="R@5", value=0.3, n=20, primary=True))
        evals[t] = pl.DataFrame(rows)
    return matrix_from_evals(run, evals, {t: t < n_tasks for t in evals})


def _check_files(png, pdf):
    png_bytes, pdf_bytes = png.read_bytes(), pdf.read_bytes()
    assert len(png_bytes) > 1000 and png_bytes.startswith(PNG_MAGIC)
    assert len(pdf_bytes) > 1000 and pdf_bytes.startswith(b"%PDF-") and b"%%EOF" in pdf_bytes[-64:]
    assert sorted(p.name for p in png.parent.iterdir()) == sorted({png.name, pdf.name})  # no temp files left


def test_trajectories_png_and_pdf(tmp_path):
    matrix = pl.concat([_matrix("finetune", 5, slope=0.08), _matrix("lora", 5, slope=0.02), _matrix("ema", 3)])
    png, pdf = tmp_path / "traj.png", tmp_path / "traj.pdf"
    plot_trajectories(summarize(matrix), png, pdf, title="toy stream")
    _check_files(png, pdf)


def test_trajectories_many_runs_and_no_task0(tmp_path):
    matrix = pl.concat([_matrix(f"run{i}", 2, slope=0.01 * i) for i in range(10)])
    summary = summarize(matrix).filter(~((pl.col("run") == "run3") & (pl.col("task") == 0)))
    plot_trajectories(summary, tmp_path / "t.png", tmp_path / "t.pdf")
    _check_files(tmp_path / "t.png", tmp_path / "t.pdf")


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
