"""train/schedule.py: every lr schedule against its closed form (class docstrings), its shape claims, its errors,
and one run of the real task-update loop that must log exactly the schedule's values."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from toy import MICRO, random_set

from fomoflux.errors import ConfigError
from fomoflux.methods import get_method
from fomoflux.model import create_model
from fomoflux.train import TaskUpdateConfig, run_task_update
from fomoflux.train.schedule import (
    RsqrtSchedule,
    available_schedules,
    cosine_with_warmup,
    make_schedule,
    meta_peak,
)

ETA0 = 2e-4
ETA_MIN = 1e-3 * ETA0
NEW = ("meta_cosine", "dynamic_recovery", "rsqrt", "rsqrt_continued", "rsqrt_autoregressive", "rsqrt_recovered", "wsd")
RSQRT = ("rsqrt", "rsqrt_continued", "rsqrt_autoregressive", "rsqrt_recovered")
TASKS = (0, 1, 3, 19)


# -- the formulas, written out independently of the module ----------------------------------------------------------
def cos_seg(p: float, a: float, b: float) -> float:
    return b + 0.5 * (1 + math.cos(math.pi * p)) * (a - b)


def peak_ref(t: int, S: int, W: int) -> float:
    D = S - W
    return ETA0 if t == 0 else cos_seg((t * D + 1) / ((t + 1) * D), ETA0, ETA_MIN)


def rsqrt_ref(n: int, W: int, peak: float) -> float:
    return peak * (n + 1) / W if n < W else ETA_MIN + math.sqrt(W / (n + 1)) * (peak - ETA_MIN)


def continued_ref(g: int, W: int) -> float:
    return rsqrt_ref(g, W, ETA0)


def uncooled_ref(name: str, t: int, n: int, S: int, W: int) -> float:
    if name == "rsqrt":
        return rsqrt_ref(n, W, ETA0)
    if name == "rsqrt_continued":
        return continued_ref(t * S + n, W)
    if name == "rsqrt_autoregressive":
        return rsqrt_ref(n, W, peak_ref(t, S, W))
    assert name == "rsqrt_recovered"
    return continued_ref(t * S + W, W) * (n + 1) / W if n < W else continued_ref(t * S + n, W)


def rsqrt_family_ref(name: str, t: int, n: int, S: int, W: int, C: int) -> float:
    start = S - C
    if n < start:
        return uncooled_ref(name, t, n, S, W)
    return uncooled_ref(name, t, start, S, W) * (S - n) / C


def reference(name: str, t: int, n: int, S: int, W: int, C: int = 0, K: int = 0, shape: str = "linear") -> float:
    if name == "meta_cosine":
        peak = peak_ref(t, S, W)
        return peak * (n + 1) / W if n < W else cos_seg((n - W + 1) / (S - W), peak, ETA_MIN)
    if name == "dynamic_recovery":
        G = (t + 1) * S
        if n < W:
            return cos_seg((t * S + W + 1) / G, ETA0, ETA_MIN) * (n + 1) / W
        return cos_seg((t * S + n + 1) / G, ETA0, ETA_MIN)
    if name == "wsd":
        if n < W:
            return ETA0 * (n + 1) / W
        if n < S - K:
            return ETA0
        p = (n - (S - K) + 1) / K
        factor = {"linear": p, "cosine": 0.5 * (1 - math.cos(math.pi * p)), "sqrt": math.sqrt(p)}[shape]
        return ETA0 - factor * (ETA0 - ETA_MIN)
    return rsqrt_family_ref(name, t, n, S, W, C)


def sched(name: str, t: int = 0, S: int = 1420, **options):
    return make_schedule(name, total_steps=S, base_lr=ETA0, task_index=t, **options)


# -- formulas at chosen steps ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("S", [1420, 100, 37])
def test_schedules_match_their_formulas(name, S):
    W = {1420: 142, 100: 10, 37: 4}[S]
    C = K = 0
    if name in RSQRT:
        C = math.ceil(round(0.1 * S, 9))
    if name == "wsd":
        K = math.ceil(round(0.2 * S, 9))
    start = S - max(C, K)  # cooldown / decay start (S when there is none)
    steps = sorted({0, 1, W - 2, W - 1, W, W + 1, (W + S) // 2, start - 1, start, start + 1, S - 2, S - 1} - {S, S + 1})
    for t in TASKS:
        s = sched(name, t, S)
        assert s.warmup_steps == W
        for n in steps:
            expected = reference(name, t, n, S, W, C=C, K=K)
            assert s.lr(n) == pytest.approx(expected, rel=1e-12, abs=1e-20), (name, t, n)


@pytest.mark.parametrize("shape", ["linear", "cosine", "sqrt"])
def test_wsd_shapes_and_decay_option(shape):
    S, W, K = 200, 20, 60
    s = sched("wsd", 2, S, decay=0.3, decay_shape=shape)
    assert s.decay_steps == K
    for n in (0, 19, 20, 139, 140, 141, 170, 198, 199):
        assert s.lr(n) == pytest.approx(reference("wsd", 2, n, S, W, K=K, shape=shape), rel=1e-12)
    assert s.lr(139) == ETA0 and s.lr(199) == pytest.approx(ETA_MIN)
    # the three shapes at the middle of the decay: η0 − {½, ½, √½}·(η0 − η_min)
    mid = {"linear": 0.5, "cosine": 0.5, "sqrt": math.sqrt(0.5)}[shape]
    assert s.lr(140 + 29) == pytest.approx(ETA0 - mid * (ETA0 - ETA_MIN), rel=1e-12)
    assert sched("wsd", 0, 50, decay=0).lr(49) == ETA0  # no decay phase: warmup then η0 to the end


def test_rsqrt_cooldown_option_and_values():
    S, W = 100, 10
    for cooldown, C in ((0.1, 10), (0.25, 25), (0.0, 0), (0.9, 90)):
        s = sched("rsqrt", 0, S, cooldown=cooldown)
        assert s.cooldown_steps == C
        start = S - C
        for n in {0, 9, 10, start - 1, start, S - 1} - {S}:
            assert s.lr(n) == pytest.approx(rsqrt_family_ref("rsqrt", 0, n, S, W, C) if C else rsqrt_ref(n, W, ETA0))
    s = sched("rsqrt", 0, S)
    # cooldown start: the rsqrt's own value η_min + sqrt(10/91)(η0 − η_min); last step a tenth of it; 0 at n = S
    at_start = ETA_MIN + math.sqrt(10 / 91) * (ETA0 - ETA_MIN)
    assert s.lr(90) == pytest.approx(at_start, rel=1e-12)
    assert s.lr(99) == pytest.approx(at_start / 10, rel=1e-12)
    assert s.lr(95) == pytest.approx(at_start * 5 / 10, rel=1e-12)
    # a cooldown right after the warmup: from u(10) = η_min + sqrt(10/11)(η0 − η_min) down over 90 steps
    s = sched("rsqrt", 0, S, cooldown=0.9)
    assert s.lr(10) == pytest.approx(ETA_MIN + math.sqrt(10 / 11) * (ETA0 - ETA_MIN), rel=1e-12)
    assert s.lr(55) == pytest.approx(s.lr(10) * 45 / 90, rel=1e-12)


# -- the meta-schedule's peaks -----------------------------------------------------------------------------------------
def test_meta_cosine_peaks():
    S, W = 1420, 142
    peaks = [sched("meta_cosine", t, S).peak for t in range(20)]
    assert peaks[0] == ETA0
    # fraction of the way from η_min to η0: ≈ ½ at t = 1, ≈ 0.006 at t = 19 (BENCHMARK.md)
    share = [(p - ETA_MIN) / (ETA0 - ETA_MIN) for p in peaks]
    assert share[1] == pytest.approx(0.5, abs=1e-3) and share[1] == pytest.approx(0.4993854476, rel=1e-9)
    assert share[19] == pytest.approx(0.006, abs=2e-4) and share[19] == pytest.approx(0.0061462197, rel=1e-8)
    # with η_min = 1e-3 η0 the peak itself is 0.0071 η0; with η_min = 0 it is the 0.006 η0 of the paper
    assert peaks[19] / ETA0 == pytest.approx(0.00714007, rel=1e-5)
    no_floor = make_schedule("meta_cosine", total_steps=S, base_lr=ETA0, min_lr_ratio=0.0, task_index=19)
    assert no_floor.peak / ETA0 == pytest.approx(0.006146, rel=1e-4)
    assert all(a > b for a, b in pairwise(peaks))  # strictly lower peak every task
    for t in (1, 19):
        s = sched("meta_cosine", t, S)
        assert s.lr(W - 1) == pytest.approx(peaks[t], rel=1e-12) and s.lr(S - 1) == pytest.approx(ETA_MIN, rel=1e-12)
        assert s.lr(0) == pytest.approx(peaks[t] / W, rel=1e-12)
    assert meta_peak(5, 10, 10, ETA0, ETA_MIN) == ETA0  # all warmup: no decay phase to advance a cosine
    assert sched("meta_cosine", 0, 500).lr(123) == sched("cosine", 7, 500).lr(123)  # task 0 is the plain cosine


# -- shape claims -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NEW + ("cosine",))
def test_warmup_rises_and_the_rest_never_rises(name):
    S = 300
    for t in (0, 1, 4):
        s = sched(name, t, S)
        W = s.warmup_steps
        values = [s.lr(n) for n in range(S)]
        if name == "rsqrt_continued" and t > 0:
            W = 0  # only task 0 warms up; later tasks resume the rsqrt and never rise
        assert all(a < b for a, b in zip(values[:W], values[1:W]))
        assert all(a >= b for a, b in zip(values[max(W - 1, 0) :], values[W:])), name
        assert min(values) > 0


@pytest.mark.parametrize("name", ["cosine", "meta_cosine", "dynamic_recovery", "wsd"])
def test_decaying_schedules_end_at_eta_min(name):
    for t in TASKS:
        for S in (1420, 55):
            assert sched(name, t, S).lr(S - 1) == pytest.approx(ETA_MIN, rel=1e-12), (name, t, S)


def test_continuity_at_the_joints():
    S, W = 1000, 100
    for t in TASKS:
        rec = sched("dynamic_recovery", t, S)
        assert rec.lr(W - 1) == rec.lr(W)  # warmup ends on the global cosine's value at the first post-warmup step
        assert rec.lr(W) == pytest.approx(cos_seg((t * S + W + 1) / ((t + 1) * S), ETA0, ETA_MIN), rel=1e-12)
        rsr = sched("rsqrt_recovered", t, S)
        assert rsr.lr(W - 1) == pytest.approx(rsr.lr(W), rel=1e-12)
    # rsqrt: the decay branch with offset n + 1 is η0 at n = W − 1, where the warmup peaks
    assert ETA_MIN + math.sqrt(W / W) * (ETA0 - ETA_MIN) == ETA0
    r = sched("rsqrt", 2, S)
    assert r.lr(W - 1) == ETA0 and 0 < r.lr(W - 1) - r.lr(W) < 0.01 * ETA0
    # every cooldown starts on its curve (no jump at n_c = 900) and moves by u(n_c)/C per step afterwards
    for name in RSQRT:
        for t in (0, 3):
            s = sched(name, t, S)
            u = uncooled_ref(name, t, 900, S, W)
            assert s.lr(900) == pytest.approx(u, rel=1e-12)
            assert abs(s.lr(899) - s.lr(900)) < 1e-3 * ETA0
            steps = [s.lr(n) - s.lr(n + 1) for n in range(900, S - 1)]
            assert steps == pytest.approx([u / 100] * len(steps), rel=1e-9)


def test_cross_task_relations():
    S, W = 400, 40
    rsqrt0 = [sched("rsqrt", 0, S).lr(n) for n in range(S)]
    for name in ("rsqrt_continued", "rsqrt_autoregressive"):
        assert [sched(name, 0, S).lr(n) for n in range(S)] == pytest.approx(rsqrt0, rel=1e-15)
    # continued: task t resumes the one rsqrt at global step t·S (no warmup past task 0)
    cont = sched("rsqrt_continued", 3, S)
    assert cont.lr(0) == pytest.approx(ETA_MIN + math.sqrt(W / (3 * S + 1)) * (ETA0 - ETA_MIN), rel=1e-12)
    # recovered: after the warmup it is the continued schedule, step for step
    rec, cont = sched("rsqrt_recovered", 3, S), sched("rsqrt_continued", 3, S)
    assert [rec.lr(n) for n in range(W, S)] == [cont.lr(n) for n in range(W, S)]
    # dynamic recovery: task t's post-warmup steps are the tail of one cosine over (t+1)·S steps
    for t in (0, 2, 5):
        s = sched("dynamic_recovery", t, S)
        tail = [cos_seg((g + 1) / ((t + 1) * S), ETA0, ETA_MIN) for g in range(t * S + W, (t + 1) * S)]
        assert [s.lr(n) for n in range(W, S)] == pytest.approx(tail, rel=1e-12)
    peaks = [sched("dynamic_recovery", t, S).peak for t in range(6)]
    assert all(a > b for a, b in pairwise(peaks))
    # the autoregressive rsqrt peaks where meta_cosine peaks
    for t in (1, 4):
        assert sched("rsqrt_autoregressive", t, S).lr(W - 1) == pytest.approx(sched("meta_cosine", t, S).peak)


@pytest.mark.parametrize("name", NEW)
def test_no_schedule_depends_on_the_stream_length(name):
    for t in (0, 2):
        values = [[sched(name, t, 120, num_tasks=T).lr(n) for n in range(120)] for T in (None, t + 1, 20, 1000)]
        assert all(v == values[0] for v in values[1:])


# -- ends and errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", available_schedules())
def test_past_the_end_and_negative_steps(name):
    s = sched(name, 1, 50)
    assert s.lr(50) == s.lr(49) and s.lr(10_000) == s.lr(49) and s(7) == s.lr(7)
    with pytest.raises(ValueError, match="-1"):
        s.lr(-1)
    empty = sched(name, 1, 0)  # an empty task builds (the loop does so for steps = 0) but has no lr to give
    with pytest.raises(ValueError, match="no steps"):
        empty.lr(0)


def test_cosine_function_past_the_end_keeps_the_last_value():
    assert cosine_with_warmup(120, 100, 10, 1.0, 0.01) == 0.01
    assert cosine_with_warmup(5, 3, 3, 1.0, 0.01) == 1.0  # all warmup: the last step's η0, not η_min


@pytest.mark.parametrize(
    "name, kwargs, pattern",
    [
        ("meta_cosine", {"warmup_fraction": 1.5}, r"'meta_cosine': warmup_fraction .*1\.5"),
        ("wsd", {"warmup_fraction": -0.1}, r"'wsd': warmup_fraction .*-0\.1"),
        ("rsqrt", {"cooldown": 1.5}, r"'rsqrt': cooldown .*1\.5"),
        ("rsqrt_continued", {"cooldown": -0.2}, r"'rsqrt_continued': cooldown .*-0\.2"),
        ("rsqrt_recovered", {"cooldown": 0.95}, r"'rsqrt_recovered': cooldown .*warmup.*0\.95"),
        ("rsqrt_autoregressive", {"cooldown": "lots"}, r"'rsqrt_autoregressive': cooldown .*'lots'"),
        ("rsqrt", {"warmup_fraction": 0.0}, r"'rsqrt': warmup_steps .*got 0"),
        ("wsd", {"decay": 2}, r"'wsd': decay .*2"),
        ("wsd", {"decay": 0.95}, r"'wsd': decay .*warmup.*0\.95"),
        ("wsd", {"decay_shape": "exp"}, r"'wsd': decay_shape .*linear, cosine, sqrt.*'exp'"),
        ("dynamic_recovery", {"cooldown": 0.1}, r"'dynamic_recovery' has no option 'cooldown'"),
        ("constant", {"warmup": "yes"}, r"'constant': warmup .*'yes'"),
        ("cosine", {"base_lr": 0.0}, r"'cosine': lr .*0\.0"),
        ("meta_cosine", {"min_lr_ratio": 2.0}, r"'meta_cosine': min_lr_ratio .*2\.0"),
    ],
)
def test_bad_settings_are_config_errors(name, kwargs, pattern):
    args = {"total_steps": 100, "base_lr": ETA0, "task_index": 1, **kwargs}
    with pytest.raises(ConfigError, match=pattern):
        make_schedule(name, **args)


def test_direct_construction_checks_the_warmup():
    with pytest.raises(ConfigError, match=r"'rsqrt': warmup_steps exceeds the task's 10 steps, got 11"):
        RsqrtSchedule(total_steps=10, base_lr=1.0, warmup_steps=11, min_lr=0.0)
    with pytest.raises(ConfigError, match=r"'rsqrt': task_index .*-1"):
        RsqrtSchedule(total_steps=10, base_lr=1.0, warmup_steps=1, min_lr=0.0, task_index=-1)
    ok = RsqrtSchedule(total_steps=10, base_lr=1.0, warmup_steps=1, min_lr=0.0, cooldown=1 - 0.1)
    assert ok.cooldown_steps == 9 and ok.lr(0) == 1.0 and ok.lr(1) == pytest.approx(math.sqrt(1 / 2))


def test_integer_fractions_are_accepted_as_floats():
    cool = sched("rsqrt", 0, 20, cooldown=0)
    assert isinstance(cool.cooldown, float) and cool.cooldown_steps == 0 and cool.lr(19) == pytest.approx(
        ETA_MIN + math.sqrt(2 / 20) * (ETA0 - ETA_MIN), rel=1e-12
    )
    whole = make_schedule("wsd", total_steps=20, base_lr=ETA0, warmup_fraction=0, decay=1)
    assert isinstance(whole.decay, float) and whole.lr(0) == pytest.approx(ETA0 - (ETA0 - ETA_MIN) / 20, rel=1e-12)


# -- through the real loop --------------------------------------------------------------------------------------------
def test_loop_logs_the_meta_schedule():
    torch.manual_seed(0)
    model, tokenizer = create_model(MICRO, seed=0)
    sources = {
        "pretrain": random_set(24, 0, "pool"), "update": random_set(12, 1, "upd"), "buffer": random_set(12, 2, "buf")
    }
    cfg = TaskUpdateConfig(steps=12, batch_size=8, lr=1e-3, task_index=3, schedule="meta_cosine", progress=False,
                           log_every=1)
    log = run_task_update(model, tokenizer, get_method("finetune"), sources, cfg)
    expected = make_schedule("meta_cosine", total_steps=12, base_lr=1e-3, task_index=3)
    assert log["step"].to_list() == list(range(12))
    assert log["lr"].to_list() == [expected.lr(n) for n in range(12)]
    # and those are the meta-schedule's numbers: W = 2, peak η_max(3) = cos_seg((3·10 + 1)/(4·10)) of the way
    peak = 1e-6 + 0.5 * (1 + math.cos(math.pi * 31 / 40)) * (1e-3 - 1e-6)
    assert log["lr"][1] == pytest.approx(peak, rel=1e-12) and log["lr"][0] == pytest.approx(peak / 2, rel=1e-12)
    assert log["lr"][11] == pytest.approx(1e-6, rel=1e-12)


def test_loop_rejects_a_bad_schedule_before_training():
    model, tokenizer = create_model(MICRO, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TaskUpdateConfig(steps=10, batch_size=8, lr=1e-3, mixture={"update": 1.0}, schedule="rsqrt",
                           schedule_options={"cooldown": 0.95}, progress=False)
    with pytest.raises(ConfigError, match="'rsqrt': cooldown"):
        run_task_update(model, tokenizer, get_method("finetune"), {"update": random_set(12, 1, "upd")}, cfg)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
