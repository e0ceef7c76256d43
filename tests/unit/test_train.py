"""train/: lr schedules, the batch mixture (BENCHMARK.md numbers), and the task-update loop (real model, real steps)."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch
from toy import MICRO, PAPER_MIXTURE, learnable_set, random_set, state, states_equal

from fomoflux.errors import ConfigError
from fomoflux.methods import get_method
from fomoflux.model import create_model
from fomoflux.train import (
    LOG_SCHEMA,
    TaskBatches,
    TaskUpdateConfig,
    cosine_with_warmup,
    make_schedule,
    pretrain_base,
    run_task_update,
    source_batch_sizes,
    warmup_steps,
)


# -- schedules ------------------------------------------------------------------------------------------------------
def test_warmup_steps():
    assert warmup_steps(1420) == 142
    assert warmup_steps(568) == 57 and warmup_steps(284) == 29 and warmup_steps(142) == 15
    assert warmup_steps(70) == 7  # 0.1 * 70 is 7.000000000000001 in floating point
    assert warmup_steps(1) == 1 and warmup_steps(0) == 0


def test_cosine_with_warmup_formula():
    S, W, lr0, lrmin = 100, 10, 1e-5, 1e-8
    assert cosine_with_warmup(0, S, W, lr0, lrmin) == pytest.approx(lr0 / 10)
    assert cosine_with_warmup(4, S, W, lr0, lrmin) == pytest.approx(lr0 * 5 / 10)
    assert cosine_with_warmup(9, S, W, lr0, lrmin) == pytest.approx(lr0)
    for n in (10, 37, 55, 98):
        expected = lrmin + 0.5 * (1 + math.cos(math.pi * (n - W + 1) / (S - W))) * (lr0 - lrmin)
        assert cosine_with_warmup(n, S, W, lr0, lrmin) == pytest.approx(expected, rel=1e-12)
    assert cosine_with_warmup(54, S, W, lr0, lrmin) == pytest.approx(lrmin + 0.5 * (lr0 - lrmin))  # half-way
    assert cosine_with_warmup(99, S, W, lr0, lrmin) == pytest.approx(lrmin)  # the last step ends at η_min
    values = [cosine_with_warmup(n, S, W, lr0, lrmin) for n in range(S)]
    assert all(a >= b for a, b in zip(values[W - 1 :], values[W:]))  # monotone decay after warmup


def test_schedule_registry():
    sched = make_schedule("cosine", total_steps=1420, base_lr=1e-5)
    assert sched.warmup_steps == 142 and sched.min_lr == pytest.approx(1e-8)
    assert sched.lr(141) == pytest.approx(1e-5) and sched.lr(1419) == pytest.approx(1e-8)
    const = make_schedule("constant", total_steps=20, base_lr=1.0)
    assert [const.lr(n) for n in (0, 1, 2, 10, 19)] == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert make_schedule("constant", total_steps=20, base_lr=1.0, warmup=False).lr(0) == 1.0
    with pytest.raises(ConfigError, match="cosine"):
        make_schedule("nope", total_steps=10, base_lr=1.0)
    with pytest.raises(ConfigError, match="bogus"):
        make_schedule("cosine", total_steps=10, base_lr=1.0, bogus=3)


# -- mixture --------------------------------------------------------------------------------------------------------
def test_mixture_paper_numbers():
    assert source_batch_sizes(512, PAPER_MIXTURE, task_index=3) == {"pretrain": 169, "update": 175, "buffer": 168}
    assert source_batch_sizes(512, PAPER_MIXTURE, task_index=0) == {"pretrain": 253, "update": 259, "buffer": 0}
    assert source_batch_sizes(512, {"update": 1.0}, task_index=5) == {"pretrain": 0, "update": 512, "buffer": 0}
    two_sources = {"pretrain": 0.33, "update": 0.67}
    assert source_batch_sizes(512, two_sources, 0) == {"pretrain": 169, "update": 343, "buffer": 0}


def test_mixture_missing_sources_are_redistributed():
    # a pool that is absent at task 2: its 169 go half/half (odd one in source order) to update and buffer
    sizes = source_batch_sizes(512, PAPER_MIXTURE, 2, available=["update", "buffer"])
    assert sizes == {"pretrain": 0, "update": 260, "buffer": 252}
    # buffer-only replay at task 0: the buffer share goes to the only other source with a ratio > 0
    assert source_batch_sizes(100, {"update": 0.5, "buffer": 0.5}, 0) == {"pretrain": 0, "update": 100, "buffer": 0}
    for batch in (1, 2, 3, 7, 64, 255, 256, 511, 512, 1000):
        for task in (0, 1):
            counts = source_batch_sizes(batch, PAPER_MIXTURE, task)
            assert sum(counts.values()) == batch
    with pytest.raises(ConfigError, match="has samples"):
        source_batch_sizes(64, {"buffer": 1.0}, 0, available=[])


def test_mixture_validation():
    with pytest.raises(ConfigError, match="sum to 1"):
        source_batch_sizes(512, {"pretrain": 0.5, "update": 0.6}, 1)
    with pytest.raises(ConfigError, match="replay"):
        source_batch_sizes(512, {"replay": 1.0}, 1)
    with pytest.raises(ConfigError, match="update"):
        source_batch_sizes(512, {"update": -0.5, "pretrain": 1.5}, 1)
    with pytest.raises(ConfigError, match="sum to 1"):
        TaskUpdateConfig(steps=1, mixture={"update": 0.9})


# -- batches --------------------------------------------------------------------------------------------------------
def test_batches_are_a_function_of_the_step():
    _, tokenizer = create_model(MICRO, seed=0)
    sources = {
        "pretrain": random_set(50, 0, "pool"), "update": random_set(20, 1, "upd"), "buffer": random_set(30, 2, "buf")
    }
    batches = TaskBatches(sources, tokenizer, 64, PAPER_MIXTURE, task_index=2, seed=0)
    assert batches.counts == {"pretrain": 22, "update": 21, "buffer": 21}
    a5, a3 = batches.draw(5), batches.draw(3)
    b3, b5 = batches.draw(3), batches.draw(5)
    assert torch.equal(a5[0], b5[0]) and torch.equal(a5[1], b5[1]) and torch.equal(a3[1], b3[1])
    assert not torch.equal(a3[0], a5[0])
    images, tokens = a5
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.uint8 and tokens.shape == (64, 24)
    # every caption drawn is one of that sample's captions, sources laid out in order
    lookup = {tuple(tokenizer([c])[0].tolist()): c for s in sources.values() for caps in s.captions for c in caps}
    drawn = [lookup[tuple(t.tolist())] for t in tokens]
    assert all(c.startswith("pool") for c in drawn[:22]) and all(c.startswith("upd") for c in drawn[22:43])
    assert all(c.startswith("buf") for c in drawn[43:])
    other_seed = TaskBatches(sources, tokenizer, 64, PAPER_MIXTURE, task_index=2, seed=1).draw(5)
    assert not torch.equal(other_seed[0], images)


# -- the loop -------------------------------------------------------------------------------------------------------
def test_finetune_learns_a_toy_set():
    torch.manual_seed(0)
    model, tokenizer = create_model(MICRO, seed=0)
    before = state(model)
    cfg = TaskUpdateConfig(steps=30, batch_size=16, lr=1e-3, mixture={"update": 1.0}, task_index=1, progress=False,
                           log_every=1)
    log = run_task_update(model, tokenizer, get_method("finetune"), {"update": learnable_set(64, 0)}, cfg)
    assert log.height == 30 and log.columns == list(LOG_SCHEMA)
    assert log["step"].to_list() == list(range(30))
    assert (log["n_update"] == 16).all() and (log["n_pretrain"] == 0).all()
    sched = cfg.make_schedule()
    assert log["lr"].to_list() == [sched.lr(n) for n in range(30)]
    losses = log["loss"].to_list()
    # from ~ln 16 (chance) towards the floor set by same-class duplicates in a batch (~1.0)
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0], losses
    after = model.state_dict()
    changed = ("visual.conv1.weight", "token_embedding.weight", "logit_scale")
    assert all(not torch.equal(before[k], after[k]) for k in changed)
    assert log["grad_norm"].is_finite().all() and (log["elapsed_s"].diff().drop_nulls() >= 0).all()


def run_once(seed: int, init_seed: int = 0):
    model, tokenizer = create_model(MICRO, seed=init_seed)
    sources = {
        "pretrain": random_set(40, 0, "pool"), "update": random_set(24, 1, "upd"), "buffer": random_set(16, 2, "buf")
    }
    cfg = TaskUpdateConfig(steps=4, batch_size=24, lr=1e-3, task_index=2, seed=seed, progress=False)
    log = run_task_update(model, tokenizer, get_method("finetune"), sources, cfg)
    return state(model), log


def test_task_update_is_deterministic():
    s1, log1 = run_once(seed=0)
    s2, log2 = run_once(seed=0)
    s3, _ = run_once(seed=1)
    assert states_equal(s1, s2)
    assert log1.drop("elapsed_s", "data_wait_s").equals(log2.drop("elapsed_s", "data_wait_s"))
    assert not states_equal(s1, s3)
    assert log1["n_pretrain"][0] + log1["n_update"][0] + log1["n_buffer"][0] == 24


def test_log_every_and_zero_steps():
    model, tokenizer = create_model(MICRO, seed=0)
    sources = {"update": random_set(10, 0, "upd")}
    cfg = TaskUpdateConfig(steps=7, batch_size=8, lr=1e-4, mixture={"update": 1.0}, log_every=3, progress=False)
    log = run_task_update(model, tokenizer, get_method("finetune"), sources, cfg)
    assert log["step"].to_list() == [0, 3, 6]
    before = state(model)
    empty = run_task_update(model, tokenizer, get_method("finetune"), sources,
                            TaskUpdateConfig(steps=0, batch_size=8, mixture={"update": 1.0}, progress=False))
    assert empty.height == 0 and empty.schema == pl.Schema(LOG_SCHEMA)
    assert states_equal(before, state(model))


def test_loop_input_errors():
    model, tokenizer = create_model(MICRO, seed=0)
    cfg = TaskUpdateConfig(steps=1, batch_size=4, mixture={"update": 1.0}, progress=False)
    # Stored images of another size go through the transform to the model's 32 px.
    log = run_task_update(model, tokenizer, get_method("finetune"), {"update": random_set(4, 0, "u", size=64)}, cfg)
    assert log.height == 1
    with pytest.raises(ConfigError, match="extra"):
        run_task_update(model, tokenizer, get_method("finetune"), {"extra": random_set(4, 0, "u")}, cfg)
    with pytest.raises(ConfigError, match="has samples"):
        run_task_update(model, tokenizer, get_method("finetune"), {"update": None}, cfg)
    with pytest.raises(ConfigError, match="steps"):
        TaskUpdateConfig(steps=-1)


def test_pretrain_base():
    pool = learnable_set(40, 3)
    model, log = pretrain_base(MICRO, pool, steps=3, batch_size=16, lr=1e-3, seed=0, progress=False, log_every=1)
    again, _ = pretrain_base(MICRO, pool, steps=3, batch_size=16, lr=1e-3, seed=0, progress=False)
    fresh, _ = create_model(MICRO, seed=0)
    assert log.height == 3 and (log["n_pretrain"] == 16).all() and (log["n_update"] == 0).all()
    assert states_equal(state(model), state(again))
    assert not states_equal(state(model), state(fresh))
    assert not model.training


# -- the optimizer (training.optimizer; the reference's values from continual_lib/utils/base_continual_learner.py) ---
TINY = "fomo-tiny-vit"  # config/models/fomo-tiny-vit.json: the mini benchmark's model, 3 image and 2 text blocks
# Parameters of the tiny model open_clip's convention exempts from weight decay, and some it decays.
OPEN_CLIP_EXEMPT = {"logit_scale", "visual.class_embedding", "visual.ln_pre.weight", "visual.ln_post.bias",
                    "visual.transformer.resblocks.0.ln_1.weight", "visual.transformer.resblocks.0.attn.in_proj_bias",
                    "transformer.resblocks.1.mlp.c_fc.bias", "ln_final.weight", "ln_final.bias"}
OPEN_CLIP_DECAYED = {"visual.conv1.weight", "visual.positional_embedding", "positional_embedding",
                     "token_embedding.weight", "text_projection", "visual.proj",
                     "visual.transformer.resblocks.2.attn.in_proj_weight", "transformer.resblocks.0.mlp.c_proj.weight"}


def _group_names(model, optimizer) -> list[tuple[float, set[str]]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [(g["weight_decay"], {names[id(p)] for p in g["params"]}) for g in optimizer.param_groups]


def test_optimizer_settings_resolve_per_convention():
    from fomoflux.train.optimizer import resolve_optimizer

    # The reference passes only lr and weight_decay to torch.optim.AdamW: betas and eps are torch's defaults.
    torch_defaults = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]).defaults
    assert (torch_defaults["betas"], torch_defaults["eps"]) == ((0.9, 0.999), 1e-8)
    assert resolve_optimizer(None) == {"convention": "reference", "betas": [0.9, 0.999], "eps": 1e-8}
    open_clip = {"convention": "open_clip", "betas": [0.9, 0.98], "eps": 1e-6}
    assert resolve_optimizer({"convention": "open_clip"}) == open_clip
    assert resolve_optimizer({"betas": [0.9, 0.95], "eps": 1e-7}) == {"convention": "reference", "betas": [0.9, 0.95],
                                                                     "eps": 1e-7}
    for raw, key in (({"convention": "adam"}, "training.optimizer.convention: 'adam'"),
                     ({"betas": [0.9]}, "training.optimizer.betas"),
                     ({"betas": [0.9, 1.0]}, "training.optimizer.betas"),
                     ({"eps": 0}, "training.optimizer.eps"), ({"lr": 1.0}, "unknown key 'lr'")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            resolve_optimizer(raw)
    cfg = TaskUpdateConfig(steps=1)
    assert (cfg.optimizer, cfg.betas, cfg.eps) == ("reference", (0.9, 0.999), 1e-8)
    assert TaskUpdateConfig(steps=1, optimizer="open_clip", eps=1e-5).betas == (0.9, 0.98)
    with pytest.raises(ConfigError, match="optimizer: 'sgd'"):
        TaskUpdateConfig(steps=1, optimizer="sgd")


def test_reference_convention_decays_every_trained_parameter_of_the_tiny_model():
    from fomoflux.train.optimizer import adamw

    model, _ = create_model(TINY, seed=0)
    params = list(model.parameters())
    optimizer = adamw(model, params, lr=1e-5, weight_decay=0.2, convention_name="reference", betas=(0.9, 0.999),
                      eps=1e-8)
    groups = _group_names(model, optimizer)
    assert groups == [(0.2, {n for n, _ in model.named_parameters()})]  # logit_scale, biases, norms included
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999) and optimizer.param_groups[0]["eps"] == 1e-8
    # Only the trained parameters enter (the loop passes the method's): here the biases alone, as BitFit trains.
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    only = adamw(model, biases, lr=1e-5, weight_decay=0.2, convention_name="reference", betas=(0.9, 0.999), eps=1e-8)
    assert [(wd, len(names)) for wd, names in _group_names(model, only)] == [(0.2, len(biases))]


def test_open_clip_convention_exempts_gains_biases_and_logit_scale_of_the_tiny_model():
    from fomoflux.train.optimizer import adamw

    model, _ = create_model(TINY, seed=0)
    optimizer = adamw(model, list(model.parameters()), lr=1e-5, weight_decay=0.2, convention_name="open_clip",
                      betas=(0.9, 0.98), eps=1e-6)
    (decay, decayed), (zero, exempt) = _group_names(model, optimizer)
    assert (decay, zero) == (0.2, 0.0)
    assert OPEN_CLIP_EXEMPT <= exempt and OPEN_CLIP_DECAYED <= decayed and not decayed & exempt
    # On open_clip's ViT every parameter the names exempt has rank < 2, and every one of rank < 2 is exempt.
    assert exempt == {n for n, p in model.named_parameters() if p.ndim < 2}
    assert len(decayed) == 1 + 2 + 1 + 2 + (3 + 2) * 4  # conv1, 2 positional, token emb., 2 projections, 4 per block


def _trained_once(convention: str, tmp_path, start_scale: float):
    """One 2-step task update of the tiny model whose logit_scale starts at ``start_scale``; the optimizer state of
    its snapshot after step 0 (the loop saves one with resume_every_steps=1) and the final logit_scale."""
    from fomoflux.train.resume import Snapshots

    model, tokenizer = create_model(TINY, seed=0)
    with torch.no_grad():
        model.logit_scale.fill_(start_scale)
    folder = tmp_path / convention
    cfg = TaskUpdateConfig(steps=2, batch_size=8, lr=1e-4, mixture={"update": 1.0}, task_index=1, progress=False,
                           log_every=1, optimizer=convention, resume_dir=str(folder), resume_key="k",
                           resume_every_steps=1)
    run_task_update(model, tokenizer, get_method("finetune"), {"update": learnable_set(16, 0)}, cfg)
    saved = Snapshots(folder, "k").load()
    return saved["optimizer"]["param_groups"], float(model.logit_scale.detach())


def test_the_loop_trains_with_the_configured_convention(tmp_path):
    ln100 = math.log(100.0)
    groups, scale = _trained_once("reference", tmp_path, start_scale=5.0)
    assert [(g["betas"], g["eps"], g["weight_decay"]) for g in groups] == [((0.9, 0.999), 1e-8, 0.2)]
    assert scale > ln100 + 0.3  # never clamped (lr 1e-4 moves it by ~2e-4 in 2 steps)
    groups, scale = _trained_once("open_clip", tmp_path, start_scale=5.0)
    assert [(g["betas"], g["eps"], g["weight_decay"]) for g in groups] == [((0.9, 0.98), 1e-6, 0.2),
                                                                           ((0.9, 0.98), 1e-6, 0.0)]
    assert scale == pytest.approx(ln100, abs=1e-6)  # clamped to ln 100 after every step
