"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.import_checkpoint."""

from fomoflux.pipeline.stages import import_checkpoint
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, import_checkpoint)  # noqa: F821 (snakemake is injected by the script directive)
