"""How long Snakemake takes to build the DAG of a sweep: a grid of 100 runs over a stream of 20 tasks, dry run.

Writes a config (the default one plus `grids:` with 5 methods x 5 learning rates x 4 seeds = 100 runs, and a stream
cut into `tasks: 20`) into a scratch copy of the workflow, then times `snakemake --dry-run` (parse, plan, DAG of
~6,000 jobs: 2,000 task updates, 2,000 evaluations, merges, budgets, figures). Nothing is trained.

    .venv/bin/python benchmarks/bench_dag.py [--runs-per-method 20] [--tasks 20]
    .venv/bin/python benchmarks/bench_dag.py --config config/fomo_in_flux.yaml   # the paper preset's dry run
    .venv/bin/python benchmarks/bench_dag.py --config config/fomo_in_flux.yaml --profile slurm [--print-jobs]

`--profile slurm` dry-runs as `snakemake --cores 8 --profile slurm` does (the SLURM executor, the profile's
default resources; a dry run submits nothing and needs no cluster). `--print-jobs` prints every job block with its
resources, as a plain `--dry-run` does, instead of `--quiet rules`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = REPO / ".venv" / "bin" / "snakemake"


def sweep_config(tasks: int, lrs: int, seeds: int) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["streams"]["random"].pop("classes_per_task", None)
    config["streams"]["random"]["tasks"] = tasks
    config["runs"] = {}
    config["grids"] = {
        "sweep": {
            "method": ["finetune", "lora", "ewc", "ema_merge", "offline_merge"],
            "training": {"lr": [round(1e-4 * (i + 1), 6) for i in range(lrs)]},
            "seed": list(range(seeds)),
        }
    }
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--lrs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", type=Path, help="dry-run this config instead of the sweep")
    parser.add_argument("--profile", help="a profile at the repository root, e.g. slurm")
    parser.add_argument("--print-jobs", action="store_true", help="print every job (no --quiet rules)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("Snakefile", "workflow", "config", "profiles", "slurm", "environment.yml", "requirements.txt"):
            source = REPO / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / name)
        if args.config:
            shutil.copy2(args.config, root / "sweep.yaml")
        else:
            (root / "sweep.yaml").write_text(yaml.safe_dump(sweep_config(args.tasks, args.lrs, args.seeds)))
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            cmd = [str(SNAKEMAKE), "--dry-run", "--configfile", "sweep.yaml"]
            cmd += [] if args.print_jobs else ["--quiet", "rules"]
            cmd += ["--cores", "8", "--profile", args.profile] if args.profile else []
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
            times.append(time.perf_counter() - started)
            if proc.returncode != 0:
                raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
        counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    runs = 5 * args.lrs * args.seeds
    what = f"config {args.config}" if args.config else f"grid of {runs} runs x {args.tasks} tasks"
    what += f", profile {args.profile}" if args.profile else ""
    print(f"{what}: {counts.get('total')} jobs "
          f"(train_task {counts.get('train_task')}, evaluate_task {counts.get('evaluate_task')}, "
          f"merge_task {counts.get('merge_task')})")
    print(f"dry run wall: median {sorted(times)[len(times) // 2]:.1f} s over {args.repeats} "
          f"(all: {', '.join(f'{t:.1f}' for t in times)})")


if __name__ == "__main__":
    main()
