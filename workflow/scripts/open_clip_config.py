"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.open_clip_config."""

from fomoflux.pipeline.stages import open_clip_config
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, open_clip_config)  # noqa: F821 (snakemake is injected by the script directive)
