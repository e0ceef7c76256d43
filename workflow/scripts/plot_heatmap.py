"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.plot_heatmap."""

from fomoflux.pipeline.stages import plot_heatmap
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, plot_heatmap)  # noqa: F821 (snakemake is injected by the script directive)
