"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.stages.build_catalog."""

from fomoflux.stages import build_catalog
from fomoflux.workflow_entry import run_job

run_job(snakemake, build_catalog)  # noqa: F821 (snakemake is injected by the script directive)
