"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.download_archive."""

from fomoflux.pipeline.stages import download_archive
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, download_archive)  # noqa: F821 (snakemake is injected by the script directive)
