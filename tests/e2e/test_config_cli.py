"""Config on the command line, through real Snakemake: `--config` on top of the default config, one-line schema
errors, and experiments that share one data_root (shards and base model made once)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import REPO, make_project

pytestmark = pytest.mark.slow


def snakemake_without_configfile(project, *args: str) -> subprocess.CompletedProcess:
    """What a user types: no --configfile, so the Snakefile loads config/config.yaml itself."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    return subprocess.run(cmd, cwd=project.root, capture_output=True, text=True, timeout=600)


def planned(stdout: str) -> list[tuple[str, str]]:
    """(rule, output) of every job a dry run lists."""
    jobs, rule = [], None
    for line in stdout.splitlines():
        stripped = line.strip()
        if stripped.startswith(("rule ", "localrule ")):
            rule = stripped.split()[1].rstrip(":")
        elif stripped.startswith("output:") and rule:
            jobs.append((rule, stripped.removeprefix("output:").strip().split(", ")[0]))
    return jobs


def test_config_overrides_apply_on_top_of_the_default_config(tmp_path):
    project = make_project(tmp_path / "project")
    # Nested values merge into the default's (the stream keeps its ordering and seed) and are typed: "43" would
    # fail the schema as a string. 43 classes per task: one task per run.
    proc = snakemake_without_configfile(
        project, "--dry-run", "--config", "results=elsewhere", "streams={random: {classes_per_task: 43}}"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = planned(proc.stdout)
    trained = {output.split("/")[2] for rule, output in jobs if rule == "train_task"}
    # The default config's runs (not an empty or replaced config), each with one task, all under the new folder.
    assert trained == {"finetune", "lora", "bitfit", "ewc", "ema_merge"}
    assert sum(rule == "train_task" for rule, _ in jobs) == len(trained)
    assert all(output.startswith("elsewhere/") for _, output in jobs), jobs[:5]


def test_a_configfile_replaces_the_default_config(tmp_path):
    project = make_project(tmp_path / "project")
    proc = snakemake_without_configfile(project, "--dry-run", "--configfile", "config/experiment.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = {output.split("/")[2] for rule, output in planned(proc.stdout) if rule == "train_task"}
    assert trained == {"finetune", "ema_merge", "lora", "offline_merge"}  # config/test.yaml's, no default runs


def test_a_schema_violation_is_one_line(tmp_path):
    project = make_project(tmp_path / "project")
    proc = snakemake_without_configfile(project, "--dry-run", "--config", "training={learning_rate: 0.1}")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if "config key" in line]
    assert len(lines) == 1, out
    assert lines[0].startswith(
        "invalid configuration (config/config.yaml + --config): config key 'training.learning_rate': unknown key "
        "(allowed: augmentation, batch_size, budget, buffer, "
    ), out
    assert ", lr, " in lines[0] and lines[0].endswith(")"), out
    assert len(out.splitlines()) < 12, out  # not the schema dump of snakemake.utils.validate
    assert not (project.root / "results").exists()


def test_experiments_sharing_a_data_root_shard_and_pretrain_once(fresh_copy):
    """A second experiment with its own results folder and the first one's data_root plans no sharding, catalog,
    pretraining or base evaluation: it reads the first one's (here: the finished test-size run's)."""
    project = fresh_copy
    second = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    second.update(results="results/second", data_root="results")
    second["runs"] = {"finetune": {"method": "finetune"}, "lora": {"method": "lora", "method_options": {"rank": 2}}}
    (project.root / "config" / "second.yaml").write_text(yaml.safe_dump(second, sort_keys=False))
    proc = snakemake_without_configfile(project, "--dry-run", "--configfile", "config/second.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned(proc.stdout)
    rules = {rule for rule, _ in jobs}
    assert "train_task" in rules
    shared = {"shard_dataset", "build_catalog", "pretrain_base", "evaluate_base", "evaluate_base_full",
              "class_accuracy"}
    assert not rules & shared, rules
    own = [output for rule, output in jobs if rule in ("build_stream", "train_task", "evaluate_task", "aggregate_run")]
    assert own and all(output.startswith("results/second/") for output in own), own

    # Without the shared data_root the same experiment makes its own.
    second.pop("data_root")
    (project.root / "config" / "second.yaml").write_text(yaml.safe_dump(second, sort_keys=False))
    proc = snakemake_without_configfile(project, "--dry-run", "--configfile", "config/second.yaml")
    assert {"shard_dataset", "pretrain_base"} <= {rule for rule, _ in planned(proc.stdout)}
