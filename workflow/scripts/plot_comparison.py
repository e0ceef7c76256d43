"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.plot_comparison."""

from fomoflux.pipeline.stages import plot_comparison
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, plot_comparison)  # noqa: F821 (snakemake is injected by the script directive)
