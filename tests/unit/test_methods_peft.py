"""Parameter-efficient methods through the real task loop: locked towers, BitFit, LN-fit, LoRA, DoRA, VeRA."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize
from toy import MICRO, random_set, state

import fomoflux.methods.bitfit  # imported for registration, as are the other method modules
import fomoflux.methods.dora
import fomoflux.methods.lnfit
import fomoflux.methods.locked
import fomoflux.methods.lora
import fomoflux.methods.vera
from fomoflux.errors import CheckpointError, ConfigError
from fomoflux.methods import TaskContext, available_methods, get_method, load_method_state, save_method_state
from fomoflux.methods.adapters import fold_adapter_state, select_targets
from fomoflux.model import create_model, save_checkpoint
from fomoflux.train import TaskUpdateConfig, run_task_update

SOURCES = {
    "pretrain": random_set(32, 0, "pool"),
    "update": random_set(16, 1, "upd"),
    "buffer": random_set(16, 2, "buf"),
}
ATTN_IN = "visual.transformer.resblocks.0.attn.in_proj_weight"
MLP_OUT = "transformer.resblocks.1.mlp.c_proj.weight"
QKV = ("q", "k", "v")
TINY = "fomo-tiny-vit"  # config/models/fomo-tiny-vit.json: width 128 in both towers, 3 image and 2 text blocks


def block_prefixes(name: str) -> list[str]:
    """The state-key prefixes of a weight's adapter blocks: q, k, v of an attention in-projection, else the weight."""
    return [f"{name}.{x}" for x in QKV] if name.endswith("attn.in_proj_weight") else [name]


def row_blocks(name: str, weight: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    prefixes = block_prefixes(name)
    return list(zip(prefixes, weight.chunk(len(prefixes), dim=0)))


def cfg(task_index: int = 0, **kw) -> TaskUpdateConfig:
    base = {"steps": 3, "batch_size": 16, "lr": 1e-2, "task_index": task_index, "seed": 0, "progress": False}
    base.update(kw)
    return TaskUpdateConfig(**base)


def context(base: dict, task_index: int = 0, device: str = "cpu") -> TaskContext:
    return TaskContext(task_index=task_index, base_state=base, device=device, seed=0)


def changed_keys(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def layernorm_names(model: torch.nn.Module) -> set[str]:
    return {
        f"{prefix}.{n}" if prefix else n
        for prefix, module in model.named_modules()
        if isinstance(module, torch.nn.LayerNorm)
        for n, _ in module.named_parameters(recurse=False)
    }


def test_registered_with_defaults():
    assert {"locked_text", "locked_image", "bitfit", "lnfit", "lora", "dora", "vera"} <= set(available_methods())
    # the reference's configs/config.yaml: rank 5, scale 1, every block of both towers
    assert get_method("lora").config() == {
        "name": "lora", "rank": 5, "towers": "both", "targets": ["attn_in", "mlp_out"], "blocks": None, "scale": 1.0,
    }
    assert get_method("dora").rank == 5 and get_method("dora").scale == 1.0
    vera = get_method("vera")
    assert (vera.rank, vera.scale, vera.d_init, vera.b_init) == (5, 1.0, 0.0, 0.1)


# -- parameter subsets ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected",
    [
        ("locked_text", lambda n, ln: n.startswith("visual.")),
        ("locked_image", lambda n, ln: not n.startswith("visual.") and n != "logit_scale"),
        ("bitfit", lambda n, ln: n.endswith("bias")),
        ("lnfit", lambda n, ln: n in ln),
    ],
)
def test_parameter_subset_methods_change_exactly_their_subset(name, expected):
    model, tok = create_model(MICRO, seed=0)
    before = state(model)
    ln = layernorm_names(model)
    allowed = {n for n, _ in model.named_parameters() if expected(n, ln)}
    assert allowed and "logit_scale" not in allowed
    run_task_update(model, tok, get_method(name), SOURCES, cfg())
    # with lr 1e-2 every trainable tensor moves (weight decay moves even the unused text positions and vocabulary rows)
    assert changed_keys(before, model.state_dict()) == allowed
    assert all(p.requires_grad for p in model.parameters())


def test_lnfit_and_bitfit_subsets_are_what_their_names_say():
    model, _ = create_model(MICRO, seed=0)
    ln = layernorm_names(model)
    # 4 LayerNorms per block pair (2 blocks × ln_1/ln_2 × 2 towers) + ln_pre, ln_post, ln_final, each weight + bias
    assert len(ln) == 2 * (2 * 2 * 2 + 3)
    lnfit = get_method("lnfit").trainable_parameters(model)
    named = dict(model.named_parameters())
    assert {id(p) for p in lnfit} == {id(named[n]) for n in ln}
    bitfit = get_method("bitfit").trainable_parameters(model)
    # per block: in_proj_bias, out_proj, c_fc, c_proj, ln_1, ln_2; 4 blocks; + ln_pre, ln_post, ln_final
    assert len(bitfit) == sum(n.endswith("bias") for n in named) == 6 * 4 + 3


# -- LoRA ----------------------------------------------------------------------------------------------------------
class LoRAProbe(fomoflux.methods.lora.LoRA):
    """LoRA that checks, after every step, that the base weights under the adapters are still θ0."""

    def __init__(self, base: dict, **options):
        super().__init__(**options)
        self.base = base
        self.original_is_theta0: list[bool] = []
        self.trainable_names: list[str] = []

    def begin_task(self, model, ctx):
        super().begin_task(model, ctx)
        ids = {id(p) for p in self.trainable_parameters(model)}
        self.trainable_names = [n for n, p in model.named_parameters() if id(p) in ids]

    def after_step(self, model, step):
        originals = []
        for name in self._attached:
            module_path, attr = name.rsplit(".", 1)
            original = getattr(model.get_submodule(module_path).parametrizations, attr).original
            originals.append(torch.equal(original, self.base[name]))
        self.original_is_theta0.append(all(originals) and len(originals) == 8)


def test_lora_trains_adapters_only_and_folds_to_theta0_plus_scaled_BA():
    model, tok = create_model(MICRO, seed=0)
    base = state(model)
    method = LoRAProbe(base, scale=0.5)
    run_task_update(model, tok, method, SOURCES, cfg(), context=context(base))

    assert method.original_is_theta0 == [True, True, True]
    # 4 attention in-projections with separate q, k, v adapters (A and B each) + 4 MLP out-projections
    assert len(method.trainable_names) == 4 * 3 * 2 + 4 * 2
    assert all(n.endswith((".lora_A", ".lora_B")) and ".parametrizations." in n for n in method.trainable_names)

    after = state(model)
    assert after.keys() == base.keys()  # plain open_clip again: no parametrization keys left
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    targeted = set(select_targets(model, "lora", "both", ["attn_in", "mlp_out"], None))
    assert len(targeted) == 8 and changed_keys(base, after) == targeted

    adapter = method.state_dict()
    assert set(adapter) == {f"{p}.lora_{x}" for n in targeted for p in block_prefixes(n) for x in "AB"}
    for name in targeted:
        expected = []
        for prefix, rows in row_blocks(name, base[name]):
            a, b = adapter[f"{prefix}.lora_A"], adapter[f"{prefix}.lora_B"]
            assert a.shape == (5, base[name].shape[1]) and b.shape == (rows.shape[0], 5)
            assert b.abs().max() > 0  # B moved from its zero init
            expected.append(rows + 0.5 * (b @ a))
        torch.testing.assert_close(after[name], torch.cat(expected), rtol=0, atol=1e-7)

    folded = fold_adapter_state(base, adapter, method)
    assert folded.keys() == base.keys()
    assert all(torch.equal(folded[k], after[k]) for k in base)  # bit-identical to what end_task left


def test_lora_at_init_is_the_base_model():
    model, tok = create_model(MICRO, seed=0)
    base = state(model)
    model.eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = tok(["a red thing", "a blue thing", "green", "white"])
    with torch.no_grad():
        reference = model(images, tokens)
    method = get_method("lora")
    method.begin_task(model, context(base))
    with torch.no_grad():
        adapted = model(images, tokens)
    assert parametrize.is_parametrized(model.get_submodule("visual.transformer.resblocks.0.attn"), "in_proj_weight")
    for key in ("image_features", "text_features"):
        assert torch.equal(adapted[key], reference[key])
    # A is kaiming_uniform_(a=√5) at rank 5 (|A| ≤ 1/√in) and seeded: the same seed and block give the same A
    a = method._live[f"{ATTN_IN}.q.lora_A"]
    assert a.abs().max() <= 1 / math.sqrt(64) and a.std() > 0.5 / math.sqrt(3 * 64)
    other = get_method("lora")
    other.begin_task(create_model(MICRO, seed=0)[0], context(base))
    assert torch.equal(other._live[f"{ATTN_IN}.q.lora_A"], a)
    assert not torch.equal(other._live[f"{ATTN_IN}.k.lora_A"], a)  # q, k and v: three independent draws
    assert not torch.equal(other._live[f"{MLP_OUT}.lora_A"][:, :64], a)


def test_begin_task_resets_adapted_weights_to_theta0():
    model, tok = create_model(MICRO, seed=0)
    base = state(model)
    with torch.no_grad():
        model.get_submodule("visual.transformer.resblocks.0.attn").in_proj_weight.add_(1.0)  # a folded ΔW
        model.visual.conv1.weight.add_(1.0)  # not adapted: lora must leave it alone
    method = get_method("lora")
    run_task_update(model, tok, method, SOURCES, cfg(steps=0), context=context(base))
    after = model.state_dict()
    assert torch.equal(after[ATTN_IN], base[ATTN_IN])  # B = 0 at init, so θ0 exactly
    assert torch.equal(after["visual.conv1.weight"], base["visual.conv1.weight"] + 1.0)


# -- one adapter across tasks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [("lora", {"rank": 2}), ("dora", {}), ("vera", {"rank": 8, "blocks": [-1]})])
def test_adapter_carries_across_tasks_through_saved_state(tmp_path, name, options):
    model, tok = create_model(MICRO, seed=0)
    base = state(model)
    method = get_method(name, options)
    run_task_update(model, tok, method, SOURCES, cfg(0), context=context(base, 0))
    # the pipeline's way: the task's checkpoint and method state on disk, then a fresh model and method for task 1
    save_checkpoint(model, tmp_path / "task0.safetensors")
    save_method_state(method, tmp_path / "state0.safetensors")
    run_task_update(model, tok, method, SOURCES, cfg(1), context=context(base, 1))
    continued = state(model)

    resumed, _ = create_model(MICRO, checkpoint=tmp_path / "task0.safetensors")
    fresh = get_method(name, options)
    load_method_state(fresh, tmp_path / "state0.safetensors")
    run_task_update(resumed, tok, fresh, SOURCES, cfg(1), context=context(base, 1))
    assert all(torch.equal(continued[k], v) for k, v in state(resumed).items())
    assert all(torch.equal(method.state_dict()[k], v) for k, v in fresh.state_dict().items())

    # task 1 did continue the task-0 adapter: a fresh adapter on task 1 ends elsewhere
    alone, _ = create_model(MICRO, seed=0)
    run_task_update(alone, tok, get_method(name, options), SOURCES, cfg(1), context=context(base, 1))
    assert not torch.equal(state(alone)[MLP_OUT], continued[MLP_OUT])
    assert torch.equal(fold_adapter_state(base, method.state_dict(), method)[MLP_OUT], continued[MLP_OUT])


def test_restored_state_must_match_the_targets():
    model, tok = create_model(MICRO, seed=0)
    base = state(model)
    method = get_method("lora")
    run_task_update(model, tok, method, SOURCES, cfg(steps=1), context=context(base))
    other = get_method("lora", {"targets": ["attn_in"]})
    other.load_state_dict(method.state_dict())
    with pytest.raises(CheckpointError, match="do not target.*mlp.c_proj.weight.lora_A"):
        other.begin_task(create_model(MICRO, seed=0)[0], context(base))
    wider = get_method("lora", {"targets": ["attn_in", "mlp_out", "mlp_in"]})
    wider.load_state_dict(method.state_dict())
    with pytest.raises(CheckpointError, match="no tensor .*mlp.c_fc.weight.lora_A"):
        wider.begin_task(create_model(MICRO, seed=0)[0], context(base))
    with pytest.raises(CheckpointError, match="no weight: \\['stray'\\]"):
        fold_adapter_state(base, {**method.state_dict(), "stray": torch.zeros(1)}, method)


# -- DoRA ----------------------------------------------------------------------------------------------------------
def test_dora_starts_at_w0_and_folds_to_magnitude_times_unit_direction():
    model, tok = create_model(MICRO, seed=0)
    base = state(model)
    method = get_method("dora", {"scale": 2.0})
    method.begin_task(model, context(base))
    magnitude = torch.cat([method._live[f"{ATTN_IN}.{x}.magnitude"] for x in QKV])
    torch.testing.assert_close(magnitude, base[ATTN_IN].norm(dim=1), rtol=0, atol=0)
    attn = model.get_submodule("visual.transformer.resblocks.0.attn")
    torch.testing.assert_close(attn.in_proj_weight, base[ATTN_IN], rtol=1e-6, atol=1e-7)
    assert len(method.trainable_parameters(model)) == 4 * 3 * 3 + 4 * 3  # (A, B, m) per q, k, v and per c_proj
    method.end_task(model, context(base))

    model, _ = create_model(MICRO, seed=0)
    method = get_method("dora", {"scale": 2.0})
    run_task_update(model, tok, method, SOURCES, cfg(), context=context(base))
    after, adapter = state(model), method.state_dict()
    assert after.keys() == base.keys()
    for name in select_targets(model, "dora", "both", ["attn_in", "mlp_out"], None):
        expected, magnitudes = [], []
        for prefix, rows in row_blocks(name, base[name]):
            a, b, m = (adapter[f"{prefix}.{t}"] for t in ("lora_A", "lora_B", "magnitude"))
            assert not torch.equal(m, rows.norm(dim=1)) and b.abs().max() > 0
            v = rows + 2.0 * (b @ a)
            expected.append(m[:, None] * v / v.norm(dim=1, keepdim=True))
            magnitudes.append(m)
        torch.testing.assert_close(after[name], torch.cat(expected), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(after[name].norm(dim=1), torch.cat(magnitudes), rtol=1e-5, atol=0)  # norm m
    folded = fold_adapter_state(base, adapter, method)
    assert all(torch.equal(folded[k], after[k]) for k in base)


# -- VeRA ----------------------------------------------------------------------------------------------------------
def test_vera_trains_only_the_scaling_vectors():
    model, tok = create_model(MICRO, seed=0)
    base = state(model)
    initial = get_method("vera", {"rank": 16})
    run_task_update(create_model(MICRO, seed=0)[0], tok, initial, SOURCES, cfg(steps=0), context=context(base))
    start = initial.state_dict()

    method = get_method("vera", {"rank": 16})
    run_task_update(model, tok, method, SOURCES, cfg(), context=context(base))
    after, adapter = state(model), method.state_dict()
    assert adapter.keys() == start.keys()
    shared = sorted(k for k in adapter if k.startswith("vera_shared."))
    # q, k, v blocks of attn_in are 64×64, mlp_out 64×256: one A and one B per shape, shared by both towers' blocks
    assert shared == [f"vera_shared.{s}.vera_{x}" for s in ("64x256", "64x64") for x in "AB"]
    assert adapter["vera_shared.64x64.vera_A"].shape == (16, 64)
    assert adapter["vera_shared.64x256.vera_B"].shape == (64, 16)
    for key in shared:  # frozen: identical to the seeded init
        assert torch.equal(adapter[key], start[key])
    for name in select_targets(model, "vera", "both", ["attn_in", "mlp_out"], None):
        expected = []
        for prefix, rows in row_blocks(name, base[name]):
            d, b = adapter[f"{prefix}.vera_d"], adapter[f"{prefix}.vera_b"]
            # the reference's init: d = 0 (rank entries), b = 0.1 (out entries)
            assert torch.equal(start[f"{prefix}.vera_d"], torch.zeros(16))
            assert torch.equal(start[f"{prefix}.vera_b"], torch.full((rows.shape[0],), 0.1))
            assert not torch.equal(d, start[f"{prefix}.vera_d"]) and not torch.equal(b, start[f"{prefix}.vera_b"])
            shape = "x".join(map(str, rows.shape))
            big_a, big_b = adapter[f"vera_shared.{shape}.vera_A"], adapter[f"vera_shared.{shape}.vera_B"]
            expected.append(rows + torch.diag(b) @ big_b @ torch.diag(d) @ big_a)
        torch.testing.assert_close(after[name], torch.cat(expected), rtol=1e-6, atol=1e-7)
    folded = fold_adapter_state(base, adapter, method)
    assert all(torch.equal(folded[k], after[k]) for k in base)


def test_vera_trainable_parameters_are_d_and_b():
    model, _ = create_model(MICRO, seed=0)
    method = get_method("vera")
    method.begin_task(model, context(state(model)))
    ids = {id(p) for p in method.trainable_parameters(model)}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    assert len(names) == 4 * 3 * 2 + 4 * 2 and all(n.endswith((".vera_d", ".vera_b")) for n in names)
    # A and B are buffers: the profile counts them as the method's extra memory (rank 5, two shapes, float32)
    assert method.extra_memory_bytes([]) == 4 * (5 * 64 + 64 * 5 + 5 * 256 + 64 * 5)


# -- the reference's structure and values on the real fomo-tiny-vit (continual_lib/{lora,dora,vera}.py at 3e123d9) ---
def adapter_modules(model: torch.nn.Module, kind: type) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize(
    "name, trainable, frozen_floats",
    [
        # per block (width 128, MLP 512): q, k, v each A 5×128 + B 128×5, c_proj A 5×512 + B 128×5; 3 + 2 blocks
        ("lora", 5 * (3 * (5 * 128 + 128 * 5) + 5 * 512 + 128 * 5), 0),  # 35,200
        ("dora", 5 * (3 * (5 * 128 + 128 * 5 + 128) + 5 * 512 + 128 * 5 + 128), 0),  # + a magnitude per row: 37,760
        # d (5) and b (128) per q, k, v and per c_proj; A and B frozen, one pair per block shape (128×128, 128×512)
        ("vera", 5 * (3 * (5 + 128) + 5 + 128), 5 * 128 + 128 * 5 + 5 * 512 + 128 * 5),  # 2,660 (+ 4,480 frozen)
    ],
)
def test_reference_parameter_counts_on_fomo_tiny_vit(name, trainable, frozen_floats):
    model, _ = create_model(TINY, device="meta")
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    method = get_method(name)  # the reference's defaults: rank 5, attn in-projection (q, k, v) and c_proj, both towers
    method.begin_task(model, context(base, device="meta"))
    assert sum(p.numel() for p in method.trainable_parameters(model)) == trainable
    assert method.extra_memory_bytes([]) == 4 * frozen_floats
    targeted = select_targets(model, name, "both", ["attn_in", "mlp_out"], None)
    assert len(targeted) == 2 * (3 + 2)
    for weight in (n for n in targeted if n.endswith("attn.in_proj_weight")):
        for x in QKV:  # three separate rank-5 adapters on the fused [q; k; v] projection, one per 128 rows
            if name == "vera":
                assert method._live[f"{weight}.{x}.vera_d"].shape == (5,)
                assert method._live[f"{weight}.{x}.vera_b"].shape == (128,)
            else:
                assert method._live[f"{weight}.{x}.lora_A"].shape == (5, 128)
                assert method._live[f"{weight}.{x}.lora_B"].shape == (128, 5)


@pytest.mark.parametrize("name", ["lora", "dora", "vera"])
def test_zero_delta_at_init_on_fomo_tiny_vit(name):
    model, tok = create_model(TINY, seed=0)
    base = state(model)
    model.eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = tok(["a photo of a cat", "a dog", "something green"])
    with torch.no_grad():
        reference = model(images, tokens)
    method = get_method(name)
    method.begin_task(model, context(base))
    exact = name != "dora"  # B = 0 (LoRA), d = 0 (VeRA): ΔW is exactly 0; DoRA's m ⊙ W0 / ‖W0‖ is W0 up to rounding
    with torch.no_grad():
        adapted = model(images, tokens)
        for weight in select_targets(model, name, "both", ["attn_in", "mlp_out"], None):
            module_path, attr = weight.rsplit(".", 1)
            effective = getattr(model.get_submodule(module_path), attr)  # W' as the forward sees it
            torch.testing.assert_close(effective, base[weight], rtol=0 if exact else 1e-6, atol=0 if exact else 1e-7)
    # torch may pick another attention kernel for a computed weight: the features agree to float rounding
    for key in ("image_features", "text_features"):
        torch.testing.assert_close(adapted[key], reference[key], rtol=1e-5, atol=1e-6)


def test_lora_q_k_v_adapters_act_on_their_own_rows_and_fold_into_a_plain_checkpoint(tmp_path):
    model, _ = create_model(TINY, seed=0)
    base = state(model)
    method = get_method("lora", {"scale": 0.5})
    method.begin_task(model, context(base))
    weight = "transformer.resblocks.1.attn.in_proj_weight"
    with torch.no_grad():  # move only k's adapter of one text block
        method._live[f"{weight}.k.lora_B"].copy_(torch.randn(128, 5, generator=torch.Generator().manual_seed(2)))
    a_k, b_k = method._live[f"{weight}.k.lora_A"].detach(), method._live[f"{weight}.k.lora_B"].detach()
    adapted = model.get_submodule("transformer.resblocks.1.attn").in_proj_weight.detach()
    assert torch.equal(adapted[:128], base[weight][:128]) and torch.equal(adapted[256:], base[weight][256:])
    torch.testing.assert_close(adapted[128:256], base[weight][128:256] + 0.5 * (b_k @ a_k), rtol=0, atol=1e-7)
    assert not torch.equal(adapted[128:256], base[weight][128:256])

    method.end_task(model, context(base))
    after = state(model)
    assert after.keys() == base.keys() and changed_keys(base, after) == {weight}
    assert torch.equal(after[weight], adapted)
    folded = fold_adapter_state(base, method.state_dict(), method)
    assert all(torch.equal(folded[k], after[k]) for k in base)
    # the exported checkpoint is plain open_clip: it loads into a fresh model with the same weights
    save_checkpoint(model, tmp_path / "model.safetensors")
    reloaded, _ = create_model(TINY, checkpoint=tmp_path / "model.safetensors")
    assert all(torch.equal(v, after[k]) for k, v in state(reloaded).items())


def test_dora_weight_norm_is_a_constant_in_backward():
    """DoRA paper sec. 4.3, as the reference: W' = m ⊙ V / sg(‖V‖) — the gradient sees ‖V‖ as a constant c."""
    g = torch.Generator().manual_seed(3)
    w0, a, b = torch.randn(8, 6, generator=g), torch.randn(3, 6, generator=g), torch.randn(8, 3, generator=g)
    m, upstream, scale = torch.rand(8, generator=g) + 0.5, torch.randn(8, 6, generator=g), 0.7
    tensors = {"lora_A": torch.nn.Parameter(a.clone()), "lora_B": torch.nn.Parameter(b.clone()),
               "magnitude": torch.nn.Parameter(m.clone())}
    (fomoflux.methods.dora.DoRAWeight(tensors, scale)(w0) * upstream).sum().backward()

    v = w0 + scale * (b @ a)
    c = v.norm(dim=1, keepdim=True)
    grad_v = m[:, None] / c * upstream  # ∂L/∂V with c held constant
    torch.testing.assert_close(tensors["lora_B"].grad, scale * grad_v @ a.T)
    torch.testing.assert_close(tensors["lora_A"].grad, scale * b.T @ grad_v)
    torch.testing.assert_close(tensors["magnitude"].grad, (v / c * upstream).sum(dim=1))
    # the undetached norm gives another gradient: the check above can tell the two apart
    a_full, b_full = a.clone().requires_grad_(), b.clone().requires_grad_()
    v_full = w0 + scale * (b_full @ a_full)
    (m[:, None] * v_full / v_full.norm(dim=1, keepdim=True) * upstream).sum().backward()
    assert not torch.allclose(b_full.grad, tensors["lora_B"].grad, rtol=1e-3, atol=1e-4)


def test_vera_reference_init_on_fomo_tiny_vit():
    model, _ = create_model(TINY, seed=0)
    base = state(model)
    rank = 16  # not 5: kaiming_uniform_(a=√rank) then differs from peft's a=√5
    method = get_method("vera", {"rank": rank})
    method.begin_task(model, context(base))
    weights = adapter_modules(model, fomoflux.methods.vera.VeRAWeight)
    assert len(weights) == 5 * (3 + 1)  # q, k, v and c_proj of 3 image + 2 text blocks
    for module in weights:
        assert torch.equal(module.vera_d, torch.zeros(rank))  # the reference: d = 0, b = 0.1
        assert torch.equal(module.vera_b, torch.full((module.vera_B.shape[0],), 0.1))
        assert module.vera_d.requires_grad and module.vera_b.requires_grad
        assert not module.vera_A.requires_grad and not module.vera_B.requires_grad
    # one frozen A and B per block shape, shared by every block of both towers (both 128 wide) and by q, k, v
    shared = {}
    for module in weights:
        shared.setdefault(tuple(module.vera_A.shape), set()).add((id(module.vera_A), id(module.vera_B)))
    assert {shape: len(ids) for shape, ids in shared.items()} == {(rank, 128): 1, (rank, 512): 1}
    for big_a, big_b in ((method._live[f"vera_shared.128x{n}.vera_A"], method._live[f"vera_shared.128x{n}.vera_B"])
                         for n in (128, 512)):
        # kaiming_uniform_(a=√rank): U(±√(6 / ((1 + rank)·fan_in))), fan_in = in for A, rank for B
        for matrix, fan_in in ((big_a, big_a.shape[1]), (big_b, rank)):
            bound = math.sqrt(6 / ((1 + rank) * fan_in))
            assert matrix.abs().max() <= bound and matrix.abs().max() > 0.95 * bound
            assert abs(matrix.mean()) < 0.1 * bound
    # seeded by (seed, shape): the same run seed draws the same matrices
    again = get_method("vera", {"rank": rank})
    again.begin_task(create_model(TINY, seed=0)[0], context(base))
    assert torch.equal(again._live["vera_shared.128x512.vera_B"], method._live["vera_shared.128x512.vera_B"])


def test_lora_A_init_is_kaiming_uniform_with_a_sqrt_rank():
    model, _ = create_model(TINY, seed=0)
    base = state(model)
    method = get_method("lora", {"rank": 64})
    method.begin_task(model, context(base))
    a = method._live["visual.transformer.resblocks.2.mlp.c_proj.weight.lora_A"]
    bound = math.sqrt(6 / (65 * 512))  # the reference's a = √rank; peft's a = √5 would give 1/√512
    assert a.shape == (64, 512) and bound * 0.95 < a.abs().max() <= bound


# -- meta models (plan checks and the compute-budget profile) -------------------------------------------------------
@pytest.mark.parametrize("name", ["lora", "dora", "vera"])
def test_adapters_on_a_meta_model(name):
    model, _ = create_model(MICRO, device="meta")
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    method = get_method(name)
    method.check_model(model)
    method.begin_task(model, context(base, device="meta"))
    trainable = method.trainable_parameters(model)
    assert trainable and all(p.is_meta for p in trainable)
    rank = method.rank
    shapes = {k: tuple(v.shape) for k, v in method._live.items()}
    if name == "vera":
        assert shapes[f"{ATTN_IN}.q.vera_d"] == (rank,) and shapes["vera_shared.64x256.vera_B"] == (64, rank)
    else:
        assert shapes[f"{ATTN_IN}.v.lora_A"] == (rank, 64) and shapes[f"{ATTN_IN}.v.lora_B"] == (64, rank)
        assert shapes[f"{MLP_OUT}.lora_B"] == (64, rank)
    out = model(torch.empty(2, 3, 32, 32, device="meta"), torch.zeros(2, 24, dtype=torch.long, device="meta"))
    (out["image_features"].sum() + out["text_features"].sum()).backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in trainable)
    method.end_task(model, context(base, device="meta"))
    assert model.state_dict().keys() == base.keys()


# -- options and model checks ----------------------------------------------------------------------------------------
def test_target_selection():
    model, _ = create_model(MICRO, device="meta")
    assert select_targets(model, "lora", "image", ["attn_in", "mlp_out"], [-1]) == [
        "visual.transformer.resblocks.1.attn.in_proj_weight",
        "visual.transformer.resblocks.1.mlp.c_proj.weight",
    ]
    assert select_targets(model, "lora", "text", ["attn_out", "mlp_in"], [1, 0, -2]) == [
        "transformer.resblocks.0.attn.out_proj.weight",
        "transformer.resblocks.0.mlp.c_fc.weight",
        "transformer.resblocks.1.attn.out_proj.weight",
        "transformer.resblocks.1.mlp.c_fc.weight",
    ]
    assert len(select_targets(model, "lora", "both", ["attn_in", "attn_out", "mlp_in", "mlp_out"], None)) == 16


@pytest.mark.parametrize(
    "name, options, pattern",
    [
        ("lora", {"rank": 65}, "'lora'.*'rank' is 65.*min\\(out, in\\) = 64"),
        ("vera", {"rank": 100}, "'vera'.*'rank' is 100"),
        ("dora", {"blocks": [2]}, "'dora'.*'blocks' lists block 2.*image tower has 2"),
        ("lora", {"blocks": [-3], "towers": "text"}, "'lora'.*'blocks' lists block -3.*text tower"),
    ],
)
def test_check_model_errors(name, options, pattern):
    model, _ = create_model(MICRO, device="meta")
    method = get_method(name, options)
    with pytest.raises(ConfigError, match=pattern):
        method.check_model(model)


def test_check_model_accepts_the_largest_rank():
    model, _ = create_model(MICRO, device="meta")
    get_method("lora", {"rank": 64}).check_model(model)


def test_no_matching_weight_is_an_error():
    with pytest.raises(ConfigError, match="'lora'.*no weight matches option 'targets'"):
        # residual blocks without attention or MLP weights (another block type): nothing to adapt
        text_only = torch.nn.ModuleDict({"transformer": torch.nn.ModuleDict({
            "resblocks": torch.nn.ModuleList([torch.nn.Linear(2, 2)])})})
        get_method("lora", {"towers": "text"}).check_model(text_only)
    with pytest.raises(ConfigError, match="'towers' is 'image'.*no transformer residual blocks"):
        get_method("lora", {"towers": "image"}).check_model(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "name, options, pattern",
    [
        ("lora", {"towers": "audio"}, "'lora'.*'towers'.*'audio'"),
        ("dora", {"targets": ["qkv"]}, "'dora'.*'targets'.*'qkv'"),
        ("lora", {"targets": []}, "'lora'.*'targets'.*non-empty"),
        ("lora", {"targets": ["attn_in", "attn_in"]}, "'targets'.*twice"),
        ("vera", {"blocks": []}, "'vera'.*'blocks'"),
        ("lora", {"blocks": ["0"]}, "'lora'.*'blocks'.*'0'"),
        ("lora", {"blocks": 0}, "'lora'.*'blocks'.*0"),
        ("lora", {"rank": 0}, "'lora'.*'rank'.*0"),
        ("lora", {"rank": 2.5}, "'lora'.*'rank'.*2.5"),
        ("dora", {"scale": 0.0}, "'dora'.*'scale'.*0.0"),
        ("lora", {"scale": float("inf")}, "'lora'.*'scale'.*inf"),
        ("vera", {"b_init": 0}, "'vera'.*exactly one of .*'d_init' and 'b_init'.*d_init=0.0, b_init=0.0"),
        ("vera", {"d_init": 0.1}, "'vera'.*exactly one of .*d_init=0.1, b_init=0.1"),
        ("vera", {"scale": -1.0}, "'vera'.*'scale'.*-1.0"),
        ("vera", {"alpha": 1.0}, "'vera' has no option 'alpha'"),
    ],
)
def test_bad_options(name, options, pattern):
    with pytest.raises(ConfigError, match=pattern):
        get_method(name, options)
