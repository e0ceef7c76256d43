"""train/data.py and train/resume.py: batches built by step in DataLoader workers, the seeded training transform,
log intervals, and mid-task snapshots that resume bit-identically (real model, real steps)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from toy import MICRO, PAPER_MIXTURE, random_set, state, states_equal

from fomoflux.errors import ConfigError
from fomoflux.methods import TaskContext, get_method
from fomoflux.model import create_model
from fomoflux.train import TaskUpdateConfig, run_task_update
from fomoflux.train.data import CROP_ATTEMPTS, Augmentation, TaskBatches, batch_loader, crop_box
from fomoflux.train.resume import Snapshots, TaskInterrupted

PAPER_CROP = {"kind": "random_resized_crop", "scale": [0.9, 1.0], "ratio": [0.75, 4 / 3]}


def _sources(size: int = 32):
    return {"pretrain": random_set(40, 0, "pool", size=size), "update": random_set(24, 1, "upd", size=size),
            "buffer": random_set(16, 2, "buf", size=size)}


def _batches(tokenizer, **kwargs) -> TaskBatches:
    defaults = dict(image_size=32, augmentation=Augmentation.from_config(PAPER_CROP))
    return TaskBatches(_sources(48), tokenizer, 24, PAPER_MIXTURE, 2, 0, **{**defaults, **kwargs})


def test_workers_and_order_do_not_change_batches():
    _, tokenizer = create_model(MICRO, seed=0)
    batches = _batches(tokenizer)
    in_process = [batches[s] for s in range(6)]
    from_workers = list(batch_loader(batches, range(6), workers=2))
    assert len(from_workers) == 6
    for (a_img, a_tok), (b_img, b_tok) in zip(in_process, from_workers):
        assert torch.equal(a_img, b_img) and torch.equal(a_tok, b_tok)
    # any step alone, in any order, is the same batch
    assert torch.equal(batches[4][0], in_process[4][0]) and torch.equal(batches[1][1], in_process[1][1])
    assert in_process[0][0].shape == (24, 3, 32, 32) and in_process[0][0].dtype == torch.uint8


def test_rank_slices_make_up_the_full_batch():
    _, tokenizer = create_model(MICRO, seed=0)
    full = _batches(tokenizer)[3]
    parts = [_batches(tokenizer, rank=r, world_size=3)[3] for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), full[0])
    assert torch.equal(torch.cat([p[1] for p in parts]), full[1])
    with pytest.raises(ConfigError, match="divide"):
        _batches(tokenizer, world_size=5)


def test_augmentation_changes_pixels_not_samples():
    _, tokenizer = create_model(MICRO, seed=0)
    cropped = _batches(tokenizer)[2]
    plain = _batches(tokenizer, augmentation=Augmentation.none())[2]
    assert torch.equal(cropped[1], plain[1]), "the transform must not change which samples and captions are drawn"
    assert not torch.equal(cropped[0], plain[0])
    assert torch.equal(_batches(tokenizer)[2][0], cropped[0])


def test_crop_box_follows_random_resized_crop():
    aug = Augmentation.from_config(PAPER_CROP)
    rng = np.random.default_rng(0)
    for width, height in [(300, 200), (224, 224), (50, 400), (32, 32)]:
        for _ in range(200):
            left, top, right, bottom = crop_box(width, height, rng.random((CROP_ATTEMPTS, 4)), aug)
            w, h = right - left, bottom - top
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            if 0.75 <= width / height <= 4 / 3:
                # torchvision's rounding of w and h moves the area a little beyond the scale range
                assert 0.85 <= w * h / (width * height) <= 1.0 + 1e-9
    # every attempt too wide for the image (area 1.0, ratio 4/3): the centre-crop fallback of the clamped ratio
    fallback = np.tile([0.999, 0.999, 0.5, 0.5], (CROP_ATTEMPTS, 1))
    assert crop_box(50, 400, fallback, aug) == (0, 166, 50, 233)  # h = round(50 / 0.75) = 67, top = 333 // 2
    assert crop_box(32, 32, fallback, aug) == (0, 0, 32, 32)
    with pytest.raises(ConfigError, match="scale"):
        Augmentation(scale=(0.0, 1.0))
    with pytest.raises(ConfigError, match="kind"):
        Augmentation(kind="mixup")


def test_log_rows_are_interval_means_and_do_not_change_training():
    sources = _sources()

    def run(log_every):
        model, tokenizer = create_model(MICRO, seed=0)
        cfg = TaskUpdateConfig(steps=12, batch_size=24, lr=1e-3, task_index=2, progress=False, log_every=log_every,
                               augmentation=PAPER_CROP)
        return state(model), run_task_update(model, tokenizer, get_method("finetune"), sources, cfg), model

    every, per_step, _ = run(1)
    weights, coarse, _ = run(4)
    assert states_equal(every, weights)
    assert coarse["step"].to_list() == [0, 4, 8, 11]
    losses = per_step["loss"].to_list()
    assert coarse["loss"].to_list() == pytest.approx([losses[0], np.mean(losses[1:5]), np.mean(losses[5:9]),
                                                      np.mean(losses[9:12])], rel=1e-12)
    assert coarse["logit_scale"][-1] == per_step["logit_scale"][-1]


class _Crash(Exception):
    pass


def _crash_after(method, crash_step: int, action):
    """Make ``method`` call ``action()`` right after step ``crash_step`` (a kill, or a signal to this process)."""
    original = method.after_step

    def after_step(model, step):
        original(model, step)
        if step == crash_step:
            action()

    method.after_step = after_step
    return method


@pytest.mark.parametrize("method_name, options", [("finetune", {}), ("si", {"c": 0.5}),
                                                  ("si", {"path_integral": "grad_times_step"}), ("lora", {"rank": 2})])
def test_mid_task_resume_is_bit_identical(tmp_path, method_name, options):
    sources = _sources()

    def run(method, resume_dir=None):
        torch.manual_seed(0)
        model, tokenizer = create_model(MICRO, seed=0)
        cfg = TaskUpdateConfig(steps=10, batch_size=24, lr=1e-3, task_index=2, progress=False, log_every=2,
                               augmentation=PAPER_CROP, resume_dir=resume_dir, resume_key="k", resume_every_s=0,
                               resume_every_steps=2)
        context = TaskContext(task_index=2, base_state=state(model))  # θ0 for LoRA's folding
        log = run_task_update(model, tokenizer, method, sources, cfg, context=context)
        return state(model), log, method

    reference, ref_log, ref_method = run(get_method(method_name, options))
    folder = str(tmp_path / "snap")
    crashing = _crash_after(get_method(method_name, options), 7, lambda: (_ for _ in ()).throw(_Crash()))
    with pytest.raises(_Crash):
        run(crashing, folder)
    saved = torch.load(os.path.join(folder, "snapshot.pt"), weights_only=True)
    assert saved["step"] == 6  # the last log boundary with a snapshot due before the crash
    resumed, log, method = run(get_method(method_name, options), folder)
    assert states_equal(resumed, reference)
    assert log.drop("elapsed_s", "data_wait_s").equals(ref_log.drop("elapsed_s", "data_wait_s"))
    assert all(torch.equal(a, b) for a, b in zip(method.state_dict().values(), ref_method.state_dict().values()))


def test_sigterm_saves_then_stops_and_sigusr1_saves_and_goes_on(tmp_path):
    sources = _sources()
    folder = tmp_path / "snap"

    def run(method, **extra):
        model, tokenizer = create_model(MICRO, seed=0)
        cfg = TaskUpdateConfig(steps=8, batch_size=24, lr=1e-3, task_index=2, progress=False, log_every=1,
                               resume_dir=str(folder), resume_key="k", resume_every_s=0, **extra)
        return state(model) if run_task_update(model, tokenizer, method, sources, cfg) is not None else None

    reference = run(get_method("finetune"))  # no snapshot due without a signal, and none left behind
    assert not (folder / "snapshot.pt").exists()
    warned = _crash_after(get_method("finetune"), 2, lambda: os.kill(os.getpid(), signal.SIGUSR1))
    assert states_equal(run(warned), reference)
    assert torch.load(folder / "snapshot.pt", weights_only=True)["step"] == 2
    Snapshots(folder, "k").clear()
    terminated = _crash_after(get_method("finetune"), 4, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TaskInterrupted, match="SIGTERM after step 4"):
        run(terminated)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handlers are restored"
    assert states_equal(run(get_method("finetune")), reference)


def test_stale_or_torn_snapshots_are_ignored(tmp_path):
    snaps = Snapshots(tmp_path, "settings-a", every_s=0)
    snaps.save(3, {"model": {}, "optimizer": {}, "method": {}, "log": {}, "sums": torch.zeros(5)})
    assert snaps.load()["step"] == 3
    assert Snapshots(tmp_path, "settings-b").load() is None
    (tmp_path / "snapshot.pt").write_bytes(b"torn")
    assert Snapshots(tmp_path, "settings-a").load() is None
    snaps.clear()
    assert not tmp_path.exists()
