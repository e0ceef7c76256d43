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


def _samples(n, n_classes=len(CLASSES), seed=0, name="toy"):
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
        (5000, 0, 500),  # retrieval: class -1 only
        (301, 3, 300),  # one short of N: still a draw
    ],
)
def test_subset_size_formula(n_samples, n_classes, expected):
    assert subset_size(n_samples, n_classes) == expected
    ids = torch.arange(n_samples) % n_classes if n_classes else torch.full((n_samples,), -1)
    idx = stratified_subset(ids, seed=1)
    assert idx.numel() == expected
    assert idx.dtype == torch.long


def test_subset_deterministic_sorted_and_stable_across_calls():
    ids = torch.randint(0, 37, (4000,), generator=torch.Generator().manual_seed(3))
    first = stratified_subset(ids, seed=7)
    assert torch.equal(first, torch.sort(first).values)
    assert first.unique().numel() == first.numel()
    assert 0 <= int(first.min()) and int(first.max()) < ids.numel()
    for _ in range(5):  # never shrinks, never changes (the reference release's defect)
        assert torch.equal(stratified_subset(ids, seed=7), first)
    assert torch.equal(stratified_subset(ids.clone(), seed=7), first)
    assert not torch.equal(stratified_subset(ids, seed=8), first)


def test_subset_is_stratified_and_proportional():
    sizes = [1000, 500, 100, 5, 1]
    ids = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    ids = ids[torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(0))]
    n_total = ids.numel()
    idx = stratified_subset(ids, seed=0)
    n = subset_size(n_total, len(sizes))
    assert idx.numel() == n == 300
    counts = torch.bincount(ids[idx], minlength=len(sizes)).tolist()
    assert all(c >= 1 for c in counts)  # every class, even the singleton
    for c, size in enumerate(sizes):  # one each, the rest proportional (largest remainder: within 1)
        expected = 1 + (n - len(sizes)) * (size - 1) / (n_total - len(sizes))
        assert abs(counts[c] - expected) < 1, (c, counts[c], expected)


def test_subset_with_unlabelled_samples_and_few_slots():
    ids = torch.cat([torch.full((900,), -1), torch.arange(100) % 4])
    idx = stratified_subset(ids, seed=2)
    picked = ids[idx]
    assert idx.numel() == 300
    assert set(picked.tolist()) == {-1, 0, 1, 2, 3}
    assert abs(int((picked == -1).sum()) - 270) <= 2
    # fewer slots than classes: distinct classes, one sample each
    idx = stratified_subset(torch.arange(50) % 10, seed=0, min_size=4, per_class=0, fraction=0.0)
    assert idx.numel() == 4 and (torch.arange(50) % 10)[idx].unique().numel() == 4
    assert stratified_subset(torch.empty(0, dtype=torch.long), seed=0).numel() == 0


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
            [model.encode_image(normalizer(samples.images[i : i + 1]), normalize=True) @ text.T for i in range(len(samples))]
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
    assert table.schema["value"] == pl.Float64 and table.schema["n"] == pl.Int64 and table.schema["primary"] == pl.Boolean
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
    """Two pairs share a caption text: with perfect embeddings both directions must reach R@1 = 1."""
    from fomoflux.evaluate import caption_groups, retrieval_recall

    captions = ["a red circle", "a blue square", "a red circle", "a green star"]
    groups = caption_groups(captions)
    assert groups.tolist() == [0, 1, 0, 2]
    basis = torch.eye(3, dtype=torch.float64)
    text = basis[groups]
    image = basis[groups]
    assert retrieval_recall(image, text, (1,))["R@1"] < 1.0  # without groups, the duplicate ties count against
    grouped = retrieval_recall(image, text, (1,), groups=groups)
    assert grouped["i2t_R@1"] == 1.0 and grouped["t2i_R@1"] == 1.0
    wrong = basis[torch.tensor([1, 0, 0, 2])]  # image 0 looks like the blue square
    assert retrieval_recall(wrong, text, (1,), groups=groups)["i2t_R@1"] == 0.5
