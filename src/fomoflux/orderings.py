"""The stream orderings the FoMo-in-Flux paper studies, and cutting an ordered stream into tasks by sample count.

Every ordering is a pure function that returns a *new* list: a permutation of its input entries
(``DATASET+++classname``), never dropping or duplicating one. Randomness comes only from the ``seed`` argument
(numpy ``default_rng``), so the same inputs always give the same stream.

Orderings (names as in the reference release's ``streams/`` files):

* :func:`random_order` — a seeded permutation (``random_sequence_k``).
* :func:`dataset_incremental` — datasets by release year, each one contiguous block (``time_incremental_dschunked_k``).
* :func:`time_incremental` — year groups in order, classes of same-year datasets interleaved (``time_incremental_rsagg_k``).
* :func:`frequency_order` — rare concepts (in the pretraining pool's captions) first (``frequency_sequence_1``);
  the counts come from :func:`concept_frequencies`.
* :func:`easy_to_hard` — highest base-model zero-shot accuracy first (``performance_sequence_1``); the accuracies
  come from :func:`per_class_accuracy`.
* :func:`similarity_chain` — a nearest-neighbour walk over class text embeddings (``similarity_sequence_k``); the
  embeddings come from :func:`class_text_embeddings`.
* :func:`reverse` — any of the above backwards (``*_reverse_1``).

:func:`chunk_by_samples` cuts an ordered stream into tasks of (nearly) equal training-sample totals, an alternative
to ``fomoflux.stream.chunk``'s cut by class count.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fomoflux.data.registry import ENTRY_SEPARATOR, DatasetSpec, split_entry
from fomoflux.errors import ConfigError, DataError

if TYPE_CHECKING:
    import polars as pl
    import torch

    from fomoflux.data.sampleset import SampleSet

# torch, polars, pyarrow and the evaluation code are imported where they are used: the plan-time orderings (random,
# dataset- and time-incremental) run inside every Snakefile parse and every job's plan rebuild, which must not pay
# for importing torch.

__all__ = [
    "chunk_by_samples",
    "class_text_embeddings",
    "concept",
    "concept_frequencies",
    "dataset_incremental",
    "easy_to_hard",
    "frequency_order",
    "per_class_accuracy",
    "per_class_schema",
    "random_order",
    "reverse",
    "similarity_chain",
    "time_incremental",
]

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

# A "word" for concept matching: a maximal run of Unicode letters and digits (RE2 syntax, run inside duckdb).
# Everything else (spaces, punctuation, '_', '-', apostrophes) separates words, for captions and concepts alike.
WORD_PATTERN = r"[\pL\pN]+"
_SEPARATORS = re.compile(r"[\s_\-]+")


# --------------------------------------------------------------------------------------------------------------------
# Validation and seeded generators
# --------------------------------------------------------------------------------------------------------------------


def _check_seed(seed: int) -> int:
    """The seed as an int; a negative or non-integer seed is a ConfigError (numpy's SeedSequence needs >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"ordering seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _rng(seed: int, *salt: int) -> np.random.Generator:
    """A generator for ``seed`` alone (same stream as ``default_rng(seed)``) or for ``seed`` mixed with ``salt``.

    The salt goes into numpy's SeedSequence as further entropy words rather than being added to the seed, so two
    different (seed, salt) pairs never collide the way ``seed + salt`` could.
    """
    seed = _check_seed(seed)
    return np.random.default_rng([seed, *salt] if salt else seed)


def _name_hash(name: str) -> int:
    """A stable 64-bit hash of a dataset name (Python's ``hash()`` is salted per process, so it is unusable here)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def _check_unique(entries: Sequence[str], where: str) -> list[str]:
    """The entries as a list; an entry given twice is a ConfigError naming it (a stream holds each class once)."""
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        if entry in seen:
            raise ConfigError(f"{where}: entry {position} {entry!r} occurs twice")
        seen.add(entry)
    return list(entries)


def _check_unique_specs(specs: Sequence[DatasetSpec], where: str) -> None:
    names = [spec.name for spec in specs]
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise ConfigError(f"{where}: dataset(s) given more than once: {dupes}")


def _seeded_ranks(count: int, seed: int) -> np.ndarray:
    """A seeded random rank per position, used as the tie-break key of the sorted orderings."""
    return _rng(seed).permutation(count)


# --------------------------------------------------------------------------------------------------------------------
# Orderings by dataset and year
# --------------------------------------------------------------------------------------------------------------------


def random_order(entries: Sequence[str], seed: int) -> list[str]:
    """A seeded permutation of ``entries`` (``numpy.random.default_rng(seed).permutation``).

    Raises ConfigError for a negative seed or an entry given twice.
    """
    pool = _check_unique(entries, "random_order")
    permutation = _rng(seed).permutation(len(pool))
    return [pool[i] for i in permutation]


def dataset_incremental(specs: Sequence[DatasetSpec], seed: int) -> list[str]:
    """Each dataset's ``entries()`` as one contiguous block, blocks ordered by (year, given order).

    Datasets without a year come after all dated ones, in their given order (the sort is stable). Classes inside a
    block are shuffled by a generator seeded from ``seed`` and the dataset's name, so a block's order does not
    change when other datasets are added or removed. Raises ConfigError for a dataset given twice or a bad seed.
    """
    _check_seed(seed)
    _check_unique_specs(specs, "dataset_incremental")
    ordered = sorted(specs, key=lambda spec: (spec.year is None, spec.year or 0))
    stream: list[str] = []
    for spec in ordered:
        block = spec.entries()
        permutation = _rng(seed, _name_hash(spec.name)).permutation(len(block))
        stream.extend(block[i] for i in permutation)
    return stream


def time_incremental(specs: Sequence[DatasetSpec], seed: int) -> list[str]:
    """Year groups in ascending order; inside a group, the classes of all its datasets interleaved by one shuffle.

    Each group is shuffled by a generator seeded from ``seed`` and the year, so a year's order does not change when
    datasets of other years are added. Raises ConfigError for a dataset without a year (naming it), a dataset given
    twice, or a bad seed.
    """
    _check_seed(seed)
    _check_unique_specs(specs, "time_incremental")
    undated = [spec.name for spec in specs if spec.year is None]
    if undated:
        raise ConfigError(f"time_incremental: dataset(s) {undated} have no release year (DatasetSpec.year)")
    groups: dict[int, list[str]] = {}
    for spec in specs:
        groups.setdefault(int(spec.year), []).extend(spec.entries())
    stream: list[str] = []
    for year in sorted(groups):
        group = groups[year]
        permutation = _rng(seed, year).permutation(len(group))
        stream.extend(group[i] for i in permutation)
    return stream


def reverse(entries: Sequence[str]) -> list[str]:
    """The entries in reverse order (the paper's ``*_reverse`` streams)."""
    return list(reversed(entries))


# --------------------------------------------------------------------------------------------------------------------
# Concept frequency in the pretraining pool
# --------------------------------------------------------------------------------------------------------------------


def concept(classname: str) -> str:
    """The concept text of a class name: lowercase, ``_`` and ``-`` read as spaces, runs of spaces collapsed.

    ``"Golden_Retriever"`` -> ``"golden retriever"``; ``"t-shirt"`` -> ``"t shirt"``.
    """
    return _SEPARATORS.sub(" ", classname.lower()).strip()


def _check_manifests(pool_manifests: Sequence[Path | str]) -> list[str]:
    """The manifest paths as strings; a missing file, or one without a ``captions`` column, is a DataError naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not pool_manifests:
        raise ConfigError("concept_frequencies: no pool manifests given")
    paths = []
    for manifest in pool_manifests:
        path = Path(manifest)
        if not path.is_file():
            raise DataError(f"pool manifest {path} does not exist")
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError, ValueError) as err:  # corrupt or truncated file
            raise DataError(f"pool manifest {path} is not a readable parquet file: {err}") from None
        if "captions" not in names:
            raise DataError(f"pool manifest {path} has no 'captions' column (columns: {names})")
        paths.append(str(path))
    return paths


# Counting in one query. Both captions and concepts are split into words by WORD_PATTERN, so matching is
# case-insensitive and on word boundaries by construction. Rather than pairing every caption with every concept, the
# query keeps only caption positions whose word starts some concept (a hash semi-join), builds at those positions the
# n-grams of the lengths that concepts actually have, and hash-joins them on the concept's phrase: the work grows
# with the number of words in the pool, not with captions x concepts.
_FREQUENCY_SQL = """
WITH concept_words AS (
    SELECT concept, regexp_extract_all(lower(concept), $pattern) AS words FROM concept_input
),
concept_table AS (
    SELECT concept, array_to_string(words, ' ') AS phrase, words[1] AS first_word, len(words) AS n_words
    FROM concept_words
),
first_words AS (SELECT DISTINCT first_word FROM concept_table),
lengths AS (SELECT DISTINCT n_words FROM concept_table),
caption_words AS (
    SELECT filename AS file, file_row_number AS row_id,
           regexp_extract_all(lower(unnest(captions)), $pattern) AS words
    FROM read_parquet($files, filename = true, file_row_number = true, union_by_name = true)
),
positions AS (
    SELECT file, row_id, words, unnest(range(1, len(words) + 1)) AS pos FROM caption_words
),
starts AS (
    SELECT * FROM positions WHERE words[pos] IN (SELECT first_word FROM first_words)
),
ngrams AS (
    SELECT s.file, s.row_id, l.n_words, array_to_string(s.words[s.pos : s.pos + l.n_words - 1], ' ') AS phrase
    FROM starts s CROSS JOIN lengths l
    WHERE s.pos + l.n_words - 1 <= len(s.words)
),
matches AS (
    SELECT DISTINCT c.concept, g.file, g.row_id
    FROM ngrams g JOIN concept_table c ON c.n_words = g.n_words AND c.phrase = g.phrase
)
SELECT concept, count(*) AS samples FROM matches GROUP BY concept
"""


def _concept_words(concepts: Iterable[str]) -> list[str]:
    """The distinct concepts; one without any word (empty, only punctuation) is a ConfigError naming it."""
    distinct = list(dict.fromkeys(concepts))
    for text in distinct:
        if not isinstance(text, str) or not re.search(r"[^\W_]", text):
            raise ConfigError(f"concept_frequencies: concept {text!r} has no word to match")
    return distinct


def concept_frequencies(
    pool_manifests: Sequence[Path | str], concepts: Sequence[str], *, threads: int | None = None
) -> dict[str, int]:
    """For each concept, the number of pool *samples* with a caption that contains it as a whole word sequence.

    Words are maximal runs of Unicode letters and digits, compared in lowercase, so ``"cat"`` matches ``"A Cat!"``
    and ``"cat's"`` but not ``"category"``, and ``"hot dog"`` matches ``"hot-dog"``. A sample (one row of a manifest,
    with its ``captions`` list) counts at most once per concept however many of its captions, or how often one
    caption, mention it: the pool's images are the unit of pretraining exposure, and a sample's extra captions
    describe the same image. One duckdb query over all manifests; ``threads`` caps duckdb's threads (None: its
    default, all cores).

    Returns ``{concept: count}`` for every given concept (0 when absent), keyed by the concept string as given.
    Raises DataError for a missing or unreadable manifest or one without ``captions``; ConfigError for no manifests
    or a concept without any word.
    """
    import duckdb
    import pyarrow as pa

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"concept_frequencies: threads must be an integer >= 1, got {threads!r}")
    paths = _check_manifests(pool_manifests)
    distinct = _concept_words(concepts)
    if not distinct:
        return {}
    con = duckdb.connect()
    try:
        if threads is not None:
            con.execute(f"SET threads = {threads}")
        con.register("concept_input", pa.table({"concept": pa.array(distinct, pa.string())}))
        rows = con.execute(_FREQUENCY_SQL, {"pattern": WORD_PATTERN, "files": paths}).fetchall()
    except duckdb.Error as err:
        raise DataError(f"concept_frequencies: reading pool manifests {paths} failed: {err}") from None
    finally:
        con.close()
    counts = dict.fromkeys(distinct, 0)
    counts.update({text: int(samples) for text, samples in rows})
    return {text: counts[text] for text in concepts}


# --------------------------------------------------------------------------------------------------------------------
# Orderings by a per-entry score
# --------------------------------------------------------------------------------------------------------------------


def _scores(
    entries: Sequence[str], values: Mapping[str, float], what: str, where: str, *, allow_negative: bool
) -> np.ndarray:
    """``values[entry]`` per entry as float64.

    Raises ConfigError for an entry without a value (naming it); DataError for a NaN value, or a negative one unless
    ``allow_negative``.
    """
    out = np.empty(len(entries), dtype=np.float64)
    for position, entry in enumerate(entries):
        if entry not in values:
            raise ConfigError(f"{where}: entry {position} {entry!r} has no {what}")
        value = float(values[entry])
        if math.isnan(value) or (value < 0 and not allow_negative):
            need = "a number" if allow_negative else "a number >= 0"
            raise DataError(f"{where}: entry {entry!r} has {what} {values[entry]!r} (need {need})")
        out[position] = value
    return out


def _sorted_by(entries: list[str], keys: np.ndarray, seed: int) -> list[str]:
    """Entries by ascending ``keys``, equal keys in a seeded random order."""
    ties = _seeded_ranks(len(entries), seed)
    order = np.lexsort((ties, keys))  # the last key is the primary one
    return [entries[i] for i in order]


def frequency_order(entries: Sequence[str], counts: Mapping[str, int], seed: int) -> list[str]:
    """Rare first: entries by ascending ``counts[entry]``, ties in a seeded random order.

    ``counts`` is keyed by entry (map each entry's ``concept`` through :func:`concept_frequencies`). Raises
    ConfigError for an entry without a count (naming it) or given twice; DataError for a negative count.
    """
    pool = _check_unique(entries, "frequency_order")
    return _sorted_by(pool, _scores(pool, counts, "count", "frequency_order", allow_negative=False), seed)


def easy_to_hard(entries: Sequence[str], accuracy: Mapping[str, float], seed: int) -> list[str]:
    """Easy first: entries by descending base-model zero-shot ``accuracy[entry]``, ties in a seeded random order.

    Raises ConfigError for an entry without an accuracy (naming it; see :func:`per_class_accuracy`, which leaves out
    classes without evaluation samples) or given twice; DataError for a NaN accuracy. Any other number is accepted,
    so a caller may rank classes it could not measure last on purpose (e.g. with -1).
    """
    pool = _check_unique(entries, "easy_to_hard")
    return _sorted_by(pool, -_scores(pool, accuracy, "accuracy", "easy_to_hard", allow_negative=True), seed)


# --------------------------------------------------------------------------------------------------------------------
# Similarity chain
# --------------------------------------------------------------------------------------------------------------------


def _normalised_rows(entries: Sequence[str], embeddings: torch.Tensor) -> torch.Tensor:
    """The embeddings as float32 unit rows on the CPU; raises ConfigError for a bad shape, DataError for a row that
    is not finite or is zero (naming its entry)."""
    import torch

    if embeddings.ndim != 2 or embeddings.shape[0] != len(entries):
        raise ConfigError(
            f"similarity_chain: embeddings must be [len(entries)={len(entries)}, D], got {tuple(embeddings.shape)}"
        )
    rows = embeddings.detach().to("cpu", torch.float32)
    bad = ~torch.isfinite(rows).all(dim=1)
    norms = rows.norm(dim=1)
    bad |= norms == 0
    if bool(bad.any()):
        position = int(torch.nonzero(bad)[0])
        raise DataError(f"similarity_chain: embedding of entry {entries[position]!r} is zero or not finite")
    return rows / norms[:, None]


# Rows of the similarity matrix computed per block when collecting candidates: block x N float32 stays near 256 MiB.
_SIMILARITY_BLOCK_ELEMENTS = 1 << 26


def _nearest_candidates(rows: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, its k most similar other rows: (similarities [N, k] descending, indices [N, k]).

    One blocked matrix product (compute-bound, far faster per multiply-add than N separate matrix-vector products).
    """
    import torch

    n = rows.shape[0]
    values = np.empty((n, k), dtype=np.float32)
    indices = np.empty((n, k), dtype=np.int64)
    block = max(1, min(n, _SIMILARITY_BLOCK_ELEMENTS // n))
    with torch.inference_mode():
        for start in range(0, n, block):
            stop = min(start + block, n)
            similarity = rows[start:stop] @ rows.T
            own = torch.arange(stop - start)
            similarity[own, own + start] = float("-inf")  # a row is never its own neighbour
            top = similarity.topk(k, dim=1)
            values[start:stop] = top.values.numpy()
            indices[start:stop] = top.indices.numpy()
    return values, indices


class _UnvisitedRows:
    """The not-yet-visited rows as a compact matrix in original order, for the exact fallback step.

    Visited rows are dropped lazily (when at least an eighth of the compact matrix is stale), so a fallback
    multiplies roughly only what is left, and rows stay in ascending original order, which makes ``argmax``'s
    first maximum the lowest original index.
    """

    def __init__(self, rows: torch.Tensor) -> None:
        import torch

        self.rows = rows
        self.original = torch.arange(rows.shape[0])
        self.compact = rows

    def most_similar(self, current: int, alive: np.ndarray) -> int:
        """The unvisited row most similar to row ``current`` (lowest index on ties)."""
        import torch

        live = torch.from_numpy(alive[self.original.numpy()])
        if int((~live).sum()) * 8 >= len(live):
            self.original, self.compact, live = self.original[live], self.compact[live], live[live]
        with torch.inference_mode():
            similarity = torch.mv(self.compact, self.rows[current])
            similarity.masked_fill_(~live, float("-inf"))
            return int(self.original[int(torch.argmax(similarity))])


def similarity_chain(entries: Sequence[str], embeddings: torch.Tensor, seed: int, *, candidates: int = 32) -> list[str]:
    """A nearest-neighbour chain: start at a seeded random entry, then repeatedly move to the unvisited entry whose
    embedding is most cosine-similar to the current one (ties: the lowest index; similarities in float32).

    ``embeddings`` is [len(entries), D], any scale (rows are normalised here). ``candidates`` only tunes speed, never
    the result: each row's ``candidates`` nearest neighbours are found up front with one blocked matrix product, a
    step takes the best unvisited one when it is provably the best overall (strictly above the row's last
    candidate), and otherwise falls back to one matrix-vector product over the unvisited rows. 18,381 x 512 takes
    seconds on one core, against about half a minute for a matrix-vector product at every step.

    Raises ConfigError for a shape mismatch, candidates < 1, a bad seed or a duplicate entry; DataError for a zero
    or non-finite embedding.
    """
    pool = _check_unique(entries, "similarity_chain")
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ConfigError(f"similarity_chain: candidates must be an integer >= 1, got {candidates!r}")
    rows = _normalised_rows(pool, embeddings)
    rng = _rng(seed)
    if not pool:
        return []
    n = len(pool)
    current = int(rng.integers(n))
    order = [current]
    if n == 1:
        return [pool[current]]
    k = min(candidates, n - 1)
    covers_all = k == n - 1  # every other row is a candidate: no boundary to check
    values, indices = _nearest_candidates(rows, k)
    unvisited = _UnvisitedRows(rows)
    alive = np.ones(n, dtype=bool)
    alive[current] = False
    for _ in range(n - 1):
        open_slots = alive[indices[current]]
        step = -1
        if open_slots.any():
            open_values = values[current][open_slots]
            best = open_values.max()
            # Any row outside the candidates is at most as similar as the last candidate, so a strictly better open
            # candidate is the true maximum; an equal one could tie with a lower-indexed row outside the list.
            if covers_all or best > values[current, -1]:
                step = int(indices[current][open_slots][open_values == best].min())
        if step < 0:
            step = unvisited.most_similar(current, alive)
        alive[step] = False
        order.append(step)
        current = step
    return [pool[i] for i in order]


# --------------------------------------------------------------------------------------------------------------------
# Cutting into tasks by sample count
# --------------------------------------------------------------------------------------------------------------------


def _sample_counts(entries: Sequence[str], samples_per_entry: Mapping[str, int]) -> list[int]:
    counts = []
    for position, entry in enumerate(entries):
        if entry not in samples_per_entry:
            raise ConfigError(f"chunk_by_samples: entry {position} {entry!r} has no training-sample count")
        count = samples_per_entry[entry]
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise DataError(f"chunk_by_samples: entry {entry!r} has sample count {count!r} (need an integer >= 0)")
        counts.append(int(count))
    return counts


def _nearest_boundary(prefix: Sequence[int], target_num: int, target_den: int, low: int, high: int) -> int:
    """The index i in [low, high] whose prefix total is nearest to target_num / target_den (the earlier on a tie).

    Exact integer arithmetic: prefix[i] * den is compared with num, so no float rounding moves a cut.
    """
    best, best_gap = low, abs(prefix[low] * target_den - target_num)
    for i in range(low + 1, high + 1):
        gap = abs(prefix[i] * target_den - target_num)
        if gap < best_gap:
            best, best_gap = i, gap
        elif prefix[i] * target_den > target_num:
            break  # prefix totals only grow from here: every later gap is larger
    return best


def chunk_by_samples(entries: Sequence[str], samples_per_entry: Mapping[str, int], tasks: int) -> list[tuple[str, ...]]:
    """Cut the ordered stream into ``tasks`` contiguous, non-empty chunks of nearly equal training-sample totals.

    Cut k (k = 1..T-1) goes at the entry boundary whose running sample total is nearest to k/T of the stream's
    total (the earlier boundary on a tie), moved just enough to keep every chunk non-empty: at least one entry after
    the previous cut, and at least one entry left for each remaining task. Without that clamping each chunk's total
    is within one entry's count of total/T.

    Raises ConfigError for tasks < 1, tasks > len(entries), or an entry without a count (naming it); DataError for a
    negative count or a stream whose counts are all zero.
    """
    if isinstance(tasks, bool) or not isinstance(tasks, (int, np.integer)) or tasks < 1:
        raise ConfigError(f"chunk_by_samples: tasks must be an integer >= 1, got {tasks!r}")
    if tasks > len(entries):
        raise ConfigError(f"chunk_by_samples: a stream of {len(entries)} entries cannot be cut into {tasks} tasks")
    counts = _sample_counts(entries, samples_per_entry)
    prefix = [0]
    for count in counts:
        prefix.append(prefix[-1] + count)
    total = prefix[-1]
    if total == 0:
        raise DataError(f"chunk_by_samples: all {len(entries)} entries have 0 training samples")
    cuts = [0]
    for k in range(1, tasks):
        low = cuts[-1] + 1
        high = len(entries) - (tasks - k)
        cuts.append(_nearest_boundary(prefix, k * total, tasks, low, high))
    cuts.append(len(entries))
    return [tuple(entries[start:stop]) for start, stop in itertools.pairwise(cuts)]


# --------------------------------------------------------------------------------------------------------------------
# Inputs of the model-based orderings
# --------------------------------------------------------------------------------------------------------------------


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


def class_text_embeddings(
    model, tokenizer, specs: Sequence[DatasetSpec], entries: Sequence[str], *, device="cpu"
) -> torch.Tensor:
    """L2-normalised text embeddings [len(entries), D] (float32, on ``device``) of each entry's class prompt (its
    dataset's template), row i for entry i. Encoded once per dataset with ``evaluate.class_embeddings``.

    Raises ConfigError for no entries, a malformed entry, an entry whose dataset is not among ``specs`` or whose
    class is not one of that dataset's classes (naming the entry), or a dataset given twice.
    """
    import torch
    
    from fomoflux.evaluate import class_embeddings

    if not entries:
        raise ConfigError("class_text_embeddings: no entries")
    _check_unique_specs(specs, "class_text_embeddings")
    by_name = {spec.name: spec for spec in specs}
    positions: dict[str, list[int]] = {}
    classes: dict[str, list[str]] = {}
    for position, entry in enumerate(entries):
        dataset, classname = split_entry(entry)
        if dataset not in by_name:
            raise ConfigError(f"class_text_embeddings: entry {entry!r}: dataset {dataset!r} is not among the specs")
        if classname not in by_name[dataset].classnames:
            raise ConfigError(f"class_text_embeddings: entry {entry!r}: dataset {dataset!r} has no such class")
        positions.setdefault(dataset, []).append(position)
        classes.setdefault(dataset, []).append(classname)
    device = torch.device(device)
    out: torch.Tensor | None = None
    for dataset, rows in positions.items():
        emb = class_embeddings(model, tokenizer, classes[dataset], by_name[dataset].prompt, device)
        if out is None:
            out = torch.empty(len(entries), emb.shape[1], dtype=torch.float32, device=device)
        out[torch.tensor(rows, device=device)] = emb
    assert out is not None  # entries is non-empty, so some dataset was encoded
    return out
