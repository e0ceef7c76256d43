"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.stages.evaluate."""

from fomoflux.stages import evaluate
from fomoflux.workflow_entry import run_job

run_job(snakemake, evaluate)  # noqa: F821 (snakemake is injected by the script directive)
