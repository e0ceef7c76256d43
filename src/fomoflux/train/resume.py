"""Mid-task snapshots: a task update that is killed continues from its last save and ends bit-identical (on CPU).

A snapshot holds everything a task update's remaining steps depend on: the model's weights (adapters included),
the optimizer's state, the method's in-task state (``Method.task_state``), the log rows so far and the step reached.
The batches need nothing (each is a pure function of its step, ``fomoflux.train.data``). A resumed update runs
``begin_task`` on the task's input weights exactly as a fresh one, then loads the snapshot over it.

When: every ``every_s`` seconds of training and every ``every_steps`` steps (either may be off), and at the first
check after SIGUSR1 (SLURM's warning before a time limit or preemption, ``sbatch --signal=USR1@<s>``) or SIGTERM
(SLURM's kill, followed by SIGKILL after KillWait); after SIGTERM the update stops with :class:`TaskInterrupted`
once the snapshot is written. Checks happen at log boundaries only (every ``log_every`` steps), where the loop
synchronises with the device anyway; in a data-parallel update the ranks agree on the decision there (one small
all-reduce) and rank 0 writes.

Where: a folder outside Snakemake's declared outputs (``<results>/resume/<run>/taskNNN``), so Snakemake's cleanup
of a failed job's outputs keeps it; the pipeline removes it once the task's outputs are complete. The file is
written to a temporary name and renamed, so a kill during a save leaves the previous snapshot. A snapshot carries a
``key`` (a hash of the job's settings and its input files' identity); one with another key is stale and discarded.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch

from fomoflux.io import temp_file

__all__ = ["SNAPSHOT_NAME", "Snapshots", "TaskInterrupted"]

SNAPSHOT_NAME = "snapshot.pt"
_log = logging.getLogger(__name__)


class TaskInterrupted(RuntimeError):
    """The update stopped after SIGTERM with its state saved; rerunning the job continues it."""


class Snapshots:
    """The snapshot policy and file of one task update (module docstring)."""

    def __init__(self, folder: str | Path, key: str, *, every_s: float = 600.0, every_steps: int = 0) -> None:
        self.folder, self.key = Path(folder), key
        self.every_s, self.every_steps = float(every_s), int(every_steps)
        self.path = self.folder / SNAPSHOT_NAME
        self._last_save = time.monotonic()
        self._last_step = -1
        self.signalled: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    # -- signals ----------------------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """Note SIGUSR1 / SIGTERM for the next check (only possible in the main thread; elsewhere a no-op)."""
        try:
            for signum in (signal.SIGUSR1, signal.SIGTERM):
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        except ValueError:  # not the main thread
            self._previous_handlers.clear()

    def restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum, frame) -> None:
        # Only set a flag: the loop saves at its next check, between two steps.
        self.signalled = signum if self.signalled != signal.SIGTERM else self.signalled

    # -- policy -----------------------------------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Whether a snapshot after ``step`` is due (time, steps or a signal)."""
        if self.signalled is not None:
            return True
        if self.every_steps and step - self._last_step >= self.every_steps:
            return True
        return bool(self.every_s) and time.monotonic() - self._last_save >= self.every_s

    @property
    def stop_requested(self) -> bool:
        return self.signalled == signal.SIGTERM

    # -- files ------------------------------------------------------------------------------------------------------
    def save(self, step: int, state: dict[str, Any]) -> None:
        """Write the snapshot after ``step`` atomically (the previous one stays until the rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, tmp = temp_file(self.folder, prefix=".snapshot.")  # the umask's mode, not mkstemp's 0600
        try:
            with os.fdopen(handle, "wb") as out:
                torch.save({"key": self.key, "step": step, **state}, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._last_save, self._last_step = time.monotonic(), step
        if self.signalled == signal.SIGUSR1:
            self.signalled = None  # a warning is answered by one save; training goes on
        _log.info("mid-task snapshot after step %d -> %s", step, self.path)

    def load(self) -> dict[str, Any] | None:
        """The saved snapshot of this update, or None (no file, or a stale one of other settings, removed)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start the task afresh rather than fail
            _log.warning("ignoring unreadable mid-task snapshot %s (%s)", self.path, exc)
            return None
        if state.get("key") != self.key:
            _log.warning("ignoring mid-task snapshot %s: written for other settings or inputs", self.path)
            return None
        self._last_step = int(state["step"])
        return state

    def clear(self) -> None:
        """Remove the snapshot folder (the task's outputs are complete)."""
        shutil.rmtree(self.folder, ignore_errors=True)
