"""The FoMo-in-Flux registry: the committed table of 63 datasets and its agreement with the public release."""

import itertools
import json
import pathlib
import re
import shutil
import subprocess
import sys
import time
from importlib import resources

import pytest

from fomoflux.data.fomo_in_flux import (
    ADAPTATION_COUNT,
    EVALUATION_COUNT,
    STREAMED_CLASSES,
    fif_datasets,
    fif_registry,
)
from fomoflux.errors import ConfigError
from fomoflux.stream import read_ordering_file, validate_entries

REPO = pathlib.Path(__file__).resolve().parents[2]
REFERENCE = pathlib.Path(__file__).resolve().parents[3] / "shared/reference/fomo_in_flux"
SCRIPT = REPO / "scripts" / "import_fif_reference.py"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason=f"reference release not found at {REFERENCE}")

EVALUATION_ONLY = {
    "CALTECH101", "CALTECH256", "CARS196", "CIFAR10", "DOMAINNET_QUICKDRAW", "EuroSAT", "FashionMNIST", "Food101",
    "GTSRB", "IMAGENET", "IMAGENET_A", "IMAGENET_D", "IMAGENET_R", "IMAGENET_S", "IMAGENET_V2", "MNIST", "MONKEYS10",
    "OXFORDPETS", "STL10", "SVHN", "MSCOCO", "FLICKR30K",
}  # fmt: skip


@pytest.fixture(scope="module")
def registry():
    return fif_registry()


def dataset_of(entry: str) -> str:
    return entry.partition("+++")[0]


def run_import(reference: pathlib.Path, output: pathlib.Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), str(reference), "--output", str(output)]
    return subprocess.run(command, check=False, capture_output=True, text=True)


def test_63_datasets_split_into_41_adaptation_and_the_22_evaluation_only(registry):
    assert len(registry) == ADAPTATION_COUNT + EVALUATION_COUNT == 63
    by_role = {role: {n for n, s in registry.items() if s.role == role} for role in ("adaptation", "evaluation")}
    assert by_role["evaluation"] == EVALUATION_ONLY
    assert len(by_role["adaptation"]) == ADAPTATION_COUNT
    assert all(registry[n].splits == ("train", "test") for n in by_role["adaptation"])
    assert all(registry[n].splits == ("test",) for n in by_role["evaluation"])


def test_retrieval_datasets_have_native_captions_and_only_fscoco_is_streamed(registry):
    retrieval = {n for n, s in registry.items() if s.kind == "retrieval"}
    assert retrieval == {"MSCOCO", "FLICKR30K", "FSCOCO"}
    assert {n for n, s in registry.items() if s.caption_source == "native"} == retrieval
    assert {n for n, s in registry.items() if s.kind == "classification"} == set(registry) - retrieval
    assert registry["FSCOCO"].role == "adaptation" and len(registry["FSCOCO"].classnames) == 115
    assert registry["MSCOCO"].classnames == () and registry["FLICKR30K"].classnames == ()


def test_prompts_hold_one_slot_and_names_are_plain(registry):
    assert len(registry) == 63
    for name, spec in registry.items():
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name), name
        assert spec.prompt.strip() and spec.prompt.count("{}") == 1, (name, spec.prompt)
        assert spec.prompt.replace("{}", "").count("{") == spec.prompt.replace("{}", "").count("}") == 0, name
        assert isinstance(spec.year, int) and 1990 <= spec.year <= 2024, (name, spec.year)


# The PRIMER strings of the authors' code release, copied by hand from pseudope/fomo_in_flux at commit 3e123d9
# (data_lib/<file>.py, the module-level ``PRIMER = ...``): the table must hold them verbatim, case and all.
REFERENCE_PRIMERS = {
    "CIFAR100": ("cifar100.py", "A photo of a {}."),
    "CIFAR10": ("cifar10.py", "A photo of a {}."),
    "ARTBENCH10": ("artbench10.py", "A painting of the artist {}."),
    "EuroSAT": ("eurosat.py", "A centered satellite photo of a {}."),
    "RESISC45": ("resisc45.py", "A satellite image of {}."),
    "GTSRB": ("gtsrb.py", 'A centered photo of a "{}" traffic sign.'),
    "MNIST": ("mnist.py", 'A black-and-white photo of the number: "{}".'),
    "FSCOCO": ("fscoco.py", "A sketch of a {}"),
    "ISICMELANOMA": ("isicmelanoma.py", "A close-up photo of human skin with a mole exhibiting {}."),
    "ZAPPOS50k": ("zappos50k.py", "A photo of {} shoes."),
    "OXFORDPETS": ("oxford_pets.py", "A photo of a {}, a type of pet."),
    "SNAKECLEF": ("snake_clef.py", "A photo of a {} snake."),
    "MSCOCO": ("mscoco.py", "{}"),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_PRIMERS))
def test_prompts_are_the_reference_primers_verbatim(registry, name):
    file, primer = REFERENCE_PRIMERS[name]
    assert registry[name].prompt == primer
    row = {r["name"]: r for r in fif_datasets()}[name]
    assert row["prompt_source"] == f"pseudope/fomo_in_flux@3e123d9:data_lib/{file}"


def test_class_prompt_fills_the_primer(registry):
    assert registry["CIFAR100"].class_prompt("apple") == "A photo of a apple."
    assert registry["Food101"].class_prompt("apple pie") == "A photo of a apple pie, a type of food."
    assert registry["GTSRB"].class_prompt("stop") == 'A centered photo of a "stop" traffic sign.'


def test_every_dataset_names_the_reference_file_of_its_prompt():
    rows = fif_datasets()
    assert len(rows) == 63
    for row in rows:
        assert re.fullmatch(r"pseudope/fomo_in_flux@3e123d9:data_lib/[a-z0-9_]+\.py", row["prompt_source"]), row


def test_streamed_entries_number_18381_and_only_four_datasets_hold_back_classes(registry):
    adaptation = [s for s in registry.values() if s.role == "adaptation"]
    assert sum(len(s.entries()) for s in adaptation) == STREAMED_CLASSES
    held_back = {s.name: len(s.unstreamed) for s in registry.values() if s.unstreamed}
    assert held_back == {"CLEVR": 30, "OPENIMAGES": 10, "MITSTATES": 3, "QUILT": 1}
    assert "two cubes, one sphere" in registry["CLEVR"].classnames
    assert "CLEVR+++two cubes, one sphere" not in registry["CLEVR"].entries()


def test_default_source_downloads_the_release_tar(registry):
    rows = {row["name"]: row for row in fif_datasets()}
    for name, spec in registry.items():
        assert spec.source == {"download": {"url": rows[name]["url"], "format": "fomo_in_flux"}}
        assert rows[name]["download_name"] == f"{name}.tar"
        assert f"/{name}.tar?" in rows[name]["url"]


def test_sources_replace_the_download_of_the_named_dataset_only():
    local = {"local": {"path": "/datasets/CIFAR100.tar", "format": "fomo_in_flux"}}
    chosen = fif_registry(["MNIST", "CIFAR100"], sources={"CIFAR100": local})
    assert list(chosen) == ["CIFAR100", "MNIST"]  # the release's order, not the argument's
    assert chosen["CIFAR100"].source == local and chosen["CIFAR100"].obtained_by == "local"
    assert chosen["MNIST"].obtained_by == "download"


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        ({"datasets": ["CIFAR100", "CIFAR1000"]}, "'CIFAR1000'"),
        ({"sources": {"NOT_A_DATASET": {"local": {"path": "/x"}}}}, "'NOT_A_DATASET'"),
        ({"datasets": "CIFAR100"}, "expected 'all' or a list"),
        ({"sources": {"MNIST": "/datasets/MNIST.tar"}}, "source of 'MNIST' must be a mapping"),
        ({"sources": {"MNIST": {"ftp": {}}}}, "dataset 'MNIST': source must have exactly one of"),
    ],
)
def test_bad_arguments_name_the_culprit(kwargs, culprit):
    with pytest.raises(ConfigError, match=re.escape(culprit)) as raised:
        fif_registry(**kwargs)
    if "unknown" in str(raised.value):
        assert "known: AI2DIAGRAMS, ARTBENCH10" in str(raised.value)


def test_fif_datasets_hands_out_copies():
    first = fif_datasets()
    first[0]["classnames"].clear()
    first[0]["name"] = "changed"
    again = fif_datasets()
    assert again[0]["name"] == "AI2DIAGRAMS" and len(again[0]["classnames"]) == 15


@needs_reference
def test_committed_table_is_what_the_import_script_writes(tmp_path):
    result = run_import(REFERENCE, tmp_path / "table.json")
    assert result.returncode == 0, result.stderr
    packaged = resources.files("fomoflux.data").joinpath("fomo_in_flux.json").read_bytes()
    assert (tmp_path / "table.json").read_bytes() == packaged
    assert json.loads(packaged)[0]["name"] == "AI2DIAGRAMS"
    # The paper's stream ships beside the table, as the script copies it from the release.
    shipped = resources.files("fomoflux.data").joinpath("streams").joinpath("random_sequence_1.json").read_bytes()
    assert (tmp_path / "streams" / "random_sequence_1.json").read_bytes() == shipped
    assert sorted(p.name for p in (tmp_path / "streams").iterdir()) == ["random_sequence_1.json"]


@needs_reference
def test_import_script_rejects_an_ordering_with_an_unknown_class(tmp_path):
    reference = tmp_path / "reference"
    (reference / "streams").mkdir(parents=True)
    (reference / "classnames").symlink_to(REFERENCE / "classnames")
    shutil.copy(REFERENCE / "dataset_tar_urls.txt", reference)
    for name in ("random_sequence_1.json", "time_incremental_dschunked_1.json"):
        (reference / "streams" / name).symlink_to(REFERENCE / "streams" / name)
    # A clean copy of the reference imports; one bad entry in an ordering makes the import fail, naming the file.
    assert run_import(reference, tmp_path / "good.json").returncode == 0
    (reference / "streams" / "broken.json").write_text(json.dumps(["CIFAR100+++apple", "CIFAR100+++no such class"]))
    result = run_import(reference, tmp_path / "bad.json")
    assert result.returncode == 1
    assert "broken.json" in result.stderr and "CIFAR100+++no such class" in result.stderr
    assert not (tmp_path / "bad.json").exists()


@needs_reference
def test_every_reference_ordering_validates_against_the_registry(registry):
    paths = sorted((REFERENCE / "streams").glob("*.json"))
    assert len(paths) == 29
    started = time.perf_counter()
    lengths = {}
    for path in paths:
        entries = read_ordering_file(path)
        validate_entries(entries, registry, path.name)
        lengths[path.stem] = len(entries)
    assert time.perf_counter() - started < 5.0
    full = [stem for stem, length in lengths.items() if "debug" not in stem and "short" not in stem]
    assert len(full) == 26 and all(lengths[stem] == STREAMED_CLASSES for stem in full)


@needs_reference
def test_years_reproduce_the_time_incremental_orderings(registry):
    chunked = read_ordering_file(REFERENCE / "streams" / "time_incremental_dschunked_1.json")
    blocks = [name for name, _ in itertools.groupby(dataset_of(entry) for entry in chunked)]
    assert len(blocks) == len(set(blocks)) == ADAPTATION_COUNT  # one contiguous block per dataset
    first_seen = {name: index for index, name in enumerate(blocks)}
    adaptation = [n for n, s in registry.items() if s.role == "adaptation"]
    assert sorted(adaptation, key=lambda n: (registry[n].year, first_seen[n])) == blocks
    # In rsagg_1 the classes of same-year datasets are shuffled together: two datasets' spans overlap iff same year.
    aggregated = read_ordering_file(REFERENCE / "streams" / "time_incremental_rsagg_1.json")
    spans: dict[str, list[int]] = {}
    for index, entry in enumerate(aggregated):
        spans.setdefault(dataset_of(entry), [index, index])[1] = index
    for one, other in itertools.combinations(adaptation, 2):
        overlap = spans[one][0] <= spans[other][1] and spans[other][0] <= spans[one][1]
        assert overlap == (registry[one].year == registry[other].year), (one, other)
