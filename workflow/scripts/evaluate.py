"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.evaluate."""

from fomoflux.pipeline.stages import evaluate
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, evaluate)  # noqa: F821 (snakemake is injected by the script directive)
