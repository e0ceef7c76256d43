"""merge/: every operator against its defining property (closed forms and hand-worked examples), offline weightings,
LiNeS depths on real open_clip keys, errors naming file and key, and streaming (O(1) live tensors per key)."""

from __future__ import annotations

import math
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from toy import MICRO

import fomoflux.merge.sources as merge_sources
from fomoflux.errors import CheckpointError, ConfigError
from fomoflux.io import write_safetensors
from fomoflux.merge import (
    OPERATORS,
    available_operators,
    check_lines,
    check_operator,
    lines_depths,
    lines_scales,
    merge_checkpoints,
    merge_state_dicts,
    offline_weights,
    slerp_pair,
    tensor_generator,
)
from fomoflux.model import create_model, save_checkpoint

ALL_OPERATORS = {
    "interpolation", "slerp", "task_arithmetic", "ties", "dare", "breadcrumbs", "magmax", "model_stock",
    "tall_masks", "random",
}


def write_experts(tmp_path, base: dict, taus: list[dict]) -> tuple[str, list[str]]:
    """θ0 and θ_i = θ0 + τ_i as safetensors files; returns (base path, expert paths)."""
    base_path = str(tmp_path / "base.safetensors")
    write_safetensors(base_path, base)
    paths = []
    for index, tau in enumerate(taus):
        path = str(tmp_path / f"expert{index}.safetensors")
        write_safetensors(path, {key: base[key] + tau[key] if key in tau else base[key] for key in base})
        paths.append(path)
    return base_path, paths


def merge_1d(tmp_path, taus: list[list[float]], operator: str, weights=None, base=None, **kw) -> torch.Tensor:
    """Merge 1-D task vectors of one key "w" (θ0 = ``base`` or 0) and return the merged τ."""
    theta0 = torch.tensor(base if base is not None else [0.0] * len(taus[0]))
    base_path, paths = write_experts(tmp_path, {"w": theta0}, [{"w": torch.tensor(t)} for t in taus])
    weights = weights if weights is not None else [1.0 / len(taus)] * len(taus)
    return merge_checkpoints(base_path, paths, weights, operator, **kw)["w"] - theta0


@pytest.fixture(scope="module")
def micro_files(tmp_path_factory):
    """θ0 and three experts θ_i = θ0 + small noise, from the real MICRO model."""
    root = tmp_path_factory.mktemp("micro")
    model, _ = create_model(MICRO, seed=0)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(7)
    experts = [{k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()} for _ in range(3)]
    save_checkpoint(model, root / "base.safetensors")
    paths = []
    for index, expert in enumerate(experts):
        model.load_state_dict(expert)
        save_checkpoint(model, root / f"expert{index}.safetensors")
        paths.append(str(root / f"expert{index}.safetensors"))
    return str(root / "base.safetensors"), paths, base, experts


# ---- registry and options ------------------------------------------------------------------------------------------


def test_registry_and_options():
    assert set(available_operators()) == ALL_OPERATORS
    assert len(OPERATORS) == len(ALL_OPERATORS)
    with pytest.raises(ConfigError, match="unknown merge operator 'avg'; known: breadcrumbs, dare, interpolation"):
        check_operator("avg")
    with pytest.raises(ConfigError, match="'ties' has no option 'k' \\(given 3.*merge_function, prune, scale, scope"):
        check_operator("ties", {"k": 3})
    with pytest.raises(ConfigError, match="'ties': option 'prune' must be in \\[0, 1\\), got 1.0"):
        check_operator("ties", {"prune": 1})
    with pytest.raises(ConfigError, match="'ties': option 'merge_function' must be one of mean, sum, max, got 'med'"):
        check_operator("ties", {"merge_function": "med"})
    with pytest.raises(ConfigError, match="'dare': option 'scope' must be one of tower, tensor, got 'model'"):
        check_operator("dare", {"scope": "model"})
    with pytest.raises(ConfigError, match="'breadcrumbs'.*'prune_top' \\+ 'prune' must be < 1.*got 0.3 \\+ 0.7"):
        check_operator("breadcrumbs", {"prune_top": 0.3, "prune": 0.7})
    with pytest.raises(ConfigError, match="'magmax': option 'scale' must be float, got 'big'"):
        check_operator("magmax", {"scale": "big"})
    with pytest.raises(ConfigError, match="'tall_masks': option 'min_agree' must be int, got 1.5"):
        check_operator("tall_masks", {"min_agree": 1.5})
    with pytest.raises(ConfigError, match="'task_arithmetic': option 'scale' must be finite, got nan"):
        check_operator("task_arithmetic", {"scale": float("nan")})
    assert check_operator("ties", {"prune": 0}).config() == {"name": "ties", "prune": 0.0, "merge_function": "mean",
                                                           "scope": "tower", "scale": 1.0}
    # The reference's defaults (configs/config.yaml, offline_merge section, and its class defaults)
    defaults = {name: OPERATORS.get(name).options for name in ALL_OPERATORS}
    assert defaults["ties"]["prune"] == defaults["dare"]["prune"] == defaults["breadcrumbs"]["prune"] == 0.2
    assert defaults["breadcrumbs"]["prune_top"] == 0.01 and defaults["ties"]["merge_function"] == "mean"
    assert defaults["breadcrumbs"]["merge_function"] == "mean"
    assert all(defaults[name]["scale"] == 1.0 for name in ("task_arithmetic", "ties", "magmax", "random"))
    assert (defaults["tall_masks"]["lam"], defaults["tall_masks"]["min_agree"]) == (0.4, 0)
    assert defaults["slerp"]["eps"] == 5e-4 and defaults["model_stock"]["eps"] == 1e-8
    assert check_operator("interpolation").uses_weights and not check_operator("ties").uses_weights


# ---- operators: closed forms and hand-worked examples ------------------------------------------------------------


def test_task_arithmetic_over_one_task_returns_it(micro_files):
    base_path, paths, base, experts = micro_files
    merged = merge_checkpoints(base_path, paths[:1], [1.0], "task_arithmetic", {"scale": 1.0})
    assert merged.keys() == base.keys()
    for key, value in merged.items():
        assert value.dtype == base[key].dtype
        torch.testing.assert_close(value, experts[0][key], rtol=0, atol=1e-6)
    # λ = 0.5 over two tasks: θ0 + 0.5 (τ_1 + τ_2)
    half = merge_checkpoints(base_path, paths[:2], [0.3, 0.7], "task_arithmetic", {"scale": 0.5})
    key = "visual.transformer.resblocks.1.mlp.c_fc.weight"
    expected = base[key] + 0.5 * ((experts[0][key] - base[key]) + (experts[1][key] - base[key]))
    torch.testing.assert_close(half[key], expected, rtol=0, atol=1e-6)


def test_interpolation_closed_form(tmp_path):
    gen = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(5, 3, generator=gen), "h": torch.randn(4, generator=gen).half(),
            "step": torch.tensor([3])}
    thetas = [{"w": torch.randn(5, 3, generator=gen), "h": torch.randn(4, generator=gen).half(),
               "step": torch.tensor([10 + i])} for i in range(3)]
    write_safetensors(tmp_path / "b.safetensors", base)
    paths = []
    for index, theta in enumerate(thetas):
        write_safetensors(tmp_path / f"{index}.safetensors", theta)
        paths.append(tmp_path / f"{index}.safetensors")
    weights = [0.2, 0.3, 0.5]
    merged = merge_checkpoints(tmp_path / "b.safetensors", paths, weights)
    # Σw = 1: the weighted average of the weights themselves
    expected_w = sum(w * t["w"] for w, t in zip(weights, thetas, strict=True))
    torch.testing.assert_close(merged["w"], expected_w, rtol=0, atol=1e-6)
    assert merged["h"].dtype == torch.float16
    expected_h = sum(w * t["h"].float() for w, t in zip(weights, thetas, strict=True))
    torch.testing.assert_close(merged["h"], expected_h.half())
    assert torch.equal(merged["step"], torch.tensor([12]))  # non-floating: from the last checkpoint
    # Σw ≠ 1: θ0 + Σ w_i τ_i
    merged = merge_checkpoints(tmp_path / "b.safetensors", paths, [1.0, -0.5, 0.0])
    expected = base["w"] + (thetas[0]["w"] - base["w"]) - 0.5 * (thetas[1]["w"] - base["w"])
    torch.testing.assert_close(merged["w"], expected, rtol=0, atol=1e-6)


def test_ties_by_hand(tmp_path):
    # prune 0 and agreeing signs per entry: the plain mean of the task vectors
    taus = [[1.0, -2.0, 3.0, 0.0], [3.0, -4.0, 1.0, 0.0], [2.0, -6.0, 2.0, 0.0]]
    torch.testing.assert_close(merge_1d(tmp_path, taus, "ties", options={"prune": 0.0}),
                               torch.tensor([2.0, -4.0, 2.0, 0.0]))
    # prune 0.5 of 4 entries: k = 2, the reference keeps |τ| >= the 2nd smallest (3 of 4): [4,-1,2,0], [-3,2,0,5],
    # [1,-6,3,0]; elected signs of the sum [2,-5,5,5] are +,-,+,+; disjoint means 2.5, -3.5, 2.5, 5; × λ = 2
    taus = [[4.0, -1.0, 2.0, 0.5], [-3.0, 2.0, -1.0, 5.0], [1.0, -6.0, 3.0, 0.1]]
    torch.testing.assert_close(merge_1d(tmp_path, taus, "ties", options={"prune": 0.5, "scale": 2.0}),
                               torch.tensor([5.0, -7.0, 5.0, 10.0]))
    # prune 0.75: k = 3 keeps the top 2: [4,0,2,0], [-3,0,0,5], [0,-6,3,0]; signs of [1,-6,5,5]; 4, -6, 2.5, 5
    torch.testing.assert_close(merge_1d(tmp_path, taus, "ties", options={"prune": 0.75, "scale": 2.0}),
                               torch.tensor([8.0, -12.0, 5.0, 10.0]))
    # merge_function sum and max (the reference's alternatives to the disjoint mean)
    taus = [[4.0, -1.0, 2.0], [2.0, -3.0, -1.0]]
    for function, expected in [("mean", [3.0, -2.0, 2.0]), ("sum", [6.0, -4.0, 2.0]), ("max", [4.0, -3.0, 2.0])]:
        merged = merge_1d(tmp_path, taus, "ties", options={"prune": 0.0, "merge_function": function})
        torch.testing.assert_close(merged, torch.tensor(expected), msg=function)


def test_ties_zero_sign_takes_the_majority_sign(tmp_path):
    # Where the pruned task vectors cancel, the reference elects the sign of the sum of all elected signs.
    torch.testing.assert_close(merge_1d(tmp_path, [[1.0, 2.0, 3.0], [-1.0, 1.0, 1.0]], "ties", options={"prune": 0.0}),
                               torch.tensor([1.0, 1.5, 2.0]))
    torch.testing.assert_close(merge_1d(tmp_path, [[1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]], "ties",
                                        options={"prune": 0.0}), torch.tensor([-1.0, -1.5, -2.0]))
    # ... and where that is 0 too, its "tensor < 0" branch keeps the negative entries
    torch.testing.assert_close(merge_1d(tmp_path, [[1.0, -2.0, 3.0], [-1.0, 2.0, -3.0]], "ties",
                                        options={"prune": 0.0}), torch.tensor([-1.0, -2.0, -3.0]))


def test_ties_ranks_over_the_tower_or_per_tensor(tmp_path):
    # One expert; keys "a" and "b" are both in the text tower, "visual.c" in the image tower.
    base = {"a": torch.zeros(2), "b": torch.zeros(2), "visual.c": torch.zeros(4)}
    tau = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([10.0, 20.0]),
           "visual.c": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    base_path, paths = write_experts(tmp_path, base, [tau])
    # scope tower: the text tower has D = 4, k = 2, cut at its 2nd smallest |τ| (2): a loses its 1; the image tower
    # on its own: cut at 2 as well
    tower = merge_checkpoints(base_path, paths, [1.0], "ties", options={"prune": 0.5})
    assert tower["a"].tolist() == [0.0, 2.0] and tower["b"].tolist() == [10.0, 20.0]
    assert tower["visual.c"].tolist() == [0.0, 2.0, 3.0, 4.0]
    # scope tensor: each 2-entry tensor has k = 1 (keeps everything)
    tensor = merge_checkpoints(base_path, paths, [1.0], "ties", options={"prune": 0.5, "scope": "tensor"})
    assert tensor["a"].tolist() == [1.0, 2.0] and tensor["b"].tolist() == [10.0, 20.0]


def test_dare(tmp_path):
    gen = torch.Generator().manual_seed(3)
    taus = [torch.randn(64, generator=gen).tolist() for _ in range(3)]
    base = torch.randn(64, generator=gen).tolist()
    ties = merge_1d(tmp_path, taus, "ties", base=base, options={"prune": 0.0})
    dare = merge_1d(tmp_path, taus, "dare", base=base, options={"prune": 0.0})
    torch.testing.assert_close(dare, ties, rtol=0, atol=1e-6)
    # one task vector, p = 0.5: every entry is 0 or 2τ, about half survive, and the mask is a function of the seed
    tau = (torch.rand(20000, generator=gen) + 0.5).tolist()
    dropped = merge_1d(tmp_path, [tau], "dare", weights=[1.0], options={"prune": 0.5}, seed=1)
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], 2.0 * torch.tensor(tau)[kept])
    assert abs(kept.float().mean().item() - 0.5) < 0.02
    again = merge_1d(tmp_path, [tau], "dare", weights=[1.0], options={"prune": 0.5}, seed=1)
    other = merge_1d(tmp_path, [tau], "dare", weights=[1.0], options={"prune": 0.5}, seed=2)
    assert torch.equal(dropped, again) and not torch.equal(dropped, other)


def test_slerp_closed_forms(tmp_path):
    a = torch.tensor([3.0, 0.0, 0.0, 0.0])
    b = torch.tensor([0.0, 3.0, 0.0, 0.0])
    base = torch.tensor([0.5, -1.0, 2.0, 0.25])  # slerp acts on the weights themselves, θ0 only anchors τ

    def slerp_files(thetas, weights, **kw) -> torch.Tensor:
        return merge_1d(tmp_path, [(t - base).tolist() for t in thetas], "slerp", weights, base.tolist(), **kw) + base

    half = slerp_files([a, b], [0.5, 0.5])
    torch.testing.assert_close(half, (a + b) / math.sqrt(2.0), rtol=0, atol=1e-5)
    assert abs(half.norm().item() - 3.0) < 1e-5  # keeps the norm (a linear mean would have norm 3/√2)
    quarter = slerp_files([a, b], [0.75, 0.25])
    torch.testing.assert_close(quarter, math.cos(math.pi / 8) * a + math.sin(math.pi / 8) * b, rtol=0, atol=1e-5)
    # colinear: the linear fallback
    torch.testing.assert_close(slerp_files([a, 2 * a], [0.5, 0.5]), 1.5 * a, rtol=0, atol=1e-5)
    # three checkpoints: left fold with running weights w_i / Σ_{j≤i} w_j
    c = torch.tensor([1.0, 1.0, 2.0, -1.0])
    expected = slerp_pair(slerp_pair(a, b, 0.3 / 0.5, 1e-4), c, 0.5, 1e-4)
    torch.testing.assert_close(slerp_files([a, b, c], [0.2, 0.3, 0.5]), expected, rtol=0, atol=1e-5)
    # a leading zero weight is skipped: the same as slerping the other two
    torch.testing.assert_close(slerp_files([c, a, b], [0.0, 0.5, 0.5]), half, rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="'slerp' needs weights >= 0 with a positive sum"):
        slerp_files([a, b], [1.5, -0.5])


def test_magmax_picks_largest_and_random_is_its_seeded_control(tmp_path):
    taus = [[1.0, -5.0, 0.5], [-2.0, 3.0, 0.1], [0.5, 1.0, -0.7]]
    torch.testing.assert_close(merge_1d(tmp_path, taus, "magmax"), torch.tensor([-2.0, -5.0, -0.7]))
    torch.testing.assert_close(merge_1d(tmp_path, taus, "magmax", options={"scale": 0.5}),
                               torch.tensor([-1.0, -2.5, -0.35]))
    # random: every entry is one of the τ_i, each with frequency 1/n, and the choice is a function of the seed
    n, size = 4, 20000
    taus = [[float(i + 1)] * size for i in range(n)]
    chosen = merge_1d(tmp_path, taus, "random", seed=5)
    counts = torch.stack([(chosen == i + 1).sum() for i in range(n)])
    assert counts.sum().item() == size
    assert torch.all((counts.float() / size - 1 / n).abs() < 0.02), counts
    assert torch.equal(chosen, merge_1d(tmp_path, taus, "random", seed=5))
    assert not torch.equal(chosen, merge_1d(tmp_path, taus, "random", seed=6))


def test_model_stock(tmp_path):
    # identical experts: cos = 1, t = 1, the experts themselves
    tau = [0.3, -1.0, 2.0]
    torch.testing.assert_close(merge_1d(tmp_path, [tau] * 3, "model_stock", base=[1.0, 2.0, 3.0]), torch.tensor(tau))
    # two experts at 60°: cos = 1/2, t = 2·½ / (1 + ½) = 2/3, τ = t · mean
    t1, t2 = [2.0, 0.0, 0.0], [1.0, math.sqrt(3.0), 0.0]
    expected = (2.0 / 3.0) * (torch.tensor(t1) + torch.tensor(t2)) / 2
    torch.testing.assert_close(merge_1d(tmp_path, [t1, t2], "model_stock"), expected)
    # three experts: the one-pass estimator equals the brute-force mean of the pairwise cosines
    gen = torch.Generator().manual_seed(4)
    common = torch.randn(50, generator=gen)
    taus = [common + 0.8 * torch.randn(50, generator=gen) for _ in range(3)]
    pairs = [torch.nn.functional.cosine_similarity(taus[i], taus[j], dim=0) for i in range(3) for j in range(i + 1, 3)]
    cos = sum(pairs).item() / 3
    t = 3 * cos / (1 + 2 * cos)
    merged = merge_1d(tmp_path, [x.tolist() for x in taus], "model_stock")
    torch.testing.assert_close(merged, t * sum(taus) / 3)
    # experts at 120°: cos = -1/2 is kept (the reference clamps to [-1, 1]): t = 2·(-½) / (½ + 1 + eps) ≈ -2
    t3 = [-1.0, math.sqrt(3.0), 0.0]
    expected = (-1.0 / (0.5 + 1e-8)) * (torch.tensor(t1) + torch.tensor(t3)) / 2
    torch.testing.assert_close(merge_1d(tmp_path, [t1, t3], "model_stock"), expected)


def test_tall_masks_consensus_by_hand(tmp_path):
    taus = [[3.0, 1.0, -2.0, 0.5], [2.0, -1.0, 0.0, 0.5], [0.0, 4.0, 0.1, -3.0]]
    # the reference's defaults (lam 0.4, pruning threshold 0) keep every entry: task arithmetic
    torch.testing.assert_close(merge_1d(tmp_path, taus, "tall_masks"), torch.tensor([5.0, 4.0, -1.9, -2.0]))
    # τ_MTL = [5, 4, -1.9, -2]; |τ_MTL − τ_i| = [2,3,0.1,2.5], [3,5,1.9,2.5], [5,0,2,1]
    # masks (|τ_i| > |τ_MTL − τ_i|): [1,0,1,0], [0,0,0,0], [0,1,0,1]; agreement [1,1,1,1] < 2: nothing survives
    assert torch.equal(merge_1d(tmp_path, taus, "tall_masks", options={"lam": 1.0, "min_agree": 2}), torch.zeros(4))
    # lam = 0.5 halves the right side: [1,0,1,0], [1,0,0,0], [0,1,0,1] → agreement [2,1,1,1]: keeps entry 0 only
    torch.testing.assert_close(
        merge_1d(tmp_path, taus, "tall_masks", options={"lam": 0.5, "min_agree": 2, "scale": 0.5}),
        torch.tensor([2.5, 0.0, 0.0, 0.0]))
    # the mask is strict, as the reference's: |τ_i| = λ·|τ_MTL − τ_i| is off
    assert torch.equal(merge_1d(tmp_path, [[1.0], [1.0]], "tall_masks", options={"lam": 1.0, "min_agree": 1}),
                       torch.zeros(1))


def test_breadcrumbs_by_hand(tmp_path):
    # 10 entries, prune_top 0.1, prune 0.3: top = 1, bottom = 3; with |τ| sorted m_0..m_9 the reference keeps
    # m_3 <= |τ| <= m_8: t1 keeps |τ| in [4, 9], t2 keeps |τ| in [0.4, 0.9]
    t1 = [10.0, -9.0, 8.0, -7.0, 6.0, -5.0, 4.0, -3.0, 2.0, -1.0]
    t2 = [0.1, 0.2, -0.3, 0.4, 0.5, 0.6, -0.7, 0.8, 0.9, 1.0]
    options = {"prune_top": 0.1, "prune": 0.3}
    # masked: [0,-9,8,-7,6,-5,4,0,0,0] and [0,0,0,.4,.5,.6,-.7,.8,.9,0]; sum signs [0,-,+,-,+,-,+,+,+,0] (zeros take
    # the majority +, where nothing is positive); disjoint mean: entry 4 averages 6 and 0.5, entries 3/5/6 drop t2's
    expected = [0.0, -9.0, 8.0, -7.0, 3.25, -5.0, 4.0, 0.8, 0.9, 0.0]
    torch.testing.assert_close(merge_1d(tmp_path, [t1, t2], "breadcrumbs", options=options), torch.tensor(expected))
    summed = merge_1d(tmp_path, [t1, t2], "breadcrumbs", options={**options, "merge_function": "sum"})
    torch.testing.assert_close(summed, torch.tensor([0.0, -9.0, 8.0, -7.0, 6.5, -5.0, 4.0, 0.8, 0.9, 0.0]))
    # no pruning, agreeing signs: TIES' disjoint mean, × λ
    plain = merge_1d(tmp_path, [t1, t1], "breadcrumbs", options={"prune_top": 0.0, "prune": 0.0, "scale": 0.5})
    torch.testing.assert_close(plain, 0.5 * torch.tensor(t1))


def test_breadcrumbs_masks_each_task_vector_flattened_not_per_row(tmp_path):
    # A 2 x 5 tensor: the reference flattens the task vector (one row per model), so the cuts are over all 10
    # entries: sorted 1,2,3,4,5,10,20,30,40,50, bottom = 2, top = 1, kept 3..40 (per matrix row, the cut of each row
    # would be its own)
    tau = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [10.0, 20.0, 30.0, 40.0, 50.0]])
    base_path, paths = write_experts(tmp_path, {"w": torch.zeros(2, 5)}, [{"w": tau}])
    merged = merge_checkpoints(base_path, paths, [1.0], "breadcrumbs", options={"prune_top": 0.1, "prune": 0.2})
    assert merged["w"].tolist() == [[0.0, 0.0, 3.0, 4.0, 5.0], [10.0, 20.0, 30.0, 40.0, 0.0]]


def test_every_operator_files_equal_states_and_is_deterministic(micro_files):
    base_path, paths, base, experts = micro_files
    snapshot = [{key: value.clone() for key, value in state.items()} for state in [base, *experts]]
    for operator in sorted(ALL_OPERATORS):
        from_files = merge_checkpoints(base_path, paths, [0.2, 0.3, 0.5], operator, seed=3)
        from_states = merge_state_dicts(base, experts, [0.2, 0.3, 0.5], operator, seed=3)
        assert from_files.keys() == base.keys()
        for key in base:
            assert from_files[key].dtype == base[key].dtype
            torch.testing.assert_close(from_states[key], from_files[key], rtol=0, atol=1e-6)
        if operator in {"dare", "random"}:  # seeded: bit-identical when repeated
            again = merge_checkpoints(base_path, paths, [0.2, 0.3, 0.5], operator, seed=3)
            assert all(torch.equal(from_files[key], again[key]) for key in base), operator
    # merge_state_dicts never writes into its inputs
    originals = zip([base, *experts], snapshot, strict=True)
    assert all(torch.equal(state[key], copy[key]) for state, copy in originals for key in base)


# ---- offline weightings --------------------------------------------------------------------------------------------


def test_offline_weights_closed_forms():
    def normalised(raw):
        return [r / sum(raw) for r in raw]

    expected = {
        "uniform": [0.25] * 4,
        "linear": normalised([1, 2, 3, 4]),
        "sqrt": normalised([1, math.sqrt(2), math.sqrt(3), 2]),
        "quadratic": normalised([1, 4, 9, 16]),
        "cubic": normalised([1, 8, 27, 64]),
        "fifth": normalised([1, 32, 243, 1024]),
        "tenth": normalised([1, 1024, 59049, 1048576]),
        "exp": normalised([1, 2, 4, 8]),
        "log": normalised([math.log(2), math.log(3), math.log(4), math.log(5)]),
    }
    for scheme, weights in expected.items():
        assert offline_weights(4, scheme) == pytest.approx(weights, rel=1e-12), scheme
        assert offline_weights(4, scheme, reverse=True) == pytest.approx(weights[::-1], rel=1e-12), scheme
    assert offline_weights(1, "cubic") == [1.0]
    many = offline_weights(2000, "exp")
    assert all(math.isfinite(w) for w in many) and math.fsum(many) == pytest.approx(1.0)
    assert many[-1] / many[-2] == pytest.approx(2.0) and many[-1] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="unknown merge weighting 'fibonacci'; known: cubic, exp, fifth, linear, log"):
        offline_weights(3, "fibonacci")
    with pytest.raises(ConfigError, match="'linear': the number of checkpoints must be an int >= 1, got 0"):
        offline_weights(0, "linear")


def test_offline_weights_pin_the_reference_at_t_1_to_5():
    # The reference's offline_merge.py: exp = 2^i for i in range(n), fifth = i^5, tenth = i^10, each normalised
    pinned = {
        "exp": [[1.0], [1 / 3, 2 / 3], [1 / 7, 2 / 7, 4 / 7], [1 / 15, 2 / 15, 4 / 15, 8 / 15],
                [1 / 31, 2 / 31, 4 / 31, 8 / 31, 16 / 31]],
        "fifth": [[1.0], [1 / 33, 32 / 33], [1 / 276, 32 / 276, 243 / 276],
                  [1 / 1300, 32 / 1300, 243 / 1300, 1024 / 1300],
                  [1 / 4425, 32 / 4425, 243 / 4425, 1024 / 4425, 3125 / 4425]],
        "tenth": [[1.0], [1 / 1025, 1024 / 1025], [1 / 60074, 1024 / 60074, 59049 / 60074],
                  [1 / 1108650, 1024 / 1108650, 59049 / 1108650, 1048576 / 1108650],
                  [1 / 10874275, 1024 / 10874275, 59049 / 10874275, 1048576 / 10874275, 9765625 / 10874275]],
    }
    for scheme, rows in pinned.items():
        for t, row in enumerate(rows, start=1):
            assert offline_weights(t, scheme) == pytest.approx(row, rel=1e-12), (scheme, t)
            assert offline_weights(t, scheme, reverse=True) == pytest.approx(row[::-1], rel=1e-12), (scheme, t)


# ---- LiNeS -----------------------------------------------------------------------------------------------------------


def test_lines_depths_on_open_clip_keys():
    micro, _ = create_model(MICRO, device="meta")
    depths = lines_depths(micro.state_dict())  # 2 image blocks, 2 text blocks
    assert {(d.tower, d.blocks) for d in depths.values()} == {("image", 2), ("text", 2)}
    for key in ["transformer.resblocks.0.attn.in_proj_weight", "visual.transformer.resblocks.0.mlp.c_fc.bias"]:
        assert depths[key].depth == 0 and depths[key].fraction == 0.0, key
    for key in ["transformer.resblocks.1.ln_2.weight", "visual.transformer.resblocks.1.attn.out_proj.weight"]:
        assert depths[key].depth == 1 and depths[key].fraction == 1.0, key
    # As the reference: every key outside the residual blocks is "non-block", before or after them
    for key in ["visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.bias",
                "token_embedding.weight", "positional_embedding", "visual.ln_post.weight", "visual.proj",
                "ln_final.bias", "text_projection", "logit_scale"]:
        assert depths[key].depth is None and depths[key].fraction is None, key
    assert depths["logit_scale"].tower == "text" and depths["visual.proj"].tower == "image"
    with pytest.raises(ConfigError, match="LiNeS: no depth for key 'visual.trunk.stem.weight'"):
        lines_depths(["visual.trunk.stem.weight", "transformer.resblocks.0.ln_1.weight"])
    with pytest.raises(ConfigError, match="with 'alpha' and 'beta'"):
        check_lines({"alpha": 0.5})
    with pytest.raises(ConfigError, match="'beta' must be a finite number, got 'x'"):
        check_lines({"alpha": 0.5, "beta": "x"})
    with pytest.raises(ConfigError, match="'scaling' must be one of linear, quadratic, sqrt, got 'cubic'"):
        check_lines({"alpha": 0.5, "beta": 0.5, "scaling": "cubic"})


def test_lines_factors_per_layer_of_a_3_block_tower():
    # fomo-tiny-vit: 3 image blocks (L = 3), 2 text blocks; α + β·f(ℓ/(L−1)), α for every non-block key
    tiny, _ = create_model("fomo-tiny-vit", device="meta")
    keys = list(tiny.state_dict())
    image = "visual.transformer.resblocks.{}.attn.in_proj_weight"
    expected = {
        "linear": [0.2, 0.5, 0.8],
        "quadratic": [0.2, 0.2 + 0.6 / 4, 0.8],
        "sqrt": [0.2, 0.2 + 0.6 * math.sqrt(1 / 2), 0.8],
    }
    for scaling, factors in expected.items():
        scales = lines_scales(keys, alpha=0.2, beta=0.6, scaling=scaling)
        assert [scales[image.format(layer)] for layer in range(3)] == pytest.approx(factors), scaling
        for key in ["visual.conv1.weight", "visual.proj", "visual.ln_post.weight", "ln_final.weight",
                    "text_projection", "token_embedding.weight", "logit_scale"]:
            assert scales[key] == 0.2, (scaling, key)
    scales = lines_scales(keys, alpha=0.2, beta=0.6)
    text = [scales[f"transformer.resblocks.{layer}.ln_1.weight"] for layer in range(2)]
    assert text == pytest.approx([0.2, 0.8])  # the text tower's own L = 2


def test_lines_scales_the_merged_task_vector(micro_files):
    base_path, paths, base, _ = micro_files
    plain = merge_checkpoints(base_path, paths, [1 / 3] * 3, "task_arithmetic")
    scaled = merge_checkpoints(base_path, paths, [1 / 3] * 3, "task_arithmetic", lines={"alpha": 0.25, "beta": 0.5})
    factors = {"visual.conv1.weight": 0.25, "visual.transformer.resblocks.1.mlp.c_proj.weight": 0.75,
               "transformer.resblocks.0.attn.in_proj_weight": 0.25, "text_projection": 0.25, "logit_scale": 0.25}
    for key, factor in factors.items():
        torch.testing.assert_close(scaled[key] - base[key], factor * (plain[key] - base[key]), rtol=1e-4, atol=1e-6)
    # LiNeS' factors replace the operator's λ, as in the reference
    replaced = merge_checkpoints(base_path, paths, [1 / 3] * 3, "task_arithmetic", options={"scale": 0.3},
                                 lines={"alpha": 0.25, "beta": 0.5})
    assert all(torch.equal(replaced[key], scaled[key]) for key in base)


# ---- errors ----------------------------------------------------------------------------------------------------------


def test_errors_name_operator_option_file_and_key(tmp_path):
    gen = torch.Generator().manual_seed(0)
    base = {"a": torch.randn(3, generator=gen), "b": torch.randn(2, 2, generator=gen)}
    base_path, paths = write_experts(tmp_path, base, [{}, {}])
    with pytest.raises(ConfigError, match="'interpolation': 1 weights for 2 checkpoints"):
        merge_checkpoints(base_path, paths, [1.0])
    with pytest.raises(ConfigError, match="unknown merge operator 'mean'"):
        merge_checkpoints(base_path, paths, [0.5, 0.5], "mean")
    with pytest.raises(ConfigError, match="'dare' has no option 'p' \\(given 0.5"):
        merge_checkpoints(base_path, paths, [0.5, 0.5], "dare", {"p": 0.5})
    with pytest.raises(ConfigError, match="weights must be finite numbers, got inf"):
        merge_checkpoints(base_path, paths, [0.5, float("inf")])
    with pytest.raises(ConfigError, match="needs at least one checkpoint"):
        merge_checkpoints(base_path, [], [])
    with pytest.raises(ConfigError, match="'alpha' and 'beta'"):
        merge_checkpoints(base_path, paths, [0.5, 0.5], lines={"gamma": 1.0})
    missing = tmp_path / "missing.safetensors"
    write_safetensors(missing, {"a": base["a"]})
    with pytest.raises(CheckpointError, match=f"checkpoint {missing} lacks key 'b' of the base checkpoint"):
        merge_checkpoints(base_path, [paths[0], missing], [0.5, 0.5])
    extra = tmp_path / "extra.safetensors"
    write_safetensors(extra, {**base, "c": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=f"checkpoint {extra} has key 'c' that the base"):
        merge_checkpoints(base_path, [extra], [1.0])
    reshaped = tmp_path / "reshaped.safetensors"
    write_safetensors(reshaped, {"a": base["a"], "b": torch.zeros(4)})
    with pytest.raises(CheckpointError, match=f"checkpoint {reshaped}: key 'b' has shape \\(4,\\) but the base"):
        merge_checkpoints(base_path, [reshaped], [1.0])
    half = tmp_path / "half.safetensors"
    write_safetensors(half, {"a": base["a"].half(), "b": base["b"]})
    with pytest.raises(CheckpointError, match=f"checkpoint {half}: key 'a' has dtype F16 but the base"):
        merge_checkpoints(base_path, [half], [1.0])
    with pytest.raises(CheckpointError, match="checkpoint .*nowhere.safetensors does not exist"):
        merge_checkpoints(base_path, [tmp_path / "nowhere.safetensors"], [1.0])
    with pytest.raises(CheckpointError, match="state 1 lacks key 'b' of the base base state"):
        merge_state_dicts(base, [base, {"a": base["a"]}], [0.5, 0.5])


# ---- streaming ------------------------------------------------------------------------------------------------------


class LiveTensors(TorchDispatchMode):
    """Tracks (weakly) every tensor that torch ops create with ``numel`` entries, to count how many are alive."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel = numel
        self.tracked: list[weakref.ref] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            self.track(tensor)
        return out

    def track(self, tensor) -> None:
        if isinstance(tensor, torch.Tensor) and tensor.numel() == self.numel:
            self.tracked.append(weakref.ref(tensor))

    def alive(self) -> int:
        """Distinct storages of tracked tensors still alive."""
        storages = {t.untyped_storage().data_ptr() for t in (ref() for ref in self.tracked) if t is not None}
        return len(storages)


def streaming_profile(tmp_path, monkeypatch, operator: str, n: int) -> tuple[int, dict[str, int]]:
    """Merge n checkpoints; returns the most tensors of the probe key's size alive at any checkpoint read, and the
    number of reads of each checkpoint's probe key."""
    gen = torch.Generator().manual_seed(n)
    base = {"a": torch.randn(3, 5, generator=gen), "probe": torch.randn(7, 11, generator=gen), "c": torch.randn(13)}
    taus = [{k: torch.randn(v.shape, generator=gen) for k, v in base.items()} for _ in range(n)]
    root = tmp_path / f"{operator}{n}"
    base_path, paths = write_experts(root, base, taus)
    mode = LiveTensors(base["probe"].numel())
    reads: dict[str, int] = {}
    peak = 0
    original = merge_sources.FileSource.read

    def counting_read(self, key):
        nonlocal peak
        if key == "probe" and str(self.path) != base_path:
            peak = max(peak, mode.alive())
            reads[self.path.name] = reads.get(self.path.name, 0) + 1
        tensor = original(self, key)
        if key == "probe":
            mode.track(tensor)
        return tensor

    monkeypatch.setattr(merge_sources.FileSource, "read", counting_read)
    with mode:
        merge_checkpoints(base_path, paths, [1.0 / n] * n, operator, seed=0)
    return peak, reads


@pytest.mark.parametrize("operator", sorted(ALL_OPERATORS))
def test_merge_streams_one_checkpoint_tensor_at_a_time(tmp_path, monkeypatch, operator):
    few, _ = streaming_profile(tmp_path, monkeypatch, operator, 3)
    many, many_reads = streaming_profile(tmp_path, monkeypatch, operator, 12)
    # Live tensors of the key's size while reading a checkpoint: θ0, the operator's accumulators and the previous
    # task vector; the same for 12 checkpoints as for 3, so memory does not grow with n.
    assert many <= few <= 6, (few, many)
    # the TIES family over whole towers: a thresholds pass (not DARE's), a sign pass, the merge pass
    passes = {"ties": 3, "breadcrumbs": 3, "dare": 2}.get(operator, 1)
    assert set(many_reads.values()) == {passes} and len(many_reads) == 12


def test_tensor_generator_is_a_pure_function_of_seed_key_index():
    def draw(*args):
        return torch.rand(4, generator=tensor_generator(*args))

    assert torch.equal(draw(0, "w", 1), draw(0, "w", 1))
    assert not torch.equal(draw(0, "w", 1), draw(0, "w", 2))
    assert not torch.equal(draw(0, "w", 1), draw(0, "v", 1))
    assert not torch.equal(draw(0, "w", 1), draw(1, "w", 1))
