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
# The cross-task schedules are the reference's: initialize_optimizer_and_scheduler in
# continual_lib/utils/base_continual_learner.py of pseudope/fomo_in_flux at commit 3e123d9 (lr = η0 · lambda(n), one
# LambdaLR per task, stepped once per training step). The closed forms below were derived from its nested functions
# rsqrt, rsqrt_recovered (= scheduler "rsqrt_with_recovery", one per recovery_mode), cosine_with_linear_warmup_recovered
# (= "cosine_with_linear_warmup_and_recovery") and cosine_with_linear_warmup_recovered_dynamic
# (= "cosine_with_linear_warmup_and_dynamic_recovery"), with warmup_perc = cooldown_perc = 0.1 and cosine_lr_mul = 1e-3.
def cos_seg(p: float, a: float, b: float) -> float:
    return b + 0.5 * (1 + math.cos(math.pi * p)) * (a - b)


def peak_ref(t: int, S: int, W: int) -> float:
    """cosine_with_linear_warmup_recovered, recovery_mode autoregressive: vmul = ½(1 + cos(π(t·D + 1)/((t + 1)D)))."""
    D = S - W
    return ETA0 if t == 0 else cos_seg((t * D + 1) / ((t + 1) * D), ETA0, ETA_MIN)


def rsqrt_peak_ref(name: str, t: int, S: int, W: int, C: int) -> float:
    """rsqrt_recovered's base_lr per recovery_mode (the warmup branch's for recovered), rsqrt's η0."""
    if t == 0 or name == "rsqrt":
        return ETA0
    E = S - C - W
    if name == "rsqrt_continued":  # seen = t·(S − C) − (t − 1)·W, vmul = sqrt(W / seen)
        return ETA_MIN + math.sqrt(W / (t * (S - C) - (t - 1) * W)) * (ETA0 - ETA_MIN)
    if name == "rsqrt_autoregressive":  # seen = t·S + W, vmul = sqrt((t + 1)·W / seen)
        return ETA_MIN + math.sqrt((t + 1) * W / (t * S + W)) * (ETA0 - ETA_MIN)
    assert name == "rsqrt_recovered"  # vmul = f_mul(W, t·E) with f_mul(W, x) = sqrt(W / (x + t·E))
    return ETA_MIN + math.sqrt(W / (t * E + t * E)) * (ETA0 - ETA_MIN)


def uncooled_ref(name: str, t: int, n: int, S: int, W: int, C: int) -> float:
    """The reference's decay branch for W <= n: η_min + f_mul(W, n)·(base_lr − η_min)."""
    if name == "rsqrt_recovered":  # f_mul(W, n) = sqrt(W / (n + t·(S − C − W))), base_lr = η0 outside the warmup
        return ETA_MIN + math.sqrt(W / (n + t * (S - C - W))) * (ETA0 - ETA_MIN)
    return ETA_MIN + math.sqrt(W / n) * (rsqrt_peak_ref(name, t, S, W, C) - ETA_MIN)


def rsqrt_family_ref(name: str, t: int, n: int, S: int, W: int, C: int) -> float:
    if n < W:  # base_lr · (n + 1) / W
        return rsqrt_peak_ref(name, t, S, W, C) * (n + 1) / W
    if C and n >= S - C:  # ref_lr · (C − cool_epoch − 1) / C with cool_epoch = n − (S − C)
        return uncooled_ref(name, t, n, S, W, C) * (C - (n - (S - C)) - 1) / C
    return uncooled_ref(name, t, n, S, W, C)


def dynamic_ref(t: int, n: int, S: int, W: int) -> float:
    """cosine_with_linear_warmup_recovered_dynamic: warmup to the autoregressive peak, then the task cosine of a task
    G = (t + 1)·S long (its own warmup ceil(0.1·G)) at the global step t·S + n."""
    if n < W:
        return peak_ref(t, S, W) * (n + 1) / W
    G = (t + 1) * S
    WG = math.ceil(0.1 * G)
    return cos_seg((t * S + n - WG + 1) / (G - WG), ETA0, ETA_MIN)


def reference(name: str, t: int, n: int, S: int, W: int, C: int = 0, K: int = 0, shape: str = "linear") -> float:
    if name == "meta_cosine":
        peak = peak_ref(t, S, W)
        return peak * (n + 1) / W if n < W else cos_seg((n - W + 1) / (S - W), peak, ETA_MIN)
    if name == "dynamic_recovery":
        return dynamic_ref(t, n, S, W)
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


def test_paper_stream_points_against_the_reference():
    """T = 20 tasks of S = 1420 steps (W = C = 142): the reference's values, as fractions of η0, at chosen points."""
    S, W, C = 1420, 142, 142
    points = [(t, n) for t in (0, 1, 2, 9, 19) for n in (0, 70, 141, 142, 143, 700, 1277, 1278, 1300, 1418, 1419)]
    for name in ("rsqrt", "rsqrt_continued", "rsqrt_autoregressive", "rsqrt_recovered", "dynamic_recovery",
                 "meta_cosine"):
        for t, n in points:
            expected = reference(name, t, n, S, W, C=C)
            assert sched(name, t, S).lr(n) == pytest.approx(expected, rel=1e-12, abs=1e-20), (name, t, n)
    # a few of those numbers by hand (η_min = 1e-3·η0; E = S − C − W = 1136)
    m = 1e-3
    at = {name: (lambda t, n, name=name: sched(name, t, S).lr(n) / ETA0) for name in NEW}
    assert at["rsqrt"](5, 142) == 1.0 and at["rsqrt"](5, 141) == 1.0 and at["rsqrt"](5, 1419) == 0.0
    assert at["rsqrt"](0, 1300) == pytest.approx((m + math.sqrt(142 / 1300) * (1 - m)) * 119 / 142, rel=1e-12)
    assert at["rsqrt_autoregressive"](19, 141) == pytest.approx(m + math.sqrt(20 * 142 / (19 * 1420 + 142)) * (1 - m))
    assert at["rsqrt_autoregressive"](19, 141) == pytest.approx(0.32427, abs=1e-5)
    assert at["rsqrt_continued"](1, 141) == pytest.approx(m + math.sqrt(142 / (1420 - 142)) * (1 - m), rel=1e-12)
    assert at["rsqrt_recovered"](1, 141) == pytest.approx(m + math.sqrt(142 / (2 * 1136)) * (1 - m), rel=1e-12)
    assert at["rsqrt_recovered"](1, 142) == pytest.approx(m + math.sqrt(142 / (142 + 1136)) * (1 - m), rel=1e-12)
    assert at["dynamic_recovery"](1, 141) == pytest.approx(at["meta_cosine"](1, 141), rel=1e-15)
    assert at["dynamic_recovery"](1, 700) == pytest.approx(cos_seg((1278 + 700 - 142 + 1) / 2556, 1, m), rel=1e-12)


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
            assert s.lr(n) == pytest.approx(rsqrt_family_ref("rsqrt", 0, n, S, W, C))
    s = sched("rsqrt", 0, S)
    u = lambda n: ETA_MIN + math.sqrt(10 / n) * (ETA0 - ETA_MIN)  # noqa: E731 - the uncooled rsqrt
    # the cooldown scales the rsqrt at the step itself by (S − n − 1)/C: 9/10 at its first step, 0 at the last
    assert s.lr(89) == pytest.approx(u(89), rel=1e-12)
    assert s.lr(90) == pytest.approx(u(90) * 9 / 10, rel=1e-12)
    assert s.lr(95) == pytest.approx(u(95) * 4 / 10, rel=1e-12)
    assert s.lr(98) == pytest.approx(u(98) / 10, rel=1e-12) and s.lr(99) == 0.0
    # a cooldown right after the warmup: from u(10)·89/90 = η0·89/90 down over 90 steps
    s = sched("rsqrt", 0, S, cooldown=0.9)
    assert s.lr(10) == pytest.approx(ETA0 * 89 / 90, rel=1e-12)
    assert s.lr(55) == pytest.approx(u(55) * 44 / 90, rel=1e-12)


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
        assert all(a < b for a, b in zip(values[:W], values[1:W]))
        if name == "rsqrt_recovered" and t > 0:
            # the reference's recovered warmup ends below the curve it then follows: one rise more, at n = W
            assert values[W] > values[W - 1]
            assert all(a >= b for a, b in zip(values[W:], values[W + 1 :])), name
        else:
            assert all(a >= b for a, b in zip(values[max(W - 1, 0) :], values[W:])), name
        if name in RSQRT:
            assert values[-1] == 0.0 and min(values[:-1]) > 0  # the reference's cooldown ends on a step at lr 0
        else:
            assert min(values) > 0


@pytest.mark.parametrize("name", ["cosine", "meta_cosine", "dynamic_recovery", "wsd"])
def test_decaying_schedules_end_at_eta_min(name):
    for t in TASKS:
        for S in (1420, 55):
            assert sched(name, t, S).lr(S - 1) == pytest.approx(ETA_MIN, rel=1e-12), (name, t, S)


def test_continuity_at_the_joints():
    S, W, C = 1000, 100, 100
    for t in TASKS:
        rec = sched("dynamic_recovery", t, S)
        # W_G = 100·(t + 1) exactly: the global cosine at n = W is the autoregressive peak the warmup ended on
        assert rec.lr(W - 1) == pytest.approx(peak_ref(t, S, W), rel=1e-12)
        assert rec.lr(W) == pytest.approx(cos_seg((t * (S - W) + 1) / ((t + 1) * (S - W)), ETA0, ETA_MIN), rel=1e-12)
        if t:
            assert rec.lr(W) == pytest.approx(rec.lr(W - 1), rel=1e-12)
    # the rsqrt: sqrt(W/n) is 1 at n = W, so the warmup's last step and the first decay step share the peak
    for name in ("rsqrt", "rsqrt_continued", "rsqrt_autoregressive"):
        for t in TASKS:
            s = sched(name, t, S)
            assert s.lr(W - 1) == pytest.approx(s.lr(W), rel=1e-12) and s.lr(W - 1) == pytest.approx(s.peak, rel=1e-12)
    # the cooldown starts one C-th below its curve and loses a C-th of the (still decaying) curve per step
    for name in RSQRT:
        for t in (0, 3):
            s = sched(name, t, S)
            u = uncooled_ref(name, t, 900, S, W, C)
            assert s.lr(899) == pytest.approx(uncooled_ref(name, t, 899, S, W, C), rel=1e-12)
            assert s.lr(900) == pytest.approx(u * 99 / 100, rel=1e-12)
            assert s.lr(S - 1) == 0.0


def test_cross_task_relations():
    S, W, C = 400, 40, 40
    E = S - C - W
    rsqrt0 = [sched("rsqrt", 0, S).lr(n) for n in range(S)]
    for name in ("rsqrt_continued", "rsqrt_autoregressive", "rsqrt_recovered"):
        assert [sched(name, 0, S).lr(n) for n in range(S)] == pytest.approx(rsqrt0, rel=1e-15)
    assert [sched("rsqrt", 4, S).lr(n) for n in range(S)] == rsqrt0  # plain rsqrt restarts every task
    for t in (1, 3):
        cont, rec = sched("rsqrt_continued", t, S), sched("rsqrt_recovered", t, S)
        # continued re-warms to where recovered's one long rsqrt is at its first decay step: position W + t·E
        assert cont.peak == pytest.approx(rec.lr(W), rel=1e-12)
        assert cont.peak == pytest.approx(ETA_MIN + math.sqrt(W / (W + t * E)) * (ETA0 - ETA_MIN), rel=1e-12)
        # recovered's decay is that one rsqrt: position n + t·E
        assert rec.lr(W + 7) == pytest.approx(ETA_MIN + math.sqrt(W / (W + 7 + t * E)) * (ETA0 - ETA_MIN), rel=1e-12)
    for name in ("rsqrt_continued", "rsqrt_autoregressive", "rsqrt_recovered", "dynamic_recovery", "meta_cosine"):
        peaks = [sched(name, t, S).lr(W - 1) for t in range(6)]
        assert all(a > b for a, b in pairwise(peaks)), name
    # dynamic recovery: task t's post-warmup steps are the tail of one cosine over the decay phases of tasks 0..t
    for t in (0, 2, 5):
        s = sched("dynamic_recovery", t, S)
        tail = [cos_seg((t * (S - W) + n - W + 1) / ((t + 1) * (S - W)), ETA0, ETA_MIN) for n in range(W, S)]
        assert [s.lr(n) for n in range(W, S)] == pytest.approx(tail, rel=1e-12)


def test_dynamic_recovery_rounds_its_global_warmup_like_the_reference():
    # S = 37: W = 4, and at t = 3 the global warmup ceil(0.1·148) = 15 is one step short of 4·W = 16
    s = sched("dynamic_recovery", 3, 37)
    assert s.warmup_steps == 4 and s.global_warmup_steps == 15
    assert s.lr(4) == pytest.approx(cos_seg((111 + 4 - 15 + 1) / (148 - 15), ETA0, ETA_MIN), rel=1e-12)
    # built directly, without the fraction, W / S stands in for it
    from fomoflux.train.schedule import DynamicRecoverySchedule

    direct = DynamicRecoverySchedule(total_steps=1420, base_lr=ETA0, warmup_steps=142, min_lr=ETA_MIN, task_index=4)
    assert direct.global_warmup_steps == 710 and direct.lr(500) == sched("dynamic_recovery", 4, 1420).lr(500)


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
        ("rsqrt_recovered", {"cooldown": 0.9}, r"'rsqrt_recovered': cooldown leaves no decay step.*0\.9"),
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
    # the cooldown starts at n = 1: sqrt(1/1)·(10 − 1 − 1)/9, then sqrt(1/2)·7/9
    assert ok.cooldown_steps == 9 and ok.lr(0) == 1.0 and ok.lr(1) == pytest.approx(8 / 9)
    assert ok.lr(2) == pytest.approx(math.sqrt(1 / 2) * 7 / 9)


def test_integer_fractions_are_accepted_as_floats():
    cool = sched("rsqrt", 0, 20, cooldown=0)
    assert isinstance(cool.cooldown, float) and cool.cooldown_steps == 0 and cool.lr(19) == pytest.approx(
        ETA_MIN + math.sqrt(2 / 19) * (ETA0 - ETA_MIN), rel=1e-12
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
