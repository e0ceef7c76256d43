"""End-to-end fixtures: real Snakemake runs of the test-size config in a copy of the workflow.

One finished run of config/test.yaml is made once per session; tests that change something work on their own
copy of it (``cp -a`` keeps mtimes and Snakemake's metadata, so the copy is as up to date as the original).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = ["Snakefile", "workflow", "config", "profiles", "slurm", "environment.yml", "requirements.txt"]


class Project:
    """A working copy of the workflow with its own config and results."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def config_path(self) -> Path:
        return self.root / "config" / "experiment.yaml"

    def read_config(self) -> dict:
        return yaml.safe_load(self.config_path.read_text())

    def write_config(self, cfg: dict) -> None:
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def edit_config(self, edit) -> dict:
        cfg = self.read_config()
        edit(cfg)
        self.write_config(cfg)
        return cfg

    def snakemake(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        # Targets and flags first: --configfile takes every following word as a config file.
        cmd = [sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile", str(self.config_path)]
        proc = subprocess.run(cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
            )
        return proc

    def slurm_command(self, *args: str) -> list[str]:
        """The README's cluster command, `snakemake --cores 8 --profile slurm`, against the test cluster. The executor
        checks job states 2 s after a job finishes instead of the profile's 20 s, so chained test jobs do not wait."""
        return [sys.executable, "-m", "snakemake", *args, "--cores", "8", "--profile", "slurm",
                "--slurm-init-seconds-before-status-checks", "2", "--configfile", str(self.config_path)]

    def snakemake_slurm(self, *args: str, check: bool = True, timeout: float = 1500) -> subprocess.CompletedProcess:
        """Run :meth:`slurm_command` to its end (SIGINT on timeout: a waiting Snakemake ignores SIGTERM)."""
        try:
            proc = subprocess.run(self.slurm_command(*args), cwd=self.root, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"snakemake {' '.join(args)} through SLURM hung:\n{err.stderr}") from None
        if check and proc.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(args)} through SLURM failed ({proc.returncode}):\n"
                                 f"{proc.stdout[-4000:]}\n{proc.stderr[-12000:]}")
        return proc

    def start_snakemake_slurm(self, *args: str, log: Path) -> subprocess.Popen:
        with open(log, "w") as handle:
            return subprocess.Popen(self.slurm_command(*args), cwd=self.root, stdout=handle, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def start_snakemake(self, *args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile", str(self.config_path)]
        return subprocess.Popen(
            cmd, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def planned_jobs(self, *args: str) -> list[tuple[str, dict]]:
        """The jobs a dry run would execute: (rule, wildcards) pairs."""
        # Strict: an input function that raises must fail the test, not silently drop its job from the plan.
        out = self.snakemake("--dry-run", "--strict-dag-evaluation", "functions", *args).stdout
        jobs = []
        for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
            head = re.match(r"(?:local)?rule (\w+):", block.strip())
            if not head:
                continue
            wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
            jobs.append((head.group(1), wildcards))
        return [j for j in jobs if j[0] != "all"]

    def path(self, *parts: str) -> Path:
        return self.root.joinpath("results", *parts)

    def copy(self, dest: Path) -> Project:
        subprocess.run(["cp", "-a", str(self.root), str(dest)], check=True)
        return Project(dest)


def make_project(root: Path, config: Path = REPO / "config" / "test.yaml") -> Project:
    root.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, root / name)
    shutil.copy2(config, root / "config" / "experiment.yaml")
    return Project(root)


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Project:
    """The test-size experiment, run once to completion."""
    project = make_project(tmp_path_factory.mktemp("finished") / "project")
    started = time.monotonic()
    project.snakemake()
    project.wall_seconds = time.monotonic() - started
    return project


@pytest.fixture
def fresh_copy(finished, tmp_path) -> Project:
    return finished.copy(tmp_path / "project")


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# ---- a real SLURM cluster (scripts/slurm-test-cluster.sh) -----------------------------------------------------

SLURM_SCRIPT = REPO / "scripts" / "slurm-test-cluster.sh"
GPU_RULES = ("pretrain_base", "train_task", "evaluate_base", "evaluate_base_full", "evaluate_task",
             "evaluate_task_full", "class_accuracy")


class SlurmCluster:
    """A running one-node test cluster; `accounting` says whether sacct has a database behind it."""

    def __init__(self, directory: Path, accounting: bool) -> None:
        self.directory, self.accounting = directory, accounting

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, check=check)

    def sacct(self, job_ids) -> dict[int, dict[str, str]]:
        """Allocation records (one per job, no steps) of `job_ids` from the accounting database."""
        fields = "JobID,State,ReqTRES,AllocTRES,Timelimit,Comment"
        out = self.run("sacct", "-X", "-n", "-P", "-o", fields, "-j", ",".join(map(str, job_ids))).stdout
        records = {}
        for line in out.splitlines():
            values = dict(zip(fields.split(","), line.split("|")))
            records[int(values["JobID"])] = values
        return records

    def jobcomp(self) -> dict[int, dict[str, str]]:
        """The controller's job completion records (jobcomp/filetxt): what a cluster without accounting keeps."""
        records = {}
        path = self.directory / "jobcomp.txt"
        for line in path.read_text().splitlines() if path.exists() else []:
            values = dict(re.findall(r"(\w+)=(\S*)", line))
            records[int(values["JobId"])] = values
        return records


def slurm_cluster(directory: Path, accounting: bool):
    """Start the test cluster (skip when SLURM is not installed, fail instead under FOMOFLUX_REQUIRE_SLURM=1, as in
    CI); a generator for fixtures: yields the cluster, stops it by its PIDs afterwards, whatever happened."""
    if not shutil.which("slurmctld") or (accounting and not shutil.which("slurmdbd")):
        message = f"SLURM is not installed: {SLURM_SCRIPT.relative_to(REPO)} install --accounting"
        if os.environ.get("FOMOFLUX_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    if os.environ.get("FOMOFLUX_SLURM_BASE"):  # .ci/run stops every cluster under it, even after a crash
        directory = Path(os.environ["FOMOFLUX_SLURM_BASE"]) / directory.name
    env = {**os.environ, "FOMOFLUX_SLURM_DIR": str(directory)}
    saved = os.environ.get("SLURM_CONF")
    try:
        proc = subprocess.run([str(SLURM_SCRIPT), "start", *(["--accounting"] if accounting else [])], env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"the test cluster did not start:\n{proc.stdout}\n{proc.stderr}"
        os.environ["SLURM_CONF"] = str(directory / "slurm.conf")
        yield SlurmCluster(directory, accounting)
    finally:
        subprocess.run([str(SLURM_SCRIPT), "stop"], env=env, capture_output=True)
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


def tres_memory_mb(value: str) -> int:
    """A TRES memory value (``3151M``, ``4G``, ``1.50T``) in MB, as Snakemake's mem_mb counts them (MiB)."""
    scale = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}
    return round(float(value[:-1]) * scale[value[-1]])
