"""The paper's qualitative findings, checked per seed on a table of final scores (``tables/final_scores.csv``).

FoMo-in-Flux (arXiv 2408.14471) reports, among others, that

* parameter-efficient updates retain more of the base model's zero-shot ability than full fine-tuning and
  accumulate less new knowledge (``peft_retains_more``, ``peft_accumulates_less``, one row per PEFT method);
* EMA-merging has the best geometric mean of A_KA and A_ZS of the compared methods (``ema_merge_best_gm``);
* a meta learning-rate schedule across tasks improves A_ZS at a small A_KA cost (``meta_schedule_retains_more``,
  ``meta_schedule_small_ka_cost``; "small" is a cost of at most ``small_cost`` points, 2 by default — the paper gives
  no number, so the threshold is ours).

Runs are grouped by the ``seed`` column; within a seed, runs are told apart by ``method`` and ``schedule``: the
finetune run with the ``cosine`` schedule is the baseline, a finetune run with a meta schedule is the schedule
under test. ``config/seeds.yaml`` lays out such a table; ``benchmarks/seed_findings.py`` prints the result.
"""

from __future__ import annotations

import polars as pl

from fomoflux.errors import ConfigError

__all__ = ["META_SCHEDULES", "PEFT_METHODS", "check_findings"]

PEFT_METHODS = ("lora", "dora", "vera", "bitfit", "lnfit")
META_SCHEDULES = ("meta_cosine", "dynamic_recovery", "rsqrt_continued", "rsqrt_autoregressive", "rsqrt_recovered")
_COLUMNS = ("run", "method", "schedule", "seed", "A_KA", "A_ZS", "GM")


def _one(rows: pl.DataFrame, what: str, seed: int) -> dict:
    if rows.height != 1:
        runs = rows["run"].to_list()
        raise ConfigError(f"final scores, seed {seed}: expected one {what} run, found {len(runs)} ({runs})")
    return rows.row(0, named=True)


def _finding(seed: int, finding: str, subject: str, ours: float, against: float, holds: bool) -> dict:
    return {"seed": seed, "finding": finding, "subject": subject, "ours": 100 * ours, "against": 100 * against,
            "holds": holds}


def check_findings(scores: pl.DataFrame, small_cost: float = 2.0) -> pl.DataFrame:
    """One row per (seed, finding, subject): ``holds`` and the two numbers compared (in %), ``ours`` (the method
    under test) and ``against`` (what the paper says it beats or trails)."""
    missing = [c for c in _COLUMNS if c not in scores.columns]
    if missing:
        raise ConfigError(f"final scores: missing column(s) {missing} (have {scores.columns})")
    out: list[dict] = []
    for seed in sorted(scores["seed"].unique().to_list()):
        runs = scores.filter(pl.col("seed") == seed)
        trained = runs.filter(pl.col("method") != "zeroshot")
        finetune = _one(runs.filter((pl.col("method") == "finetune") & (pl.col("schedule") == "cosine")),
                        "finetune (cosine)", seed)
        for row in trained.filter(pl.col("method").is_in(PEFT_METHODS)).iter_rows(named=True):
            zs, ka = (row["A_ZS"], finetune["A_ZS"]), (row["A_KA"], finetune["A_KA"])
            out.append(_finding(seed, "peft_retains_more", row["run"], *zs, zs[0] > zs[1]))
            out.append(_finding(seed, "peft_accumulates_less", row["run"], *ka, ka[0] < ka[1]))
        ema = trained.filter(pl.col("method") == "ema_merge")
        if ema.height:
            best_ema = ema.sort("GM", descending=True).row(0, named=True)
            others = trained.filter((pl.col("method") != "ema_merge") & (pl.col("schedule") == "cosine"))
            rival = others.sort("GM", descending=True).row(0, named=True)
            out.append(_finding(seed, "ema_merge_best_gm", f"{best_ema['run']} vs {rival['run']}", best_ema["GM"],
                                rival["GM"], best_ema["GM"] > rival["GM"]))
        meta = trained.filter((pl.col("method") == "finetune") & pl.col("schedule").is_in(META_SCHEDULES))
        for row in meta.iter_rows(named=True):
            zs, ka = (row["A_ZS"], finetune["A_ZS"]), (row["A_KA"], finetune["A_KA"])
            out.append(_finding(seed, "meta_schedule_retains_more", row["run"], *zs, zs[0] > zs[1]))
            out.append(_finding(seed, "meta_schedule_small_ka_cost", row["run"], *ka,
                                100 * (ka[1] - ka[0]) <= small_cost))
    schema = {"seed": pl.Int64, "finding": pl.String, "subject": pl.String, "ours": pl.Float64,
              "against": pl.Float64, "holds": pl.Boolean}
    return pl.DataFrame(out, schema=schema)
