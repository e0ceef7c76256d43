"""A cluster without accounting (no slurmdbd: `sacct` cannot answer): the profile follows jobs with squeue, so it
runs unchanged; the controller's job completion log is the record of what ran.

The same run asks for two GPUs for one run's training: sbatch gets `--gpus=2` and the task update runs data
parallel in two worker processes (gloo on the CPU here, NCCL on GPUs).
"""

from __future__ import annotations

import socket

import pytest
import torch
from conftest import slurm_cluster, tres_memory_mb
from safetensors.torch import load_file

from fomoflux.pipeline.slurm import scheduled_jobs, submitted_jobs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from slurm_cluster(tmp_path_factory.mktemp("slurm-squeue"), accounting=False)


def test_without_accounting_jobs_are_followed_with_squeue_and_two_gpu_training_is_data_parallel(
    finished, cluster, tmp_path
):
    refused = cluster.run("sacct", "-n", check=False)
    assert refused.returncode != 0 and "accounting storage is disabled" in refused.stderr, refused

    project = finished.copy(tmp_path / "project")
    project.edit_config(lambda c: c["runs"]["finetune"].setdefault("training", {}).update(gpus=2))
    proc = project.snakemake_slurm()
    output = proc.stdout + proc.stderr
    jobs = scheduled_jobs(output)
    submissions = submitted_jobs(output)
    records = cluster.jobcomp()

    trained = [s for s in submissions if s.rule == "train_task"]
    assert sorted(s.wildcards for s in trained) == ["finetune_001", "finetune_002"], trained
    for submission in submissions:
        record = records[submission.slurm_jobid]
        assert record["JobState"] == "COMPLETED", record
        tres = dict(item.split("=", 1) for item in record["Tres"].split(","))
        asked = jobs[submission.snakemake_jobid]["resources"]
        assert tres_memory_mb(tres["mem"]) == int(asked["mem_mb"]), (record, asked)
        assert record["TimeLimit"] == asked["runtime"], (record, asked)  # minutes
        if submission.rule == "train_task":
            assert asked["gpu"] == "2", asked
            assert record["ProcCnt"] == "2", record  # allocated CPUs: cpus_per_gpu 1 x 2 GPUs

    # Without accounting, job records carry no GPU counts (slurmctld refuses gres TRES without slurmdbd): the
    # allocation's own SLURM_GPUS_ON_NODE, which the job logs, shows that --gpus=2 reached sbatch.
    log = project.path("logs", "train_task", "finetune", "task002.log").read_text()
    host = socket.gethostname().split(".")[0]
    assert f"SLURM job {trained[1].slurm_jobid} on {host}: 2 CPUs, 2 GPUs" in log, log[-3000:]
    assert "data-parallel task update: 2 workers" in log, log[-3000:]
    # Data parallel on two workers computes the one-process update up to float rounding.
    checkpoint = ("runs", "finetune", "task002", "model.safetensors")
    two, one = load_file(project.path(*checkpoint)), load_file(finished.path(*checkpoint))
    assert two.keys() == one.keys()
    for name in one:
        ours, reference = two[name], one[name]
        if name.endswith("in_proj_bias"):
            # The key bias has a zero gradient in exact arithmetic (softmax is shift invariant), so its float
            # gradient is rounding noise that AdamW (eps 1e-8) turns into lr-sized steps of either sign; summing it
            # over two ranks rounds differently from one process. Query and value biases are compared.
            width = reference.shape[0] // 3
            ours, reference = torch.cat([ours[:width], ours[2 * width :]]), torch.cat(
                [reference[:width], reference[2 * width :]]
            )
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4, msg=name)
    assert project.path(*checkpoint).read_bytes() != finished.path(*checkpoint).read_bytes()  # really retrained
