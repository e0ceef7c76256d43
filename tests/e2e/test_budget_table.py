"""End-to-end: `training.budget: table` through real Snakemake: budget files with the configured steps, no profiling,
and a changed table entry reruns that run's budget alone."""

from __future__ import annotations

import json
import re

import pytest
from conftest import make_project

pytestmark = pytest.mark.slow

TRAINED = ("finetune", "ema_merge", "lora", "offline_merge")


def planned(project, targets: list[str]) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run for ``targets`` would execute."""
    out = project.snakemake(*targets, "--dry-run").stdout
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        head = re.match(r"(?:local)?rule (\w+):", block.strip())
        if head:
            wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs.append((head.group(1), wildcards.group(1) if wildcards else ""))
    return jobs


def test_table_budgets_are_the_configured_steps_and_an_entry_change_reruns_its_budget(tmp_path):
    project = make_project(tmp_path / "project")

    def table_mode(cfg: dict) -> None:
        cfg["training"]["budget"] = "table"
        cfg["budget"] = {**cfg.get("budget", {}), "table": {"finetune": 7, "ema_merge": 7, "lora": 11,
                                                            "offline_merge": 5}}
        # One run stays profiled: the two modes live side by side in one DAG.
        cfg["runs"]["lora"]["training"] = {"budget": "maf"}

    cfg = project.edit_config(table_mode)
    targets = [f"results/runs/{run}/budget.json" for run in TRAINED]
    jobs = [rule for rule, _ in planned(project, targets)]
    assert sorted(jobs) == sorted(["run_budget"] * 4 + ["profile_method"] * 2)  # lora's profile and full FT's
    project.snakemake(*targets)
    budgets = {run: json.loads(project.path("runs", run, "budget.json").read_text()) for run in TRAINED}
    steps = cfg["training"]["steps"]
    for run in ("finetune", "ema_merge", "offline_merge"):
        assert budgets[run] == {"steps": cfg["budget"]["table"][run], "reference_steps": steps, "mode": "table"}
    assert budgets["lora"]["mode"] == "maf" and budgets["lora"]["steps"] > steps  # profiled, not the table's 11

    project.edit_config(lambda c: c["budget"]["table"].update(offline_merge=6))
    assert planned(project, targets) == [("run_budget", "run=offline_merge")]
