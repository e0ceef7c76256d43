"""What every ``workflow/scripts/*.py`` entry point shares: log redirection, threads, the plan."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def job_log(snakemake: Any) -> Iterator[logging.Logger]:
    """Send stdout, stderr (tqdm progress bars) and logging of the job to its ``log:`` file."""
    path = Path(snakemake.log[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as handle, contextlib.redirect_stderr(handle), contextlib.redirect_stdout(handle):
        logging.basicConfig(
            stream=handle, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
        )
        logger = logging.getLogger(f"fomoflux.{snakemake.rule}")
        try:
            yield logger
        except Exception:
            logger.exception("job failed")
            raise


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(threads)))


def run_job(snakemake: Any, stage: Callable[..., None]) -> None:
    """Run ``stage(snakemake, plan, logger)`` with the job's log and thread count applied."""
    from fomoflux.pipeline.plan import build_plan

    with job_log(snakemake) as logger:
        set_threads(snakemake.threads)
        if os.environ.get("SLURM_JOB_ID"):
            # Which scheduler job made this artifact, and what it was given (sacct -j <id> has the rest).
            env = os.environ
            logger.info("SLURM job %s on %s: %s CPUs, %s GPUs (CUDA_VISIBLE_DEVICES=%s)", env["SLURM_JOB_ID"],
                        env.get("SLURMD_NODENAME", "?"), env.get("SLURM_CPUS_ON_NODE", "?"),
                        env.get("SLURM_GPUS_ON_NODE", "0"), env.get("CUDA_VISIBLE_DEVICES", "unset"))
        plan = build_plan(snakemake.config, check_against_model=False)
        stage(snakemake, plan, logger)
        sys.stdout.flush()
