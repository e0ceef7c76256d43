"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.score_tables."""

from fomoflux.pipeline.stages import score_tables
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, score_tables)  # noqa: F821 (snakemake is injected by the script directive)
