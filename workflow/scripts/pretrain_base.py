"""Snakemake entry point of rule(s) using this script; the logic is fomoflux.pipeline.stages.pretrain_base."""

from fomoflux.pipeline.stages import pretrain_base
from fomoflux.pipeline.workflow_entry import run_job

run_job(snakemake, pretrain_base)  # noqa: F821 (snakemake is injected by the script directive)
