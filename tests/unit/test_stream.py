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



# ---- orderings in the plan ---------------------------------------------------------------------------------


def dated(name, classes, year):
    return DatasetSpec(name=name, kind="classification", role="adaptation", classnames=tuple(classes),
                       source={"generate": {}}, year=year)


@pytest.fixture
def dated_registry():
    return {"A": dated("A", ["a0", "a1", "a2"], 2001), "B": dated("B", ["b0", "b1"], 1999),
            "C": dated("C", ["c0", "c1", "c2", "c3"], 2001)}


@pytest.mark.parametrize("ordering", ["random", "dataset_incremental", "time_incremental"])
def test_plan_time_orderings_and_their_reverse(dated_registry, ordering):
    forward = build_stream("s", {"ordering": ordering, "seed": 3, "tasks": 3}, dated_registry)
    backward = build_stream("s", {"ordering": ordering, "seed": 3, "tasks": 3, "reverse": True}, dated_registry)
    assert forward.ordered_by_plan and forward.num_tasks == 3 and not forward.needs
    assert sorted(forward.entries) == sorted(e for s in dated_registry.values() for e in s.entries())
    assert backward.entries == forward.entries[::-1]
    if ordering != "random":  # B (1999) comes before A and C (2001)
        assert [e.split("+++")[0] for e in forward.entries[:2]] == ["B", "B"]


@pytest.mark.parametrize("ordering, needs", [("concept_frequency", {"pool"}), ("easy_to_hard", {"class_accuracy"}),
                                             ("concept_similarity", {"base_model"})])
def test_data_orderings_leave_the_order_to_a_stage_but_fix_the_task_count(dated_registry, ordering, needs):
    stream = build_stream("s", {"ordering": ordering, "classes_per_task": 4}, dated_registry)
    assert not stream.ordered_by_plan and stream.needs == needs and stream.num_tasks == 3
    assert stream.datasets_until(1) == ["A", "B", "C"]  # order unknown: every dataset may be read
    with pytest.raises(ConfigError, match="tasks.json"):
        stream.task(1)
    other = build_stream("s", {"ordering": ordering, "classes_per_task": 4, "seed": 1}, dated_registry)
    assert other.definition_digest() != stream.definition_digest()


def test_chunk_by_samples_needs_a_task_count_and_the_manifests(dated_registry):
    with pytest.raises(ConfigError, match="give 'tasks'"):
        build_stream("s", {"ordering": "random", "classes_per_task": 3, "chunk_by": "samples"}, dated_registry)
    stream = build_stream("s", {"ordering": "random", "tasks": 2, "chunk_by": "samples"}, dated_registry)
    assert stream.needs == {"manifests"} and stream.num_tasks == 2


def test_order_from_data(dated_registry):
    from fomoflux.stream import order_from_data

    stream = build_stream("s", {"ordering": "easy_to_hard", "tasks": 2, "reverse": True}, dated_registry)
    accuracy = {e: i / 10 for i, e in enumerate(stream.entries)}
    ordered, tasks = order_from_data(stream, class_accuracy=accuracy)
    assert ordered == list(stream.entries)  # easy-to-hard reversed: lowest accuracy first
    assert [len(t) for t in tasks] == [5, 4]

    by_samples = build_stream("s", {"ordering": "entries", "entries": ["A+++a0", "A+++a1", "B+++b0"], "tasks": 2,
                                    "chunk_by": "samples"}, dated_registry)
    _, tasks = order_from_data(by_samples, sample_counts={"A+++a0": 10, "A+++a1": 1, "B+++b0": 9})
    assert tasks == [("A+++a0",), ("A+++a1", "B+++b0")]


def test_time_incremental_needs_years(registry):
    with pytest.raises(ConfigError, match="'A'"):
        build_stream("s", {"ordering": "time_incremental", "tasks": 2}, registry)


def test_data_ordering_cannot_be_a_segment(dated_registry):
    with pytest.raises(ConfigError, match="segments\\[1\\].*computed from data"):
        build_stream("s", {"classes_per_task": 2, "segments": [{"ordering": "random"},
                                                               {"ordering": "easy_to_hard"}]}, dated_registry)


def test_unstreamed_classes_are_left_out_and_refused():
    spec = DatasetSpec(name="A", kind="classification", role="adaptation", classnames=("a0", "a1", "a2"),
                       source={"generate": {}}, unstreamed=("a1",))
    stream = build_stream("s", {"ordering": "random", "tasks": 1}, {"A": spec})
    assert sorted(stream.entries) == ["A+++a0", "A+++a2"]
    with pytest.raises(ConfigError, match="never streamed"):
        build_stream("s", {"ordering": "entries", "entries": ["A+++a1"], "tasks": 1}, {"A": spec})


def test_duplicate_entry_names_both_positions(registry):
    with pytest.raises(ConfigError, match=r"entry 2 'A\+\+\+a0' occurs twice \(first at entry 0\)"):
        build_stream("s", {"ordering": "entries", "entries": ["A+++a0", "A+++a1", "A+++a0"], "tasks": 1}, registry)
