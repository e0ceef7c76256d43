"""Evaluation image throughput vs bare ``encode_image`` on the same tensors, side by side in one process.

    .venv/bin/python benchmarks/bench_eval.py [--arch fomo-tiny-vit] [--n 4096] [--batch-size 512] [--repeats 5]

Prints both throughputs and their ratio (target >= 0.9). The bare loop gets images already normalised and
skips the class-text pass; the evaluation does everything it does in the pipeline.
"""

from __future__ import annotations

import argparse
import time

import torch
from _timing import image_size, interleaved_rounds, median, setup_architecture, synchronize

from fomoflux.data.registry import DatasetSpec
from fomoflux.data.sampleset import SampleSet
from fomoflux.evaluate import evaluate_classification
from fomoflux.model import create_model
from fomoflux.preprocess import Normalizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="fomo-tiny-vit")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    setup_architecture(args.arch)
    torch.manual_seed(0)
    model, tokenizer = create_model(args.arch, None, device=args.device)
    model.eval()
    size = image_size(model)
    classes = tuple(f"class {i}" for i in range(10))
    spec = DatasetSpec("bench", "classification", "evaluation", classes, source={"generate": {}})
    images = torch.randint(0, 256, (args.n, 3, size, size), dtype=torch.uint8)
    samples = SampleSet(images, [(f"a photo of a class {i % 10}.",) for i in range(args.n)],
                        torch.arange(args.n) % 10, [f"bench/test/{i}" for i in range(args.n)])
    normalised = Normalizer.for_model(model, args.device)(images)

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, args.n, args.batch_size):
                model.encode_image(normalised[i : i + args.batch_size], normalize=True)
        synchronize(args.device)
        return args.n / (time.perf_counter() - start)

    def pipeline() -> float:
        start = time.perf_counter()
        evaluate_classification(model, tokenizer, spec, samples, batch_size=args.batch_size, device=args.device)
        synchronize(args.device)
        return args.n / (time.perf_counter() - start)

    rates = interleaved_rounds({"bare": bare, "evaluation": pipeline}, rounds=args.repeats, warmup=1)
    b, e = median(rates["bare"]), median(rates["evaluation"])
    print(f"arch={args.arch} device={args.device} n={args.n} batch={args.batch_size} threads={args.threads}")
    print(f"bare encode_image: {b:,.0f} img/s   evaluation: {e:,.0f} img/s   ratio: {e / b:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
