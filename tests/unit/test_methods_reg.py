"""methods/ewc.py, methods/si.py, methods/anchored.py: the regularisers EWC and SI against their defining formulas."""

from __future__ import annotations

import pytest
import torch
from toy import MICRO, PAPER_MIXTURE, learnable_set, random_set, state, states_equal

from fomoflux.errors import CheckpointError, ConfigError
from fomoflux.methods import TaskContext, get_method, load_method_state, save_method_state
from fomoflux.methods import ewc as ewc_module  # registers "ewc"
from fomoflux.methods import si as si_module  # registers "si"
from fomoflux.methods.anchored import pack_state, tracked_parameters, unpack_state, weighted_squared_distance
from fomoflux.methods.ewc import estimate_fisher, fisher_batches_indices, fisher_pass_shape, fisher_seed
from fomoflux.model import create_model, load_state_dict_file
from fomoflux.preprocess import Normalizer
from fomoflux.train import TaskUpdateConfig, run_task_update
from fomoflux.train.mixture import source_batch_sizes

TASK_A = {"pretrain": learnable_set(32, 0), "update": learnable_set(32, 1), "buffer": None}
TASK_B = {"pretrain": random_set(32, 5, "pool"), "update": random_set(32, 6, "upd"), "buffer": None}


def cfg(**kw) -> TaskUpdateConfig:
    base = {"steps": 5, "batch_size": 16, "lr": 1e-3, "task_index": 0, "seed": 0, "progress": False}
    base.update(kw)
    return TaskUpdateConfig(**base)


class TwoTensors(torch.nn.Module):
    """A matrix and a vector: the smallest model with more than one parameter tensor."""

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3, 2, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(2, dtype=dtype))


# -- the shared penalty --------------------------------------------------------------------------------------------
def test_weighted_squared_distance_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True),
              torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)]
    anchors = [torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)]
    # signed weights: SI's Ω may be negative where an optimizer step went uphill
    weights = [torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)]
    value = weighted_squared_distance(params, anchors, weights)
    expected = sum((w * (p - a) ** 2).sum() for p, a, w in zip(params, anchors, weights))
    torch.testing.assert_close(value, expected.detach(), rtol=1e-12, atol=0)
    (3.0 * value).backward()
    for p, a, w in zip(params, anchors, weights):
        torch.testing.assert_close(p.grad, 6.0 * w * (p.detach() - a), rtol=1e-12, atol=0)

    frozen = [params[0].detach(), params[1]]  # only the inputs that need a gradient get one
    params[1].grad = None
    weighted_squared_distance(frozen, anchors, weights).backward()
    torch.testing.assert_close(params[1].grad, 2.0 * weights[1] * (params[1].detach() - anchors[1]))
    with pytest.raises(ValueError, match="2 parameters, 1 anchors"):
        weighted_squared_distance(params, anchors[:1], weights)


def test_state_packing_and_its_errors():
    a, b = torch.ones(2), torch.zeros(3)
    packed = pack_state({"fisher": {"x.w": a, "y": b}, "anchor": {"x.w": b[:2], "y": a.new_ones(3)}})
    assert sorted(packed) == ["anchor.x.w", "anchor.y", "fisher.x.w", "fisher.y"]
    groups = unpack_state(packed, ["fisher", "anchor"], "method 'ewc'")
    assert groups["fisher"]["x.w"] is a and groups["anchor"]["y"].shape == (3,)
    with pytest.raises(CheckpointError, match="method 'ewc'.*'omega.y'"):
        unpack_state({"omega.y": a}, ["fisher", "anchor"], "method 'ewc'")
    with pytest.raises(CheckpointError, match="different parameters.*'y'"):
        unpack_state({"fisher.y": a}, ["fisher", "anchor"], "method 'ewc'")
    with pytest.raises(CheckpointError, match="anchor.y has shape \\(3,\\)"):
        unpack_state({"fisher.y": a, "anchor.y": b}, ["fisher", "anchor"], "method 'ewc'")


# -- EWC -----------------------------------------------------------------------------------------------------------
def test_ewc_penalty_is_quadratic_around_the_anchor_with_closed_form_gradient():
    model = TwoTensors()
    g = torch.Generator().manual_seed(1)
    fisher = {"weight": torch.rand(3, 2, generator=g, dtype=torch.float64),
              "bias": torch.rand(2, generator=g, dtype=torch.float64)}
    anchor = {"weight": torch.randn(3, 2, generator=g, dtype=torch.float64),
              "bias": torch.randn(2, generator=g, dtype=torch.float64)}
    direction = {"weight": torch.randn(3, 2, generator=g, dtype=torch.float64),
                 "bias": torch.randn(2, generator=g, dtype=torch.float64)}
    method = get_method("ewc", {"lam": 3.0})
    assert method.penalty(model) is None  # no task has ended: no Fisher, no penalty
    method.load_state_dict(pack_state({"fisher": fisher, "anchor": anchor}))

    def penalty_at(distance: float) -> torch.Tensor:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(anchor[name] + distance * direction[name])
        return method.penalty(model)

    assert penalty_at(0.0).item() == 0.0
    one = penalty_at(1.0)
    closed = 1.5 * sum((fisher[n] * direction[n] ** 2).sum() for n in fisher)
    torch.testing.assert_close(one.detach(), closed, rtol=1e-12, atol=0)
    torch.testing.assert_close(penalty_at(2.0).detach(), 4.0 * closed, rtol=1e-12, atol=0)
    penalty_at(0.5).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 3.0 * fisher[name] * 0.5 * direction[name], rtol=1e-12, atol=0)
    assert get_method("ewc", {"lam": 0.0}).penalty(model) is None


def test_ewc_fisher_pass_is_sized_as_the_references():
    # continual_lib/ewc.py: ⌈max_fim_samples / task batch size⌉ batches of the update loader, whose batch is the update
    # share of the training batch: 98 batches of 175 (259 at task 0) at B = 512 and the paper's mixture
    method = get_method("ewc")
    assert (method.lam, method.gamma, method.fisher_samples) == (1.0, 1.0, 50_000)  # configs/config.yaml, ewc
    assert method.fisher_batch_size is None and method.fisher_logit_scale == "raw"
    later, first = (source_batch_sizes(512, PAPER_MIXTURE, t) for t in (1, 0))
    assert method.fisher_pass(1_000_000, later) == (98, 175) and method.fisher_pass(1_000_000, first) == (98, 259)
    assert method.fisher_pass(5_000, later) == (28, 175)  # capped by the full batches the update data holds
    assert method.fisher_pass(100, later) == (1, 100)  # fewer than one batch: one batch of all (the reference: 0/0)
    assert method.fisher_pass(1, later) == (0, 0)  # no contrastive batch at all
    assert get_method("ewc", {"fisher_batch_size": 64}).fisher_pass(1_000_000, later) == (98, 64)
    assert get_method("ewc", {"fisher_samples": 24}).fisher_pass(31, {"pretrain": 5, "update": 3}) == (3, 3)
    assert fisher_pass_shape(31, 24, 8, 8) == (3, 8) and fisher_pass_shape(31, 100, 8, 8) == (3, 8)
    with pytest.raises(ConfigError, match="'ewc'.*update data's share.*1 of 3.*'fisher_batch_size'"):
        method.fisher_pass(100, {"pretrain": 2, "update": 1})

    batches = fisher_batches_indices(31, 3, 8, torch.Generator().manual_seed(fisher_seed(0, 2)))
    chosen = torch.cat(batches)
    assert [len(b) for b in batches] == [8, 8, 8] and len(set(chosen.tolist())) == 24 and chosen.max() < 31
    other = torch.cat(fisher_batches_indices(31, 3, 8, torch.Generator().manual_seed(fisher_seed(0, 3))))
    assert not torch.equal(chosen, other) and fisher_seed(0, 2) != fisher_seed(1, 2)
    with pytest.raises(ValueError, match="4 batches of 8"):
        fisher_batches_indices(31, 4, 8, torch.Generator())


def reference_fisher(model, params, samples, tok, batches, scale: str) -> list[torch.Tensor]:
    """continual_lib/ewc.py's estimate, written out: per batch the symmetric cross-entropy of the cosine similarities
    times s (s = the logit_scale parameter for "raw", its exp for "exp"), squared gradient, mean over batches."""
    normalize = Normalizer.for_model(model)
    fisher = [torch.zeros_like(p) for p in params]
    model.eval()
    for batch in batches:
        images = normalize(samples.eval_images(batch.tolist(), model.visual.image_size[0]))
        tokens = tok(samples.first_captions(batch.tolist())).long()
        img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
        s = model.logit_scale if scale == "raw" else model.logit_scale.exp()
        logits = s * img @ txt.T
        targets = torch.arange(len(batch))
        loss = (torch.nn.functional.cross_entropy(logits, targets)
                + torch.nn.functional.cross_entropy(logits.T, targets)) / 2
        for f, g in zip(fisher, torch.autograd.grad(loss, params)):
            f += g**2
    model.train()
    return [f / len(batches) for f in fisher]


@pytest.mark.parametrize("scale", ["raw", "exp"])
def test_ewc_fisher_is_the_references_estimate(scale):
    model, tok = create_model(MICRO, seed=0)
    with torch.no_grad():
        model.logit_scale.fill_(2.0)  # raw scale 2 vs exp(2) ≈ 7.4: the two readings differ
    samples = learnable_set(32, 3)
    counts = {"pretrain": 5, "update": 6, "buffer": 0}  # B = 11, update share b = 6
    method = get_method("ewc", {"fisher_samples": 24, "fisher_logit_scale": scale})
    ctx = TaskContext(task_index=4, seed=7, sources={"update": samples}, tokenizer=tok, batch_counts=counts)
    method.begin_task(model, ctx)
    method.end_task(model, ctx)

    k, b = method.fisher_pass(len(samples), counts)
    assert (k, b) == (3, 6)  # min(⌈24 / 11⌉, ⌊32 / 6⌋) batches of the update share
    batches = torch.randperm(32, generator=torch.Generator().manual_seed(fisher_seed(7, 4)))[: k * b].view(k, b)
    named = tracked_parameters(method, model)
    expected = reference_fisher(model, [p for _, p in named], samples, tok, batches, scale)
    for (name, _), f in zip(named, expected):
        # float32 summation order: relative to each tensor's largest entry
        torch.testing.assert_close(method.importance[name], f, rtol=1e-4, atol=1e-6 * f.abs().max().item(), msg=name)
    assert method.importance["logit_scale"].item() > 0
    # the other reading of the logit scale gives another Fisher: the test tells them apart
    other = reference_fisher(model, [p for _, p in named], samples, tok, batches, "exp" if scale == "raw" else "raw")
    conv = [n for n, _ in named].index("visual.conv1.weight")
    assert not torch.allclose(method.importance["visual.conv1.weight"], other[conv], rtol=1e-2)


def test_ewc_fisher_accumulates_and_anchors_on_the_latest_weights():
    gamma, opts = 0.5, {"gamma": 0.5, "fisher_samples": 24, "fisher_batch_size": 8}
    model, tok = create_model(MICRO, seed=0)
    theta0 = state(model)
    method = get_method("ewc", opts)
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    run_task_update(model, tok, method, TASK_A, cfg(task_index=0))
    assert method.fisher_pass(32, source_batch_sizes(16, PAPER_MIXTURE, 0)) == (2, 8)  # min(⌈24/16⌉, ⌊32/8⌋)
    assert len(forwards) == 5 + 2  # 5 steps + 2 Fisher batches
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    after_1 = state(model)

    reference, _ = create_model(MICRO, seed=0)  # the first task has no penalty: plain fine-tuning, bit for bit
    run_task_update(reference, tok, get_method("finetune"), TASK_A, cfg(task_index=0))
    assert states_equal(after_1, state(reference))  # the Fisher pass changed no weight

    named = tracked_parameters(method, model)
    assert [n for n, _ in named] == [n for n, _ in model.named_parameters()]
    params = [p for _, p in named]
    sizes = {"max_samples": 24, "train_batch_size": 16, "pass_batch_size": 8, "seed": 0}
    fisher_1 = estimate_fisher(model, params, TASK_A["update"], tok, **sizes, task_index=0)
    for (name, _), f in zip(named, fisher_1):
        assert torch.equal(method.importance[name], f), name
        assert torch.equal(method.anchor[name], after_1[name]), name
    assert sum(f.sum().item() for f in fisher_1) > 0
    assert not torch.equal(method.anchor["visual.conv1.weight"], theta0["visual.conv1.weight"])

    method_state = method.state_dict()
    assert sorted(method_state) == sorted([f"fisher.{n}" for n, _ in named] + [f"anchor.{n}" for n, _ in named])
    run_task_update(model, tok, method, TASK_B, cfg(task_index=1))
    after_2 = state(model)
    fisher_2 = estimate_fisher(model, params, TASK_B["update"], tok, **sizes, task_index=1)
    for (name, _), f1, f2 in zip(named, fisher_1, fisher_2):
        torch.testing.assert_close(method.importance[name], gamma * f1 + f2, rtol=1e-5, atol=1e-12, msg=name)
        assert torch.equal(method.anchor[name], after_2[name]), name
    assert not torch.equal(after_2["visual.conv1.weight"], after_1["visual.conv1.weight"])
    # extra_memory_bytes is exactly what the method holds: Fisher + anchor
    assert method.held_bytes() == method.extra_memory_bytes(method.trainable_parameters(model))
    assert method.held_bytes() == 2 * sum(p.numel() * 4 for p in model.parameters())


# -- SI ------------------------------------------------------------------------------------------------------------
class Quadratic(torch.nn.Module):
    """θ ∈ R²; loss ½ Σ a (θ − target)²: gradient a (θ − target), so plain SGD has closed-form iterates."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))

    def loss(self, a: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * (a * (self.theta - target) ** 2).sum()


def run_sgd_task(method, model: Quadratic, a, target, lr, steps: int, task_index: int, sign: bool = False) -> list[int]:
    """The loop's hook order with plain SGD at lr ``lr`` (a number, or step -> lr), or with sign descent θ −= lr·sign(g)
    (a stand-in for Adam's normalised steps); returns the bytes the method held after each step."""
    lr_at = lr if callable(lr) else (lambda step: lr)
    ctx = TaskContext(task_index=task_index, lr_at=lr_at)
    method.begin_task(model, ctx)
    params = method.trainable_parameters(model)
    held = []
    for step in range(steps):
        loss = model.loss(a, target)
        penalty = method.penalty(model)
        if penalty is not None:
            loss = loss + penalty
        for p in params:
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in params:
                p -= lr_at(step) * (p.grad.sign() if sign else p.grad)
        method.after_step(model, step)
        held.append(method.held_bytes())
    method.end_task(model, ctx)
    return held


@pytest.mark.parametrize("path_integral", ["lr_grad_squared", "grad_times_step"])
def test_si_on_a_quadratic_matches_the_closed_form(path_integral):
    # under plain SGD the reference's lr·g² and the exact −g·Δθ coincide: both give this closed form
    a = torch.tensor([1.0, 4.0], dtype=torch.float64)
    target = torch.tensor([3.0, 0.5], dtype=torch.float64)
    lr, steps, xi, c = 0.1, 6, 1e-2, 0.7
    model = Quadratic()
    theta0 = model.theta.detach().clone()
    method = get_method("si", {"c": c, "xi": xi, "path_integral": path_integral})
    assert method.penalty(model) is None and method.state_dict() == {}
    run_sgd_task(method, model, a, target, lr, steps, 0)

    # SGD: θ_k − target = r^k (θ0 − target), r = 1 − lr·a; Δθ_k = −lr·g_k, so ω = lr Σ_k g_k² in closed form
    r = 1 - lr * a
    omega = lr * a**2 * (theta0 - target) ** 2 * (1 - r ** (2 * steps)) / (1 - r**2)
    theta_end = target + r**steps * (theta0 - target)
    big_omega = omega / ((theta_end - theta0) ** 2 + xi)
    torch.testing.assert_close(model.theta.detach(), theta_end, rtol=1e-12, atol=0)
    torch.testing.assert_close(method.importance["theta"], big_omega, rtol=1e-10, atol=0)
    assert torch.equal(method.anchor["theta"], model.theta.detach())
    assert method.path is None and method.previous is None  # ω and the previous values are freed between tasks

    # task 2 (penalised): an independent float recurrence of the same hook semantics; g includes the penalty's gradient
    target2 = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    held = run_sgd_task(method, model, a, target2, lr, steps, 1)
    theta, omega2 = theta_end.clone(), torch.zeros(2, dtype=torch.float64)
    for _ in range(steps):
        grad = a * (theta - target2) + 2 * c * big_omega * (theta - theta_end)
        new = theta - lr * grad
        omega2 += lr * grad**2 if path_integral == "lr_grad_squared" else -grad * (new - theta)
        theta = new
    torch.testing.assert_close(model.theta.detach(), theta, rtol=1e-12, atol=0)
    expected = big_omega + omega2 / ((theta - theta_end) ** 2 + xi)
    torch.testing.assert_close(method.importance["theta"], expected, rtol=1e-10, atol=0)
    assert torch.equal(method.anchor["theta"], model.theta.detach())  # θ* is the weights after task 2
    penalty = method.penalty(model)
    assert penalty is not None and penalty.item() == 0.0  # at its new anchor
    # during a penalised task SI holds Ω, θ*, ω (and the previous values): what extra_memory_bytes declares
    copies = 4 if path_integral == "grad_times_step" else 3
    assert held == [method.extra_memory_bytes([model.theta])] * steps == [copies * 2 * 8] * steps
    assert method.held_bytes() == 2 * 2 * 8


def test_si_path_integrals_under_non_sgd_steps_and_a_schedule():
    # continual_lib/si.py adds lr · g² per step, g the (penalised, clipped) gradient of the step and lr the step's.
    # Under sign descent θ −= η_n·sign(g) the exact path integral −g·Δθ is Σ η_n |g| instead: the options differ.
    a = torch.tensor([1.0, 4.0], dtype=torch.float64)
    target, target2 = (torch.tensor(v, dtype=torch.float64) for v in ([3.0, 0.5], [-1.0, 2.0]))
    xi, c, steps = 0.5, 0.3, 5
    schedule = [0.2, 0.15, 0.1, 0.05, 0.025]
    results = {}
    for path_integral in ("lr_grad_squared", "grad_times_step"):
        model = Quadratic()
        method = get_method("si", {"c": c, "xi": xi, "path_integral": path_integral})
        run_sgd_task(method, model, a, target, schedule.__getitem__, steps, 0, sign=True)
        run_sgd_task(method, model, a, target2, schedule.__getitem__, steps, 1, sign=True)
        results[path_integral] = (model.theta.detach().clone(), method.importance["theta"].clone())

    def by_hand(reference: bool):
        theta, big_omega, anchor = torch.tensor([1.0, -2.0], dtype=torch.float64), None, None
        for goal in (target, target2):
            start, omega = theta.clone(), torch.zeros(2, dtype=torch.float64)
            for lr in schedule:
                grad = a * (theta - goal)
                if big_omega is not None:
                    grad = grad + 2 * c * big_omega * (theta - anchor)
                new = theta - lr * grad.sign()
                omega += lr * grad**2 if reference else -grad * (new - theta)
                theta = new
            increment = omega / ((theta - start) ** 2 + xi)
            big_omega = increment if big_omega is None else big_omega + increment
            anchor = theta.clone()
        return theta, big_omega

    for path_integral, reference in (("lr_grad_squared", True), ("grad_times_step", False)):
        theta, big_omega = by_hand(reference)
        torch.testing.assert_close(results[path_integral][0], theta, rtol=1e-12, atol=0)
        torch.testing.assert_close(results[path_integral][1], big_omega, rtol=1e-10, atol=0)
    assert not torch.allclose(results["lr_grad_squared"][1], results["grad_times_step"][1])


def test_si_reads_the_lr_of_each_step_from_the_loop():
    class Probe(si_module.SI):
        """Adds up lr · g² itself from the gradients it sees, with the lr the loop logs for the step."""

        def after_step(self, model, step):
            self.seen.append([p.grad.detach().clone() for p in self._params])
            super().after_step(model, step)

    model, tok = create_model(MICRO, seed=0)
    method = Probe()
    method.seen = []
    names = [n for n, _ in model.named_parameters()]
    start = state(model)
    log = run_task_update(model, tok, method, TASK_A, cfg(task_index=0, log_every=1, warmup_fraction=0.4))
    lrs = log["lr"].to_list()
    assert len(set(lrs)) == 5  # warmup then cosine: a different lr every step
    for i, name in enumerate(names):
        omega = sum(lr * grads[i] ** 2 for lr, grads in zip(lrs, method.seen))
        expected = omega / ((model.state_dict()[name] - start[name]) ** 2 + 1.0)
        torch.testing.assert_close(method.importance[name], expected, rtol=1e-5, atol=1e-20, msg=name)
    with pytest.raises(ConfigError, match="'si'.*each step's lr.*lr_at"):
        fresh, toy = get_method("si"), Quadratic()
        fresh.begin_task(toy, TaskContext(task_index=0))
        fresh.after_step(toy, 0)


# -- both through the real loop ------------------------------------------------------------------------------------
class ProbedSI(si_module.SI):
    """SI that records the bytes it holds after every step."""

    def after_step(self, model, step):
        super().after_step(model, step)
        self.held = max(getattr(self, "held", 0), self.held_bytes())


@pytest.mark.parametrize("name, key, strength", [("ewc", "lam", 1e4), ("si", "c", 1e4)])
def test_penalty_restrains_task_two_and_state_round_trips(tmp_path, name, key, strength):
    # SI with the exact path integral and a small ξ: under AdamW the reference's lr·g² with ξ = 1 gives Ω ~ 1e-9 on
    # this toy, a penalty too weak to restrain anything even at c = 1e4
    base = {"fisher_samples": 16, "fisher_batch_size": 8} if name == "ewc" else {"path_integral": "grad_times_step",
                                                                                 "xi": 1e-3}
    model, tok = create_model(MICRO, seed=0)
    first = (ProbedSI if name == "si" else ewc_module.EWC)(**base, **{key: strength})
    run_task_update(model, tok, first, TASK_A, cfg(task_index=0))
    anchor = state(model)
    path = tmp_path / f"{name}.safetensors"
    save_method_state(first, path)
    restored = get_method(name, {**base, key: strength})
    load_method_state(restored, path)
    assert torch.equal(first.penalty(model), restored.penalty(model)) and first.penalty(model).item() == 0.0

    runs = {}
    for label, method in [("trained", first), ("restored", restored), ("unpenalised", None)]:
        if method is None:
            method = get_method(name, {**base, key: 0.0})
            load_method_state(method, path)
        continued, _ = create_model(MICRO, seed=0)
        continued.load_state_dict(anchor)
        log = run_task_update(continued, tok, method, TASK_B, cfg(task_index=1))
        runs[label] = (state(continued), log, method.state_dict())
    assert states_equal(runs["trained"][0], runs["restored"][0])  # bit-identical on CPU
    assert states_equal(runs["trained"][2], runs["restored"][2])
    penalties = runs["trained"][1]["penalty"].to_list()
    assert penalties[0] == 0.0 and all(p > 0 for p in penalties[1:])

    importance = unpack_state(load_state_dict_file(path), [first.importance_key, "anchor"], name)[first.importance_key]

    def weighted_distance(weights: dict) -> float:
        return sum((importance[k] * (weights[k] - anchor[k]) ** 2).sum().item() for k in importance)

    # in the penalty's own measure of distance from θ* (Euclidean distance is dominated by the many parameters of
    # near-zero importance, which AdamW moves at full speed either way), the penalised task stays far closer
    assert weighted_distance(runs["trained"][0]) < 0.5 * weighted_distance(runs["unpenalised"][0])
    trainable = first.trainable_parameters(model)
    if name == "si":
        assert first.held == first.extra_memory_bytes(trainable) == 4 * sum(p.numel() * 4 for p in trainable)
        assert first.held_bytes() == 2 * sum(p.numel() * 4 for p in trainable)


def test_state_that_does_not_fit_the_model_is_refused():
    method = get_method("si")
    method.load_state_dict(pack_state({"omega": {"theta": torch.ones(3)}, "anchor": {"theta": torch.zeros(3)}}))
    with pytest.raises(CheckpointError, match="'si'.*theta with shape \\(3,\\).*\\(2,\\)"):
        method.penalty(Quadratic().float())
    method.load_state_dict(pack_state({"omega": {"other": torch.ones(2)}, "anchor": {"other": torch.zeros(2)}}))
    with pytest.raises(ConfigError, match="'si'.*different parameter set.*'other'"):
        method.begin_task(Quadratic(), TaskContext(task_index=1))
    with pytest.raises(CheckpointError, match="'si'.*'fisher.theta'"):
        method.load_state_dict({"fisher.theta": torch.ones(2)})
    ewc = get_method("ewc")
    model, tok = create_model(MICRO, seed=0)
    ewc.begin_task(model, TaskContext(task_index=0))
    with pytest.raises(ConfigError, match="'ewc'.*at least 2 samples.*got 1 sample"):
        ewc.end_task(model, TaskContext(task_index=0, sources={"update": random_set(1, 0, "one")}, tokenizer=tok))


def test_bad_options_name_method_option_and_value():
    cases = [
        ("ewc", {"lam": -1.0}, "'ewc'.*'lam'.*-1.0"),
        ("ewc", {"lam": float("nan")}, "'ewc'.*'lam'.*nan"),
        ("ewc", {"lam": "big"}, "'ewc'.*'lam'.*'big'"),
        ("ewc", {"gamma": 1.5}, "'ewc'.*'gamma'.*1.5"),
        ("ewc", {"fisher_samples": 0}, "'ewc'.*'fisher_samples'.*0"),
        ("ewc", {"fisher_samples": 10.0}, "'ewc'.*'fisher_samples'.*10.0"),
        ("ewc", {"fisher_batch_size": 1}, "'ewc'.*'fisher_batch_size'.*1"),
        ("ewc", {"fisher_batch_size": 8.0}, "'ewc'.*'fisher_batch_size'.*8.0"),
        ("ewc", {"fisher_logit_scale": "learned"}, "'ewc'.*'fisher_logit_scale'.*raw, exp.*'learned'"),
        ("si", {"path_integral": "exact"}, "'si'.*'path_integral'.*lr_grad_squared, grad_times_step.*'exact'"),
        ("ewc", {"lambda": 1.0}, "'ewc'.*'lambda'"),
        ("si", {"c": -0.5}, "'si'.*'c'.*-0.5"),
        ("si", {"xi": 0.0}, "'si'.*'xi'.*0.0"),
        ("si", {"xi": -1e-3}, "'si'.*'xi'.*-0.001"),
    ]
    for name, options, message in cases:
        with pytest.raises(ConfigError, match=message):
            get_method(name, options)
    assert get_method("ewc", {"lam": 2}).lam == 2.0
    # configs/config.yaml of the reference, si: c 0.5, xi 1.0; continual_lib/si.py accumulates lr · g²
    assert get_method("si").config() == {"name": "si", "c": 0.5, "xi": 1.0, "path_integral": "lr_grad_squared"}


@pytest.mark.parametrize("name", ["ewc", "si"])
def test_compute_budget_profile(name):
    from fomoflux.budget import profile_step

    finetune = profile_step(MICRO, "finetune", batch_size=8)
    profile = profile_step(MICRO, name, {"fisher_samples": 100} if name == "ewc" else {}, batch_size=8)
    copies = 2 if name == "ewc" else 3
    assert profile.peak_memory_bytes - finetune.peak_memory_bytes == copies * profile.trainable_params * 4
    if name == "ewc":
        # priced at the paper's mixture: 3 update samples of 8 per batch, min(⌈100/8⌉, ⌊100/3⌋) = 13 batches
        shape = get_method("ewc", {"fisher_samples": 100}).fisher_pass(100, source_batch_sizes(8, PAPER_MIXTURE, 1))
        pass_flops = profile_step(MICRO, "finetune", batch_size=3).flops_per_step
        assert shape == (13, 3) and profile.extra_pass_flops == 13 * pass_flops
    else:
        assert profile.extra_pass_flops == 0
