"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.build_stream."""

from fomoflux.pipeline.stages import build_stream
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, build_stream)  # noqa: F821 (snakemake is injected by the script directive)
