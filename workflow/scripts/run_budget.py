"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.run_budget."""

from fomoflux.pipeline.stages import run_budget
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, run_budget)  # noqa: F821 (snakemake is injected by the script directive)
