import json
import pathlib
import re

import pytest

from fomoflux.data.registry import DatasetSpec
from fomoflux.errors import ConfigError
from fomoflux.stream import build_stream, chunk, read_ordering_file

REFERENCE = pathlib.Path(__file__).resolve().parents[3] / "shared/reference/fomo_in_flux/streams"


def spec(name, classes, role="adaptation"):
    return DatasetSpec(name=name, kind="classification", role=role, classnames=tuple(classes), source={"generate": {}})


@pytest.fixture
def registry():
    return {
        "A": spec("A", [f"a{i}" for i in range(7)]),
        "B": spec("B", [f"b{i}" for i in range(5)]),
        "E": spec("E", ["e0", "e1"], role="evaluation"),
    }


def test_paper_chunking_gives_first_tasks_one_extra_class():
    tasks = chunk([str(i) for i in range(23)], tasks=5)
    assert [len(t) for t in tasks] == [5, 5, 5, 4, 4]
    assert [e for t in tasks for e in t] == [str(i) for i in range(23)]


def test_fixed_size_chunking_is_stable_when_entries_are_appended():
    first = chunk([str(i) for i in range(10)], classes_per_task=5)
    grown = chunk([str(i) for i in range(15)], classes_per_task=5)
    assert grown[: len(first)] == first and len(grown) == 3


def test_random_ordering_is_seeded_and_covers_every_adaptation_class(registry):
    one = build_stream("s", {"ordering": "random", "seed": 3, "classes_per_task": 4}, registry)
    two = build_stream("s", {"ordering": "random", "seed": 3, "classes_per_task": 4}, registry)
    other = build_stream("s", {"ordering": "random", "seed": 4, "classes_per_task": 4}, registry)
    assert one == two and one.entries != other.entries
    assert sorted(one.entries) == sorted(registry["A"].entries() + registry["B"].entries())
    assert one.num_tasks == 3


def test_segments_append_tasks_without_touching_earlier_ones(registry):
    base = {"classes_per_task": 7, "segments": [{"ordering": "random", "datasets": ["A"]}]}
    grown = {"classes_per_task": 7, "segments": base["segments"] + [{"ordering": "random", "datasets": ["B"]}]}
    small, big = build_stream("s", base, registry), build_stream("s", grown, registry)
    assert big.tasks[: small.num_tasks] == small.tasks
    assert big.history_digest(2) != small.history_digest(1)
    assert big.datasets_until(1) == ["A"] and big.datasets_until(2) == ["A", "B"]


@pytest.mark.parametrize(
    "entries, culprit",
    [
        (["A+++a0", "A+++nope"], "A+++nope"),
        (["Z+++z"], "unknown dataset 'Z'"),
        (["E+++e0"], "not an adaptation dataset"),
        (["A+++a0", "A+++a0"], "occurs twice"),
        (["A-a0"], "not of the form"),
    ],
)
def test_bad_entries_name_the_culprit(registry, entries, culprit):
    with pytest.raises(ConfigError, match=re.escape(culprit)):
        build_stream("s", {"ordering": "entries", "entries": entries, "classes_per_task": 1}, registry)


def test_ordering_file_in_fif_format(registry, tmp_path):
    path = tmp_path / "order.json"
    path.write_text(json.dumps(["B+++b1", "A+++a2"]))
    stream = build_stream("s", {"ordering": "file", "path": str(path), "tasks": 2}, registry)
    assert stream.tasks == (("B+++b1",), ("A+++a2",))
    with pytest.raises(ConfigError, match="does not exist"):
        read_ordering_file(tmp_path / "missing.json")


def test_reference_orderings_parse_in_fif_format():
    files = sorted(REFERENCE.glob("*.json"))
    if not files:
        pytest.skip("../shared reference orderings not present")
    debug = read_ordering_file(REFERENCE / "debug_seq_small.json")
    assert len(debug) == 40 and all("+++" in e for e in debug)
    assert [len(t) for t in chunk(debug, tasks=20)] == [2] * 20

