"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.merge_task."""

from fomoflux.pipeline.stages import merge_task
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, merge_task)  # noqa: F821 (snakemake is injected by the script directive)
