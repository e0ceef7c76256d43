"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.class_accuracy."""

from fomoflux.pipeline.stages import class_accuracy
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, class_accuracy)  # noqa: F821 (snakemake is injected by the script directive)
