"""Repository conventions: the conda environment carries requirements.txt's pins without relative paths, the
license, what the Snakemake workflow catalog reads (its settings file, config/README.md), and a clean lint (ruff
over the Python, snakefmt over the Snakefile and rules, both configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# The lint tools pinned in requirements.txt, from the environment running the tests (not resolved: .venv/bin/python
# is a link to the system's interpreter, whose folder has no ruff).
VENV_BIN = Path(sys.executable).parent


def pins(lines) -> list[str]:
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_environment_yml_has_the_requirements_pins_and_no_relative_paths():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict) and "pip" in dep)
    # Snakemake creates a rule's conda environment from a copy of the file under .snakemake/conda/, where a
    # `-r requirements.txt` or `-e .` line would point at the wrong folder.
    assert [line for line in pip if line.startswith("-")] == []
    assert pip == pins((ROOT / "requirements.txt").read_text().splitlines())


def test_license_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 fomoflux developers\n")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text


def test_workflow_catalog_settings_and_config_readme():
    settings = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(settings) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert set(settings["mandatory-flags"]) == {"desc", "flags"}
    assert all(isinstance(v, bool) for v in settings["software-stack-deployment"].values())
    readme = (ROOT / "config" / "README.md").read_text()
    for path in sorted((ROOT / "config").glob("*.yaml")):
        assert f"`{path.name}`" in readme, f"config/README.md does not describe {path.name}"


def lint(tool: str, *args: str) -> subprocess.CompletedProcess:
    executable = VENV_BIN / tool
    assert executable.is_file(), f"{executable} is missing: install requirements.txt (scripts/setup.sh)"
    return subprocess.run([str(executable), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    # --no-cache: no .ruff_cache left in the checkout by the test run.
    proc = lint("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert proc.returncode == 0, f"ruff check (fix with: .venv/bin/ruff check --fix .):\n{proc.stdout}{proc.stderr}"


def test_snakefmt_would_change_nothing():
    proc = lint("snakefmt", "--check", "--compact-diff", "Snakefile", "workflow/rules")
    assert proc.returncode == 0, (
        f"snakefmt --check (fix with: .venv/bin/snakefmt Snakefile workflow/rules):\n{proc.stdout}{proc.stderr}"
    )
