"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.plot_budgets."""

from fomoflux.pipeline.stages import plot_budgets
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, plot_budgets)  # noqa: F821 (snakemake is injected by the script directive)
