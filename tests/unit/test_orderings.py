"""Stream orderings (fomoflux.orderings): permutations, seeding, the year/dataset structure, concept counting in real
parquet manifests, the similarity chain on constructed embeddings, chunking by sample count, and the model-based
inputs on a real (micro, randomly initialised) open_clip model."""

from __future__ import annotations

import itertools
import math
import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from toy import MICRO

from fomoflux.data.registry import DatasetSpec
from fomoflux.data.sampleset import SampleSet
from fomoflux.data.shards import MANIFEST_SCHEMA
from fomoflux.errors import ConfigError, DataError
from fomoflux.evaluate import class_embeddings, evaluate_classification
from fomoflux.model import create_model
from fomoflux.orderings import (
    chunk_by_samples,
    class_text_embeddings,
    concept,
    concept_frequencies,
    dataset_incremental,
    easy_to_hard,
    frequency_order,
    per_class_accuracy,
    random_order,
    reverse,
    similarity_chain,
    time_incremental,
)
from fomoflux.preprocess import Normalizer
from fomoflux.stream import chunk


def _spec(name: str, n_classes: int, year: int | None = None, prompt: str = "a photo of a {}.", **extra) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        kind="classification",
        role="adaptation",
        classnames=tuple(f"{name.lower()} class {i}" for i in range(n_classes)),
        prompt=prompt,
        source={"generate": {}},
        year=year,
        **extra,
    )


def _entries(n: int, dataset: str = "DS") -> list[str]:
    return [f"{dataset}+++c{i}" for i in range(n)]


def _dataset_runs(stream: list[str]) -> list[tuple[str, int]]:
    """(dataset, run length) for each maximal run of consecutive entries of one dataset."""
    names = [entry.split("+++")[0] for entry in stream]
    return [(name, len(list(run))) for name, run in itertools.groupby(names)]


# ----------------------------------------------------------------------------------------------------------------------
# random_order, reverse
# ----------------------------------------------------------------------------------------------------------------------


def test_random_order_is_a_seeded_permutation():
    entries = _entries(50)
    a = random_order(entries, seed=3)
    assert sorted(a) == sorted(entries) and a != entries
    assert a == random_order(entries, seed=3)
    assert a != random_order(entries, seed=4)
    # the same permutation numpy gives for this seed (and stream.py's "random" ordering)
    assert a == [entries[i] for i in np.random.default_rng(3).permutation(50)]
    assert entries == _entries(50)  # the input is not modified


def test_random_order_rejects_duplicates_and_bad_seeds():
    with pytest.raises(ConfigError, match=r"'DS\+\+\+c1' occurs twice"):
        random_order(["DS+++c0", "DS+++c1", "DS+++c1"], seed=0)
    with pytest.raises(ConfigError, match="-1"):
        random_order(_entries(3), seed=-1)


def test_reverse():
    entries = _entries(4)
    assert reverse(entries) == ["DS+++c3", "DS+++c2", "DS+++c1", "DS+++c0"]
    assert reverse(reverse(entries)) == entries


# ----------------------------------------------------------------------------------------------------------------------
# dataset_incremental, time_incremental
# ----------------------------------------------------------------------------------------------------------------------


def test_dataset_incremental_blocks_in_year_order_then_undated():
    specs = [_spec("A", 10, 2015), _spec("B", 12, 2010), _spec("C", 8, None), _spec("D", 9, 2010), _spec("E", 5, None)]
    stream = dataset_incremental(specs, seed=0)
    assert sorted(stream) == sorted(e for s in specs for e in s.entries())
    # each dataset one contiguous block: B and D (2010, given order), A (2015), then undated C, E in given order
    assert _dataset_runs(stream) == [("B", 12), ("D", 9), ("A", 10), ("C", 8), ("E", 5)]
    blocks = {name: [e for e in stream if e.startswith(name + "+++")] for name in "ABCDE"}
    assert any(blocks[s.name] != s.entries() for s in specs)  # classes are shuffled inside blocks


def test_dataset_incremental_seeding_is_per_dataset():
    specs = [_spec("A", 30, 2015), _spec("B", 30, 2010)]
    first = dataset_incremental(specs, seed=1)
    assert first == dataset_incremental(specs, seed=1)
    assert first != dataset_incremental(specs, seed=2)
    # a block's inner order depends on the seed and its dataset only: adding a dataset leaves it unchanged
    with_more = dataset_incremental([*specs, _spec("Z", 7, 2012)], seed=1)
    for name in "AB":
        assert [e for e in with_more if e.startswith(name)] == [e for e in first if e.startswith(name)]
    # equal-sized datasets get different shuffles (the name is part of the seed)
    a = [int(e.rsplit(" ", 1)[1]) for e in first if e.startswith("A")]
    b = [int(e.rsplit(" ", 1)[1]) for e in first if e.startswith("B")]
    assert a != b


def test_dataset_incremental_leaves_out_unstreamed_and_rejects_duplicates():
    spec = _spec("A", 5, 2015, unstreamed=("a class 2",))
    assert sorted(dataset_incremental([spec], seed=0)) == sorted(spec.entries())
    assert len(dataset_incremental([spec], seed=0)) == 4
    with pytest.raises(ConfigError, match="'A'"):
        dataset_incremental([spec, _spec("A", 3, 2016)], seed=0)


def test_time_incremental_groups_years_and_interleaves_same_year_datasets():
    specs = [
        _spec("A", 20, 2012), _spec("B", 20, 2010), _spec("C", 20, 2012), _spec("D", 20, 2010), _spec("E", 5, 2011)
    ]
    stream = time_incremental(specs, seed=0)
    assert sorted(stream) == sorted(e for s in specs for e in s.entries())
    year_of = {s.name: s.year for s in specs}
    years = [year_of[e.split("+++")[0]] for e in stream]
    assert years == sorted(years)  # year groups in ascending order, each contiguous
    group_2010 = stream[:40]
    assert {e.split("+++")[0] for e in group_2010} == {"B", "D"}
    assert len(_dataset_runs(group_2010)) > 5  # B and D interleaved, not two blocks
    assert len(_dataset_runs(stream[45:])) > 5  # A and C likewise
    assert stream == time_incremental(specs, seed=0)
    assert stream != time_incremental(specs, seed=1)
    # a year's order depends on the seed and that year's datasets only
    fewer = time_incremental([s for s in specs if s.year != 2012], seed=0)
    assert fewer == stream[:45]


def test_time_incremental_needs_every_year():
    with pytest.raises(ConfigError, match=r"\['NOYEAR'\]"):
        time_incremental([_spec("A", 3, 2010), _spec("NOYEAR", 3, None)], seed=0)


# ----------------------------------------------------------------------------------------------------------------------
# concept, concept_frequencies
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "classname, expected",
    [
        ("Golden_Retriever", "golden retriever"),
        ("t-shirt", "t shirt"),
        ("  Sea   Lion ", "sea lion"),
        ("jack-o'-lantern", "jack o' lantern"),
        ("A__B--c", "a b c"),
    ],
)
def test_concept(classname, expected):
    assert concept(classname) == expected


def _write_manifest(path, captions_per_sample: list[list[str] | None]) -> None:
    """A real manifest with the project's MANIFEST_SCHEMA (only the caption columns matter here)."""
    n = len(captions_per_sample)
    table = pa.table(
        {
            "dataset": ["pool"] * n,
            "split": ["train"] * n,
            "index": list(range(n)),
            "key": [f"pool/train/{i:08d}" for i in range(n)],
            "shard": ["pool/train-000000.tar"] * n,
            "class_id": [-1] * n,
            "class_name": [None] * n,
            "caption": [c[0] if c else None for c in captions_per_sample],
            "captions": captions_per_sample,
            "image_format": ["png"] * n,
            **{name: [0] * n for name in MANIFEST_SCHEMA.names[10:]},  # image size and member offsets
        },
        schema=MANIFEST_SCHEMA,
    )
    pq.write_table(table, path)


def _reference_frequencies(captions_per_sample: list[list[str] | None], concepts: list[str]) -> dict[str, int]:
    """Plain python: a sample counts once if any caption holds the concept's words consecutively."""

    def words(text: str) -> list[str]:
        return re.findall(r"[^\W_]+", text.lower())

    counts = {}
    for text in concepts:
        target = words(text)
        n = len(target)
        hits = 0
        for captions in captions_per_sample:
            caption_words = [words(c) for c in captions or []]
            if any(w[i : i + n] == target for w in caption_words for i in range(len(w) - n + 1)):
                hits += 1
        counts[text] = hits
    return counts


POOL_A = [
    ["A cat sits on the mat.", "a small CAT"],  # "cat" twice in one sample: counts once
    ["The category of this image is unclear"],  # "cat" inside "category": no match
    ["a hot dog stand", "dogs playing"],  # multi-word "hot dog"; "dog" does not match "dogs"
    ["Hot-dog! and a Cat's toy"],  # punctuation splits words; "cat's" holds the word "cat"
    ["hot water, dog bowl"],  # "hot" and "dog" with "water" between: no "hot dog", but "water dog" (comma splits)
    None,  # a sample without captions holds nothing
]
POOL_B = [
    ["Golden retriever on a beach", "a dog"],
    ["golden retrievers"],  # plural is another word
    ["a café crème", "CAFÉ"],  # unicode letters, case folded
    ["t-shirt with a hot\tdog print"],  # tabs are separators too
]
CONCEPTS = ["cat", "hot dog", "dog", "golden retriever", "café", "t shirt", "category", "hot", "water dog", "zebra"]


def test_concept_frequencies_matches_a_python_reference(tmp_path):
    _write_manifest(tmp_path / "a.parquet", POOL_A)
    _write_manifest(tmp_path / "b.parquet", POOL_B)
    counts = concept_frequencies([tmp_path / "a.parquet", tmp_path / "b.parquet"], CONCEPTS, threads=1)
    assert counts == _reference_frequencies(POOL_A + POOL_B, CONCEPTS)
    assert counts == {
        "cat": 2,
        "hot dog": 3,
        "dog": 5,
        "golden retriever": 1,
        "café": 1,
        "t shirt": 1,
        "category": 1,
        "hot": 4,
        "water dog": 1,
        "zebra": 0,
    }


def test_concept_frequencies_normalises_concepts_and_keeps_given_keys(tmp_path):
    _write_manifest(tmp_path / "a.parquet", POOL_A)
    counts = concept_frequencies([tmp_path / "a.parquet"], ["Hot-Dog", "CAT", "CAT"], threads=1)
    assert counts == {"Hot-Dog": 2, "CAT": 2}


def test_concept_frequencies_random_text_vs_reference(tmp_path):
    rng = np.random.default_rng(0)
    vocab = ["red", "fox", "red fox", "a", "sea", "lion", "sea-lion", "Lion!", "of", "the", "sea_lion"]
    pool = [
        [" ".join(rng.choice(vocab, rng.integers(1, 9))) for _ in range(rng.integers(1, 4))] for _ in range(300)
    ]
    concepts = ["red fox", "fox", "sea lion", "lion", "the sea lion", "of the", "a red fox of the sea"]
    _write_manifest(tmp_path / "r.parquet", pool)
    assert concept_frequencies([tmp_path / "r.parquet"], concepts, threads=1) == _reference_frequencies(pool, concepts)


def test_concept_frequencies_errors(tmp_path):
    _write_manifest(tmp_path / "a.parquet", POOL_A)
    with pytest.raises(DataError, match="missing.parquet"):
        concept_frequencies([tmp_path / "a.parquet", tmp_path / "missing.parquet"], ["cat"])
    pq.write_table(pa.table({"caption": ["a cat"]}), tmp_path / "nocaps.parquet")
    with pytest.raises(DataError, match=r"nocaps.parquet has no 'captions'"):
        concept_frequencies([tmp_path / "nocaps.parquet"], ["cat"])
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="junk.parquet"):
        concept_frequencies([tmp_path / "junk.parquet"], ["cat"])
    with pytest.raises(ConfigError, match="'!!'"):
        concept_frequencies([tmp_path / "a.parquet"], ["cat", "!!"])
    with pytest.raises(ConfigError, match="no pool manifests"):
        concept_frequencies([], ["cat"])


def test_concept_frequencies_timing_200k_captions_5k_concepts(tmp_path):
    """Prints the time; the count of one planted concept is checked exactly."""
    rng = np.random.default_rng(1)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    n = 200_000
    lengths = rng.integers(6, 16, n)
    words = vocab[np.minimum(rng.zipf(1.3, int(lengths.sum())), len(vocab) - 1)]
    captions = [" ".join(w) for w in np.split(words, np.cumsum(lengths)[:-1])]
    planted = rng.choice(n, 777, replace=False)
    for i in planted:
        captions[i] += " planted concept"
    pa_captions = pa.array([[c] for c in captions], pa.list_(pa.string()))
    pq.write_table(pa.table({"captions": pa_captions}), tmp_path / "pool.parquet")
    concepts = list({" ".join(vocab[rng.integers(0, 3000, rng.integers(1, 4))]) for _ in range(5_000)})
    concepts.append("planted concept")
    start = time.perf_counter()
    counts = concept_frequencies([tmp_path / "pool.parquet"], concepts, threads=1)
    print(f"\nconcept_frequencies: {n} captions x {len(concepts)} concepts in {time.perf_counter() - start:.2f} s")
    assert counts["planted concept"] == 777
    assert len(counts) == len(concepts)


# ----------------------------------------------------------------------------------------------------------------------
# frequency_order, easy_to_hard
# ----------------------------------------------------------------------------------------------------------------------


def test_frequency_order_rare_first_with_seeded_ties():
    entries = _entries(40)
    counts = {e: (i % 4) * 10 for i, e in enumerate(entries)}  # four tie groups of ten
    ordered = frequency_order(entries, counts, seed=0)
    assert sorted(ordered) == sorted(entries)
    assert [counts[e] for e in ordered] == sorted(counts.values())
    assert ordered == frequency_order(entries, counts, seed=0)
    other = frequency_order(entries, counts, seed=1)
    assert other != ordered and [counts[e] for e in other] == sorted(counts.values())
    distinct = {e: 100 - i for i, e in enumerate(entries)}  # no ties: the seed cannot matter
    assert frequency_order(entries, distinct, seed=0) == frequency_order(entries, distinct, seed=5) == entries[::-1]


def test_frequency_order_errors():
    with pytest.raises(ConfigError, match=r"'DS\+\+\+c2' has no count"):
        frequency_order(_entries(3), {"DS+++c0": 1, "DS+++c1": 2}, seed=0)
    with pytest.raises(DataError, match=r"'DS\+\+\+c0' has count -1"):
        frequency_order(_entries(1), {"DS+++c0": -1}, seed=0)


def test_easy_to_hard_highest_accuracy_first():
    entries = _entries(30)
    accuracy = {e: [0.9, 0.5, 0.1][i % 3] for i, e in enumerate(entries)}
    ordered = easy_to_hard(entries, accuracy, seed=0)
    assert sorted(ordered) == sorted(entries)
    assert [accuracy[e] for e in ordered] == sorted(accuracy.values(), reverse=True)
    assert ordered == easy_to_hard(entries, accuracy, seed=0)
    assert ordered != easy_to_hard(entries, accuracy, seed=1)
    with pytest.raises(ConfigError, match=r"'DS\+\+\+c29' has no accuracy"):
        easy_to_hard(entries, {e: 0.5 for e in entries[:-1]}, seed=0)
    with pytest.raises(DataError, match=r"'DS\+\+\+c0' has accuracy nan"):
        easy_to_hard(entries[:1], {entries[0]: math.nan}, seed=0)
    # a deliberate negative score (an unmeasured class ranked hardest) is accepted and goes last
    assert easy_to_hard(entries[:3], {entries[0]: -1.0, entries[1]: 0.2, entries[2]: 0.7}, seed=0) == [
        entries[2], entries[1], entries[0]
    ]


# ----------------------------------------------------------------------------------------------------------------------
# similarity_chain
# ----------------------------------------------------------------------------------------------------------------------


def _arc_embeddings(n: int) -> torch.Tensor:
    """Points on an arc with strictly growing gaps: from point s the nearest unvisited neighbour is s-1 (its gap is
    smaller than s+1's) until 0, then the walk jumps to s+1 and climbs to the end."""
    gaps = 0.01 + 0.001 * torch.arange(n - 1, dtype=torch.float64)
    angles = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(gaps, 0)])
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).float()


def test_similarity_chain_walks_an_arc_in_known_order():
    n = 40
    entries = _entries(n)
    base = _arc_embeddings(n)
    # shuffle rows (entries with them) so the answer does not follow from index order; scale rows (normalised inside)
    shuffle = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    scale = torch.linspace(0.5, 3.0, n)[:, None]
    shuffled_entries = [entries[i] for i in shuffle]
    chain = similarity_chain(shuffled_entries, base[shuffle] * scale, seed=7)
    start = entries.index(chain[0])
    expected = list(range(start, -1, -1)) + list(range(start + 1, n))
    assert 0 < start < n - 1  # the seeded start is inside the arc, so the walk really turns around
    assert chain == [entries[i] for i in expected]
    assert chain == similarity_chain(shuffled_entries, base[shuffle], seed=7)
    assert chain == similarity_chain(shuffled_entries, base[shuffle], seed=7, candidates=2)


def test_similarity_chain_start_is_seeded():
    entries = _entries(50)
    emb = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    chains = {seed: similarity_chain(entries, emb, seed) for seed in range(6)}
    assert chains[0] == similarity_chain(entries, emb, 0)
    assert len({c[0] for c in chains.values()}) > 1
    assert chains[3][0] == entries[int(np.random.default_rng(3).integers(50))]


def _reference_chain(emb: torch.Tensor, start: int) -> list[int]:
    unit = torch.nn.functional.normalize(emb.double(), dim=1)
    order, visited = [start], {start}
    while len(order) < len(emb):
        sims = (unit @ unit[order[-1]]).tolist()
        best = max((i for i in range(len(emb)) if i not in visited), key=lambda i: (sims[i], -i))
        order.append(best)
        visited.add(best)
    return order


@pytest.mark.parametrize("candidates", [1, 3, 32, 299, 1000])
def test_similarity_chain_matches_a_plain_reference_on_random_embeddings(candidates):
    """Few candidates force many exact fallback steps, 299 covers every row: the chain must not change."""
    entries = _entries(300)
    emb = torch.randn(300, 16, generator=torch.Generator().manual_seed(2))
    chain = similarity_chain(entries, emb, seed=4, candidates=candidates)
    assert sorted(chain) == sorted(entries)
    start = entries.index(chain[0])
    assert chain == [entries[i] for i in _reference_chain(emb, start)]


def test_similarity_chain_on_clustered_embeddings_matches_the_reference():
    gen = torch.Generator().manual_seed(5)
    centres = torch.randn(6, 12, generator=gen)
    emb = centres[torch.arange(240) % 6] + 0.3 * torch.randn(240, 12, generator=gen)
    entries = _entries(240)
    chain = similarity_chain(entries, emb, seed=1, candidates=4)
    assert chain == [entries[i] for i in _reference_chain(emb, entries.index(chain[0]))]


@pytest.mark.parametrize("candidates", [1, 5, 19])
def test_similarity_chain_ties_go_to_the_lowest_index(candidates):
    entries = _entries(20)
    emb = torch.ones(20, 4)  # every pair equally similar
    chain = similarity_chain(entries, emb, seed=0, candidates=candidates)
    start = entries.index(chain[0])
    assert chain == [entries[start]] + [e for i, e in enumerate(entries) if i != start]


def test_similarity_chain_errors_and_small_cases():
    assert similarity_chain([], torch.zeros(0, 3), seed=0) == []
    assert similarity_chain(["DS+++c0"], torch.ones(1, 3), seed=0) == ["DS+++c0"]
    with pytest.raises(ConfigError, match="candidates must be"):
        similarity_chain(_entries(3), torch.ones(3, 3), seed=0, candidates=0)
    with pytest.raises(ConfigError, match=r"\[len\(entries\)=3, D\]"):
        similarity_chain(_entries(3), torch.ones(2, 3), seed=0)
    bad = torch.ones(3, 3)
    bad[1] = 0
    with pytest.raises(DataError, match=r"'DS\+\+\+c1'"):
        similarity_chain(_entries(3), bad, seed=0)
    bad[1] = math.nan
    with pytest.raises(DataError, match=r"'DS\+\+\+c1'"):
        similarity_chain(_entries(3), bad, seed=0)


def test_similarity_chain_timing_5000():
    entries = _entries(5000)
    emb = torch.randn(5000, 512, generator=torch.Generator().manual_seed(3))
    start = time.perf_counter()
    chain = similarity_chain(entries, emb, seed=0)
    print(f"\nsimilarity_chain: 5000 x 512 in {time.perf_counter() - start:.2f} s")
    assert len(set(chain)) == 5000


# ----------------------------------------------------------------------------------------------------------------------
# chunk_by_samples
# ----------------------------------------------------------------------------------------------------------------------


def test_chunk_by_samples_equal_counts_match_class_chunking():
    entries = _entries(40)
    counts = dict.fromkeys(entries, 7)
    assert chunk_by_samples(entries, counts, 8) == chunk(entries, tasks=8)
    assert chunk_by_samples(entries, counts, 1) == [tuple(entries)]
    assert chunk_by_samples(entries, counts, 40) == [(e,) for e in entries]


@pytest.mark.parametrize("seed", range(5))
def test_chunk_by_samples_balances_totals(seed):
    rng = np.random.default_rng(seed)
    entries = _entries(200)
    counts = {e: int(c) for e, c in zip(entries, rng.integers(1, 100, 200))}
    tasks = 7
    chunks = chunk_by_samples(entries, counts, tasks)
    assert len(chunks) == tasks and all(chunks)
    assert [e for c in chunks for e in c] == entries  # contiguous, in order, nothing dropped
    total = sum(counts.values())
    biggest = max(counts.values())
    totals = [sum(counts[e] for e in c) for c in chunks]
    assert all(abs(t - total / tasks) <= biggest for t in totals)
    # far better balanced than cutting by class count
    by_class = [sum(counts[e] for e in c) for c in chunk(entries, tasks=tasks)]
    assert max(totals) - min(totals) <= max(by_class) - min(by_class)


def test_chunk_by_samples_cuts_at_the_nearest_boundary():
    entries = _entries(4)
    # running totals 10, 11, 12, 22: half of 22 is 11 -> cut after the second entry
    counts = dict(zip(entries, [10, 1, 1, 10]))
    assert chunk_by_samples(entries, counts, 2) == [tuple(entries[:2]), tuple(entries[2:])]


def test_chunk_by_samples_keeps_every_chunk_non_empty():
    entries = _entries(6)
    heavy_first = dict(zip(entries, [1000, 1, 1, 1, 1, 1]))
    assert [len(c) for c in chunk_by_samples(entries, heavy_first, 4)] == [1, 1, 1, 3]
    heavy_last = dict(zip(entries, [1, 1, 1, 1, 1, 1000]))
    assert [len(c) for c in chunk_by_samples(entries, heavy_last, 4)] == [3, 1, 1, 1]
    with_zeros = dict(zip(entries, [0, 0, 5, 0, 0, 5]))
    chunks = chunk_by_samples(entries, with_zeros, 2)
    assert [sum(with_zeros[e] for e in c) for c in chunks] == [5, 5] and all(chunks)


def test_chunk_by_samples_errors():
    entries = _entries(3)
    counts = dict.fromkeys(entries, 5)
    with pytest.raises(ConfigError, match="3 entries cannot be cut into 4 tasks"):
        chunk_by_samples(entries, counts, 4)
    with pytest.raises(ConfigError, match=r"'DS\+\+\+c2' has no training-sample count"):
        chunk_by_samples(entries, {"DS+++c0": 1, "DS+++c1": 1}, 2)
    with pytest.raises(ConfigError, match="tasks must be"):
        chunk_by_samples(entries, counts, 0)
    with pytest.raises(DataError, match=r"'DS\+\+\+c0' has sample count -2"):
        chunk_by_samples(entries, {**counts, "DS+++c0": -2}, 2)
    with pytest.raises(DataError, match="0 training samples"):
        chunk_by_samples(entries, dict.fromkeys(entries, 0), 2)


# ----------------------------------------------------------------------------------------------------------------------
# per_class_accuracy, class_text_embeddings (real micro open_clip model)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def micro():
    model, tokenizer = create_model(MICRO, seed=0)
    model.eval()
    return model, tokenizer


def _labelled_set(labels: list[int], seed: int, name: str = "TOY") -> SampleSet:
    gen = torch.Generator().manual_seed(seed)
    n = len(labels)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    keys = [f"{name}/test/{i}" for i in range(n)]
    return SampleSet(images, [(f"image {i}",) for i in range(n)], torch.tensor(labels), keys)


def test_per_class_accuracy_matches_a_direct_computation(micro):
    model, tokenizer = micro
    spec = _spec("TOY", 6, 2020, prompt="a blurry photo of a {}.")
    labels = [0, 0, 1, 3, 3, 3, 4, 5, 5, 0, 1, 4] * 3  # class 2 has no samples
    samples = _labelled_set(labels, seed=0)
    table = per_class_accuracy(model, tokenizer, spec, samples, batch_size=5)
    assert table.columns == ["dataset", "class_name", "entry", "n", "correct", "accuracy"]
    assert table["class_name"].to_list() == [spec.classnames[c] for c in (0, 1, 3, 4, 5)]
    assert table["entry"].to_list() == [f"TOY+++{spec.classnames[c]}" for c in (0, 1, 3, 4, 5)]
    assert table["n"].to_list() == [9, 6, 9, 6, 6]
    # the same predictions computed here from the model directly
    with torch.inference_mode():
        text = model.encode_text(tokenizer([spec.prompt.format(c) for c in spec.classnames]), normalize=True)
        image = model.encode_image(Normalizer.for_model(model)(samples.images), normalize=True)
        predicted = (image @ text.T).argmax(dim=1)
    hits = predicted == samples.class_ids
    expected = [int(hits[samples.class_ids == c].sum()) for c in (0, 1, 3, 4, 5)]
    assert table["correct"].to_list() == expected
    assert table["accuracy"].to_list() == pytest.approx([h / n for h, n in zip(expected, table["n"].to_list())])
    overall = evaluate_classification(model, tokenizer, spec, samples)
    assert table["correct"].sum() / table["n"].sum() == pytest.approx(overall["top1"])


def test_per_class_accuracy_errors(micro):
    model, tokenizer = micro
    spec = _spec("TOY", 3)
    with pytest.raises(DataError, match=r"'TOY/test/1' has class id 3"):
        per_class_accuracy(model, tokenizer, spec, _labelled_set([0, 3], seed=0))
    with pytest.raises(DataError, match=r"'TOY/test/0' has class id -1"):
        per_class_accuracy(model, tokenizer, spec, _labelled_set([-1], seed=0))
    retrieval = DatasetSpec(name="RET", kind="retrieval", role="evaluation", source={"generate": {}})
    with pytest.raises(ConfigError, match="'RET'"):
        per_class_accuracy(model, tokenizer, retrieval, _labelled_set([0], seed=0))


def test_class_text_embeddings_follow_entry_order(micro):
    model, tokenizer = micro
    a = _spec("A", 4, 2010, prompt="a photo of a {}, a type of food.")
    b = _spec("B", 3, 2011, prompt="a sketch of a {}.")
    entries = ["B+++b class 2", "A+++a class 0", "A+++a class 3", "B+++b class 0", "A+++a class 1"]
    emb = class_text_embeddings(model, tokenizer, [a, b], entries)
    assert emb.shape == (5, 64) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    emb_a = class_embeddings(model, tokenizer, a.classnames, a.prompt, "cpu")
    emb_b = class_embeddings(model, tokenizer, b.classnames, b.prompt, "cpu")
    expected = torch.stack([emb_b[2], emb_a[0], emb_a[3], emb_b[0], emb_a[1]])
    assert torch.allclose(emb, expected, atol=1e-5)
    # the dataset's template matters: the same class name under another prompt embeds differently
    other = class_text_embeddings(model, tokenizer, [_spec("A", 4, 2010)], ["A+++a class 0"])
    assert not torch.allclose(other[0], emb[1], atol=1e-3)


def test_class_text_embeddings_errors(micro):
    model, tokenizer = micro
    a = _spec("A", 2)
    with pytest.raises(ConfigError, match=r"'Z\+\+\+x'.*'Z' is not among"):
        class_text_embeddings(model, tokenizer, [a], ["Z+++x"])
    with pytest.raises(ConfigError, match=r"'A\+\+\+nope'.*no such class"):
        class_text_embeddings(model, tokenizer, [a], ["A+++nope"])
    with pytest.raises(ConfigError, match="no entries"):
        class_text_embeddings(model, tokenizer, [a], [])
