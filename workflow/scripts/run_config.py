"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.run_config."""

from fomoflux.pipeline.stages import run_config
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, run_config)  # noqa: F821 (snakemake is injected by the script directive)
