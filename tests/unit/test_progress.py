"""Progress output: plain timestamped lines in log files, tqdm's bar only on a terminal (issue 12, item 6)."""

from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import termios

from toy import MICRO, random_set

from fomoflux.methods import get_method
from fomoflux.model import create_model
from fomoflux.progress import LineProgress, NoProgress, format_count, format_fields, is_terminal, progress, timestamp
from fomoflux.train import TaskUpdateConfig, run_task_update

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


class Clock:
    """A clock the test moves by hand (LineProgress takes its clocks as arguments)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_line_format_counts_rate_and_time_left():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(40, "run finetune task 3/5 [finetune]", unit="step", file=out, clock=clock,
                       wall_clock=lambda: 1_800_000_000.0)
    for _ in range(20):
        bar.advance()
    clock.now = 10.0
    bar.report(loss=3.123456, lr=1e-4, grad_norm=0.8125)
    line = out.getvalue()
    assert line == (f"{timestamp(1_800_000_000.0)} run finetune task 3/5 [finetune]: step 20/40 (50%) loss=3.1235 "
                    "lr=1.00e-04 grad_norm=0.8125 | 2.00 step/s, 0:00:10 elapsed, 0:00:10 left\n")
    assert re.fullmatch(STAMP, timestamp(1_800_000_000.0))


def test_lines_every_interval_and_a_final_line_without_carriage_returns():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(100, "eval", unit="img", file=out, interval_s=30.0, clock=clock)
    for second in range(1, 100):
        clock.now = float(second)
        bar.advance(1)
    bar.close()
    lines = out.getvalue().splitlines()
    # one line each 30 s (after 30, 60, 90 images) and the last one, each complete on its own
    assert [re.search(r"img (\d+)/100", line).group(1) for line in lines] == ["30", "60", "90", "99"]
    assert "\r" not in out.getvalue() and all(re.match(STAMP + " eval: ", line) for line in lines)
    bar.close()
    assert len(out.getvalue().splitlines()) == 4, "closing twice prints nothing more"


def test_resumed_progress_counts_its_rate_from_where_it_started():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(100, "t", unit="step", initial=60, file=out, clock=clock)
    clock.now = 4.0
    bar.advance(20)
    bar.report()
    assert "step 80/100 (80%) | 5.00 step/s, 0:00:04 elapsed, 0:00:04 left" in out.getvalue()


def test_byte_counts_and_messages():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(None, "download CIFAR100.tar", unit="B", file=out, clock=clock)
    bar.restart(1024 * 1024, 4 * 1024**3)
    clock.now = 2.0
    bar.advance(3 * 1024 * 1024)
    bar.report()
    bar.message("connection lost; retry 1/3 in 1.0s")
    first, second = out.getvalue().splitlines()
    assert "download CIFAR100.tar: 4.0 MiB of 4.0 GiB (0%)" in first and "1.5 MiB/s" in first
    assert re.fullmatch(STAMP + r" download CIFAR100\.tar: connection lost; retry 1/3 in 1\.0s", second)
    assert format_count(512, "B") == "512 B" and format_count(3 * 1024**4, "B") == "3.0 TiB"
    fields = {"loss": 0.5, "lr": 2e-6, "n": 3, "big": 123456.0}
    assert format_fields(fields) == "loss=0.5000 lr=2.00e-06 n=3 big=1.23e+05"


def test_terminal_gets_tqdm_and_a_file_gets_lines(tmp_path):
    with open(tmp_path / "job.log", "w") as log:
        assert not is_terminal(log)
        assert isinstance(progress(10, "x", file=log), LineProgress)
    assert isinstance(progress(10, "x", file=io.StringIO(), enabled=False), NoProgress)
    leader, follower = os.openpty()
    # a terminal 100 columns wide (a fresh pty has none, and tqdm fits its bar to the width)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with os.fdopen(follower, "w") as terminal:
        assert is_terminal(terminal)
        bar = progress(10, "on a terminal", unit="step", file=terminal)
        assert not isinstance(bar, LineProgress)
        bar.advance(10)
        bar.report(loss=1.0)
        bar.close()
    # One read returns what the pty holds at that moment, which may be only tqdm's first draw: read until the
    # closed follower side gives EOF (EIO on Linux).
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    shown = b"".join(chunks).decode()
    assert "\r" in shown and "on a terminal" in shown and "10/10" in shown, shown  # tqdm's redrawn bar


def test_task_update_writes_labelled_lines_at_each_log_row(capsys):
    model, tokenizer = create_model(MICRO, seed=0)
    cfg = TaskUpdateConfig(steps=12, batch_size=8, lr=1e-4, mixture={"update": 1.0}, log_every=5,
                           label="run finetune task 3/5 [finetune]")
    log = run_task_update(model, tokenizer, get_method("finetune"), {"update": random_set(10, 0, "u")}, cfg)
    start, *lines = capsys.readouterr().err.splitlines()
    assert re.match(STAMP + r" run finetune task 3/5 \[finetune\]: training steps 1-12$", start), start
    assert log["step"].to_list() == [0, 5, 10, 11]
    # one line per log row (the interval's one host synchronisation), with that row's loss
    assert [re.search(r"step (\d+)/12", line).group(1) for line in lines] == ["1", "6", "11", "12"]
    for line, loss in zip(lines, log["loss"].to_list()):
        assert re.match(STAMP + r" run finetune task 3/5 \[finetune\]: step ", line), line
        assert f"loss={loss:.4f}" in line and "lr=" in line and "grad_norm=" in line
