"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.train_task."""

from fomoflux.pipeline.stages import train_task
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, train_task)  # noqa: F821 (snakemake is injected by the script directive)
