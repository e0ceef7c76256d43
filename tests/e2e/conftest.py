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
WORKFLOW_FILES = ["Snakefile", "workflow", "config", "profiles", "environment.yml", "requirements.txt"]


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
            raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
        return proc

    def start_snakemake(self, *args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "snakemake", *args, "--cores", "2", "--configfile", str(self.config_path)]
        return subprocess.Popen(cmd, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

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

    def copy(self, dest: Path) -> "Project":
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
