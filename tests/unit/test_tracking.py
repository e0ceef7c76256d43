"""Experiment tracking (TensorBoard event files read back with TensorBoard's own reader), the runs' resolved
settings and the `runs` table of the results database (issue 12, item 2)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml
from toy import MICRO, random_set

from fomoflux.errors import ConfigError
from fomoflux.methods import get_method
from fomoflux.metrics import read_results_db, summarize, write_results_db
from fomoflux.model import create_model
from fomoflux.pipeline.plan import build_plan
from fomoflux.tracking import (
    TrackingTarget,
    check_tracking_packages,
    run_settings,
    tracking_dir,
    tracking_enabled,
    tracking_settings,
)
from fomoflux.train import TaskUpdateConfig, run_task_update

ROOT = Path(__file__).resolve().parents[2]
TENSORBOARD = {"tensorboard": True}


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in the event files of ``folder``, read with TensorBoard's EventAccumulator (all files)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    out: dict[str, list[tuple[int, float]]] = {}
    for tag in acc.Tags()["scalars"]:
        out[tag] = [(event.step, event.value) for event in acc.Scalars(tag)]
    # torch writes add_text as a tensor summary
    for tag in acc.Tags().get("tensors", []):
        out[tag] = [(event.step, 0.0) for event in acc.Tensors(tag)]
    return out


def test_settings_defaults_and_errors():
    assert tracking_settings(None) == {"tensorboard": False, "wandb": {"project": None, "entity": None,
                                                                       "mode": "offline"}}
    assert not tracking_enabled(tracking_settings({}))
    assert tracking_enabled(tracking_settings(TENSORBOARD))
    assert tracking_enabled(tracking_settings({"wandb": {"project": "fomo"}}))
    with pytest.raises(ConfigError, match="tracking.wandb.mode"):
        tracking_settings({"wandb": {"project": "p", "mode": "sometimes"}})
    with pytest.raises(ConfigError, match="tracking: unknown key 'mlflow'"):
        tracking_settings({"mlflow": True})
    with pytest.raises(ConfigError, match="tracking.tensorboard"):
        tracking_settings({"tensorboard": "yes"})


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_tracker_without_its_package_is_an_error_naming_the_key(tmp_path):
    settings = tracking_settings({"wandb": {"project": "fomo"}})
    with pytest.raises(ConfigError, match=r"tracking.wandb.project is on, but the 'wandb' package is not installed"):
        check_tracking_packages(settings)
    with pytest.raises(ConfigError, match="tracking.wandb.project"):
        TrackingTarget(settings, "finetune", str(tmp_path), "task001").open()


def _task_update(target: TrackingTarget | None, steps: int = 12, seed: int = 0):
    model, tokenizer = create_model(MICRO, seed=seed)
    cfg = TaskUpdateConfig(steps=steps, batch_size=8, lr=1e-4, mixture={"update": 1.0}, log_every=5,
                           progress=False, tracking=target)
    return run_task_update(model, tokenizer, get_method("finetune"), {"update": random_set(10, seed, "u")}, cfg)


def test_tensorboard_curves_of_a_run_follow_each_other_across_tasks(tmp_path):
    settings = tracking_settings(TENSORBOARD)
    folder = tracking_dir(tmp_path / "results", "finetune")
    steps = 12
    logs = {}
    for task in (1, 2):
        target = TrackingTarget(settings, "finetune", str(folder), f"task{task:03d}", step_offset=(task - 1) * steps)
        logs[task] = _task_update(target, steps=steps, seed=task)
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 2 and files[0].endswith(".task001") and files[1].endswith(".task002"), files
    curves = scalars(folder)
    assert {"train/loss", "train/lr", "train/grad_norm", "train/contrastive_loss", "train/logit_scale"} <= set(curves)
    # the global step is task offset + step; the values are the training log's rows
    assert [step for step, _ in curves["train/loss"]] == [0, 5, 10, 11, 12, 17, 22, 23]
    expected = logs[1]["loss"].to_list() + logs[2]["loss"].to_list()
    assert [value for _, value in curves["train/loss"]] == pytest.approx(expected, rel=1e-6)
    assert [value for _, value in curves["train/lr"]] == pytest.approx(logs[1]["lr"].to_list() * 2, rel=1e-6)

    # A rerun of task 2 replaces its curve (no point shows twice); a resumed one keeps the interrupted attempt's.
    target = TrackingTarget(settings, "finetune", str(folder), "task002", step_offset=steps)
    _task_update(target, steps=steps, seed=5)
    assert len(list(folder.glob("*.task002"))) == 1
    assert [step for step, _ in scalars(folder)["train/loss"]] == [0, 5, 10, 11, 12, 17, 22, 23]
    with target.open(fresh=False) as tracker:
        tracker.log_training({"step": 11, "loss": 1.0, "lr": 1e-4})
    assert len(list(folder.glob("*.task002"))) == 2


def _matrix(run: str, tasks: int) -> pl.DataFrame:
    rows = []
    for task in range(tasks + 1):
        for dataset, role in (("shapes", "adaptation"), ("digits", "evaluation")):
            rows.append({"run": run, "task": task, "dataset": dataset, "role": role, "kind": "classification",
                         "metric": "top1", "value": 0.1 * task + (0.5 if role == "evaluation" else 0.0), "n": 10,
                         "primary": True, "subset": True})
    return pl.DataFrame(rows)


def test_evaluation_matrix_per_task_and_the_run_config(tmp_path):
    folder = tmp_path / "tracking" / "finetune"
    matrix = _matrix("finetune", 2)
    summary = summarize(matrix)
    config = {"run": "finetune", "method": "finetune", "training": {"lr": 1e-3}}
    target = TrackingTarget(tracking_settings(TENSORBOARD), "finetune", str(folder), "eval", config=config)
    for _ in range(2):  # the aggregation rebuilt: its file is replaced
        with target.open() as tracker:
            tracker.log_config()
            tracker.log_evaluation(matrix, summary)
    assert len(list(folder.glob("*.eval"))) == 1
    curves = scalars(folder)
    assert [step for step, _ in curves["eval/A_KA"]] == [0, 1, 2]
    assert [v for _, v in curves["eval/A_KA"]] == pytest.approx(summary.sort("task")["A_KA"].to_list())
    assert [v for _, v in curves["eval/digits/top1"]] == pytest.approx([0.5, 0.6, 0.7])
    assert "run_config/text_summary" in curves


@pytest.fixture()
def plan(monkeypatch):
    monkeypatch.chdir(ROOT)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["benchmark"].setdefault("datasets", "all")
    config.setdefault("evaluation", {}).setdefault("subset", {})
    config["grids"] = {"lr": {"method": ["finetune", "lora"], "method_options": {}, "training": {"lr": [1e-4, 1e-3]}}}
    return config


def test_tracking_is_in_no_task_spec(plan):
    off = build_plan(plan, check_against_model=False)
    on = build_plan({**plan, "tracking": {"tensorboard": True, "wandb": {"project": "p", "mode": "online"}}},
                    check_against_model=False)
    assert off.tracking["tensorboard"] is False and on.tracking["wandb"]["project"] == "p"
    for name, run in on.runs.items():
        stream = on.streams[run.stream]
        for task in range(1, stream.num_tasks + 1):
            assert run.task_spec(stream, task) == off.runs[name].task_spec(off.streams[run.stream], task)
        assert "tracking" not in json.dumps(run.task_spec(stream, 1))


def test_runs_table_selects_grid_runs_by_setting(plan, tmp_path):
    built = build_plan(plan, check_against_model=False)
    budgets = {name: {"steps": 30 if run.method != "lora" else 45, "reference_steps": 30, "mode": "maf"}
               for name, run in built.runs.items() if run.updates_weights}
    settings = [run_settings(built, name, budgets.get(name)) for name in built.runs]
    lora = next(s for s in settings if s["run"] == "lora")
    assert lora["method_options"] == {"rank": 4} and lora["steps_per_task"] == 45 and lora["tasks"] == 5
    # The run's own override (config.yaml: LoRA at lr 1e-2) beside a default filled in (log_every).
    assert lora["training"]["lr"] == 1e-2 and lora["training"]["log_every"] == 10
    assert next(s for s in settings if s["run"] == "finetune")["training"]["lr"] == 1e-3
    zeroshot = next(s for s in settings if s["run"] == "zeroshot")
    assert zeroshot["steps_per_task"] == 0 and zeroshot["budget"] is None

    matrices = [_matrix(name, 5) for name in built.runs]
    db = tmp_path / "fomoflux.duckdb"
    write_results_db(db, matrices, [summarize(m) for m in matrices], runs=settings)
    con = duckdb.connect(str(db), read_only=True)
    try:
        grid = con.execute(
            "SELECT r.run, r.method, r.lr, r.steps_per_task FROM final f JOIN runs r USING (run) "
            "WHERE r.run LIKE 'lr-%' AND r.lr = 1e-3 ORDER BY r.run").fetchall()
        assert grid == [("lr-finetune-lr0.001", "finetune", 1e-3, 30), ("lr-lora-lr0.001", "lora", 1e-3, 45)]
        ranked = con.execute("SELECT run FROM runs WHERE json_extract(method_options, '$.rank')::INT = 4").fetchall()
        assert ranked == [("lora",)]
        ewc = con.execute("SELECT schedule, budget, seed FROM runs WHERE run = 'ewc'").fetchone()
        assert ewc == ("cosine", "maf", 0)
        assert con.execute(
            "SELECT json_extract(training, '$.mixture.update')::DOUBLE FROM runs WHERE run = 'finetune'"
        ).fetchone()[0] == pytest.approx(0.34)
    finally:
        con.close()
    assert read_results_db(db)["runs"].height == len(built.runs)
    with pytest.raises(ValueError, match="duplicate"):
        write_results_db(tmp_path / "dupes.duckdb", [], [], runs=[settings[0], settings[0]])


def wandb_records(path: Path):
    """The records of a W&B transaction log (``run-<id>.wandb``: a header, then leveldb-log framed protobufs)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_one_run_across_jobs(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    settings = tracking_settings({"wandb": {"project": "fomo", "mode": "offline"}})
    folder = tmp_path / "tracking" / "finetune"
    for task in (1, 2):
        _task_update(TrackingTarget(settings, "finetune", str(folder), f"task{task:03d}", step_offset=(task - 1) * 12,
                                    config={"run": "finetune", "lr": 1e-4}), seed=task)
    matrix = _matrix("finetune", 2)
    with TrackingTarget(settings, "finetune", str(folder), "eval").open() as tracker:
        tracker.log_evaluation(matrix, summarize(matrix))
    logs = sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(logs) == 3, logs
    ids, rows = set(), []
    for path in logs:
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                ids.add(record.run.run_id)
                assert record.run.display_name == "finetune" and record.run.project == "fomo"
            elif kind == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    assert len(ids) == 1, "every job joins the one W&B run of the fomoflux run"
    train = [(r["_step"], r["train/loss"]) for r in rows if "train/loss" in r]
    assert [step for step, _ in train] == [0, 5, 10, 11, 12, 17, 22, 23]
    evaluation = [r for r in rows if "eval/A_KA" in r]
    assert [r["task"] for r in evaluation] == [0, 1, 2]
    assert [r["_step"] for r in evaluation] == [24, 25, 26], "after every training step: W&B keeps steps in order"
