"""fomoflux.findings: the paper's findings checked per seed on a final-scores table."""

from __future__ import annotations

import polars as pl
import pytest

from fomoflux.errors import ConfigError
from fomoflux.findings import check_findings


def _scores(seed: int, rows: dict[str, tuple[str, str, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"run": run, "method": method, "schedule": schedule, "seed": seed, "A_KA": ka, "A_ZS": zs,
             "GM": (ka * zs) ** 0.5}
            for run, (method, schedule, ka, zs) in rows.items()
        ]
    )


def _holds(findings: pl.DataFrame, seed: int, finding: str) -> list[bool]:
    return findings.filter((pl.col("seed") == seed) & (pl.col("finding") == finding))["holds"].to_list()


def test_each_finding_is_judged_per_seed_against_that_seeds_finetune_run():
    agreeing = _scores(0, {
        "finetune_s0": ("finetune", "cosine", 0.40, 0.70),
        "lora_s0": ("lora", "cosine", 0.20, 0.80),
        "ema_merge_s0": ("ema_merge", "cosine", 0.38, 0.80),
        "meta_cosine_s0": ("finetune", "meta_cosine", 0.39, 0.75),
        "zeroshot": ("zeroshot", "-", 0.10, 0.90),  # the best A_ZS and a low GM: compared by nobody
    })
    disagreeing = _scores(1, {
        "finetune_s1": ("finetune", "cosine", 0.40, 0.80),
        "lora_s1": ("lora", "cosine", 0.45, 0.78),
        "ema_merge_s1": ("ema_merge", "cosine", 0.30, 0.82),
        "meta_cosine_s1": ("finetune", "meta_cosine", 0.30, 0.79),
    })
    findings = check_findings(pl.concat([agreeing, disagreeing]))
    for finding in ("peft_retains_more", "peft_accumulates_less", "ema_merge_best_gm", "meta_schedule_retains_more",
                    "meta_schedule_small_ka_cost"):
        assert _holds(findings, 0, finding) == [True], finding
        assert _holds(findings, 1, finding) == [False], finding
    ema = findings.filter((pl.col("seed") == 0) & (pl.col("finding") == "ema_merge_best_gm")).row(0, named=True)
    assert ema["subject"] == "ema_merge_s0 vs finetune_s0"
    assert ema["ours"] == pytest.approx(100 * (0.38 * 0.80) ** 0.5)
    # "Small" is a threshold in points: a 1-point cost is small at 2 and not at 0.5.
    assert _holds(check_findings(agreeing, small_cost=0.5), 0, "meta_schedule_small_ka_cost") == [False]


def test_a_seed_without_its_finetune_baseline_is_an_error_naming_the_seed():
    scores = _scores(2, {"lora_s2": ("lora", "cosine", 0.2, 0.8)})
    with pytest.raises(ConfigError, match=r"seed 2: expected one finetune \(cosine\) run, found 0"):
        check_findings(scores)
    with pytest.raises(ConfigError, match=r"missing column\(s\) \['GM'\]"):
        check_findings(scores.drop("GM"))
