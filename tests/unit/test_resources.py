"""Cluster resource requests (fomoflux.pipeline.resources) and the SLURM log reader (fomoflux.pipeline.slurm)."""

from __future__ import annotations

import polars as pl
import pytest

from fomoflux.errors import ConfigError
from fomoflux.pipeline.resources import (
    EMBEDDING_BYTES,
    LOADER_WORKER_MB,
    PARAM_COPIES,
    ROW_BYTES,
    ResourceSettings,
    cpus_per_gpu,
    data_workers,
    eval_memory_mb,
    manifest_rows,
    runtime_minutes,
    shard_workers,
    task_memory_mb,
)
from fomoflux.pipeline.slurm import failure_report, scheduled_jobs, slurm_reason, submitted_jobs

MB = 2**20


def test_settings_defaults_and_overrides():
    assert ResourceSettings.from_config(None) == ResourceSettings()
    settings = ResourceSettings.from_config({"gpu_tflops": 50, "min_runtime": 5})
    assert (settings.gpu_tflops, settings.min_runtime, settings.runtime_safety) == (50, 5, 3.0)


@pytest.mark.parametrize(
    "section, culprit",
    [({"gpu_tflop": 1}, "cluster.gpu_tflop"), ({"min_runtime": 0}, "cluster.min_runtime"),
     ({"gpu_tflops": "fast"}, "cluster.gpu_tflops"), ({"runtime_safety": 0.5}, "cluster.runtime_safety")],
)
def test_settings_errors_name_the_key(section, culprit):
    with pytest.raises(ConfigError, match=culprit):
        ResourceSettings.from_config(section)


def test_task_memory():
    settings = ResourceSettings(base_memory_mb=1000)
    params, size, batch = 10 * MB, 32, 64
    got = task_memory_mb(settings, params=params, image_size=size, batch_size=batch, data_rows=1000, loader_workers=2)
    batch_bytes = batch * 3 * size * size
    expected = (1000 * MB + PARAM_COPIES * 4 * params + 2 * (LOADER_WORKER_MB * MB + 2 * 4 * batch_bytes)
                + 1000 * ROW_BYTES)
    assert got == -(-expected // MB)
    # A retry (attempt 2) after the scheduler killed the job asks for twice as much.
    again = task_memory_mb(settings, params=params, image_size=size, batch_size=batch, data_rows=1000,
                           loader_workers=2, attempt=2)
    assert again == 2 * got
    # Two GPUs: the job's process and two workers each hold the libraries and the model; each rank loads its half
    # of a batch in its own loader workers.
    two = task_memory_mb(settings, params=params, image_size=size, batch_size=batch, data_rows=1000,
                         loader_workers=2, workers=2)
    loaders = 2 * 2 * (LOADER_WORKER_MB * MB + 2 * 4 * batch_bytes // 2)
    assert two == -(-(3 * (1000 * MB + PARAM_COPIES * 4 * params) + loaders + 1000 * ROW_BYTES) // MB)


def test_paper_scale_task_memory_does_not_grow_with_the_buffer():
    # ViT-B/16 (150M parameters), 224 px, B = 512, 7 loader workers: the first task vs a late task whose buffer
    # holds ~1M samples. Images are read per batch: only the rows' index grows (256 B a row).
    def mb(rows):
        return task_memory_mb(ResourceSettings(), params=150_000_000, image_size=224, batch_size=512,
                              data_rows=rows, loader_workers=7)

    first, late = mb(60_000 + 727_040), mb(1_000_000 + 727_040)
    assert 13_000 < first < 16_000 and late - first < 300, (first, late)


def test_eval_memory():
    mb = eval_memory_mb(ResourceSettings(base_memory_mb=100), params=MB, image_size=16, batch_size=8,
                        loader_workers=0, rows=1000)
    assert mb == -(-(100 * MB + 8 * MB + 8 * 3 * 16 * 16 + 1000 * (ROW_BYTES + EMBEDDING_BYTES)) // MB)


def test_data_workers():
    assert data_workers("auto", 8, on_gpu=True) == 7 and data_workers("auto", 1, on_gpu=True) == 2
    assert data_workers("auto", 8, on_gpu=False) == 0 and data_workers(3, 8, on_gpu=False) == 3
    with pytest.raises(ConfigError, match="data_workers"):
        data_workers(-1, 8, on_gpu=True)


def test_runtime_from_flops_with_floor_and_attempts():
    settings = ResourceSettings(gpu_tflops=100, runtime_safety=3, min_runtime=20)
    # 1420 steps x 512 samples x 60 GFLOP: 4.4e16 FLOPs -> 436 s at 100 TFLOP/s, x3 = 21.8 min -> 22
    flops = 1420 * 512 * 60e9
    assert runtime_minutes(settings, flops=flops) == 22
    assert runtime_minutes(settings, flops=flops, gpus=2) == 20  # 11 min, raised to the floor
    assert runtime_minutes(settings, flops=0) == 20
    assert runtime_minutes(settings, flops=flops, attempt=3) == 66
    with pytest.raises(ConfigError, match="attempt"):
        runtime_minutes(settings, flops=flops, attempt=0)


def test_cpus_per_gpu():
    assert cpus_per_gpu(8, 1) == 8
    assert cpus_per_gpu(8, 3) == 3
    assert cpus_per_gpu(1, 4) == 1


def test_shard_workers_one_per_full_shard_of_a_generated_dataset():
    from fomoflux.data.mini import mini_registry
    from fomoflux.data.registry import DatasetSpec

    mini = mini_registry()
    # pool: 40,000 train samples = 20 shards of 2,000; new_shapes: 750 + 300, less than one shard
    assert shard_workers(mini["pool"], threads=4, shard_size=2000, scale=1.0) == 4
    assert shard_workers(mini["pool"], threads=4, shard_size=2000, scale=0.1) == 2
    assert shard_workers(mini["pool"], threads=4, shard_size=20_000, scale=1.0) == 2
    assert shard_workers(mini["new_shapes"], threads=4, shard_size=2000, scale=1.0) == 1
    assert shard_workers(mini["new_shapes"], threads=4, shard_size=500, scale=1.0) == 2
    # a downloaded dataset's size is unknown to the plan: it gets every thread it may have
    download = DatasetSpec("real", "classification", "adaptation", ("a", "b"), "a photo of a {}.",
                           source={"download": {"url": "file:///x.tar"}})
    assert shard_workers(download, threads=3, shard_size=2000, scale=1.0) == 3


def test_manifest_rows_reads_footer_or_split_column(tmp_path):
    for name, splits in {"a": ["train"] * 5 + ["test"] * 2, "b": ["train"] * 3}.items():
        (tmp_path / name).mkdir()
        pl.DataFrame({"split": splits, "index": range(len(splits))}).write_parquet(tmp_path / name / "manifest.parquet")
    dirs = [tmp_path / "a", tmp_path / "b"]
    assert manifest_rows(dirs) == 10
    assert manifest_rows(dirs, split="train") == 8
    assert manifest_rows(dirs, split="test") == 2
    assert manifest_rows([]) == 0


# ---- SLURM logs --------------------------------------------------------------------------------------------

SNAKEMAKE_LOG = """\
Job 3 has been submitted with SLURM jobid 41 (log: {root}/.snakemake/slurm_logs/rule_train_task/finetune_002/41.log).
Job 7 has been submitted with SLURM jobid 42 (log: {root}/.snakemake/slurm_logs/rule_evaluate_base/fomo-micro/42.log).
Job 9 has been submitted with SLURM jobid 43 (log: {root}/.snakemake/slurm_logs/rule_build_catalog/43.log).
[Mon Nov 23 19:01:02 2026]
Error in rule train_task:
    message: SLURM-job '41' failed, SLURM status is: 'FAILED'. Reasons: exit code 0:9.For further error details see the cluster/cloud log and the log files of the involved rule(s).
Error in rule evaluate_base:
    message: SLURM-job '42' failed, SLURM status is: 'TIMEOUT'. Reasons: Unknown.
"""  # noqa: E501 (the executor's message, verbatim)

MEMORY_KILL = """\
Building DAG of jobs...
slurmstepd-vm: error: StepId=41.0 exceeded memory limit (293199872 > 104857600), being killed
slurmstepd-vm: error: Exceeded job memory limit
slurmstepd-vm: error: *** JOB 41 ON vm CANCELLED AT 2026-11-23T18:53:01 ***
slurmstepd-vm: error: Exceeded job memory limit
"""

TIME_LIMIT = (
    "srun: error: vm: task 0: Terminated\n"
    "slurmstepd-vm: error: *** JOB 42 ON vm CANCELLED AT 2026-11-23T19:02:00 DUE TO TIME LIMIT ***\n"
)


def test_submitted_jobs_map_slurm_ids_to_rules_and_wildcards(tmp_path):
    jobs = submitted_jobs(SNAKEMAKE_LOG.format(root=tmp_path))
    assert [(j.slurm_jobid, j.rule, j.wildcards) for j in jobs] == [
        (41, "train_task", "finetune_002"), (42, "evaluate_base", "fomo-micro"), (43, "build_catalog", "")]
    assert jobs[0].snakemake_jobid == 3
    assert jobs[0].log == tmp_path / ".snakemake/slurm_logs/rule_train_task/finetune_002/41.log"


def test_failure_report_gives_the_reason_slurm_wrote(tmp_path):
    text = SNAKEMAKE_LOG.format(root=tmp_path)
    for job, content in zip(submitted_jobs(text), (MEMORY_KILL, TIME_LIMIT)):
        job.log.parent.mkdir(parents=True)
        job.log.write_text(content)
    assert slurm_reason(submitted_jobs(text)[0].log) == [
        "slurmstepd-vm: error: StepId=41.0 exceeded memory limit (293199872 > 104857600), being killed",
        "slurmstepd-vm: error: Exceeded job memory limit",
        "slurmstepd-vm: error: *** JOB 41 ON vm CANCELLED AT 2026-11-23T18:53:01 ***",
    ]
    report = failure_report(text)
    assert len(report) == 2
    assert report[0].startswith("SLURM job 41 (train_task finetune_002) ended FAILED: ")
    assert "exceeded memory limit" in report[0]
    assert report[1].startswith("SLURM job 42 (evaluate_base fomo-micro) ended TIMEOUT: ")
    assert "DUE TO TIME LIMIT" in report[1]


def test_failure_report_without_a_log_file_says_so(tmp_path):
    report = failure_report(SNAKEMAKE_LOG.format(root=tmp_path))
    assert report[0] == "SLURM job 41 (train_task finetune_002) ended FAILED: no reason in its SLURM log"
    assert failure_report("nothing failed here") == []


def test_scheduled_jobs_reads_rule_wildcards_resources_and_benchmark():
    output = """\
Select jobs to execute...

[Mon Nov 23 19:10:51 2026]
rule train_task:
    input: results/runs/finetune/budget.json
    output: results/runs/finetune/task001/model.safetensors
    log: results/logs/train_task/finetune/task001.log
    jobid: 38
    benchmark: results/benchmarks/train_task/finetune/task001.tsv
    reason: Missing output files: results/runs/finetune/task001/model.safetensors
    wildcards: run=finetune, task=001
    resources: tmpdir=<TBD>, mem_mb=3151, mem=3.15 GB, slurm_partition=, runtime=20, gpu=1, cpus_per_gpu=1
Shell command: None

[Mon Nov 23 19:10:52 2026]
localrule results_db:
    input: results/runs/finetune/metrics.parquet
    jobid: 2
    resources: tmpdir=/tmp
"""
    jobs = scheduled_jobs(output)
    assert jobs[38]["rule"] == "train_task"
    assert jobs[38]["wildcards"] == {"run": "finetune", "task": "001"}
    assert jobs[38]["resources"]["mem_mb"] == "3151" and jobs[38]["resources"]["slurm_partition"] == ""
    assert jobs[38]["benchmark"] == "results/benchmarks/train_task/finetune/task001.tsv"
    assert jobs[38]["log"] == "results/logs/train_task/finetune/task001.log"
    assert jobs[2] == {"rule": "results_db", "wildcards": {}, "resources": {"tmpdir": "/tmp"}, "benchmark": None,
                       "log": None}
