"""What a Snakemake run through the SLURM executor left in its log: which job ran as which SLURM job, and why the
failed ones failed.

The executor reports a failed job as "SLURM status is: 'FAILED'" and names the job's SLURM log, but the reason
(memory limit, time limit, cancellation, preemption, node failure) is only in that file, written by slurmstepd.
:func:`failure_report` collects those lines so that the end of the Snakemake log says why (the workflow's
``onerror`` handler prints it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SubmittedJob", "submitted_jobs", "scheduled_jobs", "slurm_reason", "failure_report"]

_SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$", re.M)
_FAILED = re.compile(r"SLURM-job '(\d+)' failed, SLURM status is: '([A-Z_+]+)'")
# slurmstepd's own lines, and the controller's "*** JOB n ON node CANCELLED AT t DUE TO TIME LIMIT ***" banners
_REASON = re.compile(r"(slurmstepd\S*: error: .*|\*\*\* (?:JOB|STEP) .* \*\*\*)")


@dataclass(frozen=True)
class SubmittedJob:
    snakemake_jobid: int
    slurm_jobid: int
    rule: str
    wildcards: str
    log: Path


def submitted_jobs(log_text: str) -> list[SubmittedJob]:
    """Every submission in a Snakemake log, in order (a retried job appears once per attempt). The rule and the
    wildcards come from the SLURM log path, ``.../slurm_logs/rule_<rule>/<wildcards>/<slurm id>.log``."""
    jobs = []
    for match in _SUBMITTED.finditer(log_text):
        path = Path(match.group(3))
        rule_dir = next((p for p in path.parents if p.name.startswith("rule_")), None)
        rule = rule_dir.name[len("rule_"):] if rule_dir else ""
        wildcards = str(path.parent.relative_to(rule_dir)) if rule_dir and path.parent != rule_dir else ""
        jobs.append(SubmittedJob(int(match.group(1)), int(match.group(2)), rule, wildcards, path))
    return jobs


def scheduled_jobs(output: str) -> dict[int, dict]:
    """Snakemake's job blocks in a run's output, by Snakemake job id: ``rule``, ``wildcards``, ``resources`` (as
    printed, strings), ``benchmark`` and ``log`` (the rule's benchmark and first log file, or None)."""
    jobs = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule \w+:)", output):
        head = re.search(r"^(?:local)?rule (\w+):$", block, re.M)
        jobid = re.search(r"^\s+jobid: (\d+)$", block, re.M)
        if not head or not jobid:
            continue
        fields = {key: re.search(rf"^\s+{key}: (.*)$", block, re.M)
                  for key in ("wildcards", "resources", "benchmark", "log")}

        def pairs(match):
            return dict(kv.split("=", 1) for kv in match.group(1).split(", ")) if match else {}

        jobs[int(jobid.group(1))] = {
            "rule": head.group(1),
            "wildcards": pairs(fields["wildcards"]),
            "resources": pairs(fields["resources"]),
            "benchmark": fields["benchmark"].group(1) if fields["benchmark"] else None,
            "log": fields["log"].group(1).split(", ")[0] if fields["log"] else None,
        }
    return jobs


def slurm_reason(slurm_log: str | Path) -> list[str]:
    """slurmstepd's error lines and SLURM's job banners in a job's SLURM log (deduplicated, in order); [] when the
    file is gone or says nothing."""
    try:
        text = Path(slurm_log).read_text(errors="replace")
    except OSError:
        return []
    seen: dict[str, None] = {}
    for match in _REASON.finditer(text):
        seen.setdefault(match.group(1).strip(), None)
    return list(seen)


def failure_report(log_text: str) -> list[str]:
    """One line per failed SLURM job of a Snakemake log: the job's rule, wildcards, SLURM state and the reason
    SLURM wrote into its log (e.g. ``exceeded memory limit``, ``DUE TO TIME LIMIT``, ``DUE TO PREEMPTION``)."""
    by_id = {job.slurm_jobid: job for job in submitted_jobs(log_text)}
    lines = []
    for match in _FAILED.finditer(log_text):
        slurm_id, state = int(match.group(1)), match.group(2)
        job = by_id.get(slurm_id)
        where = f"{job.rule} {job.wildcards}".strip() if job else "unknown rule"
        reasons = slurm_reason(job.log) if job else []
        detail = "; ".join(reasons) if reasons else "no reason in its SLURM log"
        lines.append(f"SLURM job {slurm_id} ({where}) ended {state}: {detail}")
    return list(dict.fromkeys(lines))
