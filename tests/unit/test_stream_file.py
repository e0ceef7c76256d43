"""Orderings from a file: the release's random_sequence_1 shipped with fomoflux, and errors that name the file and
the entry at fault."""

import hashlib
import json
import pathlib
import re

import pytest
import yaml

from fomoflux import orderings
from fomoflux.data.fomo_in_flux import ADAPTATION_COUNT, STREAMED_CLASSES, fif_registry
from fomoflux.data.registry import DatasetSpec
from fomoflux.errors import ConfigError, DataError
from fomoflux.orderings import stream_file
from fomoflux.pipeline.plan import build_plan
from fomoflux.stream import build_stream, chunk

ROOT = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = ROOT.parent / "shared" / "reference" / "fomo_in_flux"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference release not found at {REFERENCE}")


def spec(name, classes, role="adaptation", unstreamed=()):
    return DatasetSpec(name=name, kind="classification", role=role, classnames=tuple(classes),
                       source={"generate": {}}, unstreamed=tuple(unstreamed))


@pytest.fixture
def registry():
    return {
        "A": spec("A", ["a0", "a1", "a2"], unstreamed=["a2"]),
        "B": spec("B", ["b0", "b1"]),
        "E": spec("E", ["e0"], role="evaluation"),
    }


@pytest.fixture
def write(tmp_path):
    def write(content, name="order.json"):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return write


@pytest.fixture(scope="module")
def fif():
    return fif_registry()


# ---- a file of the user's ----------------------------------------------------------------------------------


def test_a_file_is_streamed_in_its_order_and_may_be_a_subset(registry, write):
    path = write(["B+++b1", "A+++a0", "B+++b0"])
    stream = build_stream("s", {"ordering": "file", "path": str(path), "tasks": 2}, registry)
    assert stream.entries == ("B+++b1", "A+++a0", "B+++b0")
    assert stream.tasks == (("B+++b1", "A+++a0"), ("B+++b0",))
    reversed_stream = build_stream("s", {"ordering": "file", "path": str(path), "reverse": True, "tasks": 1},
                                   registry)
    assert reversed_stream.entries == ("B+++b0", "A+++a0", "B+++b1")


def test_a_complete_file_holds_every_streamed_class_of_its_datasets(registry, write):
    # A's a2 is never streamed, so a complete file over A and B has four entries.
    path = write(["B+++b1", "A+++a1", "A+++a0", "B+++b0"])
    stream = build_stream("s", {"ordering": "file", "path": str(path), "complete": True, "tasks": 2}, registry)
    assert len(stream.entries) == 4
    only_b = write(["B+++b1", "B+++b0"], "only_b.json")
    cfg = {"ordering": "file", "path": str(only_b), "complete": True, "datasets": ["B"], "tasks": 1}
    assert build_stream("s", cfg, registry).entries == ("B+++b1", "B+++b0")


@pytest.mark.parametrize(
    "entries, extra, culprit",
    [
        (["A+++a0", "Z+++z"], {}, "entry 1 'Z+++z': unknown dataset 'Z'"),
        (["A+++a0", "A+++nope"], {}, "entry 1 'A+++nope': dataset 'A' has no class 'nope'"),
        (["A+++a2"], {}, "entry 0 'A+++a2': class 'a2' of 'A' is never streamed"),
        (["E+++e0"], {}, "entry 0 'E+++e0': 'E' is not an adaptation dataset"),
        (["A+++a0", "B+++b0"], {"datasets": ["A"]}, "entry 1 'B+++b0': dataset 'B' is not one of the stream's "),
        (["A+++a0", "B+++b0", "A+++a0"], {}, "entry 2 'A+++a0' occurs twice (first at entry 0)"),
        (["A+++a0", "a1"], {}, "entry 1 'a1' is not of the form DATASET+++classname"),
        (["A+++a0", "B+++b0", "B+++b1"], {"complete": True}, "1 streamed class(es) of the stream's datasets are "
                                                            "missing, the first 'A+++a1'"),
    ],
)
def test_a_bad_entry_is_named_with_the_file_and_its_position(registry, write, entries, extra, culprit):
    path = write(entries)
    with pytest.raises(ConfigError, match=re.escape(culprit)) as raised:
        build_stream("s", {"ordering": "file", "path": str(path), "tasks": 1, **extra}, registry)
    assert str(raised.value).startswith(f"streams.s: stream file {path}: ")


@pytest.mark.parametrize(
    "content, culprit",
    [
        ('["A+++a0",', "is not valid JSON"),
        ('{"A": ["a0"]}', "must hold a JSON list of 'DATASET+++classname' strings, not a JSON dict"),
        ('["A+++a0", 3]', "entry 1 3 is not a 'DATASET+++classname' string"),
    ],
)
def test_a_malformed_file_is_named(registry, write, content, culprit):
    path = write(content)
    with pytest.raises(ConfigError, match=re.escape(culprit)) as raised:
        build_stream("s", {"ordering": "file", "path": str(path), "tasks": 1}, registry)
    assert str(raised.value).startswith(f"streams.s.path: stream file {path}")


def test_a_missing_file_or_a_folder_is_named(registry, tmp_path):
    for path, culprit in ((tmp_path / "missing.json", "does not exist"), (tmp_path, "is a directory")):
        with pytest.raises(ConfigError, match=re.escape(f"streams.s.path: stream file {path} {culprit}")):
            build_stream("s", {"ordering": "file", "path": str(path), "tasks": 1}, registry)


def test_file_ordering_needs_exactly_one_source_and_its_keys_need_a_file_ordering(registry, write):
    path = write(["A+++a0"])
    for cfg in ({"ordering": "file"}, {"ordering": "file", "path": str(path), "release": "random_sequence_1"}):
        with pytest.raises(ConfigError, match="needs exactly one of 'path' .* or 'release' .*random_sequence_1"):
            build_stream("s", {**cfg, "tasks": 1}, registry)
    with pytest.raises(ConfigError, match=re.escape("streams.s.complete: only ordering 'file' takes 'complete'")):
        build_stream("s", {"ordering": "random", "complete": True, "tasks": 1}, registry)
    with pytest.raises(ConfigError, match=re.escape("streams.s.release: only ordering 'file' takes 'release'")):
        build_stream("s", {"ordering": "easy_to_hard", "release": "random_sequence_1", "tasks": 1}, registry)
    with pytest.raises(ConfigError, match=re.escape("streams.s.release: unknown release stream 'nope' (shipped: "
                                                    "random_sequence_1)")):
        build_stream("s", {"ordering": "file", "release": "nope", "tasks": 1}, registry)


def test_a_file_segment_is_checked_against_its_own_datasets(registry, write):
    path = write(["B+++b1", "B+++b0"])
    cfg = {"classes_per_task": 2, "segments": [{"ordering": "entries", "entries": ["A+++a1", "A+++a0"]},
                                               {"ordering": "file", "path": str(path), "datasets": ["B"],
                                                "complete": True}]}
    assert build_stream("s", cfg, registry).tasks == (("A+++a1", "A+++a0"), ("B+++b1", "B+++b0"))
    cfg["segments"][1]["datasets"] = ["A"]
    with pytest.raises(ConfigError, match=re.escape(f"streams.s.segments[1]: stream file {path}: entry 0 'B+++b1'")):
        build_stream("s", cfg, registry)


# ---- the release's random_sequence_1, shipped -------------------------------------------------------------


def test_the_shipped_stream_is_the_release_file(fif):
    path = orderings.release_stream_path("random_sequence_1")
    assert path.parent == ROOT / "src" / "fomoflux" / "data" / "streams"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == orderings.RELEASE_STREAMS["random_sequence_1"]
    entries = orderings.read_release_stream("random_sequence_1")
    assert len(entries) == len(set(entries)) == STREAMED_CLASSES == 18381
    assert entries[:2] == ["PLACES365+++church outdoor", "MITSTATES+++engraved granite"]
    # Every entry a streamed class of the 41 adaptation datasets, each once, and every one of them there.
    adaptation = [name for name, s in fif.items() if s.role == "adaptation"]
    assert len(adaptation) == ADAPTATION_COUNT
    orderings.check_stream_file(entries, fif, adaptation, "random_sequence_1", complete=True)
    assert sorted(entries) == sorted(e for name in adaptation for e in fif[name].entries())


@needs_reference
def test_the_shipped_stream_has_the_bytes_of_the_reference_copy():
    shipped = orderings.release_stream_path("random_sequence_1").read_bytes()
    assert (REFERENCE / "streams" / "random_sequence_1.json").read_bytes() == shipped


def test_a_shipped_stream_that_is_not_the_release_bytes_is_refused(monkeypatch):
    monkeypatch.setitem(stream_file.RELEASE_STREAMS, "random_sequence_1", "0" * 64)
    with pytest.raises(DataError, match=r"random_sequence_1\.json has SHA-256 0f010db0.*, the release's file "
                                        r"\(pseudope/fomo_in_flux@3e123d9:stream_construction/random_sequence_1"):
        orderings.read_release_stream("random_sequence_1")


def test_a_release_stream_with_a_dataset_left_out_names_the_first_entry_outside(fif):
    adaptation = [name for name, s in fif.items() if s.role == "adaptation" and name != "PLACES365"]
    cfg = {"ordering": "file", "release": "random_sequence_1", "datasets": adaptation, "tasks": 20}
    with pytest.raises(ConfigError, match=re.escape("streams.r: release stream 'random_sequence_1' (")) as raised:
        build_stream("r", cfg, fif)
    assert "entry 0 'PLACES365+++church outdoor': dataset 'PLACES365' is not one of the stream's datasets" in str(
        raised.value)


# ---- the paper preset ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_plan():
    config = yaml.safe_load((ROOT / "config" / "fomo_in_flux.yaml").read_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        return config, build_plan(config, check_against_model=False)


def test_the_paper_preset_streams_random_sequence_1_in_20_tasks(paper_plan):
    config, plan = paper_plan
    assert config["streams"]["random"] == {"ordering": "file", "release": "random_sequence_1", "complete": True,
                                           "tasks": 20}
    stream = plan.streams["random"]
    released = orderings.read_release_stream("random_sequence_1")
    assert list(stream.entries) == released
    # The release's cut (utils/sequence_handling.py): 18,381 // 20 = 919 per task, the first 18,381 % 20 get one more.
    assert [len(task) for task in stream.tasks] == [920] + [919] * 19
    assert [e for task in stream.tasks for e in task] == released
    assert list(stream.tasks) == chunk(released, tasks=20)
    assert {plan.runs[name].stream for name in plan.runs} == {"random"}


def test_the_paper_preset_ema_merge_is_the_release_default_equal_weight_interpolation(paper_plan):
    _, plan = paper_plan
    run = plan.runs["ema_merge"]
    assert run.init_from == run.deploy_from == "sequential"
    merge = run.merges["sequential"]
    assert (merge["operator"], merge["weight"], merge["lines"], merge["start"]) == ("interpolation", 0.5, None, "base")
