"""methods/: the registry, option checking, and finetune / zeroshot / ema_merge through the real loop."""

from __future__ import annotations

import polars as pl
import pytest
import torch
from toy import MICRO, random_set, state, states_equal

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

SOURCES = {"pretrain": random_set(32, 0, "pool"), "update": random_set(16, 1, "upd"),
           "buffer": random_set(16, 2, "buf")}


def cfg(**kw) -> TaskUpdateConfig:
    base = dict(steps=3, batch_size=16, lr=1e-3, task_index=1, seed=0, progress=False)
    base.update(kw)
    return TaskUpdateConfig(**base)


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
    assert get_method("ema_merge").config() == {"name": "ema_merge", "weight": 0.5, "operator": "interpolation",
                                                "operator_options": {}, "lines": None}
    with pytest.raises(ConfigError, match="'offline_merge'.*'nope'"):
        get_method("offline_merge", {"operator": "nope"})
    with pytest.raises(ConfigError, match="'time_merge'.*init 'later'"):
        get_method("time_merge", {"init": "later"})


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
    """EMA-merge trains like fine-tuning from m_{t-1}; its merge job then gives (1 - w)·m_{t-1} + w·θ_t."""
    from fomoflux.merge import merge_state_dicts
    from fomoflux.methods.merging import merge_weights

    theta0 = state(create_model(MICRO, seed=1)[0])
    m_prev, tok = create_model(MICRO, seed=0)
    start = state(m_prev)
    theta, _ = create_model(MICRO, seed=0)
    run_task_update(theta, tok, get_method("finetune"), SOURCES, cfg())
    method = get_method("ema_merge", {"weight": 0.3})
    trained, _ = create_model(MICRO, seed=0)
    run_task_update(trained, tok, method, SOURCES, cfg())
    assert states_equal(state(trained), state(theta)), "the update itself is plain fine-tuning"

    assert (method.init_from, method.deploy_from, method.merge_kinds()) == ("sequential", "sequential", ["sequential"])
    spec = method.merge_spec("sequential")
    weights = merge_weights(spec, 2)
    assert weights == pytest.approx([0.3, 0.7])  # the reference's order: [θ_t, m_{t-1}]
    merged = merge_state_dicts(theta0, [state(theta), start], weights, operator=spec["operator"])
    for key in start:
        if start[key].is_floating_point():
            expected = 0.7 * start[key] + 0.3 * state(theta)[key]
            torch.testing.assert_close(merged[key], expected, rtol=0, atol=2e-6, msg=key)
    assert not torch.equal(merged["logit_scale"], state(theta)["logit_scale"])  # the temperature is merged too


def test_merging_presets_describe_their_dag():
    expected = {
        "zs_merge": ("base", "sequential"),
        "ft_merge": ("anchored", "anchored"),
        "offline_merge": ("base", "oneshot"),
        "ema_merge": ("sequential", "sequential"),
    }
    for name, (init, deploy) in expected.items():
        method = get_method(name)
        assert (method.init_from, method.deploy_from) == (init, deploy), name
        # Training depends only on where it starts; merge settings reach it through the merged file.
        assert method.training_options() == {"init": init}
    time_grid = get_method("time_merge", {"init": "oneshot", "deploy": "latest", "weighting": "sqrt"})
    assert time_grid.merge_kinds() == ["oneshot"]
    assert time_grid.merge_spec("oneshot")["weighting"] == "sqrt"
    with pytest.raises(ConfigError, match="no 'sequential' merge"):
        time_grid.merge_spec("sequential")


def unrolled_merges(method, experts: list[torch.Tensor], kind: str) -> list[torch.Tensor]:
    """The merges of ``kind`` after tasks 1..T of ``method`` over the experts θ0 = experts[0], θ1, ...: each job's
    inputs from merge_input_sequence, merged as the merge_task stage does (a single input is copied)."""
    from fomoflux.merge import merge_state_dicts
    from fomoflux.methods.merging import merge_input_sequence, merge_is_copy, merge_weights

    spec = method.merge_spec(kind)
    theta0 = {"w": experts[0]}
    merges = [experts[0]]  # the merge "after task 0" is θ0
    for task in range(1, len(experts)):
        inputs = [experts[t] if what == "model" else merges[t] for what, t in merge_input_sequence(spec, task)]
        if merge_is_copy(spec, len(inputs)):
            merges.append(inputs[0])
            continue
        weights = merge_weights(spec, len(inputs))
        merged = merge_state_dicts(theta0, [{"w": x} for x in inputs], weights, spec["operator"],
                                   spec["operator_options"])
        merges.append(merged["w"])
    return merges[1:]


def test_time_grid_unrolls_over_the_experts_and_zs_ema_start_from_theta0():
    # θ0..θ3 as one-entry tensors that make every merge an exact dyadic number
    experts = [torch.tensor([0.0]), torch.tensor([8.0]), torch.tensor([16.0]), torch.tensor([32.0])]
    # The reference's double_merge_*: unrolled over [θ1..θt]: m1 = θ1, m2 = (θ2 + θ1)/2, m3 = (θ3 + m2)/2
    grid = get_method("time_merge", {"init": "base", "deploy": "sequential"})
    assert [m.item() for m in unrolled_merges(grid, experts, "sequential")] == [8.0, 12.0, 22.0]
    assert unrolled_merges(grid, experts, "sequential")[2].item() == 0.5 * 32 + 0.25 * 16 + 0.25 * 8
    # ZS-merge and EMA-merge (zs_paint / ema_paint) from θ0: m1 = (θ1 + θ0)/2, m2 = (θ2 + m1)/2, m3 = (θ3 + m2)/2
    for name in ("zs_merge", "ema_merge"):
        assert [m.item() for m in unrolled_merges(get_method(name), experts, "sequential")] == [4.0, 10.0, 21.0], name
    base_start = get_method("time_merge", {"init": "base", "deploy": "sequential", "sequential_from": "base"})
    assert [m.item() for m in unrolled_merges(base_start, experts, "sequential")] == [4.0, 10.0, 21.0]
    # weight w is θ_t's: w = 0.75 from θ1: m2 = 0.75·16 + 0.25·8 = 14, m3 = 0.75·32 + 0.25·14 = 27.5
    heavy = get_method("time_merge", {"init": "base", "deploy": "sequential", "weight": 0.75})
    assert [m.item() for m in unrolled_merges(heavy, experts, "sequential")] == [8.0, 14.0, 27.5]
    # The sequence of models each merge job reads, for t = 3
    from fomoflux.methods.merging import merge_input_sequence

    spec = grid.merge_spec("sequential")
    assert [merge_input_sequence(spec, t) for t in (1, 2, 3)] == [
        [("model", 1)], [("model", 2), ("merge", 1)], [("model", 3), ("merge", 2)]]
    spec = get_method("zs_merge").merge_spec("sequential")
    assert [merge_input_sequence(spec, t) for t in (1, 2, 3)] == [
        [("model", 1), ("merge", 0)], [("model", 2), ("merge", 1)], [("model", 3), ("merge", 2)]]
    assert merge_input_sequence(get_method("ft_merge").merge_spec("anchored"), 3) == [("model", 3), ("model", 0)]
    oneshot = get_method("offline_merge", {"include_base": True}).merge_spec("oneshot")
    assert merge_input_sequence(oneshot, 3) == [("model", 0), ("model", 1), ("model", 2), ("model", 3)]


def test_oneshot_after_task_1_and_the_paint_presets_operator_defaults():
    experts = [torch.tensor([0.0]), torch.tensor([8.0]), torch.tensor([16.0])]
    # The reference's offline merge deploys θ1 itself after task 1 (task arithmetic would otherwise scale it) ...
    offline = get_method("offline_merge", {"operator": "task_arithmetic", "operator_options": {"scale": 0.5}})
    assert [m.item() for m in unrolled_merges(offline, experts, "oneshot")] == [8.0, 12.0]
    # ... its TIME grid's all-merge applies the operator to [θ1]
    grid = get_method("time_merge", {"init": "oneshot", "deploy": "oneshot", "operator": "task_arithmetic",
                                     "operator_options": {"scale": 0.5}})
    assert [m.item() for m in unrolled_merges(grid, experts, "oneshot")] == [4.0, 12.0]
    # EMA/ZS/FT-merge default the TIES family to the reference's paint configs (prune 0.7); user options win
    for name in ("ema_merge", "zs_merge", "ft_merge"):
        method = get_method(name, {"operator": "ties"})
        assert method.merge_spec(method.merge_kinds()[0])["operator_options"] == {"prune": 0.7}, name
    method = get_method("ema_merge", {"operator": "breadcrumbs", "operator_options": {"prune": 0.3}})
    assert method.merge_spec("sequential")["operator_options"] == {"prune": 0.3}
    assert get_method("offline_merge", {"operator": "ties"}).merge_spec("oneshot")["operator_options"] == {}
    with pytest.raises(ConfigError, match="time_merge': sequential_from 'zero' is not one of base, first"):
        get_method("time_merge", {"sequential_from": "zero"})


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


def test_offline_merge_explicit_weights():
    from fomoflux.methods.merging import merge_weights

    spec = get_method("offline_merge", {"weights": [1, 1, 2]}).merge_spec("oneshot")
    assert merge_weights(spec, 2) == pytest.approx([0.5, 0.5])  # after task 2: the first two, normalised
    assert merge_weights(spec, 3) == pytest.approx([0.25, 0.25, 0.5])
    with pytest.raises(ConfigError, match="3 entries for a merge of 4"):
        merge_weights(spec, 4)
    with pytest.raises(ConfigError, match="'weights'"):
        get_method("offline_merge", {"weights": [-1.0, 2.0]})
    default = get_method("offline_merge", {"weighting": "linear"}).merge_spec("oneshot")
    assert merge_weights(default, 3) == pytest.approx([1 / 6, 2 / 6, 3 / 6])
