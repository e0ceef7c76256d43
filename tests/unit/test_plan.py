"""plan.py: grids expand into runs, and a bad run fails at plan time with the key at fault."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from fomoflux.errors import ConfigError
from fomoflux.plan import build_plan, expand_grids

ROOT = Path(__file__).resolve().parents[2]


def test_expand_grids_product_and_names():
    runs = expand_grids({
        "sweep": {"method": ["finetune", "ema_merge"], "seed": [0, 1], "training": {"lr": [1e-4, 1e-3], "steps": 5}},
        "one": {"method": "finetune"},
    })
    assert len(runs) == 2 * 2 * 2 + 1
    assert runs["sweep-finetune-lr0.0001-s1"] == {"method": "finetune", "seed": 1, "method_options": {},
                                                  "training": {"lr": 1e-4, "steps": 5}}
    assert "sweep-ema_merge-lr0.001-s0" in runs and "one-finetune" in runs
    with pytest.raises(ConfigError, match="empty list"):
        expand_grids({"g": {"method": "finetune", "seed": []}})


def load_config() -> dict:
    # The default config with the schema's defaults where build_plan needs them (Snakemake fills them in).
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["benchmark"].setdefault("datasets", "all")
    config.setdefault("evaluation", {}).setdefault("subset", {})
    return config


@pytest.fixture()
def config(monkeypatch):
    monkeypatch.chdir(ROOT)
    return load_config()


def test_plan_of_a_grid(config):
    config["grids"] = {"lr": {"method": "finetune", "training": {"lr": [1e-4, 1e-3]}}}
    plan = build_plan(config)
    assert {"lr-finetune-lr0.0001", "lr-finetune-lr0.001"} <= set(plan.runs)
    # Runs of equal step cost share one profile; every run's budget compares against full fine-tuning's.
    assert plan.runs["lr-finetune-lr0.0001"].profile_key() == plan.runs["lr-finetune-lr0.001"].profile_key()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["runs"]["finetune"].update(training={"stepz": 3}), "runs.finetune.training: unknown key 'stepz'"),
        (lambda c: c["runs"]["finetune"].update(training={"budget": "cheap"}), "budget: 'cheap'"),
        (lambda c: c["runs"]["finetune"].update(training={"schedule": "nope"}), "unknown lr schedule 'nope'"),
        (lambda c: c["runs"]["finetune"].update(method="nope"), "runs.finetune: unknown method 'nope'"),
        (lambda c: c["runs"]["ema_merge"].update(method_options={"weight": 2.0}), "runs.ema_merge.*weight"),
        (lambda c: c.update(runs={}), "declares no run"),
        (lambda c: c["runs"]["offline_merge"].update(method_options={"weights": [1.0, 2.0]}),
         "runs.offline_merge.method_options.weights: 2 weights for 5 merged models"),
        (lambda c: c["runs"]["lora"].update(method_options={"rank": 999}), "runs.lora.*rank"),
        (lambda c: c["runs"]["offline_merge"].update(method_options={"operator": "average"}),
         "unknown merge operator 'average'"),
        (lambda c: c["runs"]["finetune"].update(training={"schedule": "rsqrt", "schedule_options": {"cooldown": 2.0}}),
         "cooldown"),
    ],
)
def test_bad_runs_fail_at_plan_time(config, edit, message):
    bad = copy.deepcopy(config)
    edit(bad)
    with pytest.raises(ConfigError, match=message):
        build_plan(bad)
