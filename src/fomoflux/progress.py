"""Progress of long loops: a tqdm bar on a terminal, plain timestamped lines in a log file.

tqdm redraws its bar with ``\\r``; written to a job's log file that is one ever-growing line (thousands of updates
of a task update on one line, unreadable with ``less`` or ``grep``). So :func:`progress` picks by where the output
goes: a terminal gets tqdm, anything else (the ``log:`` file every job writes to) gets :class:`LineProgress`, one
complete line per report, each starting with the time like the job's logging lines::

    2026-12-03 15:10:01 run lora task 3/5 [lora]: step 5/10 (50%) loss=3.1234 | 2.31 it/s, 0:00:08 elapsed, 0:00:09 left

Both have the same calls: ``advance(n)`` counts done items, ``report(**fields)`` says where the loop is (tqdm: the
bar's postfix; lines: one line now), ``restart(done, total)`` starts the count over (a download's new attempt),
``message(text)`` prints a line of its own, ``close()`` ends (lines: a final line when anything happened since the
last one). Loops without natural report points (evaluation, downloads) only ``advance``; their lines come every
``interval_s`` seconds. Byte counts (``unit="B"``) are shown in KiB / MiB / GiB.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["LineProgress", "NoProgress", "format_count", "format_duration", "format_fields", "is_terminal", "progress",
           "timestamp"]

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the same as the job logs' logging format (%(asctime)s without milliseconds)


def timestamp(now: float | None = None) -> str:
    return time.strftime(TIME_FORMAT, time.localtime(time.time() if now is None else now))


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_count(count: float, unit: str) -> str:
    """``count`` of ``unit``; bytes in binary multiples (1.5 GiB)."""
    if unit != "B":
        return f"{count:g}" if isinstance(count, float) else str(count)
    for prefix in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(count) < 1024 or prefix == "Ti":
            return f"{count:.0f} B" if not prefix else f"{count:.1f} {prefix}B"
        count /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _format_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.4f}"


def format_fields(fields: dict[str, Any]) -> str:
    """``key=value`` pairs; floats with 4 decimals, or in scientific notation when tiny or huge (learning rates)."""
    return " ".join(f"{key}={_format_value(value)}" for key, value in fields.items())


class LineProgress:
    """Plain-line progress for log files (module docstring).

    ``label`` says what runs (``run finetune task 3/5 [finetune]``), ``unit`` what is counted (``step``, ``img``,
    ``B``). A line is printed by every ``report`` and, when ``interval_s`` is set, by ``advance`` once that many
    seconds passed since the last line.
    """

    def __init__(self, total: int | None, label: str, *, unit: str = "it", initial: int = 0,
                 file: IO[str] | None = None, interval_s: float | None = None, clock=time.monotonic,
                 wall_clock=time.time) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.done = self.start_count = initial
        self.file = file if file is not None else sys.stderr
        self.interval_s = interval_s
        self._clock, self._wall_clock = clock, wall_clock
        self._started = self._last_line = clock()
        self._printed_at = None  # the count at the last line
        self._fields: dict[str, Any] = {}

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.interval_s is not None and self._clock() - self._last_line >= self.interval_s:
            self._line()

    def report(self, **fields: Any) -> None:
        self._fields = fields
        self._line()

    def restart(self, done: int = 0, total: int | None = None) -> None:
        self.done = self.start_count = done
        self.total = total
        self._started = self._clock()

    def message(self, text: str) -> None:
        print(f"{timestamp(self._wall_clock())} {self.label}: {text}", file=self.file, flush=True)

    def close(self) -> None:
        if self._printed_at != self.done and self.done > self.start_count:
            self._line(final=True)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self) -> str:
        """The line a report now would print (without the newline)."""
        elapsed = self._clock() - self._started
        if self.unit == "B":
            count = format_count(self.done, "B") + (f" of {format_count(self.total, 'B')}" if self.total else "")
        else:
            count = f"{self.unit} {self.done}" + (f"/{self.total}" if self.total else "")
        if self.total:
            count += f" ({100 * self.done / self.total:.0f}%)"
        parts = [f"{timestamp(self._wall_clock())} {self.label}: {count}"]
        if self._fields:
            parts.append(" " + format_fields(self._fields))
        rate = (self.done - self.start_count) / elapsed if elapsed > 0 else 0.0
        shown_rate = format_count(rate, "B") if self.unit == "B" else f"{rate:.2f} {self.unit}"
        timing = f"{shown_rate}/s, {format_duration(elapsed)} elapsed"
        if self.total and rate > 0 and self.done < self.total:
            timing += f", {format_duration((self.total - self.done) / rate)} left"
        return "".join(parts) + " | " + timing

    def _line(self, final: bool = False) -> None:
        print(self.line() + (" (done)" if final and self.total and self.done >= self.total else ""), file=self.file,
              flush=True)
        self._last_line = self._clock()
        self._printed_at = self.done


class _Tqdm:
    """tqdm behind the same three calls."""

    def __init__(self, total, label, *, unit, initial, file, **tqdm_options) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=label, unit=unit, file=file, mininterval=1.0,
                        dynamic_ncols=True, **tqdm_options)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def report(self, **fields: Any) -> None:
        self.bar.set_postfix_str(format_fields(fields), refresh=False)

    def restart(self, done: int = 0, total: int | None = None) -> None:
        self.bar.reset(total=total)
        self.bar.update(done)

    def message(self, text: str) -> None:
        self.bar.write(text, file=self.bar.fp)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> _Tqdm:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NoProgress:
    """Shows nothing (progress off, or not the main rank)."""

    def advance(self, n: int = 1) -> None:
        pass

    def report(self, **fields: Any) -> None:
        pass

    def restart(self, done: int = 0, total: int | None = None) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(total: int | None, label: str, *, unit: str = "it", initial: int = 0, file: IO[str] | None = None,
             enabled: bool = True, interval_s: float | None = 30.0, **tqdm_options: Any):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else :class:`LineProgress` (lines every
    ``interval_s`` seconds and at each ``report``); :class:`NoProgress` when not ``enabled``."""
    if not enabled:
        return NoProgress()
    stream = file if file is not None else sys.stderr
    if is_terminal(stream):
        return _Tqdm(total, label, unit=unit, initial=initial, file=stream, **tqdm_options)
    return LineProgress(total, label, unit=unit, initial=initial, file=stream, interval_s=interval_s)
