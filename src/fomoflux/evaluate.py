"""Zero-shot evaluation of open_clip CLIP models: classification top-1 and retrieval R@k.

Conventions (see BENCHMARK.md, "Evaluation and metrics"):

* Classification: one prompt per class (``DatasetSpec.prompt``), class text embeddings computed once per
  (checkpoint, dataset) with the current text tower, prediction = argmax of cosine similarity. Tie policy: the
  lowest class index wins (``torch.argmax``); a sample whose similarities contain NaN counts as wrong.
* Retrieval, with every caption of every image (MSCOCO and Flickr30k have about five), as the reference computes it
  (``RecallAtK`` in its ``utils/metrics.py`` over the caption list its ``utils/evaluation.py`` flattens, commit
  3e123d9): image->text recall@k is the share of images with at least one of their own captions among the k
  captions most similar to them; text->image recall@k the share of all captions whose own image is among the k
  images most similar to them; R@k is the mean of the two. Identical caption texts are encoded once: a text is a
  hit for every image that has it, and counts once per caption in the text->image mean (the reference keeps
  duplicates apart, so an image with a caption that another image also has competes with itself there).
  Tie policy (pessimistic, independent of sample order): the rank of the best true partner is the number of
  candidates that are not true partners whose similarity is >= its, so a tie never counts in the model's favour (the
  reference's argsort breaks ties by position); a NaN similarity is a miss.
* Subsets: :func:`stratified_subset` draws the fixed per-dataset evaluation subset as the reference draws it (an
  equal share per class, then the open slots filled uniformly; seeded per dataset). It is a pure function of its
  inputs, so the same (class_ids, seed) always gives the same subset: every trajectory point (the base model and
  every task) is scored on it. The reference release overwrites its test sets with the subset on every call, so
  each later evaluation draws a subset of the previous subset (and its closing "full" evaluation sees the shrunk
  set) — a defect not carried over.

Images arrive as uint8 ``SampleSet.images`` at the model's resolution, or are read from disk batch by batch
(``DiskSamples``, the evaluation transform, in DataLoader workers); they are normalised batched on the device with
:class:`fomoflux.preprocess.Normalizer` and encoded under ``torch.inference_mode()`` and
``fomoflux.device.autocast(device, "auto")`` (bf16 forward passes on CUDA, plain fp32 on the CPU; embeddings are
normalised and compared in fp32 either way). Per-batch work besides the image
tower is a slice, the normalisation and (for classification) one small matmul + argmax; results stay on the device
until the end of a dataset, so there is no host synchronisation per batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import polars as pl
import torch
import torch.nn.functional as F

from fomoflux.data.registry import DatasetSpec
from fomoflux.data.sampleset import SampleSet
from fomoflux.device import autocast
from fomoflux.errors import ConfigError, DataError
from fomoflux.preprocess import Normalizer

RETRIEVAL_KS = (1, 5)
PRIMARY_METRIC = {"classification": "top1", "retrieval": "R@5"}

# One row per (dataset, metric) of an evaluation; the per-run matrix (fomoflux.metrics) extends it.
EVAL_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.String,
    "role": pl.String,
    "kind": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "n": pl.Int64,
    "primary": pl.Boolean,
}
RESULT_COLUMNS = ("dataset", "role", "kind", "metric", "value", "n", "primary")

__all__ = [
    "PRIMARY_METRIC",
    "class_embeddings",
    "evaluate_classification",
    "evaluate_datasets",
    "evaluate_retrieval",
    "caption_pairs",
    "retrieval_recall",
    "stratified_subset",
    "subset_size",
    "top1_correct",
]


# --------------------------------------------------------------------------------------------------------------------
# Fixed evaluation subsets
# --------------------------------------------------------------------------------------------------------------------


def subset_size(n_samples: int, n_classes: int, *, min_size: int = 300, per_class: int = 2,
                fraction: float = 0.1) -> int:
    """n = min(N, max(per_class·C, min_size, ⌊fraction·N⌋)) (the reference's size rule, ``utils/evaluation.py``)."""
    return min(n_samples, max(per_class * n_classes, min_size, math.floor(fraction * n_samples)))


def stratified_subset(
    class_ids: torch.Tensor,
    seed: int,
    *,
    min_size: int = 300,
    per_class: int = 2,
    fraction: float = 0.1,
) -> torch.Tensor:
    """Sorted int64 indices of the fixed evaluation subset of one dataset, drawn as the reference draws it.

    Size: ``n = min(N, max(per_class·C, min_size, ⌊fraction·N⌋))`` (:func:`subset_size`), C the number of distinct
    classes. Draw (the reference's ``Evaluator.evaluate``, commit 3e123d9): an equal share ``⌊n / C⌋`` of every
    class (all of a class that has fewer), the classes in ascending id order, each share drawn without replacement
    from the class's samples in index order; then the ``n`` minus that many slots still open are filled uniformly,
    without replacement, from the samples not yet drawn (in index order). All draws come from one NumPy legacy
    ``RandomState(seed)``, whose stream NumPy keeps fixed across versions (NEP 19), started afresh for every dataset:
    a dataset's subset depends on its own class ids and the seed only, never on the other datasets evaluated.

    Retrieval datasets (every class id -1): the reference gives each image a target of its own (C = N), so its size
    rule always keeps the whole test set; so does this function. Class ids mixing -1 with classes are an error.

    A pure function: the same ``class_ids`` and ``seed`` give the same indices on every call.
    """
    import numpy as np

    ids = torch.as_tensor(class_ids).reshape(-1).to("cpu", torch.long).numpy()
    if min_size < 0 or per_class < 0 or not 0.0 <= fraction <= 1.0:
        raise ValueError(
            f"stratified_subset: need min_size >= 0, per_class >= 0, 0 <= fraction <= 1; "
            f"got min_size={min_size}, per_class={per_class}, fraction={fraction}"
        )
    n_total = ids.size
    unlabelled = ids == -1
    if unlabelled.all():  # retrieval (or nothing): the whole set
        return torch.arange(n_total, dtype=torch.long)
    if (ids < -1).any():
        raise ValueError(f"stratified_subset: class ids must be >= -1, got {int(ids.min())}")
    if unlabelled.any():
        raise ValueError(f"stratified_subset: {int(unlabelled.sum())} of {n_total} samples have class id -1 "
                         "(retrieval) and the rest a class; a dataset is one or the other")
    order = np.argsort(ids, kind="stable")  # sample indices grouped by class, ascending within each class
    classes, starts = np.unique(ids[order], return_index=True)
    n = subset_size(n_total, len(classes), min_size=min_size, per_class=per_class, fraction=fraction)
    if n >= n_total:
        return torch.arange(n_total, dtype=torch.long)

    rng = np.random.RandomState(int(seed))
    share = n // len(classes)
    picked = [rng.choice(members, min(share, members.size), replace=False)
              for members in np.split(order, starts[1:])]
    drawn = np.concatenate(picked)
    open_slots = n - drawn.size
    if open_slots > 0:
        rest = np.setdiff1d(np.arange(n_total), drawn, assume_unique=True)  # sorted
        drawn = np.concatenate([drawn, rng.choice(rest, open_slots, replace=False)])
    return torch.from_numpy(np.sort(drawn).astype(np.int64))


# --------------------------------------------------------------------------------------------------------------------
# Embeddings and metric kernels
# --------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(model) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _encode_images(model, images: torch.Tensor, device) -> torch.Tensor:
    """L2-normalised float32 embeddings of normalised ``images``: the forward pass under autocast(device, "auto"),
    the normalisation in fp32 (bf16 unit vectors would be off by up to ~0.4%)."""
    with autocast(device, "auto"):
        features = model.encode_image(images, normalize=False)
    return F.normalize(features.float(), dim=-1)


def _encode_tokens(model, tokens: torch.Tensor, device) -> torch.Tensor:
    """L2-normalised float32 embeddings of token ids, as :func:`_encode_images` does for images."""
    with autocast(device, "auto"):
        features = model.encode_text(tokens, normalize=False)
    return F.normalize(features.float(), dim=-1)


def _encode_texts(model, tokenizer, texts: Sequence[str], device, batch_size: int) -> torch.Tensor:
    if not texts:
        raise ValueError("no texts to encode")
    parts = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start : start + batch_size])).to(device)
        parts.append(_encode_tokens(model, tokens, device))
    return torch.cat(parts)


def class_embeddings(
    model, tokenizer, classnames: Sequence[str], prompt: str, device, batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised text embeddings [C, D] (float32, on ``device``) of ``prompt.format(class)`` for each class.

    Compute it once per (checkpoint, dataset) and reuse it for every image batch.
    """
    if not classnames:
        raise ValueError("class_embeddings: no class names")
    with _eval_mode(model):
        return _encode_texts(model, tokenizer, [prompt.format(c) for c in classnames], device, batch_size)


def top1_correct(image_emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Number of correct top-1 predictions (a 0-d tensor on the embeddings' device; no host sync).

    Prediction = argmax of ``image_emb @ class_emb.T`` (lowest class index on ties); rows with NaN are wrong.
    """
    logits = image_emb @ class_emb.T
    pred = logits.argmax(dim=1)
    ok = pred == labels
    nan_rows = torch.isnan(logits).any(dim=1)
    return (ok & ~nan_rows).sum()


_CHUNK_ELEMENTS = 1 << 24


def _partner_ranks(query: torch.Tensor, gallery: torch.Tensor, chunk: int, query_of: torch.Tensor,
                   gallery_of: torch.Tensor) -> torch.Tensor:
    """0-based pessimistic rank of the best true partner of every query in the gallery; NaN -> gallery size.

    The true pairs are (query_of[p], gallery_of[p]) for every p. Rank of query i = #{gallery items j that are not
    true partners of i : sim(i, j) >= the best similarity of i to a true partner}; a query without any true partner
    gets the gallery size (a miss at every k).
    """
    n, m = query.shape[0], gallery.shape[0]
    ranks = torch.empty(n, dtype=torch.long, device=query.device)
    chunk = max(1, min(chunk, _CHUNK_ELEMENTS // m))  # a [chunk, m] similarity block stays ~64 MB in fp32
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sim = query[start:stop] @ gallery.T  # [b, m]
        inside = (query_of >= start) & (query_of < stop)
        partner = torch.zeros_like(sim, dtype=torch.bool)
        partner[query_of[inside] - start, gallery_of[inside]] = True
        true = sim.masked_fill(~partner, float("-inf")).amax(dim=1)
        rank = ((sim >= true[:, None]) & ~partner).sum(dim=1)
        lost = torch.isnan(true) | ~partner.any(dim=1)
        ranks[start:stop] = torch.where(lost, torch.full_like(rank, m), rank)
    return ranks


def caption_pairs(captions: Sequence[Sequence[str]]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The retrieval gallery of images with several captions each: ``(texts, pairs, text_count)``.

    ``captions[i]`` are image i's captions. ``texts`` are the distinct caption texts in order of first appearance,
    ``pairs`` the long [P, 2] tensor of (image, text) true pairs (each pair once) and ``text_count[j]`` the number of
    captions that read ``texts[j]`` (what text j weighs in the text->image mean, one query per caption). Raises
    ValueError naming the first image without a caption.
    """
    ids: dict[str, int] = {}
    pairs: dict[tuple[int, int], None] = {}
    counts: list[int] = []
    for image, texts in enumerate(captions):
        if not texts:
            raise ValueError(f"caption_pairs: image {image} has no caption")
        for text in texts:
            text_id = ids.setdefault(text, len(ids))
            if text_id == len(counts):
                counts.append(0)
            counts[text_id] += 1
            pairs[(image, text_id)] = None
    return list(ids), torch.tensor(list(pairs), dtype=torch.long).reshape(-1, 2), torch.tensor(counts)


def retrieval_recall(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    ks: Sequence[int] = RETRIEVAL_KS,
    *,
    chunk: int = 2048,
    pairs: torch.Tensor | None = None,
    text_count: torch.Tensor | None = None,
) -> dict[str, float]:
    """Recall@k between N images and M texts (module docstring), any similarity scale (dot product).

    ``pairs`` (long [P, 2], rows (image, text)) are the true pairs, default row i of each (N = M); ``text_count``
    (one weight per text, default 1) is how many captions a text stands for in the text->image mean
    (:func:`caption_pairs` gives both). Image->text recall is averaged over the images, text->image recall over
    the captions.

    Returns ``{"R@k": mean of both directions, "i2t_R@k": ..., "t2i_R@k": ...}`` for each k.
    """
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(f"retrieval_recall: need [N, D] images and [M, D] texts, got {tuple(image_emb.shape)} and "
                         f"{tuple(text_emb.shape)}")
    n, m = image_emb.shape[0], text_emb.shape[0]
    if n == 0 or m == 0:
        raise ValueError("retrieval_recall: no images or no texts")
    device = image_emb.device
    if pairs is None:
        if n != m:
            raise ValueError(f"retrieval_recall: {n} images and {m} texts need explicit pairs")
        pairs = torch.arange(n).repeat(2, 1).T
    pairs = pairs.to(device=device, dtype=torch.long)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise ValueError(f"retrieval_recall: pairs must be a non-empty [P, 2] tensor, got {tuple(pairs.shape)}")
    if pairs[:, 0].min() < 0 or pairs[:, 0].max() >= n or pairs[:, 1].min() < 0 or pairs[:, 1].max() >= m:
        raise ValueError(f"retrieval_recall: a pair names an image outside [0, {n}) or a text outside [0, {m})")
    weight = torch.ones(m, dtype=torch.float64, device=device)
    if text_count is not None:
        weight = text_count.to(device=device, dtype=torch.float64)
        if weight.shape != (m,) or (weight <= 0).any():
            raise ValueError(f"retrieval_recall: text_count must hold one positive count per text ({m}), got "
                             f"{tuple(weight.shape)}")
    i2t = _partner_ranks(image_emb, text_emb, chunk, pairs[:, 0], pairs[:, 1])
    t2i = _partner_ranks(text_emb, image_emb, chunk, pairs[:, 1], pairs[:, 0])
    out: dict[str, float] = {}
    for k in ks:
        a = (i2t < k).double().mean().item()
        b = ((t2i < k).double() * weight).sum().item() / weight.sum().item()
        out[f"R@{k}"] = (a + b) / 2
        out[f"i2t_R@{k}"] = a
        out[f"t2i_R@{k}"] = b
    return out


class _EvalBatches(torch.utils.data.Dataset):
    """Batch number -> uint8 images [b, 3, S, S] of consecutive samples (the evaluation transform)."""

    def __init__(self, samples, batch_size: int, image_size: int) -> None:
        self.samples, self.batch_size, self.image_size = samples, batch_size, image_size

    def __len__(self) -> int:
        return (len(self.samples) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, k: int) -> torch.Tensor:
        stop = min((k + 1) * self.batch_size, len(self.samples))
        return self.samples.eval_images(range(k * self.batch_size, stop), self.image_size)


def model_image_size(model) -> int | None:
    """The square input resolution of an open_clip model (None when it has no ``visual.image_size``)."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    return size if size is None or isinstance(size, int) else int(size[0])


def _image_batches(samples, normalizer: Normalizer, batch_size: int, image_size: int | None = None,
                   workers: int = 0) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(start, stop, normalised images) of consecutive batches. In-memory images at ``image_size`` are sliced;
    anything else (samples on disk, other sizes) is read and transformed batch by batch, in ``workers`` DataLoader
    processes when > 0, so only the batches in flight are ever decoded."""
    n = len(samples)
    images = getattr(samples, "images", None)
    if images is not None and (image_size is None or tuple(images.shape[-2:]) == (image_size, image_size)):
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield start, stop, normalizer(images[start:stop])
        return
    if image_size is None:
        raise ConfigError("evaluation: samples on disk need the model's image size")
    kwargs = {"prefetch_factor": 4} if workers else {}
    loader = torch.utils.data.DataLoader(_EvalBatches(samples, batch_size, image_size), batch_size=None,
                                         num_workers=workers, pin_memory=normalizer.device.type == "cuda", **kwargs)
    for k, batch in enumerate(loader):
        start = k * batch_size
        yield start, start + batch.shape[0], normalizer(batch)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


# --------------------------------------------------------------------------------------------------------------------
# Per-dataset evaluation
# --------------------------------------------------------------------------------------------------------------------


def evaluate_classification(
    model,
    tokenizer,
    spec: DatasetSpec,
    samples: SampleSet,
    *,
    batch_size: int = 512,
    device="cpu",
) -> dict:
    """Zero-shot top-1 over the dataset's own classes: ``{"top1": float in [0, 1], "n": int}``."""
    return _classification(model, tokenizer, spec, samples, batch_size, device, None)


def _classification(model, tokenizer, spec: DatasetSpec, samples: SampleSet, batch_size: int, device, progress,
                    workers: int = 0) -> dict:
    _check_batch_size(batch_size)
    if spec.kind != "classification":
        raise ConfigError(
            f"dataset {spec.name!r}: evaluate_classification needs kind 'classification', got {spec.kind!r}"
        )
    n = len(samples)
    if n == 0:
        raise DataError(f"dataset {spec.name!r}: no samples to evaluate")
    labels = samples.class_ids
    n_classes = len(spec.classnames)
    if int(labels.min()) < 0 or int(labels.max()) >= n_classes:
        bad = int(torch.nonzero((labels < 0) | (labels >= n_classes))[0])
        raise DataError(
            f"dataset {spec.name!r}: sample {samples.keys[bad]!r} has class id {int(labels[bad])}, "
            f"outside [0, {n_classes})"
        )
    device = torch.device(device)
    text = class_embeddings(model, tokenizer, spec.classnames, spec.prompt, device)
    normalizer = Normalizer.for_model(model, device)
    labels = labels.to(device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with _eval_mode(model):
        for start, stop, images in _image_batches(samples, normalizer, batch_size, model_image_size(model), workers):
            emb = _encode_images(model, images, device)
            correct += top1_correct(emb, text, labels[start:stop])
            if progress is not None:
                progress.advance(stop - start)
    return {"top1": correct.item() / n, "n": n}


def evaluate_retrieval(model, tokenizer, samples: SampleSet, *, batch_size: int = 512, device="cpu") -> dict:
    """Image<->text retrieval over every caption of every image (module docstring): ``{"R@1", "R@5", "n"}`` with
    ``n`` the number of images."""
    return _retrieval(model, tokenizer, samples, batch_size, device, None)


def _retrieval(model, tokenizer, samples: SampleSet, batch_size: int, device, progress, workers: int = 0) -> dict:
    _check_batch_size(batch_size)
    n = len(samples)
    if n == 0:
        raise DataError("retrieval evaluation: no samples to evaluate")
    device = torch.device(device)
    normalizer = Normalizer.for_model(model, device)
    with _eval_mode(model):
        image_parts = []
        for start, stop, images in _image_batches(samples, normalizer, batch_size, model_image_size(model), workers):
            image_parts.append(_encode_images(model, images, device))
            if progress is not None:
                progress.advance(stop - start)
        image_emb = torch.cat(image_parts)
        captions = [samples.read_captions(i) for i in range(n)]
        empty = next((i for i, c in enumerate(captions) if not c), None)
        if empty is not None:
            raise DataError(f"retrieval evaluation: sample {samples.key(empty)!r} has no caption")
        texts, pairs, text_count = caption_pairs(captions)
        text_emb = _encode_texts(model, tokenizer, texts, device, batch_size)
        recall = retrieval_recall(image_emb, text_emb, RETRIEVAL_KS, pairs=pairs, text_count=text_count)
    return {**{f"R@{k}": recall[f"R@{k}"] for k in RETRIEVAL_KS}, "n": n}


def evaluate_datasets(
    model,
    tokenizer,
    datasets: list[tuple[DatasetSpec, SampleSet]],
    *,
    batch_size: int = 512,
    device="cpu",
    progress: bool = True,
    workers: int = 0,
    label: str = "eval",
):
    """Evaluate every (spec, samples) pair; one row per (dataset, metric) as a polars DataFrame.

    ``samples`` may be a SampleSet or samples on disk (``DiskSamples``, read and decoded batch by batch in
    ``workers`` DataLoader processes).

    Columns: dataset, role, kind, metric ("top1" | "R@1" | "R@5"), value (in [0, 1]), n, primary (top1 for
    classification, R@5 for retrieval). With ``progress``, the images done go to stderr (``fomoflux.progress``: a
    tqdm bar on a terminal, else timestamped lines labelled ``label``, one as each dataset starts and every 30 s).
    """
    import polars as pl

    from fomoflux.progress import progress as make_progress

    names = [spec.name for spec, _ in datasets]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise ConfigError(f"evaluate_datasets: datasets listed more than once: {dupes}")
    for spec, _ in datasets:
        if spec.kind not in PRIMARY_METRIC:
            raise ConfigError(
                f"dataset {spec.name!r}: kind {spec.kind!r} cannot be evaluated (classification or retrieval only)"
            )

    rows: list[dict] = []
    total = sum(len(samples) for _, samples in datasets)
    with make_progress(total, label, unit="img", enabled=progress, interval_s=30.0) as bar:
        for spec, samples in datasets:
            bar.report(dataset=spec.name)
            if spec.kind == "classification":
                result = _classification(model, tokenizer, spec, samples, batch_size, device, bar, workers)
                metrics = ["top1"]
            else:
                try:
                    result = _retrieval(model, tokenizer, samples, batch_size, device, bar, workers)
                except DataError as err:
                    raise DataError(f"dataset {spec.name!r}: {err}") from None
                metrics = [f"R@{k}" for k in RETRIEVAL_KS]
            for metric in metrics:
                rows.append(
                    {
                        "dataset": spec.name,
                        "role": spec.role,
                        "kind": spec.kind,
                        "metric": metric,
                        "value": float(result[metric]),
                        "n": int(result["n"]),
                        "primary": metric == PRIMARY_METRIC[spec.kind],
                    }
                )
    return pl.DataFrame(rows, schema=EVAL_SCHEMA) if rows else pl.DataFrame(schema=EVAL_SCHEMA)
