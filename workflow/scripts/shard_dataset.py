"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.shard_dataset."""

from fomoflux.pipeline.stages import shard_dataset
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, shard_dataset)  # noqa: F821 (snakemake is injected by the script directive)
