"""Training: lr schedules, the source mixture of a batch, and the task-update loop."""

from fomoflux.train.loop import (
    LOG_SCHEMA,
    TaskBatches,
    TaskUpdateConfig,
    draw_batch,
    pretrain_base,
    run_task_update,
    step_seed,
)
from fomoflux.train.mixture import SOURCES, source_batch_sizes, validate_ratios
from fomoflux.train.schedule import (
    LRSchedule,
    available_schedules,
    cosine_with_warmup,
    make_schedule,
    register_schedule,
    warmup_steps,
)

__all__ = [
    "LOG_SCHEMA",
    "LRSchedule",
    "SOURCES",
    "TaskBatches",
    "TaskUpdateConfig",
    "available_schedules",
    "cosine_with_warmup",
    "draw_batch",
    "make_schedule",
    "pretrain_base",
    "register_schedule",
    "run_task_update",
    "source_batch_sizes",
    "step_seed",
    "validate_ratios",
    "warmup_steps",
]
