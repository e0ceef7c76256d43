"""The whole DAG on the test-size config: outputs, caching, reruns, resume, and the ecosystem contracts."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from collections import Counter

import duckdb
import polars as pl
import pytest
from conftest import REPO, kill_group, make_project

pytestmark = pytest.mark.slow

TRAINING_RULES = {"train_task", "pretrain_base"}
TRAINED_RUNS = ("finetune", "ema_merge", "lora", "offline_merge")


def rules(jobs):
    return Counter(rule for rule, _ in jobs)


def test_full_run_writes_every_artifact(finished):
    cfg = finished.read_config()
    tasks = 2  # config/test.yaml: 22 classes, 11 per task
    budgets = {run: json.loads(finished.path("runs", run, "budget.json").read_text()) for run in TRAINED_RUNS}
    # Equal Memory-Adjusted FLOPs: merges cost what fine-tuning costs; LoRA's steps are cheaper, so it gets more.
    assert budgets["finetune"]["steps"] == budgets["ema_merge"]["steps"] == cfg["training"]["steps"]
    assert budgets["lora"]["steps"] > cfg["training"]["steps"]
    for run in TRAINED_RUNS:
        for t in range(1, tasks + 1):
            folder = finished.path("runs", run, f"task{t:03d}")
            assert (folder / "model.safetensors").stat().st_size > 0
            log = pl.read_parquet(folder / "train_log.parquet")
            # One row per log interval (training.log_every, default 10) and one for the last step.
            steps = budgets[run]["steps"]
            logged = sorted(set(range(0, steps, 10)) | {steps - 1})
            assert log["step"].to_list() == logged and {"step", "lr", "loss", "data_wait_s"} <= set(log.columns)
            assert finished.path("runs", run, "eval", f"task{t:03d}.parquet").exists()
    # Merging runs deploy their merges: EMA-merge's sequential chain, the offline merge of independent experts.
    for t in range(1, tasks + 1):
        assert finished.path("runs", "ema_merge", f"task{t:03d}", "merge_sequential.safetensors").exists()
        assert finished.path("runs", "offline_merge", f"task{t:03d}", "merge_oneshot.safetensors").exists()
    assert finished.path("runs", "lora", "task002", "method_state.safetensors").stat().st_size > 1000
    assert not finished.path("runs", "zeroshot", "task001").exists(), "the zero-shot reference trains nothing"
    for ext in ("png", "pdf"):
        assert finished.path("figures", f"trajectories.{ext}").stat().st_size > 1000
        assert finished.path("figures", f"heatmap_finetune.{ext}").stat().st_size > 1000
    assert finished.path("figures", "trajectories.png").read_bytes()[:4] == b"\x89PNG"
    assert finished.path("figures", "trajectories.pdf").read_bytes()[:4] == b"%PDF"
    # Each run's resolved settings; open_clip's folder config beside every checkpoint (base model included).
    for run in (*TRAINED_RUNS, "zeroshot"):
        settings = json.loads(finished.path("runs", run, "config.json").read_text())
        assert settings["run"] == run and settings["training"]["lr"] == cfg["training"]["lr"]
        assert settings["steps_per_task"] == (budgets[run]["steps"] if run in budgets else 0)
    for run in TRAINED_RUNS:
        for t in range(1, tasks + 1):
            assert finished.path("runs", run, f"task{t:03d}", "open_clip_config.json").is_file()
    assert finished.path("models", "fomo-micro", "open_clip_config.json").is_file()


def test_outputs_honour_the_umask(finished):
    """Colleagues can read the results: files and folders get the umask's mode, not mkstemp's 0600 / mkdtemp's 0700
    (the pipeline ran with this process's umask)."""
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (finished.path("data", "digits"), finished.path("runs", "finetune", "task001")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask, path
    for path in (finished.path("data", "digits", "manifest.parquet"), finished.path("data", "catalog.duckdb"),
                 finished.path("runs", "finetune", "task001", "model.safetensors"),
                 finished.path("runs", "finetune", "budget.json"), finished.path("fomoflux.duckdb"),
                 finished.path("figures", "trajectories.png"),
                 finished.path("models", "fomo-micro", "base.safetensors")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_logs_have_plain_timestamped_progress_lines(finished):
    """No tqdm bar (carriage returns) in a log file: one timestamped line per log row, naming run and task."""
    log = finished.path("logs", "train_task", "finetune", "task002.log").read_text()
    assert "\r" not in log
    lines = [line for line in log.splitlines() if "run finetune task 2/2 [finetune]: step" in line]
    assert len(lines) == 2 and lines[-1].split(": step ")[1].startswith("4/4"), log[-2000:]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in lines)
    assert "run finetune task 2/2 [finetune]: training steps 1-4" in log, log[-2000:]
    base = finished.path("logs", "pretrain_base", "fomo-micro.log").read_text()
    assert "\r" not in base and "pretrain_base fomo-micro (fomo-micro-vit): step 30/30" in base, base[-2000:]


def test_results_are_queryable_in_duckdb(finished):
    con = duckdb.connect(str(finished.path("fomoflux.duckdb")), read_only=True)
    final = dict(con.execute("SELECT run, A_ZS FROM final ORDER BY run").fetchall())
    assert set(final) == {*TRAINED_RUNS, "zeroshot"}
    start = con.execute("SELECT DISTINCT A_KA, A_ZS FROM summary WHERE task = 0").fetchall()
    assert len(start) == 1, "every run starts at the same zero-shot point"
    tasks = con.execute("SELECT run, max(task) FROM summary GROUP BY run").fetchall()
    assert all(t == 2 for _, t in tasks)
    # The runs' settings beside their scores: select runs by method option, join with the final scores.
    lora = con.execute("SELECT r.run, r.steps_per_task, f.A_KA FROM runs r JOIN final f USING (run) "
                       "WHERE json_extract(r.method_options, '$.rank')::INT = 2").fetchall()
    assert [row[0] for row in lora] == ["lora"] and lora[0][1] > 4
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == len(TRAINED_RUNS) + 1


def test_every_trajectory_point_is_on_one_fixed_subset_and_the_full_test_sets_apart(finished):
    con = duckdb.connect(str(finished.path("fomoflux.duckdb")), read_only=True)
    # The trajectories: every run, every task (the base model's task 0 included) on the same samples per dataset.
    assert con.execute("SELECT bool_and(subset) FROM metrics").fetchone()[0]
    sizes = con.execute("SELECT dataset, count(DISTINCT n), min(n) FROM metrics GROUP BY dataset").fetchall()
    assert all(kinds == 1 for _, kinds, _ in sizes), sizes
    tasks = con.execute("SELECT run, list(DISTINCT task ORDER BY task) FROM summary GROUP BY run").fetchall()
    assert all(t == [0, 1, 2] for _, t in tasks), tasks
    # The full test sets: the base model and each run's last task, in tables of their own.
    assert not con.execute("SELECT bool_or(subset) FROM metrics_full").fetchone()[0]
    full_tasks = con.execute("SELECT DISTINCT task FROM summary_full ORDER BY task").fetchall()
    assert full_tasks == [(0,), (2,)]
    full_n = dict(con.execute("SELECT dataset, min(n) FROM metrics_full GROUP BY dataset").fetchall())
    subset_n = {dataset: n for dataset, _, n in sizes}
    assert set(full_n) == set(subset_n) and all(full_n[d] >= subset_n[d] for d in full_n)
    assert any(full_n[d] > subset_n[d] for d in full_n), "the test config's subsets are smaller than a test set"
    assert {run for (run,) in con.execute("SELECT run FROM final_full").fetchall()} == {*TRAINED_RUNS, "zeroshot"}
    for ext in ("png", "pdf"):
        assert finished.path("figures", f"full_test_sets.{ext}").stat().st_size > 1000
    for ext in ("csv", "html"):
        assert finished.path("tables", f"full_test_sets.{ext}").stat().st_size > 100
    assert finished.path("models", "fomo-micro", "eval_full.parquet").is_file()
    assert [p.name for p in finished.path("runs", "finetune", "eval_full").iterdir()] == ["task002.parquet"]


def test_second_run_does_nothing(finished):
    out = finished.snakemake("--dry-run").stdout
    assert "Nothing to be done" in out, out[-2000:]


def test_checkpoint_loads_with_plain_open_clip(finished):
    ckpt = finished.path("runs", "finetune", "task002", "model.safetensors")
    code = (
        "import open_clip, sys; open_clip.add_model_config(sys.argv[1]);"
        "m, _, pre = open_clip.create_model_and_transforms('fomo-micro-vit', pretrained=sys.argv[2]);"
        "print('loaded', sum(p.numel() for p in m.parameters()))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(finished.root / "config/models/fomo-micro-vit.json"), str(ckpt)],
        capture_output=True, text=True, check=True,
    )
    assert "loaded" in proc.stdout
    # One line, nothing registered: `local-dir:` reads open_clip_config.json and the folder's model.safetensors
    # (LoRA's adapter folded into plain weights; the base model's folder has its one checkpoint).
    code = (
        "import open_clip, sys, torch; from safetensors.torch import load_file\n"
        "for folder, weights in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    m, _, pre = open_clip.create_model_and_transforms('local-dir:' + folder)\n"
        "    saved = load_file(weights)\n"
        "    assert all(torch.equal(v, saved[k]) for k, v in m.state_dict().items()), folder\n"
        "print('local-dir loaded')\n"
    )
    folders = [finished.path("runs", "finetune", "task002"), finished.path("runs", "lora", "task002"),
               finished.path("models", "fomo-micro")]
    pairs = [str(p) for f in folders for p in (f, f / ("base.safetensors" if f.parent.name == "models" else
                                                           "model.safetensors"))]
    proc = subprocess.run([sys.executable, "-c", code, *pairs], capture_output=True, text=True, cwd=finished.root)
    assert proc.returncode == 0 and "local-dir loaded" in proc.stdout, proc.stderr[-3000:]


def test_tracking_reruns_nothing_and_records_what_runs(fresh_copy):
    """Switching TensorBoard on invalidates no result; the jobs that run afterwards write their curves."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fresh_copy.edit_config(lambda c: c.update(tracking={"tensorboard": True}))
    out = fresh_copy.snakemake("--dry-run").stdout
    assert "Nothing to be done" in out, out[-2000:]
    fresh_copy.snakemake("results/runs/finetune/task001/model.safetensors", "results/runs/finetune/metrics.parquet",
                         "--forcerun", "train_task", "aggregate_run")
    events = EventAccumulator(str(fresh_copy.path("tracking", "finetune")))
    events.Reload()
    # finetune trains 4 steps a task: task 2 continues the curve at step 4 (logged at steps 0 and 3 of each task)
    assert [e.step for e in events.Scalars("train/loss")] == [0, 3, 4, 7]
    assert [e.step for e in events.Scalars("eval/A_KA")] == [0, 1, 2]


def test_shards_read_back_with_plain_webdataset(finished):
    shards = sorted(finished.path("data", "digits").glob("train-*.tar"))
    assert shards
    code = (
        "import sys, webdataset as wds\n"
        "n = 0\n"
        "for s in wds.WebDataset(sys.argv[1:], shardshuffle=False).decode('pil'):\n"
        "    assert s['png'].size == (32, 32) and s['txt'] and s['json']['dataset'] == 'digits'\n"
        "    n += 1\n"
        "print(n)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *map(str, shards)], capture_output=True, text=True, check=True)
    manifest = pl.read_parquet(finished.path("data", "digits", "manifest.parquet"))
    assert int(proc.stdout) == manifest.filter(pl.col("split") == "train").height


def test_changing_a_figure_setting_reruns_only_figures(fresh_copy):
    fresh_copy.edit_config(lambda c: c.setdefault("figures", {}).update(title="another title"))
    assert set(rules(fresh_copy.planned_jobs())) == {"plot_trajectories"}


def test_adding_an_evaluation_dataset_reruns_evaluations_not_training(fresh_copy):
    def add_colors(cfg):
        cfg["benchmark"]["datasets"].append("colors")

    fresh_copy.edit_config(add_colors)
    planned = rules(fresh_copy.planned_jobs())
    assert not TRAINING_RULES & set(planned), planned
    assert planned["shard_dataset"] == 1 and planned["evaluate_base"] == planned["evaluate_base_full"] == 1
    assert planned["evaluate_task"] == 2 * len(TRAINED_RUNS) and planned["evaluate_task_full"] == len(TRAINED_RUNS)


def test_method_hyperparameter_reruns_only_that_runs_chain(fresh_copy):
    fresh_copy.edit_config(lambda c: c["runs"]["lora"].setdefault("method_options", {}).update(rank=3))
    jobs = fresh_copy.planned_jobs()
    trained = [wc for rule, wc in jobs if rule == "train_task"]
    assert sorted((wc["run"], wc["task"]) for wc in trained) == [("lora", "001"), ("lora", "002")]
    assert {wc["run"] for rule, wc in jobs if rule == "evaluate_task"} == {"lora"}
    assert "pretrain_base" not in rules(jobs)


def test_a_merge_setting_reruns_merges_not_training(fresh_copy):
    # EMA-merge trains task 2 from the merge after task 1, so its weight reaches task 2's training (only that).
    fresh_copy.edit_config(lambda c: c["runs"]["ema_merge"].setdefault("method_options", {}).update(weight=0.25))
    jobs = fresh_copy.planned_jobs()
    assert sorted((wc["run"], wc["task"]) for rule, wc in jobs if rule == "train_task") == [("ema_merge", "002")]
    assert sorted(wc["task"] for rule, wc in jobs if rule == "merge_task") == ["001", "002"]
    # The offline merge's experts never see the merge: another weighting and operator retrain nothing.
    fresh_copy.edit_config(lambda c: c["runs"]["ema_merge"]["method_options"].update(weight=0.5))
    fresh_copy.edit_config(lambda c: c["runs"]["offline_merge"].setdefault("method_options", {}).update(
        weighting="linear", operator="ties", operator_options={"prune": 0.5}))
    jobs = fresh_copy.planned_jobs()
    assert not [wc for rule, wc in jobs if rule == "train_task"]
    assert {(wc["run"], wc["kind"]) for rule, wc in jobs if rule == "merge_task"} == {("offline_merge", "oneshot")}
    fresh_copy.snakemake()
    con = duckdb.connect(str(fresh_copy.path("fomoflux.duckdb")), read_only=True)
    assert con.execute("SELECT count(*) FROM summary WHERE run = 'offline_merge'").fetchone()[0] == 3


def test_a_growing_stream_runs_only_the_new_tasks(fresh_copy):
    before = {
        run: [fresh_copy.path("runs", run, f"task{t:03d}", "model.safetensors").read_bytes() for t in (1, 2)]
        for run in ("finetune", "ema_merge")
    }

    def grow(cfg):
        stream = cfg["streams"]["random"]
        segment = {k: stream.pop(k) for k in ("ordering", "seed", "datasets") if k in stream}
        stream["segments"] = [segment, {"ordering": "random", "seed": 1, "datasets": ["glyphs"]}]

    fresh_copy.edit_config(grow)
    trained = [wc for rule, wc in fresh_copy.planned_jobs() if rule == "train_task"]
    assert sorted((wc["run"], wc["task"]) for wc in trained) == [(run, "003") for run in sorted(TRAINED_RUNS)]
    fresh_copy.snakemake()
    for run, blobs in before.items():
        for t, blob in zip((1, 2), blobs):
            assert fresh_copy.path("runs", run, f"task{t:03d}", "model.safetensors").read_bytes() == blob
        assert fresh_copy.path("runs", run, "task003", "model.safetensors").exists()
    con = duckdb.connect(str(fresh_copy.path("fomoflux.duckdb")), read_only=True)
    assert con.execute("SELECT max(task) FROM summary WHERE run = 'finetune'").fetchone()[0] == 3


def test_killed_training_job_resumes_bit_identically(fresh_copy):
    """SIGKILL the whole Snakemake process group in the middle of task 2, after a mid-task snapshot, rerun, and
    compare with a chain run in one go: the rerun continues from the snapshot, the checkpoints are bit-identical,
    the killed job left nothing that looks complete, and the snapshot is gone once the task is done."""
    project = fresh_copy
    project.edit_config(lambda c: c["runs"]["finetune"].update(
        training={"steps": 120, "resume": {"every_minutes": 0, "every_steps": 20}}))
    target = "results/runs/finetune/task002/model.safetensors"
    proc = project.start_snakemake(target)
    snapshot = project.path("resume", "finetune", "task002", "snapshot.pt")
    deadline = time.monotonic() + 300
    while not snapshot.exists():
        assert proc.poll() is None, "snakemake ended before task 2 saved a mid-task snapshot"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kill_group(proc)
    folder = project.path("runs", "finetune", "task002")
    assert not (folder / "model.safetensors").exists(), "a killed job must not leave a complete-looking checkpoint"
    project.snakemake("--unlock")  # Snakemake itself was killed too: its lock stays until released
    project.snakemake()
    log = project.path("logs", "train_task", "finetune", "task002.log").read_text()
    assert "run finetune task 2/2 [finetune]: resuming after step" in log, log[-2000:]
    assert not snapshot.parent.exists(), "the snapshot folder must be removed once the task's outputs are complete"
    interrupted = {
        t: project.path("runs", "finetune", f"task{t:03d}", "model.safetensors").read_bytes() for t in (1, 2)
    }
    metrics = pl.read_parquet(project.path("runs", "finetune", "metrics.parquet")).sort("task", "dataset", "metric")

    for t in (1, 2):
        for f in project.path("runs", "finetune", f"task{t:03d}").iterdir():
            f.unlink()
    # Snakemake regenerates a missing intermediate only when something asks for it: ask for the last checkpoint.
    project.snakemake(target)
    for t in (1, 2):
        assert project.path("runs", "finetune", f"task{t:03d}", "model.safetensors").read_bytes() == interrupted[t]
    project.snakemake()  # the checkpoints are newer than their evaluations now: those rerun
    again = pl.read_parquet(project.path("runs", "finetune", "metrics.parquet")).sort("task", "dataset", "metric")
    assert again["value"].to_list() == metrics["value"].to_list()


def test_lint_passes(finished):
    proc = finished.snakemake("--lint", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize(
    "edit, culprit",
    [
        (lambda c: c["runs"]["finetune"].update(method="finetuning"), "finetuning"),
        (lambda c: c["streams"]["random"].update(datasets=["digits", "nonexistent"]), "nonexistent"),
        (lambda c: c["training"].update(learning_rate=0.1), "learning_rate"),
        (lambda c: c["mixtures"].update(paper={"pretrain": 0.5, "update": 0.34, "buffer": 0.33}), "sum to 1.17"),
    ],
    ids=["unknown-method", "unknown-dataset", "unknown-key", "mixture-sum"],
)
def test_bad_config_is_one_clear_error_before_anything_runs(tmp_path, edit, culprit):
    project = make_project(tmp_path / "project")
    project.edit_config(edit)
    proc = project.snakemake("--dry-run", check=False)
    assert proc.returncode != 0
    assert culprit in proc.stdout + proc.stderr
    assert not (project.root / "results").exists()


def test_a_missing_checkpoint_is_listed_by_the_dry_run_and_stops_the_real_run(tmp_path):
    """A file the config names but that is not there yet: the dry run shows the DAG and says what is missing; the
    real run refuses to start, with the same message, before any job runs."""
    project = make_project(tmp_path / "project")
    project.edit_config(lambda c: c["model"].update(pretrained={"file": "weights/missing.safetensors"}))
    dry = project.snakemake("--dry-run")
    assert "1 input(s) named in the config are missing" in dry.stdout + dry.stderr
    assert "weights/missing.safetensors" in dry.stdout + dry.stderr and "import_checkpoint" in dry.stdout
    real = project.snakemake(check=False)
    assert real.returncode != 0 and "not starting" in real.stdout + real.stderr
    assert "weights/missing.safetensors" in real.stdout + real.stderr
    assert not (project.root / "results").exists()


def test_downloaded_dataset_through_the_pipeline(tmp_path):
    """A registry entry obtained by download: served by a local HTTP server, verified, imported into shards."""
    import hashlib
    import http.server
    import io as bytes_io
    import tarfile
    import threading
    from functools import partial

    import numpy as np
    from PIL import Image

    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    buffer = bytes_io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for split, n in (("train", 3), ("test", 2)):
            for cls in ("owl", "cat"):
                for i in range(n):
                    png = bytes_io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(png, format="PNG")
                    info = tarfile.TarInfo(f"toy/{split}/{cls}/{i}.png")
                    info.size = len(png.getvalue())
                    tar.addfile(info, bytes_io.BytesIO(png.getvalue()))
    (served / "toy.tar").write_bytes(buffer.getvalue())
    sha = hashlib.sha256(buffer.getvalue()).hexdigest()

    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        project = make_project(tmp_path / "project")
        url = f"http://127.0.0.1:{server.server_address[1]}/toy.tar"
        entry = {"kind": "classification", "role": "evaluation", "classnames": ["owl", "cat"],
                 "prompt": "a photo of an {}.", "source": {"download": {"url": url, "sha256": sha}}}
        project.edit_config(lambda c: c.setdefault("datasets", {}).update(toy=entry))
        project.snakemake("results/data/toy")
        manifest = pl.read_parquet(project.path("data", "toy", "manifest.parquet"))
        assert manifest.group_by("split").len().sort("split")["len"].to_list() == [4, 6]
        assert set(manifest["class_name"]) == {"owl", "cat"}

        bad = dict(entry, source={"download": {"url": url, "sha256": "0" * 64}})
        project.edit_config(lambda c: c["datasets"].update(toy=bad))
        proc = project.snakemake("results/data/toy", check=False)
        assert proc.returncode != 0
        log = project.path("logs", "download_archive", "toy.log").read_text()
        assert "0" * 64 in log and sha in log, log[-2000:]
    finally:
        server.shutdown()


def test_a_grid_of_100_runs_expands_into_one_dag(tmp_path):
    """5 methods x 5 learning rates x 4 seeds over a 20-task stream: 2,000 task updates in one dry run (its wall time
    is measured by benchmarks/bench_dag.py, not here)."""
    project = make_project(tmp_path / "project")

    def sweep(cfg):
        stream = cfg["streams"]["random"]
        stream.pop("classes_per_task")
        stream["tasks"] = 20
        cfg["runs"] = {}
        cfg["grids"] = {"sweep": {"method": ["finetune", "lora", "ewc", "ema_merge", "offline_merge"],
                                  "training": {"lr": [1e-4, 2e-4, 3e-4, 4e-4, 5e-4]}, "seed": [0, 1, 2, 3]}}

    project.edit_config(sweep)
    planned = rules(project.planned_jobs())
    assert planned["train_task"] == 100 * 20 and planned["evaluate_task"] == 100 * 20
    # Profiles: finetune (also the merges' cost and the reference), lora, ewc.
    assert planned["run_budget"] == 100 and planned["profile_method"] == 3
    assert planned["merge_task"] == 2 * 20 * 20  # ema_merge and offline_merge runs: one merge per task


def test_schedule_comparison_config_plans(tmp_path):
    """config/schedules.yaml (a grid over the paper's schedules) builds its DAG, schedule figure included."""
    project = make_project(tmp_path / "project", config=REPO / "config" / "schedules.yaml")
    planned = rules(project.planned_jobs())
    assert planned["train_task"] == 7 * 5 and planned["plot_schedules"] == 1


def test_seed_findings_config_plans(tmp_path):
    """config/seeds.yaml: five trained runs on each of three seeds' streams, one comparison figure per seed."""
    project = make_project(tmp_path / "project", config=REPO / "config" / "seeds.yaml")
    planned = rules(project.planned_jobs())
    assert planned["train_task"] == 3 * 5 * 5 and planned["build_stream"] == 3
    assert planned["plot_comparison"] == 3 and planned["evaluate_task_full"] == 3 * 5
