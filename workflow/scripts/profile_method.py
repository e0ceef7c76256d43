"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.profile_method."""

from fomoflux.pipeline.stages import profile_method
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, profile_method)  # noqa: F821 (snakemake is injected by the script directive)
