"""The README's cluster command, `snakemake --cores 8 --profile slurm`, on a real one-node SLURM cluster with
accounting (slurmctld + slurmd + slurmdbd + MariaDB on loopback, scripts/slurm-test-cluster.sh).

The cluster advertises two placeholder GPUs: GPU rules schedule and then run on the CPU, which is what makes their
results comparable with the local run of the same config.
"""

from __future__ import annotations

import collections
import shutil
import time

import polars as pl
import pytest
from conftest import GPU_RULES, slurm_cluster, tres_memory_mb

from fomoflux.pipeline.slurm import scheduled_jobs, submitted_jobs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from slurm_cluster(tmp_path_factory.mktemp("slurm-accounting"), accounting=True)


def metrics(project, run):
    return pl.read_parquet(project.path("runs", run, "metrics.parquet")).sort("task", "dataset", "metric")


def assert_same_metrics(project, reference, runs):
    for run in runs:
        got, expected = metrics(project, run), metrics(reference, run)
        assert got.select("task", "dataset", "metric").equals(expected.select("task", "dataset", "metric")), run
        assert got["value"].to_list() == expected["value"].to_list(), f"run {run}: metrics differ from the local run"


def minutes(limit: str) -> int:
    """sacct's Timelimit ([D-]HH:MM:SS) in minutes."""
    days, _, clock = limit.rpartition("-")
    h, m, s = (int(x) for x in clock.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)


def test_the_pipeline_runs_through_slurm_with_the_requested_resources_and_matches_the_local_run(
    finished, cluster, tmp_path
):
    project = finished.copy(tmp_path / "project")
    planned = collections.Counter(rule for rule, _ in project.planned_jobs("--forceall"))
    for path in [project.root / "results", project.root / ".snakemake"]:
        shutil.rmtree(path, ignore_errors=True)

    proc = project.snakemake_slurm()
    output = proc.stdout + proc.stderr
    jobs = scheduled_jobs(output)
    submissions = submitted_jobs(output)
    records = cluster.sacct([s.slurm_jobid for s in submissions])

    # Every GPU job of the DAG ran as a SLURM job (and only those and the data stages: reports stay local).
    by_rule = collections.Counter(s.rule for s in submissions)
    for rule in GPU_RULES + ("shard_dataset", "build_catalog", "build_stream", "merge_task", "profile_method"):
        assert by_rule[rule] == planned[rule], f"{rule}: {by_rule[rule]} SLURM jobs for {planned[rule]} planned"
    for rule in ("run_budget", "aggregate_run", "results_db", "plot_trajectories"):
        assert by_rule[rule] == 0, f"{rule} is a local rule but went to SLURM"

    for submission in submissions:
        record = records[submission.slurm_jobid]
        asked = jobs[submission.snakemake_jobid]["resources"]
        assert record["State"] == "COMPLETED", (submission, record)
        assert record["Comment"].startswith(f"rule_{submission.rule}"), record
        tres = dict(item.split("=", 1) for item in record["ReqTRES"].split(","))
        assert tres_memory_mb(tres["mem"]) == int(asked["mem_mb"]), (submission.rule, tres, asked)
        assert minutes(record["Timelimit"]) == int(asked["runtime"]), (submission.rule, record, asked)
        if submission.rule in GPU_RULES:
            # The GPU request reached sbatch (--gpus, --cpus-per-gpu) and the allocation.
            assert tres["gres/gpu"] == asked["gpu"] == "1", (submission.rule, tres)
            # --cpus-per-gpu shows in the allocation (ReqTRES keeps cpu=1).
            allocated = dict(item.split("=", 1) for item in record["AllocTRES"].split(","))
            assert allocated["cpu"] == asked["cpus_per_gpu"], (submission.rule, allocated, asked)
            assert allocated["gres/gpu"] == "1", record
            # The artifact's own log says which SLURM job made it.
            job_log = project.root / jobs[submission.snakemake_jobid]["log"]
            assert f"SLURM job {submission.slurm_jobid} on " in job_log.read_text(), job_log
        else:
            assert "gres/gpu" not in tres, (submission.rule, tres)

    # Training and evaluation asked for memory and time computed from the run (not the profile's defaults).
    train = [j["resources"] for j in jobs.values() if j["rule"] == "train_task"]
    assert train and all(int(r["mem_mb"]) != 4096 and int(r["runtime"]) == 20 for r in train), train

    assert_same_metrics(project, finished, ["finetune", "lora", "ema_merge", "offline_merge", "zeroshot"])


def forget_tasks(project, run, tasks):
    """Delete the tasks' updates and evaluations and the run's tables, to be made again by asking for the run's
    metrics (Snakemake redoes a missing file only when something it must make needs it)."""
    for task in tasks:
        shutil.rmtree(project.path("runs", run, f"task{task}"))
        project.path("runs", run, "eval", f"task{task}.parquet").unlink()
    for table in ("metrics.parquet", "summary.parquet"):
        project.path("runs", run, table).unlink()


def slurm_job_of(cluster, rule: str, wildcards: str) -> int | None:
    """The id of the queued or running SLURM job of `rule` with these wildcards (from its --comment)."""
    out = cluster.run("squeue", "-h", "-t", "RUNNING", "-o", "%i %k").stdout
    for line in out.splitlines():
        job_id, _, comment = line.partition(" ")
        if comment == f"rule_{rule}_wildcards_{wildcards}":
            return int(job_id)
    return None


def test_a_cancelled_training_job_is_retried_and_the_run_ends_as_if_uninterrupted(finished, cluster, tmp_path):
    """scancel (what preemption without requeue looks like to a job) of task 1's update while it trains: the
    executor sees CANCELLED, Snakemake resubmits (the profile's retries), the task is redone from its input
    checkpoint, and the run's metrics equal the local, uninterrupted run's."""
    project = finished.copy(tmp_path / "project")
    forget_tasks(project, "finetune", ("001", "002"))
    train_log = project.path("logs", "train_task", "finetune", "task001.log")
    train_log.unlink()

    output_log = tmp_path / "snakemake.log"
    proc = project.start_snakemake_slurm("results/runs/finetune/metrics.parquet", log=output_log)
    deadline = time.monotonic() + 600
    cancelled = None
    while cancelled is None:
        assert proc.poll() is None, "snakemake ended before the training job was cancelled:\n" + output_log.read_text()
        assert time.monotonic() < deadline, "task 1 never started training"
        if train_log.exists() and "task 1/2 [finetune]: training steps" in train_log.read_text():  # training
            cancelled = slurm_job_of(cluster, "train_task", "finetune_001")
        time.sleep(0.1)
    cluster.run("scancel", str(cancelled))
    assert proc.wait(timeout=900) == 0, output_log.read_text()[-6000:]

    output = output_log.read_text()
    assert f"SLURM-job '{cancelled}' failed, SLURM status is: 'CANCELLED" in output, output[-6000:]
    attempts = [s for s in submitted_jobs(output) if s.rule == "train_task" and s.wildcards == "finetune_001"]
    assert len(attempts) == 2 and attempts[0].slurm_jobid == cancelled, attempts
    assert cluster.sacct([attempts[1].slurm_jobid])[attempts[1].slurm_jobid]["State"] == "COMPLETED"
    assert_same_metrics(project, finished, ["finetune"])
    for task in ("001", "002"):
        checkpoint = ("runs", "finetune", f"task{task}", "model.safetensors")
        assert project.path(*checkpoint).read_bytes() == finished.path(*checkpoint).read_bytes()


def test_a_job_over_its_memory_limit_fails_with_the_slurm_reason_in_the_log(finished, cluster, tmp_path):
    project = finished.copy(tmp_path / "project")
    forget_tasks(project, "finetune", ("002",))
    proc = project.snakemake_slurm("results/runs/finetune/metrics.parquet", "--set-resources",
                                   "train_task:mem_mb=150", "--retries", "0", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    attempt = next(s for s in submitted_jobs(output) if s.rule == "train_task")
    assert cluster.sacct([attempt.slurm_jobid])[attempt.slurm_jobid]["State"] in ("FAILED", "OUT_OF_MEMORY",
                                                                                  "CANCELLED")
    # The workflow's onerror names the job and quotes SLURM's reason from the job's SLURM log.
    assert f"fomoflux: SLURM job {attempt.slurm_jobid} (train_task finetune_002) ended" in output, output[-6000:]
    assert "exceeded memory limit" in output.split("fomoflux: SLURM job", 1)[1], output[-6000:]
    assert not project.path("runs", "finetune", "task002", "model.safetensors").exists()
