"""The compute-budget table of BENCHMARK.md, profiled: steps per task of every method under full fine-tuning's budget.

Counts FLOPs of one training step with torch's FLOP counter and the counted peak memory (fomoflux.budget) on a
shapes-only ("meta") model, so the paper-scale table needs no GPU and no weights; prints it as markdown next to the
paper's figures (ViT-B/16, B = 512, S_FT = 1,420 steps for T = 20).

    .venv/bin/python benchmarks/budget_table.py            # ViT-B/16, B = 512 (about a minute on 2 CPU cores)
    .venv/bin/python benchmarks/budget_table.py --arch fomo-tiny-vit --batch 128 --steps 40
"""

from __future__ import annotations

import argparse
import time

import torch

# The paper's steps per task (BENCHMARK.md, "Compute budget"), by (method, options).
PAPER = {
    "finetune": 1420, "locked_text": 1949, "locked_image": 12982, "lnfit": 3179, "bitfit": 3179,
    "lora r4": 1898, "lora r64": 1891, "dora r4": 1893, "dora r64": 1886, "vera r4": 1898, "vera r64": 1896,
    "ewc": 14, "si": 1418, "ema_merge": 1420, "zs_merge": 1420, "ft_merge": 1420, "offline_merge": 1420,
}

METHODS = [
    ("finetune", {}), ("locked_text", {}), ("locked_image", {}), ("lnfit", {}), ("bitfit", {}),
    ("lora", {"rank": 4}), ("lora", {"rank": 64}), ("dora", {"rank": 4}), ("dora", {"rank": 64}),
    ("vera", {"rank": 4}), ("vera", {"rank": 64}), ("ewc", {}), ("si", {}), ("ema_merge", {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1420, help="full fine-tuning's steps per task")
    parser.add_argument("--fisher-samples", type=int, default=None, help="EWC's Fisher pass size (default: its cap)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from fomoflux.budget import budget_steps, profile_step
    from fomoflux.methods import available_methods
    from fomoflux.model import CONFIG_DIR, register_architecture

    if (CONFIG_DIR / f"{args.arch}.json").is_file():
        register_architecture(CONFIG_DIR / f"{args.arch}.json")
    started = time.perf_counter()
    reference = profile_step(args.arch, "finetune", batch_size=args.batch)
    print(f"{args.arch}, batch {args.batch}: full fine-tuning {reference.gflops_per_sample:.2f} GFLOPs per sample "
          f"(forward + backward), {reference.flops_per_step / 1e9:,.1f} GFLOPs per step, counted peak memory "
          f"{reference.peak_memory_bytes / 2**30:.2f} GiB\n")
    print("| method | GFLOPs/step | FLOPs ratio | memory ratio | trainable params | steps (ours) | steps (paper) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, options in METHODS:
        if name not in available_methods():
            continue
        label = f"{name} r{options['rank']}" if "rank" in options else name
        prof = profile_step(args.arch, name, options, batch_size=args.batch, extra_pass_samples=args.fisher_samples)
        out = budget_steps(args.steps, reference, prof)
        paper = PAPER.get(label)
        print(f"| {label} | {prof.flops_per_step / 1e9:,.1f} | {out['flops_ratio']:.3f} | {out['memory_ratio']:.3f} | "
              f"{prof.trainable_params:,} | {out['steps']:,} | {paper if paper is not None else '—'} |")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
