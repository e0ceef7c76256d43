"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.stages.run_budget."""

from fomoflux.stages import run_budget
from fomoflux.workflow_entry import run_job

run_job(snakemake, run_budget)  # noqa: F821 (snakemake is injected by the script directive)
