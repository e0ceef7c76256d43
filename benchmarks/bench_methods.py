"""Training step time of every weight-updating method, relative to full fine-tuning on the same model and batches.

    .venv/bin/python benchmarks/bench_methods.py [--arch fomo-tiny-vit] [--batch 128] [--threads 1] [--steps 5]
        [--warmup 2] [--rounds 5] [--methods finetune,lora,ewc] [--device cpu] [--quick]

The methods are whatever ``fomoflux.methods.available_methods()`` holds when this runs, less those with
``updates_weights = False``; ``--methods`` picks some (finetune, the reference, is always measured).

What is timed is one iteration of the real task loop (``run_task_update``): lr from the schedule, batch draw and
normalisation, forward, contrastive loss + ``method.penalty``, backward, clipping, AdamW step, ``method.after_step``
and the log row; read from the log's ``elapsed_s`` (consecutive differences). Not timed: ``begin_task`` /
``end_task`` (adapters, merges, EWC's Fisher pass), optimizer construction, tokenising the task's captions.

Protocol, as the pipeline runs a stream: every method gets its own copy of θ0 (random init of ``--arch``, seed 0) and
a TaskContext holding θ0 (for methods that reset or merge towards it). Set-up: task 0, ``--warmup`` steps, so that
EWC / SI have a finished task (Fisher or Ω, and an anchor) and their penalty is on when timing. Then rounds
r = 1..R: for each method in turn (A B C A B C ...) task r of warmup + K steps, of which the first ``--warmup`` step
times are dropped. Between tasks the method goes through ``state_dict()`` into a fresh instance, as between the
pipeline's jobs. Reported per method: the median and quartiles of its R·K step times, and median / finetune's median.
A method that fails is reported under the table (and the exit status is 1); the others are still measured.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import traceback
from dataclasses import dataclass, field

import torch
from _timing import image_size, interleaved_rounds, markdown_table, median, random_samples, setup_architecture

import fomoflux.methods
from fomoflux.methods import Method, TaskContext, get_method, method_class
from fomoflux.model import create_model
from fomoflux.train.loop import TaskUpdateConfig, run_task_update

REFERENCE = "finetune"


@dataclass
class MethodRun:
    """One method's stream: its model, its state between tasks, the tasks done and the step times measured."""

    name: str
    model: torch.nn.Module
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    next_task: int = 0
    step_times: list[float] = field(default_factory=list)
    penalized_steps: int = 0  # timed steps whose penalty term was non-zero (EWC / SI after task 0)
    error: str | None = None

    def fresh_method(self) -> Method:
        # a new instance restored from the last task's state: what the pipeline does between two task jobs
        method = get_method(self.name)
        method.load_state_dict(self.state)
        return method


def weight_updating_methods(selected: list[str] | None) -> list[str]:
    names = [n for n in fomoflux.methods.available_methods() if method_class(n).updates_weights]
    if selected:
        unknown = sorted(set(selected) - set(names))
        if unknown:
            sys.exit(f"not a registered weight-updating method: {', '.join(unknown)} (registered: {', '.join(names)})")
        names = [n for n in names if n in selected or n == REFERENCE]
    return [REFERENCE] + [n for n in names if n != REFERENCE]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="fomo-tiny-vit")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per task (K)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps of every task")
    parser.add_argument("--rounds", type=int, default=5, help="timed tasks per method, interleaved across methods")
    parser.add_argument("--methods", default="", help="comma-separated subset (default: every registered one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="smoke test: batch 16, 2 steps, 1 warm-up, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.steps, args.warmup, args.rounds = 16, 2, 1, 2
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1 or args.batch < 2:
        sys.exit("--steps and --rounds must be >= 1, --warmup >= 0, --batch >= 2")
    torch.set_num_threads(args.threads)

    names = weight_updating_methods([n for n in args.methods.split(",") if n])
    setup_architecture(args.arch)
    base_model, tokenizer = create_model(args.arch, device=args.device, seed=0)
    theta0 = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
    size = image_size(base_model)
    sources = {
        "pretrain": random_samples(8 * args.batch, size, "pool", 1),
        "update": random_samples(4 * args.batch, size, "update", 2),
        "buffer": random_samples(4 * args.batch, size, "buffer", 3),
    }
    runs = {name: MethodRun(name, copy.deepcopy(base_model)) for name in names}

    def run_task(run: MethodRun, steps: int) -> None:
        """One task of ``steps`` steps for ``run``; keeps the step times after the first ``--warmup``."""
        task = run.next_task
        method = run.fresh_method()
        if task == 0:
            method.check_model(run.model)
        cfg = TaskUpdateConfig(steps=steps, batch_size=args.batch, lr=1e-4, task_index=task, seed=0,
                               device=args.device, progress=False)
        context = TaskContext(task_index=task, base_state=theta0, device=args.device, seed=0)
        log = run_task_update(run.model, tokenizer, method, sources, cfg, context)
        run.state = {k: v.detach().clone() for k, v in method.state_dict().items()}
        run.next_task += 1
        ends = log["elapsed_s"].to_list()
        run.step_times.extend([b - a for a, b in zip([0.0] + ends[:-1], ends)][args.warmup :])
        run.penalized_steps += int((log["penalty"][args.warmup :] != 0).sum())

    def guarded(run: MethodRun, steps: int) -> None:
        if run.error is not None:
            return
        try:
            run_task(run, steps)
        except Exception as exc:  # a method under construction must not stop the others being measured
            run.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)

    for run in runs.values():  # task 0: gives EWC / SI a finished task, so their penalty is on from task 1
        guarded(run, max(args.warmup, 1))
        run.step_times.clear()
        run.penalized_steps = 0
    interleaved_rounds({name: (lambda run=run: guarded(run, args.warmup + args.steps)) for name, run in runs.items()},
                       rounds=args.rounds, warmup=0)

    reference = runs[REFERENCE]
    if reference.error is not None or not reference.step_times:
        sys.exit(f"the reference {REFERENCE!r} could not be measured: {reference.error}")
    ref_median = median(reference.step_times)
    rows = []
    for run in runs.values():
        if run.error is not None:
            continue
        q1, _, q3 = statistics.quantiles(run.step_times, n=4) if len(run.step_times) > 1 else [run.step_times[0]] * 3
        rows.append((run.name, f"{1e3 * median(run.step_times):,.1f}", f"{1e3 * q1:,.1f} – {1e3 * q3:,.1f}",
                     len(run.step_times), run.penalized_steps, f"{median(run.step_times) / ref_median:.3f}"))
    print(f"arch={args.arch} device={args.device} batch={args.batch} threads={args.threads} steps={args.steps} "
          f"warmup={args.warmup} rounds={args.rounds}")
    header = ["method", "median step (ms)", "quartiles (ms)", "steps timed", "with penalty", f"ratio to {REFERENCE}"]
    print(markdown_table(header, rows))
    failed = [run for run in runs.values() if run.error is not None]
    for run in failed:
        print(f"- {run.name}: not measured ({run.error})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
