"""Easy classes first: by the base model's zero-shot accuracy per class (the reference's ``performance_sequence_1``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from fomoflux.data.registry import ENTRY_SEPARATOR, DatasetSpec
from fomoflux.errors import ConfigError, DataError
from fomoflux.orderings.common import check_unique, entry_scores, sorted_by_key

if TYPE_CHECKING:
    import polars as pl
    import torch

    from fomoflux.data.sampleset import SampleSet

# torch, polars and the evaluation code are imported where they are used: the plan-time orderings run inside
# every Snakefile parse and every job's plan rebuild, which must not pay for importing torch.


def easy_to_hard(entries: Sequence[str], accuracy: Mapping[str, float], seed: int) -> list[str]:
    """Easy first: entries by descending base-model zero-shot ``accuracy[entry]``, ties in a seeded random order.

    Raises ConfigError for an entry without an accuracy (naming it; see :func:`per_class_accuracy`, which leaves out
    classes without evaluation samples) or given twice; DataError for a NaN accuracy. Any other number is accepted,
    so a caller may rank classes it could not measure last on purpose (e.g. with -1).
    """
    pool = check_unique(entries, "easy_to_hard")
    return sorted_by_key(pool, -entry_scores(pool, accuracy, "accuracy", "easy_to_hard", allow_negative=True), seed)


# One row per class of a dataset that has evaluation samples (see per_class_accuracy).
def per_class_schema() -> dict[str, pl.DataType]:
    """Columns of :func:`per_class_accuracy`'s result."""
    import polars as pl

    return {
        "dataset": pl.String,
        "class_name": pl.String,
        "entry": pl.String,
        "n": pl.Int64,
        "correct": pl.Int64,
        "accuracy": pl.Float64,
    }


def _checked_labels(spec: DatasetSpec, samples: SampleSet) -> torch.Tensor:
    """The samples' class ids on the CPU; raises DataError naming the first sample whose id is not a class index."""
    import torch

    if len(samples) == 0:
        raise DataError(f"dataset {spec.name!r}: no samples to evaluate")
    labels = samples.class_ids.to("cpu", torch.long)
    outside = (labels < 0) | (labels >= len(spec.classnames))
    if bool(outside.any()):
        bad = int(torch.nonzero(outside)[0])
        raise DataError(
            f"dataset {spec.name!r}: sample {samples.keys[bad]!r} has class id {int(labels[bad])}, "
            f"outside [0, {len(spec.classnames)})"
        )
    return labels


def _image_embeddings(model, samples: SampleSet, batch_size: int, device: torch.device) -> torch.Tensor:
    """L2-normalised float32 image embeddings [N, D] on ``device``, encoded in eval mode without gradients."""
    import torch

    from fomoflux.evaluate import _encode_images, _eval_mode, _image_batches, model_image_size
    from fomoflux.preprocess import Normalizer

    normalizer = Normalizer.for_model(model, device)
    with _eval_mode(model):
        # Under autocast(device, "auto") like every evaluation forward pass (bf16 on CUDA, fp32 on the CPU).
        parts = [_encode_images(model, images, device) for _, _, images in
                 _image_batches(samples, normalizer, batch_size, model_image_size(model))]
    return torch.cat(parts)


def per_class_accuracy(
    model, tokenizer, spec: DatasetSpec, samples: SampleSet, *, batch_size: int = 512, device="cpu"
) -> pl.DataFrame:
    """The model's zero-shot top-1 per class of ``spec`` on ``samples`` (over all of the dataset's classes, with its
    prompt; the same predictions as ``evaluate.evaluate_classification``).

    Returns a DataFrame (``per_class_schema()``) with one row per class that has at least one sample, in class order:
    dataset, class_name, entry (``DATASET+++class``), n, correct, accuracy = correct / n. Classes without samples
    are left out rather than given a NaN accuracy, so an ordering that needs every entry fails loudly on them.
    Raises ConfigError for a non-classification dataset or batch_size < 1; DataError for no samples or a class id
    outside the dataset's classes.
    """
    import polars as pl
    import torch

    from fomoflux.evaluate import _check_batch_size, class_embeddings, top1_correct

    _check_batch_size(batch_size)
    if spec.kind != "classification":
        raise ConfigError(f"dataset {spec.name!r}: per_class_accuracy needs kind 'classification', got {spec.kind!r}")
    labels = _checked_labels(spec, samples)
    device = torch.device(device)
    text = class_embeddings(model, tokenizer, spec.classnames, spec.prompt, device)
    images = _image_embeddings(model, samples, batch_size, device)
    # Group the samples by class once, then score each class's slice with the shared top-1 rule.
    order = torch.argsort(labels, stable=True)
    sizes = torch.bincount(labels, minlength=len(spec.classnames)).tolist()
    present, correct_parts, start = [], [], 0
    sorted_images, sorted_labels = images[order.to(device)], labels[order].to(device)
    for class_id, size in enumerate(sizes):
        if size:
            stop = start + size
            correct_parts.append(top1_correct(sorted_images[start:stop], text, sorted_labels[start:stop]))
            present.append(class_id)
            start = stop
    correct = torch.stack(correct_parts).tolist()  # one host sync for the whole dataset
    names = [spec.classnames[c] for c in present]
    n = [sizes[c] for c in present]
    return pl.DataFrame(
        {
            "dataset": [spec.name] * len(present),
            "class_name": names,
            "entry": [f"{spec.name}{ENTRY_SEPARATOR}{name}" for name in names],
            "n": n,
            "correct": correct,
            "accuracy": [hits / count for hits, count in zip(correct, n)],
        },
        schema=per_class_schema(),
    )
