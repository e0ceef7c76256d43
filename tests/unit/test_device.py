"""device.py: the job's device, autocast, and data-parallel task updates in gloo worker processes on the CPU."""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.distributed as dist
from toy import MICRO, PAPER_MIXTURE, learnable_set, random_set, state, states_equal

from fomoflux.device import (
    DistributedContext,
    autocast,
    check_gpus,
    distributed_rank_world,
    resolve_device,
    resolve_precision,
    run_distributed,
    split_batch_size,
)
from fomoflux.errors import ConfigError
from fomoflux.methods import TaskContext, get_method, load_method_state, save_method_state
from fomoflux.model import create_model, load_state_dict_file
from fomoflux.pipeline.stages import TaskOutputs, task_update_worker
from fomoflux.train import TaskUpdateConfig, run_task_update

EWC_OPTIONS = {"lam": 1000.0, "fisher_samples": 16, "fisher_batch_size": 4}


# -- device and precision -------------------------------------------------------------------------------------------
def test_resolve_device_from_the_environment():
    default = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device({}) == default
    assert resolve_device({"FOMOFLUX_DEVICE": ""}) == default  # set but empty counts as unset
    assert resolve_device({"FOMOFLUX_DEVICE": "cpu"}) == torch.device("cpu")
    for bad in ("gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "mps"):
        with pytest.raises(ConfigError, match=rf"FOMOFLUX_DEVICE='{bad}'"):
            resolve_device({"FOMOFLUX_DEVICE": bad})
    # a GPU that is not visible: any CUDA device here, an index past the visible ones on a GPU machine
    missing = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(ConfigError, match=rf"FOMOFLUX_DEVICE='{missing}'.*CUDA device\(s\) visible"):
        resolve_device({"FOMOFLUX_DEVICE": missing})


def test_autocast_is_a_no_op_on_the_cpu_unless_bf16_is_asked_for():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with autocast("cpu", "auto"):
        assert (a @ b).dtype == torch.float32
    with autocast(torch.device("cpu"), "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast("cpu", "bf16"):
        product = a @ b
    assert product.dtype == torch.bfloat16
    torch.testing.assert_close(product.float(), a @ b, rtol=0.05, atol=0.1)
    assert resolve_precision("cpu", "auto") == "fp32" and resolve_precision("cpu", "bf16") == "bf16"
    for bad in ("fp16", "AUTO", ""):
        with pytest.raises(ConfigError, match=f"training.precision: '{bad}'"):
            autocast("cpu", bad)
        with pytest.raises(ConfigError, match="training.precision"):
            TaskUpdateConfig(steps=1, precision=bad)


def test_gpu_count_and_batch_split_checks():
    check_gpus("cpu", 1)
    check_gpus("cpu", 4)  # gloo workers: any count runs on the CPU
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="training.gpus: must be an integer >= 1"):
            check_gpus("cpu", bad)
    visible = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=rf"training.gpus: {visible + 1} GPU\(s\) asked for but {visible} visible"):
        check_gpus("cuda", visible + 1)
    assert split_batch_size(512, 4) == 128 and split_batch_size(7, 1) == 7
    with pytest.raises(ConfigError, match="training.batch_size 10 is not divisible by training.gpus 4"):
        split_batch_size(10, 4)
    assert distributed_rank_world() == (0, 1)  # no process group in the test process


def test_bf16_task_update_on_the_cpu_trains_with_a_finite_loss():
    sources = {"update": learnable_set(32, 0)}
    logs, states = {}, {}
    for precision in ("fp32", "bf16"):
        model, tokenizer = create_model(MICRO, seed=0)
        initial = state(model)
        cfg = TaskUpdateConfig(steps=4, batch_size=8, lr=1e-3, mixture={"update": 1.0}, task_index=1,
                               progress=False, precision=precision)
        logs[precision] = run_task_update(model, tokenizer, get_method("finetune"), sources, cfg)
        states[precision] = state(model)
        assert not states_equal(initial, states[precision])
        assert all(v.dtype == torch.float32 for v in model.state_dict().values() if v.is_floating_point())
    losses = {p: log["loss"].to_list() for p, log in logs.items()}
    assert all(math.isfinite(x) for x in losses["bf16"])
    # The same batches and weights at step 0: bf16 changes the loss a little, so autocast did run.
    assert losses["bf16"][0] != losses["fp32"][0]
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], abs=0.05)


# -- data-parallel updates in gloo workers ------------------------------------------------------------------------
def _sources() -> dict:
    return {
        "pretrain": random_set(24, 1, "pool"),
        "update": learnable_set(32, 2),
        "buffer": random_set(16, 3, "buffer"),
    }


def _config(task_index: int, batch_size: int = 8) -> TaskUpdateConfig:
    # eps 1e-6, not the reference's 1e-8: the attention's key bias has a zero gradient in exact arithmetic, so its
    # float gradient is rounding noise, which AdamW with eps 1e-8 turns into lr-sized steps of either sign; summing
    # the gradient over two ranks rounds differently from one process, so the two updates would differ by that noise.
    return TaskUpdateConfig(steps=3, batch_size=batch_size, lr=1e-3, mixture=PAPER_MIXTURE, task_index=task_index,
                            seed=5, progress=False, eps=1e-6)


def _equivalence_worker(
    dist_ctx: DistributedContext, out: str, finetune_payload: bytes, ewc_payload: bytes, tokenizer, sources: dict
) -> None:
    """Both data-parallel updates of test_data_parallel_update_equals_the_single_process_update, on one rank."""
    folder = Path(out)
    assert distributed_rank_world() == (dist_ctx.rank, dist_ctx.world_size) == (dist_ctx.rank, 2)
    # An odd batch cannot be split over 2 ranks: refused before any collective, so the ranks stay in step.
    model, _ = pickle.loads(finetune_payload)
    try:
        run_task_update(model, tokenizer, get_method("finetune"), sources, _config(0, batch_size=7))
        refused = "not refused"
    except ConfigError as err:
        refused = str(err)
    (folder / f"refused{dist_ctx.rank}.txt").write_text(refused)

    model, _ = pickle.loads(finetune_payload)
    log = run_task_update(model, tokenizer, get_method("finetune"), sources, _config(0))
    torch.save({"weights": state(model), "loss": log["loss"].to_list(), "grad_norm": log["grad_norm"].to_list()},
               folder / f"finetune{dist_ctx.rank}.pt")

    # The pipeline's own worker for EWC: rank 0 writes the task's outputs as a training job would.
    outputs = TaskOutputs(log=str(folder / "log.parquet"), state=str(folder / "state.safetensors"),
                          checkpoint=str(folder / "model.safetensors"), metadata={"test": "ddp"})
    task_update_worker(dist_ctx, ewc_payload, tokenizer, sources, _config(1), outputs)


def test_data_parallel_update_equals_the_single_process_update(tmp_path):
    sources = _sources()
    model, tokenizer = create_model(MICRO, seed=0)
    finetune_payload = pickle.dumps((model, None))

    # EWC at its second task: task 0 (single process) leaves a Fisher and an anchor, so the penalty is active.
    first = get_method("ewc", EWC_OPTIONS)
    run_task_update(model, tokenizer, first, sources, _config(0))
    after_first = state(model)
    save_method_state(first, tmp_path / "ewc_task0.safetensors")

    def ewc_inputs():
        continued, _ = create_model(MICRO, seed=0)
        continued.load_state_dict(after_first)
        method = get_method("ewc", EWC_OPTIONS)
        load_method_state(method, tmp_path / "ewc_task0.safetensors")
        return continued, method, TaskContext(task_index=1, seed=5)

    ewc_payload = pickle.dumps(ewc_inputs())
    run_distributed(_equivalence_worker, 2, device_type="cpu", threads=1,
                    args=(str(tmp_path), finetune_payload, ewc_payload, tokenizer, sources))

    for rank in (0, 1):
        refusal = (tmp_path / f"refused{rank}.txt").read_text()
        assert "training.batch_size 7 is not divisible by training.gpus 2" in refusal

    # full fine-tuning: both ranks end with identical weights, equal to the single-process update's
    reference_model, _ = pickle.loads(finetune_payload)
    reference_log = run_task_update(reference_model, tokenizer, get_method("finetune"), sources, _config(0))
    ranks = [torch.load(tmp_path / f"finetune{rank}.pt") for rank in (0, 1)]
    assert states_equal(ranks[0]["weights"], ranks[1]["weights"])
    assert not states_equal(ranks[0]["weights"], state(pickle.loads(finetune_payload)[0]))  # it did train
    torch.testing.assert_close(ranks[0]["weights"], state(reference_model), rtol=1e-5, atol=1e-5)
    assert ranks[0]["loss"] == pytest.approx(reference_log["loss"].to_list(), rel=1e-5)
    # AdamW hides a gradient's scale from the weights; the logged norm (before clipping) does not
    assert ranks[0]["grad_norm"] == pytest.approx(reference_log["grad_norm"].to_list(), rel=1e-4)

    # EWC with its penalty: rank 0's checkpoint, method state and log equal the single-process update's
    model, method, context = ewc_inputs()
    reference_log = run_task_update(model, tokenizer, method, sources, _config(1), context=context)
    assert all(p > 0 for p in reference_log["penalty"].to_list()[1:])
    torch.testing.assert_close(load_state_dict_file(tmp_path / "model.safetensors"), state(model), rtol=1e-5, atol=1e-5)
    restored = get_method("ewc", EWC_OPTIONS)
    load_method_state(restored, tmp_path / "state.safetensors")
    torch.testing.assert_close(restored.state_dict(), method.state_dict(), rtol=1e-5, atol=1e-5)
    written = pl.read_parquet(tmp_path / "log.parquet")
    assert written["penalty"].to_list() == pytest.approx(reference_log["penalty"].to_list(), rel=1e-4)
    assert written["loss"].to_list() == pytest.approx(reference_log["loss"].to_list(), rel=1e-5)
    assert written["grad_norm"].to_list() == pytest.approx(reference_log["grad_norm"].to_list(), rel=1e-4)


def _failing_worker(dist_ctx: DistributedContext, message: str) -> None:
    if dist_ctx.rank == 1:
        raise ValueError(f"{message} on rank {dist_ctx.rank}")
    dist.barrier()  # rank 0 waits for a rank that never comes: it must be stopped, not left hanging


def test_a_worker_exception_fails_the_run_with_its_message():
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    # Rank 0 fails too (its barrier loses rank 1), often noticed first: the report leads with the root cause.
    with pytest.raises(torch.multiprocessing.ProcessRaisedException,
                       match=r"(?s)worker rank 1 failed first:.*ValueError: boom from a test on rank 1"):
        run_distributed(_failing_worker, 2, device_type="cpu", args=("boom from a test",))
    assert getattr(sys.modules["__main__"], "__file__", None) == main_file  # restored after the workers started
    with pytest.raises(ConfigError, match="world_size"):
        run_distributed(_failing_worker, 0)

