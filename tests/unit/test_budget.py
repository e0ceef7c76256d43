"""budget.py: FLOP counting and memory of one training step, and steps per task under equal Memory-Adjusted FLOPs."""

from __future__ import annotations

import pytest
from toy import MICRO

from fomoflux.budget import StepProfile, budget_steps, profile_step
from fomoflux.errors import ConfigError


def profile(method: str, flops: int, memory: int, extra_flops: int = 0, extra_memory: int = 0) -> StepProfile:
    return StepProfile(arch="a", method=method, method_options={}, batch_size=8, flops_per_step=flops,
                       peak_memory_bytes=memory, memory_measure="counted", trainable_params=1, total_params=1,
                       extra_pass_flops=extra_flops, extra_pass_memory_bytes=extra_memory)


def test_budget_closed_form():
    ft = profile("finetune", 300, 1000)
    assert budget_steps(1420, ft, ft)["steps"] == 1420
    # Half the FLOPs and a quarter of the memory: MAF is 1/8 of full fine-tuning's, so 8x the steps.
    cheap = profile("peft", 150, 250)
    out = budget_steps(1420, ft, cheap)
    assert out["steps"] == 1420 * 8
    assert out["flops_ratio"] == pytest.approx(0.5) and out["memory_ratio"] == pytest.approx(0.25)
    # A per-task pass is paid out of the same budget: (1420·300 − 30000·1) / 300 = 1320 steps.
    ewc = profile("ewc", 300, 1000, extra_flops=30_000, extra_memory=1000)
    assert budget_steps(1420, ft, ewc)["steps"] == 1320


def test_budget_errors():
    ft = profile("finetune", 300, 1000)
    with pytest.raises(ConfigError, match="ewc.*no training step"):
        budget_steps(10, ft, profile("ewc", 300, 1000, extra_flops=10**6, extra_memory=1000))
    with pytest.raises(ConfigError, match="steps"):
        budget_steps(0, ft, ft)


def test_vit_b16_full_finetuning_flops_match_the_paper():
    # BENCHMARK.md: ≈123.8 GFLOPs per sample, forward + backward, for open_clip ViT-B/16 at 224 px. Counted on a
    # shapes-only ("meta") model: no weights, no arithmetic, a CPU does it in seconds.
    ft = profile_step("ViT-B-16", "finetune", batch_size=32)
    assert ft.gflops_per_sample == pytest.approx(123.8, rel=0.05)
    assert ft.trainable_params == ft.total_params > 149_000_000


def test_profile_is_deterministic_and_roundtrips():
    a = profile_step(MICRO, "finetune", batch_size=16)
    b = profile_step(MICRO, "finetune", batch_size=16)
    assert a == b
    assert StepProfile.from_dict(a.to_dict()) == a
    # Memory grows with the batch (activations), FLOPs linearly (up to the B² similarity matrix).
    c = profile_step(MICRO, "finetune", batch_size=32)
    assert c.peak_memory_bytes > a.peak_memory_bytes
    assert c.flops_per_step == pytest.approx(2 * a.flops_per_step, rel=0.02)


def test_profile_errors():
    with pytest.raises(ConfigError, match="memory"):
        profile_step(MICRO, "finetune", batch_size=4, memory="disk")
    with pytest.raises(ConfigError, match="unknown method"):
        profile_step(MICRO, "nope", batch_size=4)


def test_budget_equal_flops_ignores_memory():
    ft = profile("finetune", 300, 1000)
    cheap = profile("peft", 150, 250)
    out = budget_steps(1420, ft, cheap, memory_adjusted=False)
    assert out["steps"] == 1420 * 2 and out["memory_ratio"] == 1.0
