"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.results_db."""

from fomoflux.pipeline.stages import results_db
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, results_db)  # noqa: F821 (snakemake is injected by the script directive)
