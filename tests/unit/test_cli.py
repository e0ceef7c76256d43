"""The `fomoflux` command lists every method, schedule and merge operator with its options; every method option has
a help string."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from fomoflux.cli import describe_methods, describe_operators, describe_schedules, main
from fomoflux.merge import available_operators
from fomoflux.methods import available_methods, method_class
from fomoflux.train.schedule import SCHEDULES, LRSchedule

ROOT = Path(__file__).resolve().parents[2]
# The methods fomoflux ships (other test modules register toy methods of their own in this process).
BUILT_IN = [name for name in available_methods() if method_class(name).__module__.startswith("fomoflux.methods.")]


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_method_option_has_a_help_string_and_the_method_a_summary(name):
    cls = method_class(name)
    missing = [option for option in cls.options if not cls.option_help.get(option, "").strip()]
    assert missing == [], f"method {name!r}: options without a help string in option_help: {missing}"
    text = describe_methods([name])
    assert text.splitlines()[2] == name and text.splitlines()[3].strip(), text


def test_python_m_fomoflux_methods_lists_every_method_option_default_and_help():
    proc = subprocess.run([sys.executable, "-m", "fomoflux", "methods"], capture_output=True, text=True, check=True)
    out = proc.stdout
    assert len(BUILT_IN) >= 16
    for name in BUILT_IN:
        assert f"\n{name}\n" in out
        cls = method_class(name)
        for option, default in cls.options.items():
            assert f"    {option} = {json.dumps(default, ensure_ascii=False)}" in out, (name, option)
            first_words = " ".join(cls.option_help[option].split()[:3])
            assert first_words in out, (name, option)
    assert "    rank = 5" in out and "s in W' = W0 + s·B@A" in out


def test_schedules_and_operators_list_their_options():
    schedules = describe_schedules()
    common = {f.name for f in dataclasses.fields(LRSchedule)}
    for name in SCHEDULES.names():
        assert f"\n{name}\n" in schedules
        for field in dataclasses.fields(SCHEDULES.get(name)):
            if field.name not in common:
                assert f"    {field.name} = {json.dumps(field.default)}" in schedules
    assert "    cooldown = 0.1" in schedules and "    decay_shape = \"linear\"" in schedules
    operators = describe_operators()
    assert all(f"\n{name}\n" in operators for name in available_operators())
    assert "    prune = 0.2" in describe_operators(["ties"])
    assert "prune_percentile" in describe_operators(["ties"])  # operator options have help
    from fomoflux.merge.operators import OPERATORS

    for name in available_operators():
        cls = OPERATORS.get(name)
        assert set(cls.options) == set(cls.option_help), name


def test_an_unknown_name_is_one_line_listing_the_known_ones(capsys):
    assert main(["methods", "lora", "finetuning"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fomoflux methods: unknown method 'finetuning'; known: bitfit, dora,")
    assert err.count("\n") == 1
    assert main(["methods", "lora"]) == 0
    assert "\nlora\n" in capsys.readouterr().out


def test_the_console_script_is_declared():
    # As installed from pyproject.toml's [project.scripts] (read from the package metadata, not with tomllib: that
    # is Python 3.11+, and requires-python is 3.10).
    (script,) = entry_points(group="console_scripts", name="fomoflux")
    assert script.value == "fomoflux.cli:main"
