"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.stages.open_clip_config."""

from fomoflux.stages import open_clip_config
from fomoflux.workflow_entry import run_job

run_job(snakemake, open_clip_config)  # noqa: F821 (snakemake is injected by the script directive)
