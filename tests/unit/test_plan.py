"""plan.py: grids expand into runs, and a bad run fails at plan time with the key at fault."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from fomoflux.errors import ConfigError
from fomoflux.pipeline.plan import build_plan, expand_grids

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
        (lambda c: c["runs"].update(offline_merge={"method": "offline_merge",
                                                   "method_options": {"weights": [1.0, 2.0]}}),
         "runs.offline_merge.method_options.weights: 2 weights for 5 merged models"),
        (lambda c: c["runs"]["lora"].update(method_options={"rank": 999}), "runs.lora.*rank"),
        (lambda c: c["runs"].update(offline_merge={"method": "offline_merge",
                                                   "method_options": {"operator": "average"}}),
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


# ---- data: the real benchmark, the pool, buffers, validation ----------------------------------------------


def fif_config(**fomo_in_flux) -> dict:
    config = yaml.safe_load((ROOT / "config" / "fomo_in_flux.yaml").read_text())
    config["benchmark"]["fomo_in_flux"] = fomo_in_flux
    config.setdefault("evaluation", {}).setdefault("subset", {})
    return config


def test_paper_preset_plan_reports_what_is_missing(monkeypatch):
    monkeypatch.chdir(ROOT)
    plan = build_plan(fif_config(), check_against_model=False)
    assert len(plan.registry) == 64 and plan.pool == "pretraining_pool"  # 63 datasets + the replay pool
    stream = plan.streams["random"]
    assert len(stream.entries) == 18381 and stream.num_tasks == 20 and len(stream.task(1)) == 920
    report = plan.missing_report()
    assert report.startswith("2 input(s)") and "open_clip_model.safetensors" in report and "pretraining_pool" in report


def test_paper_preset_mirrors_local_copies_and_pinned_digests(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    copy_of_dtd = tmp_path / "DTD.tar"
    copy_of_dtd.write_bytes(b"")
    plan = build_plan(fif_config(urls={"CIFAR100": "file:///mirror/CIFAR100.tar"}, local={"DTD": str(copy_of_dtd)},
                                 sha256={"MNIST": "a" * 64}, annotations=str(tmp_path)), check_against_model=False)
    assert plan.registry["CIFAR100"].source == {"download": {"url": "file:///mirror/CIFAR100.tar",
                                                             "format": "fomo_in_flux", "annotations": str(tmp_path)}}
    assert plan.registry["DTD"].source["local"]["path"] == str(copy_of_dtd)
    assert plan.registry["MNIST"].source["download"]["sha256"] == "a" * 64
    assert not any("DTD" in item or "annotation" in item for item in plan.missing)
    with pytest.raises(ConfigError, match="both a mirror URL and a local copy"):
        build_plan(fif_config(urls={"DTD": "file:///x.tar"}, local={"DTD": "x.tar"}), check_against_model=False)
    with pytest.raises(ConfigError, match="NOPE"):
        build_plan(fif_config(local={"NOPE": "x.tar"}), check_against_model=False)


def test_pool_buffer_and_comparison_are_checked(config):
    config["datasets"] = {"laion": {"kind": "pretraining", "role": "pretraining",
                                    "source": {"webdataset": {"urls": "shards/{0..3}.tar"}}}}
    with pytest.raises(ConfigError, match="several pretraining datasets.*pool, laion"):
        build_plan(config, check_against_model=False)
    config["pool"] = "laion"
    plan = build_plan(config, check_against_model=False)
    assert plan.pool == "laion" and any("laion" in item for item in plan.missing)
    config["pool"] = "shapes"
    with pytest.raises(ConfigError, match="pool: 'shapes' is not a pretraining dataset"):
        build_plan(config, check_against_model=False)
    del config["pool"], config["datasets"]

    config["runs"]["finetune"]["training"] = {"buffer": {"policy": "reservoir"}}
    with pytest.raises(ConfigError, match="runs.finetune.training.buffer"):
        build_plan(config, check_against_model=False)
    config["runs"]["finetune"]["training"] = {"buffer": {"policy": "class_quota", "size": 100}}
    plan = build_plan(config, check_against_model=False)
    assert plan.runs["finetune"].training["buffer"] == {"policy": "class_quota", "size": 100}
    assert plan.runs["lora"].training["buffer"] == {"policy": "all", "size": None}

    config["figures"] = {"comparisons": {"c": {"runs": ["finetune", "nope"]}}}
    with pytest.raises(ConfigError, match="figures.comparisons.c.runs: unknown run 'nope'"):
        build_plan(config, check_against_model=False)


def test_stage_ordered_stream_task_spec(config):
    config["streams"]["random"] = {"ordering": "easy_to_hard", "classes_per_task": 9}
    plan = build_plan(config, check_against_model=False)
    run = plan.runs["finetune"]
    spec = run.task_spec(plan.streams["random"], 2)
    assert spec["entries"] is None and spec["stream"] == "random" and len(spec["stream_definition"]) == 16


def test_a_passed_model_check_is_remembered_until_something_it_covers_changes(config, tmp_path):
    import shutil

    (tmp_path / "config" / "models").mkdir(parents=True)
    shutil.copy(ROOT / config["model"]["config"], tmp_path / config["model"]["config"])
    build_plan(config, tmp_path)
    records = list((tmp_path / ".snakemake" / "fomoflux" / "model_checks").iterdir())
    assert len(records) == 1
    build_plan(config, tmp_path)  # same runs: the record is reused, no second one
    assert len(list(records[0].parent.iterdir())) == 1
    config["runs"]["lora"]["method_options"] = {"rank": 999}  # a new option is checked again, and fails
    with pytest.raises(ConfigError, match="runs.lora.*rank"):
        build_plan(config, tmp_path)
    assert len(list(records[0].parent.iterdir())) == 1


def test_operational_training_keys_never_enter_a_task_spec(config):
    """Loader workers, log interval, compile, checkpointing and snapshots change how a task runs, not what it computes:
    changing them retrains nothing; the training transform does."""
    plan = build_plan(config, check_against_model=False)
    base = plan.runs["finetune"].task_spec(plan.streams["random"], 2)
    config["training"].update(data_workers=6, log_every=50, compile=True, grad_checkpointing=True,
                              resume={"every_minutes": 1, "every_steps": 5})
    changed = build_plan(config, check_against_model=False)
    assert changed.runs["finetune"].task_spec(changed.streams["random"], 2) == base
    assert changed.runs["finetune"].training["resume"]["every_steps"] == 5  # what the stage reads them from
    config["training"]["augmentation"] = {"kind": "none"}
    other = build_plan(config, check_against_model=False)
    assert other.runs["finetune"].task_spec(other.streams["random"], 2)["training"]["augmentation"] == {"kind": "none"}


# ---- optimizer and budget settings -----------------------------------------------------------------------------


def test_optimizer_settings_are_resolved_into_the_task_spec(config):
    plan = build_plan(config, check_against_model=False)
    reference = {"convention": "reference", "betas": [0.9, 0.999], "eps": 1e-8}
    assert plan.runs["finetune"].training["optimizer"] == reference
    base = plan.runs["finetune"].task_spec(plan.streams["random"], 2)
    assert base["training"]["optimizer"] == reference
    # Spelling out the convention's own values is the same setting; another convention is another task update.
    config["runs"]["finetune"]["training"] = {"optimizer": {"betas": [0.9, 0.999], "eps": 1e-8}}
    same = build_plan(config, check_against_model=False)
    assert same.runs["finetune"].task_spec(same.streams["random"], 2) == base
    config["runs"]["finetune"]["training"] = {"optimizer": {"convention": "open_clip"}}
    other = build_plan(config, check_against_model=False)
    open_clip = {"convention": "open_clip", "betas": [0.9, 0.98], "eps": 1e-6}
    assert other.runs["finetune"].training["optimizer"] == open_clip
    assert other.runs["finetune"].task_spec(other.streams["random"], 2) != base
    assert other.runs["lora"].training["optimizer"] == reference
    config["runs"]["finetune"]["training"] = {"optimizer": {"convention": "adam"}}
    with pytest.raises(ConfigError, match=r"runs\.finetune\.training\.optimizer\.convention: 'adam'"):
        build_plan(config, check_against_model=False)


def test_budget_table_gives_steps_as_configured(config):
    config["training"]["budget"] = "table"
    config["budget"] = {"table": {"finetune": 30, "lora": 41, "bitfit": 90, "ewc": 2}}
    with pytest.raises(ConfigError, match=r"runs\.ema_merge\.training\.budget: 'table'.*no entry 'ema_merge'"):
        build_plan(config, check_against_model=False)
    config["budget"]["table"].update(ema_merge=30, unused_run=7)  # entries of other runs are unused
    plan = build_plan(config, check_against_model=False)
    assert plan.budget_settings("lora") == {"steps": 30, "budget": "table", "batch_size": 128, "table_steps": 41}
    assert plan.profiles == {}  # nothing to profile: the steps are given (and zeroshot, never trained, needs no entry)
    config["runs"]["lora"]["training"] = {"budget": "maf"}
    mixed = build_plan(config, check_against_model=False)
    assert mixed.budget_settings("lora") == {"steps": 30, "budget": "maf", "batch_size": 128}
    assert set(mixed.profiles) == {mixed.runs["lora"].profile_key(), mixed.reference_profile_key("lora")}
    config["budget"]["table"]["ewc"] = 0
    with pytest.raises(ConfigError, match=r"budget\.table\.ewc: steps per task must be an integer >= 1"):
        build_plan(config, check_against_model=False)


def test_paper_preset_budget_table_is_the_papers_table(monkeypatch):
    """config/fomo_in_flux.yaml's budget.table and benchmarks/budget_table.py's PAPER are two transcriptions of the
    paper's Tab. 4 (T = 20): they must agree; table mode gives each preset run exactly its entry."""
    import importlib.util

    monkeypatch.chdir(ROOT)
    spec = importlib.util.spec_from_file_location("budget_table", ROOT / "benchmarks" / "budget_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paper = {label.replace(" ", "_"): steps for label, steps in module.PAPER.items()}
    config = fif_config()
    table = config["budget"]["table"]
    assert table == {name: paper[name] for name in table}
    assert config["training"]["optimizer"] == {"convention": "reference"} and config["training"]["budget"] == "maf"
    config["training"]["budget"] = "table"
    plan = build_plan(config, check_against_model=False)
    trained = [name for name, run in plan.runs.items() if run.updates_weights]
    assert len(trained) == 12 and all(plan.budget_settings(n)["table_steps"] == table[n] for n in trained)
    assert plan.budget_settings("ewc")["table_steps"] == 14 and plan.budget_settings("bitfit")["table_steps"] == 3179
