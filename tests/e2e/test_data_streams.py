"""End-to-end runs of the data side: every stream ordering and mixture on the test-size benchmark, the real
FoMo-in-Flux dataset path offline (release tars from a local HTTP server, a local copy, a webdataset replay pool),
and the paper preset's dry run."""

from __future__ import annotations

import http.server
import io
import json
import re
import tarfile
import threading
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import REPO, make_project
from PIL import Image

pytestmark = pytest.mark.slow

ORDERINGS = ("random", "dataset_incremental", "time_incremental", "concept_frequency", "easy_to_hard",
             "concept_similarity")
MIXTURE_RUNS = ("ft_random", "ft_no_replay", "ft_buffer_only", "ft_pretrain_only", "ft_reservoir", "ft_class_quota")


def _streams_and_mixtures(cfg: dict) -> None:
    base = cfg["streams"]["random"]
    common = {"datasets": base["datasets"], "seed": 0, "classes_per_task": base["classes_per_task"]}
    cfg["streams"] = {name: {"ordering": name, **common} for name in ORDERINGS}
    cfg["streams"]["easy_to_hard_reverse"] = {"ordering": "easy_to_hard", "reverse": True, **common}
    cfg["streams"]["random_by_samples"] = {"ordering": "random", "datasets": base["datasets"], "seed": 0,
                                           "tasks": 2, "chunk_by": "samples"}
    cfg["mixtures"] = {
        "paper": {"pretrain": 0.33, "update": 0.34, "buffer": 0.33},
        "no_replay": {"update": 1.0},
        "buffer_only": {"update": 0.5, "buffer": 0.5},
        "pretrain_only": {"pretrain": 0.5, "update": 0.5},
    }
    runs = {f"ft_{name}": {"method": "finetune", "stream": name} for name in cfg["streams"]}
    for mixture in ("no_replay", "buffer_only", "pretrain_only"):
        runs[f"ft_{mixture}"] = {"method": "finetune", "stream": "random", "training": {"mixture": mixture}}
    for policy in ("reservoir", "class_quota"):
        runs[f"ft_{policy}"] = {"method": "finetune", "stream": "random",
                                "training": {"buffer": {"policy": policy, "size": 40}}}
    cfg["runs"] = runs
    cfg["figures"] = {"comparisons": {
        "orderings": {"runs": [f"ft_{name}" for name in ORDERINGS], "title": "Stream orderings",
                      "labels": {f"ft_{name}": name.replace("_", " ") for name in ORDERINGS}},
        "mixtures": {"runs": list(MIXTURE_RUNS), "title": "Mixtures"},
    }}


def _sources_logged(log: Path) -> dict[str, int]:
    match = re.search(r"sources (\{[^}]*\})", log.read_text())
    assert match, log.read_text()[-2000:]
    return {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", match.group(1))}


def test_every_ordering_and_mixture_runs_with_its_figures(tmp_path):
    from fomoflux.data.mini import mini_registry
    from fomoflux.orderings import concept, concept_frequencies

    project = make_project(tmp_path / "project")
    project.edit_config(_streams_and_mixtures)
    # 14 runs of 2 tasks: ~8 min on 2 idle cores; the limit only guards against a hang, and a loaded machine
    # (seen: load 8 on 2 cores) more than doubles the time.
    project.snakemake(timeout=1800)

    for comparison in ("orderings", "mixtures"):
        for ext in ("png", "pdf"):
            assert project.path("figures", f"compare_{comparison}.{ext}").stat().st_size > 1000

    streams = {}
    for name in [*ORDERINGS, "easy_to_hard_reverse", "random_by_samples"]:
        ordering = json.loads(project.path("streams", name, "ordering.json").read_text())
        tasks = json.loads(project.path("streams", name, "tasks.json").read_text())
        assert [e for t in tasks for e in t] == ordering and len(tasks) == 2, name
        streams[name] = ordering
    everything = sorted(streams["random"])
    assert all(sorted(o) == everything for o in streams.values())
    assert len({tuple(o) for o in streams.values()}) >= 6  # the orderings really differ

    datasets = [e.split("+++")[0] for e in streams["dataset_incremental"]]
    assert [d for i, d in enumerate(datasets) if i == 0 or d != datasets[i - 1]] == list(dict.fromkeys(datasets))
    years = {name: spec.year for name, spec in mini_registry().items()}
    timeline = [years[e.split("+++")[0]] for e in streams["time_incremental"]]
    assert timeline == sorted(timeline)

    accuracy = pl.read_parquet(project.path("models", "fomo-micro", "class_accuracy.parquet"))
    by_entry = dict(zip(accuracy["entry"], accuracy["accuracy"]))
    ranked = [by_entry[e] for e in streams["easy_to_hard"]]
    assert ranked == sorted(ranked, reverse=True)
    assert streams["easy_to_hard_reverse"] == streams["easy_to_hard"][::-1]

    pool = [project.path("data", "pool", "manifest.parquet")]
    counts = concept_frequencies(pool, sorted({concept(e.split("+++")[1]) for e in everything}))
    frequency = [counts.get(concept(e.split("+++")[1]), 0) for e in streams["concept_frequency"]]
    assert frequency == sorted(frequency)

    # Chunking by samples: the two tasks' training-sample totals are closer than any one class could make them.
    train = pl.concat([pl.read_parquet(project.path("data", d, "manifest.parquet"))
                       for d in ("digits", "new_shapes", "textures")]).filter(pl.col("split") == "train")
    per_class = Counter(f"{d}+++{c}" for d, c in zip(train["dataset"], train["class_name"]))
    tasks = json.loads(project.path("streams", "random_by_samples", "tasks.json").read_text())
    totals = [sum(per_class[e] for e in task) for task in tasks]
    assert abs(totals[0] - totals[1]) <= max(per_class.values())

    # Mixtures: what each task update read, as its log reports it.
    logs = project.path("logs", "train_task")
    assert _sources_logged(logs / "ft_no_replay" / "task002.log") == {"update": _sources_logged(
        logs / "ft_no_replay" / "task002.log")["update"], "buffer": 0, "pretrain": 0}
    full = _sources_logged(logs / "ft_random" / "task002.log")
    assert full["buffer"] > 40 and full["pretrain"] > 0
    for policy in ("reservoir", "class_quota"):
        bounded = _sources_logged(logs / f"ft_{policy}" / "task002.log")
        assert bounded["buffer"] == 40 and bounded["update"] == full["update"]
    assert _sources_logged(logs / "ft_buffer_only" / "task002.log")["pretrain"] == 0
    assert _sources_logged(logs / "ft_pretrain_only" / "task002.log")["buffer"] == 0
    summary = pl.read_parquet(project.path("runs", "ft_reservoir", "summary.parquet"))
    assert summary.height == 3  # task 0 + two updates


def test_paper_preset_dry_run_lists_the_dag_and_what_is_missing(tmp_path):
    project = make_project(tmp_path / "project", config=REPO / "config" / "fomo_in_flux.yaml")
    proc = project.snakemake("--dry-run")
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, re.M))
    assert int(jobs["download_archive"]) == 63 and int(jobs["shard_dataset"]) == 64  # + the replay pool
    assert int(jobs["train_task"]) == 12 * 20 and int(jobs["import_checkpoint"]) == 1
    message = proc.stdout + proc.stderr
    assert "2 input(s) named in the config are missing" in message
    assert "open_clip_model.safetensors" in message and "pretraining_pool" in message
    assert "Traceback" not in message

    real = project.snakemake(check=False)
    assert real.returncode != 0
    assert "not starting" in real.stdout + real.stderr
    assert not (project.root / "results" / "fomo_in_flux" / "downloads").exists()


# ---- the real-dataset path, offline ------------------------------------------------------------------------


def _jpeg(rng: np.random.Generator, size: int = 24) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def _release_members(name: str, classnames: list[str], counts: dict[str, int], rng) -> dict[str, bytes]:
    """A dataset in the release's layout: images under NAME/, one annotation file per split."""
    members: dict[str, bytes] = {}
    for split, per_class in counts.items():
        annotation = {}
        for target, cls in enumerate(classnames):
            for i in range(per_class):
                path = f"{name}/{name}/{cls.replace('/', '_')}/{split}_{i}.jpg"
                members[path] = _jpeg(rng)
                annotation[path] = {"classname": cls, "target": target, "default_caption": None,
                                    "primer_caption": f"A photo of a {cls}.", "synthetic_caption": None,
                                    "synthetic_merged_caption": f"A photo of a {cls}, seen up close."}
        members[f"{name}/{name}_{split}.json"] = json.dumps(annotation).encode()
    return members


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for member, payload in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_real_dataset_path_offline(tmp_path):
    """FoMo-in-Flux datasets through the whole pipeline: DTD downloaded from a (local) mirror in the release's
    layout, CIFAR10 read from an extracted local copy, a webdataset replay pool, a local checkpoint."""
    import webdataset as wds

    from fomoflux.data.fomo_in_flux import fif_registry
    from fomoflux.model import create_model, register_architecture, save_checkpoint

    rng = np.random.default_rng(0)
    registry = fif_registry(["DTD", "CIFAR10"])
    served = tmp_path / "served"
    served.mkdir()
    _write_tar(served / "DTD.tar", _release_members("DTD", list(registry["DTD"].classnames),
                                                    {"train": 2, "test": 1}, rng))
    local = tmp_path / "datasets"
    for member, payload in _release_members("CIFAR10", list(registry["CIFAR10"].classnames), {"test": 3},
                                            rng).items():
        target = local / (member.split("/", 1)[1] if member.endswith(".json") else member)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)

    pool = tmp_path / "pool"
    pool.mkdir()
    for shard in range(2):
        with wds.TarWriter(str(pool / f"laion-{shard:03d}.tar")) as sink:
            for i in range(40):
                sink.write({"__key__": f"{shard:03d}{i:05d}", "jpg": _jpeg(rng), "txt": f"a photo number {i}"})

    project = make_project(tmp_path / "project")
    register_architecture(REPO / "config" / "models" / "fomo-micro-vit.json")
    model, _ = create_model("fomo-micro-vit", seed=0)
    checkpoint = tmp_path / "weights" / "micro.safetensors"
    save_checkpoint(model, checkpoint)

    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/DTD.tar"
        project.write_config({
            "benchmark": {"name": "fomo_in_flux", "image_size": 32, "shard_size": 50,
                          "datasets": ["DTD", "CIFAR10"],
                          "fomo_in_flux": {"urls": {"DTD": url}, "local": {"CIFAR10": str(local / "CIFAR10")}}},
            "datasets": {"laion_subset": {"kind": "pretraining", "role": "pretraining", "caption_source": "native",
                                          "splits": ["train"],
                                          "source": {"webdataset": {"urls": f"{pool}/laion-{{000..001}}.tar"}}}},
            "model": {"name": "micro", "arch": "fomo-micro-vit", "config": "config/models/fomo-micro-vit.json",
                      "pretrained": {"file": str(checkpoint)}},
            "streams": {"dtd": {"ordering": "dataset_incremental", "tasks": 2}},
            "training": {"steps": 2, "batch_size": 16, "lr": 5e-4, "mixture": "paper"},
            "mixtures": {"paper": {"pretrain": 0.33, "update": 0.34, "buffer": 0.33}},
            "runs": {"finetune": {"method": "finetune"}},
            "evaluation": {"batch_size": 64, "subset": {"min_size": 10}},
            # Validation mode: DTD (streamed) is scored on one held-out training image per class, not on its test
            # split; CIFAR10 (evaluation-only) keeps its test split.
            "validation": {"enabled": True, "fraction": 0.1, "seed": 0},
        })
        project.snakemake()
    finally:
        server.shutdown()

    record = project.path("downloads", "DTD.archive.sha256").read_text()
    assert re.fullmatch(r"[0-9a-f]{64}  DTD\.archive\n", record)
    manifest = pl.read_parquet(project.path("data", "DTD", "manifest.parquet"))
    assert manifest.group_by("split").len().sort("split")["len"].to_list() == [47, 94]
    assert manifest["captions"][0][0].endswith("seen up close.")
    assert pl.read_parquet(project.path("data", "laion_subset", "manifest.parquet")).height == 80
    assert pl.read_parquet(project.path("data", "CIFAR10", "manifest.parquet")).height == 30
    # The trajectory's last point is on the fixed subset (n = min(N, max(2C, min_size, N/10))): CIFAR10's 30 test
    # images give 20; DTD's 47 held-out images are all kept. The full test sets are scored apart.
    final = pl.read_parquet(project.path("runs", "finetune", "eval", "task002.parquet"))
    assert dict(zip(final["dataset"], final["n"])) == {"DTD": 47, "CIFAR10": 20}
    full = pl.read_parquet(project.path("runs", "finetune", "eval_full", "task002.parquet"))
    assert dict(zip(full["dataset"], full["n"])) == {"DTD": 47, "CIFAR10": 30}
    train_log = project.path("logs", "train_task", "finetune", "task001.log").read_text()
    assert _sources_logged(project.path("logs", "train_task", "finetune", "task001.log"))["update"] == 24, train_log
    summary = pl.read_parquet(project.path("runs", "finetune", "summary.parquet"))
    assert summary["task"].to_list() == [0, 1, 2]
    assert summary["A_KA"].is_not_null().all() and summary["A_ZS"].is_not_null().all()
