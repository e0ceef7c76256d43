"""Training-loop throughput vs a bare forward + backward + step of the same model on the same batches.

    .venv/bin/python benchmarks/bench_train_loop.py [--arch fomo-tiny-vit] [--steps 30] [--batch-size 128]

Both run in this process, interleaved, from the same initial weights. The bare loop gets its batches already
drawn, normalised and tokenised (what the loop does per step is the overhead being measured: mixture sampling,
caption choice, normalisation, LR schedule, grad clipping, logging). Prints samples/s of both and the ratio
(target >= 0.95).
"""

from __future__ import annotations

import argparse
import copy
import time

import open_clip
import torch
from _timing import image_size, interleaved_rounds, median, random_samples, setup_architecture, synchronize

from fomoflux.methods import get_method
from fomoflux.model import create_model
from fomoflux.preprocess import Normalizer
from fomoflux.train.loop import TaskBatches, TaskUpdateConfig, run_task_update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="fomo-tiny-vit")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast in the bare loop too (GPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    setup_architecture(args.arch)
    torch.manual_seed(0)
    model, tokenizer = create_model(args.arch, None, device=args.device)
    size = image_size(model)
    initial = copy.deepcopy(model.state_dict())
    sources = {
        "pretrain": random_samples(4000, size, "pool", 1),
        "update": random_samples(1000, size, "update", 2),
        "buffer": random_samples(2000, size, "buffer", 3),
    }
    cfg = TaskUpdateConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-4, task_index=1, seed=0,
                           device=args.device, progress=False)
    batches = TaskBatches(sources, tokenizer, cfg.batch_size, cfg.mixture, cfg.task_index, cfg.seed)
    normalizer = Normalizer.for_model(model, args.device)
    drawn = [batches.draw(n) for n in range(args.steps)]
    ready = [(normalizer(images), tokens.to(args.device)) for images, tokens in drawn]
    loss_fn = open_clip.ClipLoss()

    def bare() -> float:
        model.load_state_dict(initial)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.2)
        start = time.perf_counter()
        for images, tokens in ready:
            out = model(images, tokens)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        synchronize(args.device)
        return args.steps * args.batch_size / (time.perf_counter() - start)

    def loop() -> float:
        model.load_state_dict(initial)
        start = time.perf_counter()  # includes the loop's set-up: tokenising the task's captions, the optimizer
        run_task_update(model, tokenizer, get_method("finetune"), sources, cfg)
        synchronize(args.device)
        return args.steps * args.batch_size / (time.perf_counter() - start)

    rates = interleaved_rounds({"bare": bare, "loop": loop}, rounds=args.repeats, warmup=1)
    b, lo = median(rates["bare"]), median(rates["loop"])
    print(f"arch={args.arch} device={args.device} steps={args.steps} batch={args.batch_size} threads={args.threads}")
    print(f"bare step: {b:,.0f} samples/s   fomoflux loop: {lo:,.0f} samples/s   ratio: {lo / b:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
