"""Time and peak memory of streaming merges (``fomoflux.merge.merge_checkpoints``) over n checkpoints.

    .venv/bin/python benchmarks/bench_merge.py            # full: both models, every operator, n = 2 5 10 20
    .venv/bin/python benchmarks/bench_merge.py --quick    # smoke run (~15 s): fomo-tiny-vit, 2 operators, n = 2 5

Models: ``tiny`` is fomo-tiny-vit (config/models/fomo-tiny-vit.json, open_clip's random init); ``vitb16`` has the
state-dict shapes of open_clip's ViT-B-16 (created on device "meta"), 150M float32 parameters = 600 MB per
checkpoint. Experts are θ0 plus seeded Gaussian noise. The checkpoints (21 for n up to 20: 12.6 GB for vitb16) are
written under ``--workdir`` (default: a fresh directory in /tmp) and deleted at the end unless ``--keep``.

Every (model, operator, n) runs in a fresh subprocess with ``--threads`` torch threads, which reports the merge's
wall time and its peak memory: the peak RSS of the process during the merge minus its RSS after the imports. The
peak is the kernel's high-water mark VmHWM of /proc/self/status, reset after the imports (``echo 5 >
/proc/self/clear_refs``). ``getrusage(RUSAGE_SELF).ru_maxrss`` would be wrong here: Linux carries the parent's peak
RSS into it across fork + exec (a child of a 800 MB parent reports 800 MB), so a small merge would read as 0.
The merged state itself (one model) is part of that peak; the "state MB" column gives its size, so "peak MB − state
MB" is the streaming overhead (a few tensors of the largest key), which must not grow with n. The files are read
from the page cache when it holds them (they were just written); a cold cache adds disk time. The full run reads
481 checkpoints for vitb16 (n = 2+5+10+20 for each of 10 operators, twice for the 3 two-pass ones: ties, dare,
tall_masks), about 290 GB from the page cache; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {"tiny": "fomo-tiny-vit", "vitb16": "ViT-B-16"}
ALL_OPERATORS = [
    "interpolation", "slerp", "task_arithmetic", "ties", "dare", "breadcrumbs", "magmax", "model_stock",
    "tall_masks", "random",
]


def memory_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: peak since start or the last reset) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field} (this benchmark needs Linux)")


def reset_peak_rss() -> None:
    """Make VmHWM restart from the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def child(spec: dict) -> None:
    """Run one merge and print its timing and memory as one JSON line."""
    import torch

    from fomoflux.merge import merge_checkpoints

    torch.set_num_threads(spec["threads"])
    torch.zeros(1).add_(1)  # torch's lazy one-time setup happens here, before the baseline
    reset_peak_rss()
    baseline = memory_mb("VmRSS")
    n = len(spec["checkpoints"])
    started = time.perf_counter()
    state = merge_checkpoints(spec["base"], spec["checkpoints"], [1.0 / n] * n, spec["operator"], seed=0)
    seconds = time.perf_counter() - started
    state_mb = sum(t.numel() * t.element_size() for t in state.values()) / 2**20
    print(json.dumps({"seconds": seconds, "peak_mb": memory_mb("VmHWM") - baseline, "state_mb": state_mb}))


def shapes_of(model_key: str) -> dict:
    """The (shape, dtype) of every state-dict entry of the model, from a parameter-free copy on device "meta"."""
    from fomoflux.model import create_model, register_architecture

    arch = MODELS[model_key]
    config = REPO / "config" / "models" / f"{arch}.json"
    if config.is_file():
        arch = register_architecture(config)
    model, _ = create_model(arch, device="meta")
    return {key: (tuple(value.shape), value.dtype) for key, value in model.state_dict().items()}


def write_checkpoints(model_key: str, count: int, folder: Path) -> tuple[str, list[str]]:
    """θ0 and ``count`` experts θ0 + noise as safetensors files; the tiny model starts from its real init."""
    import torch

    from fomoflux.io import write_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    if model_key == "tiny":
        from fomoflux.model import create_model, register_architecture

        arch = register_architecture(REPO / "config" / "models" / "fomo-tiny-vit.json")
        model, _ = create_model(arch, seed=0)
        base = {key: value.detach().clone() for key, value in model.state_dict().items()}
    else:
        base = {key: 0.02 * torch.randn(shape, generator=gen, dtype=dtype) for key, (shape, dtype) in
                shapes_of(model_key).items()}
    base_path = folder / "base.safetensors"
    write_safetensors(base_path, base)
    paths = []
    for index in range(count):
        expert = {key: value + 1e-3 * torch.randn(value.shape, generator=gen, dtype=value.dtype)
                  for key, value in base.items()}
        path = folder / f"expert{index:03d}.safetensors"
        write_safetensors(path, expert)
        paths.append(str(path))
        del expert
    return str(base_path), paths


def run_child(base: str, checkpoints: list[str], operator: str, threads: int) -> dict:
    spec = {"base": base, "checkpoints": checkpoints, "operator": operator, "threads": threads}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"merge {operator} of {len(checkpoints)} checkpoints failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, interpolation + ties, n = 2 5")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["tiny", "vitb16"])
    parser.add_argument("--operators", nargs="+", default=ALL_OPERATORS)
    parser.add_argument("--n", nargs="+", type=int, default=[2, 5, 10, 20], help="numbers of checkpoints to merge")
    parser.add_argument("--threads", type=int, default=4, help="torch threads of each merge")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the checkpoints (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.quick:
        args.models, args.operators, args.n, args.threads = ["tiny"], ["interpolation", "ties"], [2, 5], 1

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_merge_"))
    rows = []
    try:
        for model_key in args.models:
            started = time.perf_counter()
            base, experts = write_checkpoints(model_key, max(args.n), workdir / model_key)
            size_mb = Path(base).stat().st_size / 2**20
            print(f"{model_key}: wrote {max(args.n) + 1} checkpoints of {size_mb:.1f} MB in "
                  f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
            for operator in args.operators:
                for n in sorted(args.n):
                    result = run_child(base, experts[:n], operator, args.threads)
                    rows.append((MODELS[model_key], operator, n, result))
                    print(f"  {operator} n={n}: {result['seconds']:.2f} s, {result['peak_mb']:.0f} MB",
                          file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nthreads per merge: {args.threads}\n")
    print("| model | operator | n | seconds | peak MB | state MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for model, operator, n, result in rows:
        print(f"| {model} | {operator} | {n} | {result['seconds']:.2f} | {result['peak_mb']:.1f} | "
              f"{result['state_mb']:.1f} |")


if __name__ == "__main__":
    main()
