"""Evaluation: fixed subsets, zero-shot classification, retrieval recall, the per-dataset results table.

A real (tiny, randomly initialised) open_clip model; no mocks. Spies only count calls into the real objects.
"""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from fomoflux.data.registry import DatasetSpec  # noqa: E402
from fomoflux.data.sampleset import SampleSet  # noqa: E402
from fomoflux.errors import ConfigError, DataError  # noqa: E402
from fomoflux.evaluate import (  # noqa: E402
    class_embeddings,
    evaluate_classification,
    evaluate_datasets,
    evaluate_retrieval,
    retrieval_recall,
    stratified_subset,
    subset_size,
    top1_correct,
)
from fomoflux.preprocess import Normalizer  # noqa: E402

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLASSES = ("cat", "dog", "car", "tree", "boat")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    cfg_dir = tmp_path_factory.mktemp("model_cfg")
    (cfg_dir / "fomoflux-eval-tiny.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = open_clip.create_model("fomoflux-eval-tiny", output_dict=True)
    model.eval()
    tokenizer = open_clip.get_tokenizer("fomoflux-eval-tiny")
    return model, tokenizer


def _spec(name="toy", kind="classification", role="adaptation", classnames=CLASSES):
    return DatasetSpec(name=name, kind=kind, role=role, classnames=classnames, prompt="a photo of a {}.",
                       source={"generate": {}})


def _samples(n, n_classes=None, seed=0, name="toy"):
    n_classes = len(CLASSES) if n_classes is None else n_classes
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    class_ids = torch.randint(0, n_classes, (n,), generator=gen) if n_classes else torch.full((n,), -1)
    return SampleSet(
        images=images,
        captions=[(f"picture number {i} of something", "other") for i in range(n)],
        class_ids=class_ids,
        keys=[f"{name}/test/{i}" for i in range(n)],
    )


# ----------------------------------------------------------------------------------------------------------------------
# stratified_subset
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_samples, n_classes, expected",
    [
        (1000, 10, 300),  # min_size wins
        (5000, 10, 500),  # fraction wins
        (200, 10, 200),  # capped at N
        (2000, 200, 400),  # per_class wins
        (301, 3, 300),  # one short of N: still a draw
    ],
)
def test_subset_size_formula(n_samples, n_classes, expected):
    assert subset_size(n_samples, n_classes) == expected
    idx = stratified_subset(torch.arange(n_samples) % n_classes, seed=1)
    assert idx.numel() == expected
    assert idx.dtype == torch.long


def test_subset_draw_is_pinned():
    # 4 classes of 6, 3, 1 and 10 samples, n = 8: an equal share of 2 per class (the singleton gives its 1), then 1
    # open slot filled from the rest. These indices are what the reference's draw gives for this order and seed.
    ids = torch.tensor([0] * 6 + [1] * 3 + [2] * 1 + [3] * 10)
    assert stratified_subset(ids, seed=0, min_size=8, per_class=1, fraction=0.0).tolist() == [2, 3, 5, 6, 8, 9, 13, 15]
    assert stratified_subset(ids, seed=1, min_size=8, per_class=1, fraction=0.0).tolist() == [1, 2, 6, 8, 9, 12, 13, 17]
    # Default size rule: classes of 500, 200 and 30 -> n = 300, a share of 100 each (class 2 gives all 30), 70 filled.
    ids = torch.cat([torch.full((size,), c) for c, size in enumerate([500, 200, 30])])
    idx = stratified_subset(ids, seed=0)
    assert torch.bincount(ids[idx]).tolist() == [157, 113, 30]
    assert idx[:8].tolist() == [1, 6, 9, 10, 12, 15, 16, 18] and int(idx.sum()) == 128381


def _reference_draw(class_ids: list[int], seed: int) -> list[int]:
    """The reference's subset draw (utils/evaluation.py, commit 3e123d9) spelled out step by step, with its global
    np.random.seed as a RandomState and its fill candidates in ascending order (what its set difference gives
    whenever less than a quarter of the set is drawn before the fill)."""
    import numpy as np

    targets = np.asarray(class_ids)
    classes = np.unique(targets)
    size = min(len(targets), max(2 * len(classes), 300, int(len(targets) * 0.1)))
    rng = np.random.RandomState(seed)
    chosen: list[int] = []
    for c in classes:
        where = np.where(targets == c)[0]
        chosen.extend(rng.choice(where, min(size // len(classes), len(where)), replace=False).tolist())
    if size - len(chosen) > 0:
        rest = sorted(set(range(len(targets))) - set(chosen))
        chosen.extend(rng.choice(rest, size - len(chosen), replace=False).tolist())
    return sorted(chosen)


@pytest.mark.parametrize("seed", [0, 3])
def test_subset_draw_matches_the_reference_equal_share_then_fill(seed):
    gen = torch.Generator().manual_seed(seed)
    balanced = torch.randint(0, 37, (4000,), generator=gen)
    skewed = (torch.rand(2500, generator=gen) ** 4 * 200).long()  # ~200 classes, some of one sample: slots to fill
    for ids in (balanced, skewed):
        idx = stratified_subset(ids, seed=seed)
        assert idx.tolist() == _reference_draw(ids.tolist(), seed)
        counts = torch.bincount(ids[idx], minlength=int(ids.max()) + 1)
        sizes = torch.bincount(ids, minlength=int(ids.max()) + 1)
        share = idx.numel() // int((sizes > 0).sum())
        equal = torch.minimum(sizes, torch.tensor(share))
        assert bool((counts >= equal).all()) and int(equal.sum()) < idx.numel()  # every class its share, then a fill


def test_subset_is_fixed_and_independent_of_other_datasets():
    import numpy as np

    ids = torch.randint(0, 37, (4000,), generator=torch.Generator().manual_seed(3))
    other = torch.randint(0, 5, (900,), generator=torch.Generator().manual_seed(4))
    first = stratified_subset(ids, seed=7)
    assert torch.equal(first, torch.sort(first).values)
    assert first.unique().numel() == first.numel()
    assert 0 <= int(first.min()) and int(first.max()) < ids.numel()
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    for _ in range(3):  # never shrinks, never changes (the reference release's defect), whatever else is drawn
        stratified_subset(other, seed=7)
        assert torch.equal(stratified_subset(ids, seed=7), first)
    assert (np.random.get_state()[1] == state).all(), "the global NumPy state is neither used nor changed"
    torch.manual_seed(99)
    assert torch.equal(stratified_subset(ids.clone(), seed=7), first)
    assert not torch.equal(stratified_subset(ids, seed=8), first)


def test_subset_of_retrieval_sets_is_the_whole_set_and_bad_ids_are_errors():
    # The reference gives every retrieval image a target of its own: C = N, so its size rule keeps every image.
    assert torch.equal(stratified_subset(torch.full((5000,), -1), seed=0), torch.arange(5000))
    assert stratified_subset(torch.empty(0, dtype=torch.long), seed=0).numel() == 0
    with pytest.raises(ValueError, match="class id -1"):
        stratified_subset(torch.cat([torch.full((900,), -1), torch.arange(100) % 4]), seed=0)
    with pytest.raises(ValueError, match=">= -1"):
        stratified_subset(torch.tensor([0, 1, -2]), seed=0)
    with pytest.raises(ValueError, match="fraction"):
        stratified_subset(torch.arange(10), seed=0, fraction=1.5)


# ----------------------------------------------------------------------------------------------------------------------
# metric kernels on constructed embeddings
# ----------------------------------------------------------------------------------------------------------------------


def test_top1_correct_constructed_case():
    gen = torch.Generator().manual_seed(0)
    class_emb = torch.nn.functional.normalize(torch.randn(7, 16, generator=gen), dim=1)
    labels = torch.randint(0, 7, (50,), generator=gen)
    wrong = (labels + 1) % 7
    chosen = torch.where(torch.arange(50) < 31, labels, wrong)
    image_emb = class_emb[chosen] + 0.01 * torch.randn(50, 16, generator=gen)
    assert int(top1_correct(image_emb, class_emb, labels)) == 31
    image_emb[0, 0] = float("nan")  # a NaN row is wrong
    assert int(top1_correct(image_emb, class_emb, labels)) == 30


def _brute_force_recall(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    hits = 0
    for i in range(a.shape[0]):
        scores = [float(a[i] @ b[j]) for j in range(b.shape[0])]
        order = sorted(range(len(scores)), key=lambda j: -scores[j])
        hits += order.index(i) < k
    return hits / a.shape[0]


def test_retrieval_recall_matches_brute_force():
    gen = torch.Generator().manual_seed(4)
    images = torch.nn.functional.normalize(torch.randn(57, 6, generator=gen, dtype=torch.float64), dim=1)
    texts = torch.nn.functional.normalize(images + 0.8 * torch.randn(57, 6, generator=gen, dtype=torch.float64), dim=1)
    result = retrieval_recall(images, texts, ks=(1, 5, 10), chunk=10)  # chunking exercised: 57 = 5·10 + 7
    for k in (1, 5, 10):
        i2t = _brute_force_recall(images, texts, k)
        t2i = _brute_force_recall(texts, images, k)
        assert result[f"i2t_R@{k}"] == pytest.approx(i2t)
        assert result[f"t2i_R@{k}"] == pytest.approx(t2i)
        assert result[f"R@{k}"] == pytest.approx((i2t + t2i) / 2)
    assert 0 < result["R@1"] < result["R@5"] < 1


def test_retrieval_ties_are_pessimistic_and_nan_is_a_miss():
    same = torch.ones(8, 4)
    result = retrieval_recall(same, same)
    assert result["R@1"] == 0.0 and result["R@5"] == 0.0  # 7 tied rivals rank ahead
    eye = torch.eye(6)
    assert retrieval_recall(eye, eye)["R@1"] == 1.0
    broken = eye.clone()
    broken[2] = float("nan")
    assert retrieval_recall(broken, eye)["R@1"] == pytest.approx(5 / 6)


# ----------------------------------------------------------------------------------------------------------------------
# with a real open_clip model
# ----------------------------------------------------------------------------------------------------------------------


def test_class_embeddings_normalised_and_batched(clip):
    model, tokenizer = clip
    calls = []

    def counting_tokenizer(texts):
        calls.append(list(texts))
        return tokenizer(texts)

    emb = class_embeddings(model, counting_tokenizer, CLASSES, "a photo of a {}.", "cpu", batch_size=2)
    assert emb.shape == (len(CLASSES), TINY["embed_dim"])
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(CLASSES)), atol=1e-5)
    assert [len(c) for c in calls] == [2, 2, 1]
    assert calls[0][0] == "a photo of a cat."


def test_class_embeddings_computed_once_per_dataset(clip, monkeypatch):
    model, tokenizer = clip
    token_calls, text_calls = [], []
    original = model.encode_text

    def counting_tokenizer(texts):
        token_calls.append(len(texts))
        return tokenizer(texts)

    def counting_encode_text(*args, **kwargs):
        text_calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "encode_text", counting_encode_text)
    samples = _samples(40)
    evaluate_classification(model, counting_tokenizer, _spec(), samples, batch_size=8)  # 5 image batches
    assert token_calls == [len(CLASSES)] and len(text_calls) == 1
    token_calls.clear(), text_calls.clear()
    evaluate_datasets(
        model, counting_tokenizer, [(_spec("a"), samples), (_spec("b"), _samples(24, seed=1))],
        batch_size=8, device="cpu", progress=False,
    )
    assert token_calls == [len(CLASSES)] * 2 and len(text_calls) == 2


def test_untrained_model_scores_in_unit_interval(clip):
    model, tokenizer = clip
    result = evaluate_classification(model, tokenizer, _spec(), _samples(33), batch_size=16)
    assert set(result) == {"top1", "n"}
    assert result["n"] == 33 and 0.0 <= result["top1"] <= 1.0


def test_classification_matches_per_sample_brute_force(clip):
    """Labels are built from the model's own per-sample predictions: even samples right, odd ones wrong."""
    model, tokenizer = clip
    samples = _samples(48, seed=5)
    normalizer = Normalizer.for_model(model)
    with torch.no_grad():
        text = torch.cat([model.encode_text(tokenizer([f"a photo of a {c}."]), normalize=True) for c in CLASSES])
        logits = torch.cat(
            [
                model.encode_image(normalizer(samples.images[i : i + 1]), normalize=True) @ text.T
                for i in range(len(samples))
            ]
        )
    top2 = logits.topk(2, dim=1)
    clear = (top2.values[:, 0] - top2.values[:, 1]) > 1e-4  # keep samples whose prediction is numerically unambiguous
    assert int(clear.sum()) >= 30
    keep = torch.nonzero(clear).flatten()
    pred = top2.indices[keep, 0]
    labels = torch.where(torch.arange(keep.numel()) % 2 == 0, pred, (pred + 1) % len(CLASSES))
    subset = samples.select(keep)
    subset = SampleSet(subset.images, subset.captions, labels, subset.keys)
    result = evaluate_classification(model, tokenizer, _spec(), subset, batch_size=7)
    assert result["n"] == keep.numel()
    assert result["top1"] == math.ceil(keep.numel() / 2) / keep.numel()


def test_classification_rejects_bad_class_ids(clip):
    model, tokenizer = clip
    samples = _samples(6)
    bad = SampleSet(samples.images, samples.captions, torch.tensor([0, 1, 2, 9, 0, 1]), samples.keys)
    with pytest.raises(DataError, match="toy/test/3"):
        evaluate_classification(model, tokenizer, _spec(), bad)


def test_evaluate_retrieval_and_mode_restored(clip):
    model, tokenizer = clip
    model.train()
    try:
        result = evaluate_retrieval(model, tokenizer, _samples(21, n_classes=0), batch_size=8)
        assert model.training  # restored
    finally:
        model.eval()
    assert set(result) == {"R@1", "R@5", "n"} and result["n"] == 21
    assert 0.0 <= result["R@1"] <= result["R@5"] <= 1.0


def test_evaluate_datasets_table(clip, capsys):
    model, tokenizer = clip
    datasets = [
        (_spec("cls_a"), _samples(20)),
        (_spec("ret_e", kind="retrieval", role="evaluation", classnames=()), _samples(12, n_classes=0)),
        (_spec("cls_e", role="evaluation"), _samples(9, seed=3)),
    ]
    table = evaluate_datasets(model, tokenizer, datasets, batch_size=8, device="cpu", progress=True)
    assert "img" in capsys.readouterr().err  # the tqdm bar goes to stderr
    assert table.columns == ["dataset", "role", "kind", "metric", "value", "n", "primary"]
    assert (table.schema["value"], table.schema["n"], table.schema["primary"]) == (pl.Float64, pl.Int64, pl.Boolean)
    assert table.select("dataset", "metric").rows() == [
        ("cls_a", "top1"), ("ret_e", "R@1"), ("ret_e", "R@5"), ("cls_e", "top1")
    ]
    assert table["primary"].to_list() == [True, False, True, True]
    assert table["n"].to_list() == [20, 12, 12, 9]
    assert table["role"].to_list() == ["adaptation", "evaluation", "evaluation", "evaluation"]
    assert table["value"].is_between(0, 1).all()

    evaluate_datasets(model, tokenizer, datasets[:1], batch_size=8, device="cpu", progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="more than once"):
        evaluate_datasets(model, tokenizer, [datasets[0], datasets[0]], batch_size=8, device="cpu", progress=False)
    pretrain = _spec("pool", kind="pretraining", role="pretraining", classnames=())
    with pytest.raises(ConfigError, match="pool"):
        evaluate_datasets(model, tokenizer, [(pretrain, _samples(3, 0))], batch_size=8, device="cpu", progress=False)


def test_identical_captions_are_one_target_not_competitors():
    """Two images share a caption text: it is encoded once, is a hit for both, and counts twice text->image."""
    from fomoflux.evaluate import caption_pairs, retrieval_recall

    texts, pairs, counts = caption_pairs([("a red circle",), ("a blue square",), ("a red circle",), ("a green star",)])
    assert texts == ["a red circle", "a blue square", "a green star"]
    assert pairs.tolist() == [[0, 0], [1, 1], [2, 0], [3, 2]] and counts.tolist() == [2, 1, 1]
    basis = torch.eye(3, dtype=torch.float64)
    image = basis[torch.tensor([0, 1, 0, 2])]
    grouped = retrieval_recall(image, basis, (1,), pairs=pairs, text_count=counts)
    assert grouped["i2t_R@1"] == 1.0 and grouped["t2i_R@1"] == 1.0
    wrong = basis[torch.tensor([1, 0, 0, 2])]  # image 0 looks like the blue square
    result = retrieval_recall(wrong, basis, (1,), pairs=pairs, text_count=counts)
    assert result["i2t_R@1"] == 0.5  # images 0 and 1 miss
    # text->image: the red circle ties between image 2 (its own) and image 1 (not): pessimistic, a miss, and it
    # stands for two captions; the blue square's best image is image 0, not its own; only the green star hits
    assert result["t2i_R@1"] == pytest.approx(1 / 4)


# A hand-built gallery: 3 images (the unit vectors), 6 captions, image 0 with 2 captions, image 1 with 3, image 2
# with 1; no ties anywhere except where noted, so every rank below can be read off the vectors.
HAND_IMAGES = torch.eye(3, dtype=torch.float64)
HAND_CAPTIONS = torch.tensor([
    [1.0, 0.0, 0.0],  # c0 of image 0: its image first                         -> t2i rank 0
    [0.3, 0.9, 0.1],  # c1 of image 0: image 1 (0.9) before image 0 (0.3)      -> rank 1
    [0.1, 0.8, 0.2],  # c2 of image 1: its image first                         -> rank 0
    [0.1, 0.2, 0.9],  # c3 of image 1: image 2 (0.9) before image 1 (0.2)      -> rank 1
    [0.7, 0.3, 0.0],  # c4 of image 1: image 0 (0.7) before image 1 (0.3)      -> rank 1
    [0.0, 0.5, 0.4],  # c5 of image 2: image 1 (0.5) before image 2 (0.4)      -> rank 1
], dtype=torch.float64)
HAND_OWNER = (0, 0, 1, 1, 1, 2)
# image->text: image 0's best own caption c0 (1.0) beats all -> rank 0; image 1's best own c2 (0.8) is behind c1
# (0.9) -> rank 1; image 2's only c5 (0.4) is behind c3 (0.9) -> rank 1.


def test_retrieval_with_every_caption_on_a_hand_built_case():
    pairs = torch.tensor([[image, caption] for caption, image in enumerate(HAND_OWNER)])
    result = retrieval_recall(HAND_IMAGES, HAND_CAPTIONS, (1, 2, 3), pairs=pairs)
    assert result["i2t_R@1"] == pytest.approx(1 / 3) and result["i2t_R@2"] == 1.0
    assert result["t2i_R@1"] == pytest.approx(2 / 6) and result["t2i_R@2"] == 1.0
    assert result["R@1"] == pytest.approx((1 / 3 + 2 / 6) / 2) and result["R@2"] == result["R@3"] == 1.0
    # With only each image's first caption (what this module did before) the answer differs: c1 and c3, the
    # captions that outrank images 1's and 2's own, are gone, so i2t@1 = 1/3 becomes 1 (and t2i@1 2/3)
    first = [HAND_OWNER.index(i) for i in range(3)]  # c0, c2, c5
    only_first = retrieval_recall(HAND_IMAGES, HAND_CAPTIONS[first], (1,))
    assert only_first["i2t_R@1"] == 1.0 and only_first["t2i_R@1"] == pytest.approx(2 / 3)


def _reference_recall(sim: torch.Tensor, owner: list[int], k: int) -> float:
    """Recall@k as the reference's RecallAtK (utils/metrics.py, pseudope/fomo_in_flux@3e123d9) defines it, written
    out independently: sim is [images, captions], captions grouped by image in image order; text->image over every
    caption, image->text a hit when any own caption is among the top k; the mean of the two."""
    n_images, n_captions = sim.shape
    t2i = sum(owner[c] in sorted(range(n_images), key=lambda i: -float(sim[i, c]))[:k] for c in range(n_captions))
    i2t = 0
    for i in range(n_images):
        top = sorted(range(n_captions), key=lambda c: -float(sim[i, c]))[:k]
        i2t += any(owner[c] == i for c in top)
    return (t2i / n_captions + i2t / n_images) / 2


def test_retrieval_recall_agrees_with_the_reference_definition():
    gen = torch.Generator().manual_seed(11)
    per_image = [1 + int(x) for x in torch.randint(0, 5, (40,), generator=gen)]  # 1 to 5 captions per image
    owner = [i for i, c in enumerate(per_image) for _ in range(c)]
    images = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen, dtype=torch.float64), dim=1)
    noise = torch.randn(len(owner), 8, generator=gen, dtype=torch.float64)
    captions = torch.nn.functional.normalize(images[torch.tensor(owner)] + 0.9 * noise, dim=1)
    pairs = torch.tensor([[image, caption] for caption, image in enumerate(owner)])
    result = retrieval_recall(images, captions, (1, 5, 10), pairs=pairs, chunk=7)
    sim = images @ captions.T
    for k in (1, 5, 10):
        assert result[f"R@{k}"] == pytest.approx(_reference_recall(sim, owner, k)), k
    assert 0 < result["R@1"] < result["R@5"] < result["R@10"] < 1


def test_caption_pairs_and_bad_pairs():
    from fomoflux.evaluate import caption_pairs

    texts, pairs, counts = caption_pairs([("a", "b"), ("c",), ("b", "b")])
    assert texts == ["a", "b", "c"] and pairs.tolist() == [[0, 0], [0, 1], [1, 2], [2, 1]]
    assert counts.tolist() == [1, 3, 1]
    with pytest.raises(ValueError, match="image 1 has no caption"):
        caption_pairs([("a",), ()])
    with pytest.raises(ValueError, match="explicit pairs"):
        retrieval_recall(torch.eye(3), torch.eye(4)[:2, :3])
    with pytest.raises(ValueError, match="outside"):
        retrieval_recall(torch.eye(3), torch.eye(3), pairs=torch.tensor([[0, 3]]))


def test_evaluate_retrieval_uses_every_caption(clip):
    """The real model: evaluate_retrieval scores all captions of each image, as the reference's definition does."""
    model, tokenizer = clip
    samples = _samples(9, n_classes=0)
    captions = [tuple(f"caption {j} of picture {i}" for j in range(1 + i % 3)) for i in range(9)]
    samples = SampleSet(samples.images, captions, samples.class_ids, samples.keys)
    result = evaluate_retrieval(model, tokenizer, samples, batch_size=4)
    normalizer = Normalizer.for_model(model, "cpu")
    with torch.inference_mode():
        image_emb = torch.nn.functional.normalize(model.encode_image(normalizer(samples.images)).float(), dim=-1)
        flat = [c for caps in captions for c in caps]
        text_emb = torch.nn.functional.normalize(model.encode_text(tokenizer(flat)).float(), dim=-1)
    owner = [i for i, caps in enumerate(captions) for _ in caps]
    sim = image_emb.double() @ text_emb.double().T
    assert result["n"] == 9
    for k in (1, 5):
        assert result[f"R@{k}"] == pytest.approx(_reference_recall(sim, owner, k)), k


def test_retrieval_from_shards_on_disk_reads_every_caption(clip, tmp_path):
    """The pipeline's path: samples on disk (DiskSamples) score every caption, like the same samples in memory."""
    from PIL import Image

    from fomoflux.data.loading import disk_samples, load_samples
    from fomoflux.data.shards import RawSample, read_manifest, write_dataset

    model, tokenizer = clip
    gen = torch.Generator().manual_seed(5)
    pixels = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=gen).numpy()
    captions = [tuple(f"scene {i}, view {j}" for j in range(1 + i % 4)) for i in range(8)]
    samples = [RawSample(index=i, image=Image.fromarray(pixels[i]), captions=captions[i]) for i in range(8)]
    out = write_dataset({"test": samples}, dataset="scenes", out_dir=tmp_path / "scenes", shard_size=3)
    rows = read_manifest(out)
    on_disk = disk_samples(tmp_path, rows)
    in_memory = load_samples(tmp_path, rows, 32)
    assert [on_disk.read_captions(i) for i in range(8)] == captions
    from_disk = evaluate_retrieval(model, tokenizer, on_disk, batch_size=3)
    assert from_disk == pytest.approx(evaluate_retrieval(model, tokenizer, in_memory, batch_size=8))
    with torch.inference_mode():
        image_emb = torch.nn.functional.normalize(
            model.encode_image(Normalizer.for_model(model, "cpu")(in_memory.images)).float(), dim=-1)
        text_emb = torch.nn.functional.normalize(
            model.encode_text(tokenizer([c for caps in captions for c in caps])).float(), dim=-1)
    owner = [i for i, caps in enumerate(captions) for _ in caps]
    sim = image_emb.double() @ text_emb.double().T
    assert from_disk["R@1"] == pytest.approx(_reference_recall(sim, owner, 1))
