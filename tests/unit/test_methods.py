"""methods/: the registry, option checking, and finetune / zeroshot / ema_merge through the real loop."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from fomoflux.data.sampleset import SampleSet
from fomoflux.errors import CheckpointError, ConfigError
from fomoflux.methods import (
    Method,
    TaskContext,
    available_methods,
    get_method,
    load_method_state,
    register_method,
    save_method_state,
)
from fomoflux.model import create_model, save_checkpoint
from fomoflux.train import LOG_SCHEMA, TaskUpdateConfig, run_task_update

MICRO = "fomo-micro-vit"


@pytest.fixture(autouse=True)
def one_thread():
    """The caller owns torch's thread count; these tests use one (fast and steady on a shared 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def random_set(n: int, seed: int, tag: str) -> SampleSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    captions = [(f"{tag} sample {i}", f"{tag} item {i}") for i in range(n)]
    return SampleSet(images, captions, torch.arange(n), [f"{tag}/train/{i}" for i in range(n)])


SOURCES = {"pretrain": random_set(32, 0, "pool"), "update": random_set(16, 1, "upd"), "buffer": random_set(16, 2, "buf")}


def cfg(**kw) -> TaskUpdateConfig:
    base = dict(steps=3, batch_size=16, lr=1e-3, task_index=1, seed=0, progress=False)
    base.update(kw)
    return TaskUpdateConfig(**base)


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_registry():
    assert {"finetune", "zeroshot", "ema_merge"} <= set(available_methods())
    with pytest.raises(ConfigError, match="unknown method 'nope'.*ema_merge.*finetune.*zeroshot"):
        get_method("nope")
    with pytest.raises(ConfigError, match="'finetune'.*'alpha'"):
        get_method("finetune", {"alpha": 1})
    with pytest.raises(ConfigError, match="'ema_merge'.*'weight'"):
        get_method("ema_merge", {"weight": 1.5})
    with pytest.raises(ConfigError, match="weight"):
        get_method("ema_merge", {"weight": "half"})
    assert get_method("ema_merge", {"weight": 1}).weight == 1.0
    assert get_method("ema_merge").config() == {"name": "ema_merge", "weight": 0.5}


def test_finetune_changes_all_weights():
    model, tok = create_model(MICRO, seed=0)
    before = state(model)
    run_task_update(model, tok, get_method("finetune"), SOURCES, cfg())
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    # every parameter of both towers and the temperature moved (the text positional rows past the longest caption too:
    # weight decay); only the non-trained buffers (none in CLIP's state_dict) could stay
    assert set(changed) == {n for n, _ in model.named_parameters()}


def test_zeroshot_does_nothing():
    model, tok = create_model(MICRO, seed=0)
    before = state(model)
    method = get_method("zeroshot")
    assert method.updates_weights is False
    log = run_task_update(model, tok, method, SOURCES, cfg(steps=5))
    assert states_equal(before, state(model))
    assert log.height == 0 and log.schema == pl.Schema(LOG_SCHEMA)


def test_ema_merge_closed_form():
    m_prev, tok = create_model(MICRO, seed=0)
    start = state(m_prev)
    # θ_t: what fine-tuning from m_{t-1} reaches (the loop is deterministic, so a plain finetune run reproduces it)
    theta, _ = create_model(MICRO, seed=0)
    run_task_update(theta, tok, get_method("finetune"), SOURCES, cfg())
    theta_t = state(theta)
    merged, _ = create_model(MICRO, seed=0)
    w = 0.3
    run_task_update(merged, tok, get_method("ema_merge", {"weight": w}), SOURCES, cfg())
    out = merged.state_dict()
    for key in start:
        expected = (1 - w) * start[key] + w * theta_t[key]
        torch.testing.assert_close(out[key], expected, rtol=0, atol=1e-7, msg=key)
    assert not torch.equal(out["logit_scale"], theta_t["logit_scale"])  # the temperature is merged too
    assert not torch.equal(out["visual.conv1.weight"], start["visual.conv1.weight"])


class Recorder(Method):
    """A test method: trains only biases and records hook calls — shows the hooks suffice for PEFT / regularisers."""

    options = {"strength": 0.0}

    def validate(self):
        self.calls = []
        self.anchor = None

    def begin_task(self, model, ctx):
        self.calls.append(("begin", ctx.task_index, ctx.sources is not None))
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("bias")}

    def trainable_parameters(self, model):
        return [p for n, p in model.named_parameters() if n.endswith("bias")]

    def penalty(self, model):
        if not self.strength:
            return None
        named = dict(model.named_parameters())
        return self.strength * sum(((named[n] - a) ** 2).sum() for n, a in self.anchor.items())

    def after_step(self, model, step):
        has_grad = all(p.grad is not None for p in self.trainable_parameters(model))
        self.calls.append(("step", step, has_grad))

    def end_task(self, model, ctx):
        self.calls.append(("end", ctx.task_index))

    def state_dict(self):
        return {"anchor." + k: v for k, v in (self.anchor or {}).items()}

    def load_state_dict(self, state):
        self.anchor = {k.removeprefix("anchor."): v for k, v in state.items()}


register_method("test-recorder")(Recorder)


def test_hooks_order_and_partial_training(tmp_path):
    model, tok = create_model(MICRO, seed=0)
    before = state(model)
    method = get_method("test-recorder", {"strength": 10.0})
    log = run_task_update(model, tok, method, SOURCES, cfg(steps=2))
    assert method.calls == [("begin", 1, True), ("step", 0, True), ("step", 1, True), ("end", 1)]
    after = model.state_dict()
    for key in before:
        assert torch.equal(before[key], after[key]) != key.endswith("bias"), key  # only biases moved
    assert all(p.requires_grad for p in model.parameters())  # frozen flags restored
    assert (log["penalty"] > 0).any() and (log["loss"] >= log["contrastive_loss"]).all()

    path = tmp_path / "method.safetensors"
    save_method_state(method, path)
    fresh = get_method("test-recorder")
    load_method_state(fresh, path)
    assert fresh.anchor.keys() == method.anchor.keys()
    with pytest.raises(CheckpointError, match="test-recorder"):
        load_method_state(get_method("finetune"), path)


def test_task_context_base_state_is_lazy(tmp_path):
    model, _ = create_model(MICRO, seed=0)
    path = tmp_path / "base.safetensors"
    save_checkpoint(model, path)
    ctx = TaskContext(task_index=0, base_state=path)
    assert ctx._base_cache is None
    base = ctx.base_state_dict()
    assert states_equal(base, state(model)) and ctx.base_state_dict() is base
    with pytest.raises(CheckpointError, match="base_state"):
        TaskContext(task_index=0).base_state_dict()
