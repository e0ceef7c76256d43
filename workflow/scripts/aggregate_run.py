"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.aggregate_run."""

from fomoflux.pipeline.stages import aggregate_run
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, aggregate_run)  # noqa: F821 (snakemake is injected by the script directive)
