"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.stages.train_task."""

from fomoflux.stages import train_task
from fomoflux.workflow_entry import run_job

run_job(snakemake, train_task)  # noqa: F821 (snakemake is injected by the script directive)
