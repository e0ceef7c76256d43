"""The ``fomoflux`` command: what a config can name, with every option, its default and what it does.

    fomoflux methods [NAME ...]      continual-learning methods (a run's `method` / `method_options`)
    fomoflux schedules [NAME ...]    learning-rate schedules (`training.schedule` / `schedule_options`)
    fomoflux operators [NAME ...]    merge operators (a merging method's `operator` / `operator_options`)

Also ``python -m fomoflux ...``. Defaults print as JSON, which is also how they are written in a YAML config.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fomoflux.errors import ConfigError

__all__ = ["main", "describe_methods", "describe_schedules", "describe_operators"]

WIDTH = 100
INDENT = "    "
HELP_COLUMN = 36


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _summary(cls: type, explicit: str = "") -> str:
    """The class's own summary or docstring, else its module docstring's first paragraph, on one line."""
    text = explicit or cls.__dict__.get("__doc__") or ""
    if not text:
        module = sys.modules.get(cls.__module__)
        text = (getattr(module, "__doc__", None) or "").strip().split("\n\n")[0]
    text = " ".join(inspect.cleandoc(text).split("\n\n")[0].split())
    # reStructuredText markup of docstrings, as plain text: ``x`` and :func:`x` -> `x`; a trailing "::" -> ":".
    text = re.sub(r":\w+:`", "`", text.replace("``", "`"))
    return text[:-1] if text.endswith("::") else text


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent) or [indent.rstrip()]


def _entry(name: str, summary: str, options: Mapping[str, Any], helps: Mapping[str, str] | None) -> list[str]:
    lines = [name, *_wrap(summary, INDENT)]
    if not options:
        lines.append(f"{INDENT}(no options)")
    for option, default in options.items():
        head = f"{INDENT}{option} = {_value(default)}"
        text = (helps or {}).get(option, "")
        if text and len(head) < HELP_COLUMN - 1:
            wrapped = textwrap.wrap(text, WIDTH - HELP_COLUMN)
            lines.append(f"{head:<{HELP_COLUMN}}{wrapped[0]}")
            lines.extend(" " * HELP_COLUMN + rest for rest in wrapped[1:])
        else:  # a long default: the help text goes below it
            lines.append(head)
            if text:
                lines.extend(_wrap(text, " " * HELP_COLUMN))
    return lines


def _select(names: Sequence[str], known: Iterable[str], kind: str) -> list[str]:
    known = list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown {kind} {unknown[0]!r}; known: {', '.join(known)}")
    return list(names) or known


def describe_methods(names: Sequence[str] = ()) -> str:
    """Every method (or the named ones): summary, then each option with its default and help string."""
    from fomoflux.methods import available_methods, method_class

    blocks = []
    for name in _select(names, available_methods(), "method"):
        cls = method_class(name)
        blocks.append(_entry(name, _summary(cls, cls.summary), cls.options, cls.option_help))
    header = "Methods: a run's `method`, its `method_options` below (defaults shown)."
    return "\n\n".join([header, *("\n".join(b) for b in blocks)]) + "\n"


def describe_schedules(names: Sequence[str] = ()) -> str:
    """Every learning-rate schedule: summary and its `schedule_options` with defaults."""
    from fomoflux.train.schedule import SCHEDULES, LRSchedule

    common = {f.name for f in dataclasses.fields(LRSchedule)}
    blocks = []
    for name in _select(names, SCHEDULES.names(), "lr schedule"):
        cls = SCHEDULES.get(name)
        options = {f.name: f.default for f in dataclasses.fields(cls) if f.name not in common}
        blocks.append(_entry(name, _summary(cls), options, None))
    header = "Learning-rate schedules: `training.schedule`, its `training.schedule_options` below (defaults shown)."
    return "\n\n".join([header, *("\n".join(b) for b in blocks)]) + "\n"


def describe_operators(names: Sequence[str] = ()) -> str:
    """Every merge operator: summary and its `operator_options` with defaults."""
    from fomoflux.merge import available_operators
    from fomoflux.merge.operators import OPERATORS

    blocks = []
    for name in _select(names, available_operators(), "merge operator"):
        cls = OPERATORS.get(name)
        blocks.append(_entry(name, _summary(cls), cls.options, cls.option_help))
    header = "Merge operators: a merging method's `operator`, its `operator_options` below (defaults shown)."
    return "\n\n".join([header, *("\n".join(b) for b in blocks)]) + "\n"


COMMANDS: dict[str, tuple[Callable[[Sequence[str]], str], str]] = {
    "methods": (describe_methods, "continual-learning methods and their options"),
    "schedules": (describe_schedules, "learning-rate schedules and their options"),
    "operators": (describe_operators, "merge operators and their options"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fomoflux", description="What a fomoflux config can name, with every option.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, (_, help_text) in COMMANDS.items():
        sub = commands.add_parser(command, help=help_text, description=f"List {help_text}.")
        sub.add_argument("names", nargs="*", metavar="NAME", help="only these (default: all)")
    args = parser.parse_args(argv)
    describe = COMMANDS[args.command][0]
    try:
        sys.stdout.write(describe(args.names))
    except ConfigError as err:
        print(f"fomoflux {args.command}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
