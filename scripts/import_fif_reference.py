"""Import the FoMo-in-Flux reference release into fomoflux's committed dataset table.

Reads ``dataset_tar_urls.txt``, ``classnames/*.json`` and ``streams/*.json`` of the public release (default:
``../shared/reference/fomo_in_flux`` next to the repository) and writes ``src/fomoflux/data/fomo_in_flux.json``:
one object per dataset, in the URL file's order, with the keys name, download_name, url, role, kind, classnames,
unstreamed, prompt, prompt_source, caption_source and year. Beside it, in ``streams/``, it copies the release's
orderings that fomoflux ships (``SHIPPED_ORDERINGS``: the paper's stream ``random_sequence_1.json``) byte for byte,
after they passed the same checks; ``fomoflux.orderings.stream_file.RELEASE_STREAMS`` pins their SHA-256. The
release only has names, URLs, classes and orderings; the prompt templates below are the ``PRIMER`` strings of the
authors' code (``prompt_source`` names the file), the release years are ours (cross-checked against the
time-incremental orderings).

Usage: ``python scripts/import_fif_reference.py [REFERENCE_DIR] [--output FILE]`` (the orderings go to
``streams/`` beside FILE). The output is deterministic: the same reference files always give the same bytes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fomoflux.errors import DataError
from fomoflux.io import atomic_path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "fomo_in_flux"
DEFAULT_OUTPUT = REPO_ROOT / "src" / "fomoflux" / "data" / "fomo_in_flux.json"

SEPARATOR = "+++"
URL_FILE = "dataset_tar_urls.txt"
URL_FILE_COMMENT_LINES = 2
# The ordering that lists every streamed class exactly once; a class missing from it is never streamed.
COMPLETE_ORDERING = "random_sequence_1.json"
# The dataset-incremental ordering: one contiguous block per dataset, blocks in release-year order.
YEAR_ORDERING = "time_incremental_dschunked_1.json"
# The orderings fomoflux ships (src/fomoflux/data/streams/): the stream of every experiment config of the release.
SHIPPED_ORDERINGS = (COMPLETE_ORDERING,)
SHIPPED_FOLDER = "streams"

# The benchmark's 22 evaluation-only datasets (release names); every other dataset is streamed.
EVALUATION_ONLY = (
    "CALTECH101", "CALTECH256", "CARS196", "CIFAR10", "DOMAINNET_QUICKDRAW", "EuroSAT", "FashionMNIST", "Food101",
    "GTSRB", "IMAGENET", "IMAGENET_A", "IMAGENET_D", "IMAGENET_R", "IMAGENET_S", "IMAGENET_V2", "MNIST", "MONKEYS10",
    "OXFORDPETS", "STL10", "SVHN", "MSCOCO", "FLICKR30K",
)  # fmt: skip
# Image-text retrieval datasets; FSCOCO is also streamed, by its pseudo-classes.
RETRIEVAL = ("MSCOCO", "FLICKR30K", "FSCOCO")
# Datasets that come with human captions (the others get generated ones).
NATIVE_CAPTIONS = ("MSCOCO", "FLICKR30K", "FSCOCO")

# The zero-shot template of each dataset: the ``PRIMER`` string of its module in the authors' code release
# (repository pseudope/fomo_in_flux at commit 3e123d9, file ``data_lib/<file>``), verbatim; ``{}`` takes the class
# name. The file is kept beside the string as its provenance and goes into the table as ``prompt_source``. The two
# caption-only retrieval sets (MSCOCO, FLICKR30K) have the bare "{}" there: they are never prompted with a class.
REFERENCE_CODE = "pseudope/fomo_in_flux@3e123d9"
PRIMERS = {
    "AI2DIAGRAMS": ("ai2diagrams.py", "A photo of a {}."),
    "ARTBENCH10": ("artbench10.py", "A painting of the artist {}."),
    "BIRDSNAP": ("birdsnap.py", "A photo of the bird {}."),
    "CALTECH101": ("caltech101.py", "A photo of a {}."),
    "CALTECH256": ("caltech256.py", "A photo of a {}."),
    "CARS196": ("cars196.py", "A photo of a {}, a type of car."),
    "CIFAR10": ("cifar10.py", "A photo of a {}."),
    "CIFAR100": ("cifar100.py", "A photo of a {}."),
    "CLEVR": ("clevr.py", "A photo of synthetic shapes, with {}."),
    "CLRS": ("clrs.py", "A satellite image of a {}."),
    "COUNTRY211": ("country211.py", "A photo representing the country of {}."),
    "CUB200": ("cub200.py", "A photo of a {}, a type of bird."),
    "DF20MINI": ("df20mini.py", "A photo of the fungi {}."),
    "DOLLARSTREET": ("dollarstreet.py", "A photo of a {}."),
    "DOMAINNET_CLIPART": ("domainnet_clipart.py", "A clipart of a {}."),
    "DOMAINNET_INFOGRAPH": ("domainnet_infograph.py", "An infograph of a {}."),
    "DOMAINNET_PAINTING": ("domainnet_painting.py", "A painting of a {}."),
    "DOMAINNET_QUICKDRAW": ("domainnet_quickdraw.py", "A quickdraw of a {}."),
    "DOMAINNET_SKETCH": ("domainnet_sketch.py", "A sketch of a {}."),
    "DSPRITES": ("dsprites.py", "A black-and-white photo of a {}."),
    "DTD": ("dtd.py", "A photo of a {} texture."),
    "EuroSAT": ("eurosat.py", "A centered satellite photo of a {}."),
    "FashionMNIST": ("fashionmnist.py", "A black-and-white photo of a {}, a type of clothing."),
    "FGVCAircraft": ("fgvcaircraft.py", "A photo of a {}, a type of aircraft."),
    "FLICKR30K": ("flickr30k.py", "{}"),
    "FLOWERS102": ("flowers102.py", "A photo of a {}, a type of flower."),
    "Food101": ("food101.py", "A photo of a {}, a type of food."),
    "FRU92": ("fru92.py", "A photo of a {}, a type of fruit."),
    "FSCOCO": ("fscoco.py", "A sketch of a {}"),  # sic: no full stop in the release
    "GTSRB": ("gtsrb.py", 'A centered photo of a "{}" traffic sign.'),
    "IMAGENET_A": ("imagenet_a.py", "A photo of a {}."),
    "IMAGENET_D": ("imagenet_d.py", "A photo of a {}."),
    "IMAGENET_R": ("imagenet_r.py", "A photo of a {}."),
    "IMAGENET_S": ("imagenet_s.py", "A photo of a {}."),
    "IMAGENET_V2": ("imagenet_v2.py", "A photo of a {}."),
    "IMAGENET": ("imagenet.py", "A photo of a {}."),
    "iNATURALIST2021": ("inaturalist2021.py", "A photo of a {}."),
    "ISICMELANOMA": ("isicmelanoma.py", "A close-up photo of human skin with a mole exhibiting {}."),
    "MITSTATES": ("mitstates.py", "A photo of a {}."),
    "MNIST": ("mnist.py", 'A black-and-white photo of the number: "{}".'),
    "MONKEYS10": ("monkeys10.py", "A photo of a {}, a type of monkey."),
    "MSCOCO": ("mscoco.py", "{}"),
    "MTSD": ("mtsd.py", 'A centered photo of a "{}" traffic sign.'),
    "MVTECAD_Adapt": ("mvtecad_adapt.py", "A close-up photo of a {}."),
    "MVTECAD_Eval": ("mvtecad_eval.py", "A close-up photo of a {}."),
    "OBJECTNET": ("objectnet.py", "A photo of a {}."),
    "OBSC_ANIMALS": ("obsc_animals.py", "A photo of the obscure animal {}."),
    "OBSC_THINGS": ("obsc_things.py", "A photo of the obscure thing {}."),
    "OPENIMAGES": ("openimages.py", "A photo of a {}."),
    "OXFORDPETS": ("oxford_pets.py", "A photo of a {}, a type of pet."),
    "PATTERNNET": ("patternnet.py", "A satellite image of a {}."),
    "PLACES365": ("places365.py", "A photo of a {}."),
    "PLANTVILLAGE": ("plantvillage.py", "A close-up photo of a {}."),
    "QUILT": ("quilt.py", "A histopathology photo depicting {} pathologies."),
    "RESISC45": ("resisc45.py", "A satellite image of {}."),
    "SHAPES3D": ("shapes3d.py", "A photo of a synthetic {}."),
    "SNAKECLEF": ("snake_clef.py", "A photo of a {} snake."),
    "STL10": ("stl10.py", "A photo of a {}."),
    "SUN397": ("sun397.py", "A photo of a {}."),
    "SVHN": ("svhn.py", 'A photo of the number: "{}".'),
    "SynthCLIP106": ("synthclip106.py", "A photo of a {}."),
    "VEG200": ("veg200.py", "A photo of a {}, a type of vegetable."),
    "ZAPPOS50k": ("zappos50k.py", "A photo of {} shoes."),
}
PROMPTS = {name: primer for name, (_, primer) in PRIMERS.items()}

# Release years. Where our knowledge and the benchmark's time-incremental orderings disagree, the orderings win:
# RESISC45 (published 2017) is streamed with the 2021 datasets, and Quilt-1M (2023) with SynthCLIP (2024) and the
# obscure animals / things sets, so those years follow the orderings.
YEARS = {
    "AI2DIAGRAMS": 2016, "ARTBENCH10": 2022, "BIRDSNAP": 2014, "CALTECH101": 2004, "CALTECH256": 2007,
    "CARS196": 2013, "CIFAR10": 2009, "CIFAR100": 2009, "CLEVR": 2017, "CLRS": 2020, "COUNTRY211": 2021,
    "CUB200": 2011, "DF20MINI": 2021, "DOLLARSTREET": 2022, "DOMAINNET_CLIPART": 2019, "DOMAINNET_INFOGRAPH": 2019,
    "DOMAINNET_PAINTING": 2019, "DOMAINNET_QUICKDRAW": 2019, "DOMAINNET_SKETCH": 2019, "DSPRITES": 2017, "DTD": 2014,
    "EuroSAT": 2017, "FashionMNIST": 2017, "FGVCAircraft": 2013, "FLICKR30K": 2014, "FLOWERS102": 2008,
    "Food101": 2014, "FRU92": 2017, "FSCOCO": 2022, "GTSRB": 2011, "IMAGENET_A": 2019, "IMAGENET_D": 2021,
    "IMAGENET_R": 2020, "IMAGENET_S": 2019, "IMAGENET_V2": 2019, "IMAGENET": 2009, "iNATURALIST2021": 2021,
    "ISICMELANOMA": 2020, "MITSTATES": 2015, "MNIST": 1998, "MONKEYS10": 2018, "MSCOCO": 2014, "MTSD": 2020,
    "MVTECAD_Adapt": 2019, "MVTECAD_Eval": 2019, "OBJECTNET": 2019, "OBSC_ANIMALS": 2024, "OBSC_THINGS": 2024,
    "OPENIMAGES": 2016, "OXFORDPETS": 2012, "PATTERNNET": 2018, "PLACES365": 2017, "PLANTVILLAGE": 2015,
    "QUILT": 2024, "RESISC45": 2021, "SHAPES3D": 2018, "SNAKECLEF": 2022, "STL10": 2011, "SUN397": 2010,
    "SVHN": 2011, "SynthCLIP106": 2024, "VEG200": 2017, "ZAPPOS50k": 2014,
}  # fmt: skip


def normalise(name: str) -> str:
    """A dataset name reduced for matching: lowercase, alphanumerics only (``oxford_pets`` == ``OXFORDPETS``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def read_json(path: Path) -> Any:
    """The parsed content of a JSON file; raises DataError naming the file if it is missing or invalid."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def read_downloads(url_file: Path) -> list[tuple[str, str, str]]:
    """``(release name, tar file name, url)`` per dataset, in the file's order.

    Raises DataError if the file is missing, a line is not a ``.tar`` URL, or a name occurs twice.
    """
    if not url_file.is_file():
        raise DataError(f"{url_file}: file does not exist")
    lines = url_file.read_text(encoding="utf-8").splitlines()[URL_FILE_COMMENT_LINES:]
    downloads, seen = [], set()
    for number, line in enumerate(lines, start=URL_FILE_COMMENT_LINES + 1):
        url = line.strip()
        if not url:
            continue
        download_name = urlparse(url).path.rsplit("/", 1)[-1]
        if not download_name.endswith(".tar"):
            raise DataError(f"{url_file}:{number}: {url!r} does not name a .tar file")
        name = download_name.removesuffix(".tar")
        if name in seen:
            raise DataError(f"{url_file}:{number}: dataset {name!r} is listed twice")
        seen.add(name)
        downloads.append((name, download_name, url))
    return downloads


def class_files_by_name(classnames_dir: Path) -> dict[str, Path]:
    """Class files keyed by their normalised stem; raises DataError if two stems normalise alike."""
    files: dict[str, Path] = {}
    for path in sorted(classnames_dir.glob("*.json")):
        key = normalise(path.stem)
        if key in files:
            raise DataError(f"{path} and {files[key]} both match dataset name {key!r}")
        files[key] = path
    return files


def read_classnames(path: Path, dataset: str) -> list[str]:
    """The class names of ``dataset`` from its ``prefix+++classname`` file, in file order.

    Raises DataError if an entry is not a string of that form or its prefix names another dataset.
    """
    entries = read_json(path)
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON list of 'prefix{SEPARATOR}classname' strings")
    classnames = []
    for position, entry in enumerate(entries):
        prefix, sep, classname = entry.partition(SEPARATOR) if isinstance(entry, str) else ("", "", "")
        if not sep or not classname or normalise(prefix) != normalise(dataset):
            raise DataError(f"{path}: entry {position} {entry!r} is not '{dataset}{SEPARATOR}classname'")
        classnames.append(classname)
    return classnames


def read_orderings(streams_dir: Path) -> dict[str, list[str]]:
    """Every ordering file (file name -> entries); raises DataError if there is none or one is malformed."""
    orderings = {path.name: read_json(path) for path in sorted(streams_dir.glob("*.json"))}
    if not orderings:
        raise DataError(f"{streams_dir}: no ordering files")
    for name, entries in orderings.items():
        if not isinstance(entries, list) or not all(isinstance(e, str) and SEPARATOR in e for e in entries):
            raise DataError(f"{streams_dir / name}: expected a JSON list of 'DATASET{SEPARATOR}classname' strings")
    return orderings


def dataset_of(entry: str) -> str:
    return entry.partition(SEPARATOR)[0]


def check_orderings(orderings: dict[str, list[str]], classnames: dict[str, list[str]], streams_dir: Path) -> None:
    """Every ordering only names known classes, all within the complete ordering; raises DataError if not."""
    if COMPLETE_ORDERING not in orderings:
        raise DataError(f"{streams_dir / COMPLETE_ORDERING}: file does not exist")
    complete = set(orderings[COMPLETE_ORDERING])
    known = {f"{dataset}{SEPARATOR}{c}" for dataset, classes in classnames.items() for c in classes}
    for name, entries in orderings.items():
        for position, entry in enumerate(entries):
            if entry not in known:
                raise DataError(f"{streams_dir / name}: entry {position} {entry!r} is not a class of any dataset")
            if entry not in complete:
                raise DataError(f"{streams_dir / name}: entry {position} {entry!r} is missing from {COMPLETE_ORDERING}")


def check_roles(release_names: Sequence[str], streamed: set[str], url_file: Path) -> None:
    """The streamed datasets are exactly the non-evaluation ones; raises DataError naming the difference."""
    expected = set(release_names) - set(EVALUATION_ONLY)
    missing_eval = sorted(set(EVALUATION_ONLY) - set(release_names))
    if missing_eval:
        raise DataError(f"{url_file}: evaluation dataset(s) {missing_eval} are not listed")
    if streamed != expected:
        raise DataError(
            f"streamed datasets differ from the non-evaluation datasets of {url_file}: "
            f"streamed only {sorted(streamed - expected)}, not streamed {sorted(expected - streamed)}"
        )


def check_years(year_ordering: Sequence[str], path: Path) -> None:
    """Release years never decrease along the dataset blocks of the year ordering; raises DataError if not."""
    blocks = [name for name, _ in itertools.groupby(dataset_of(entry) for entry in year_ordering)]
    for earlier, later in itertools.pairwise(blocks):
        if YEARS[earlier] > YEARS[later]:
            raise DataError(
                f"{path}: {earlier} ({YEARS[earlier]}) is streamed before {later} ({YEARS[later]}); fix YEARS"
            )


def check_tables(release_names: Iterable[str]) -> None:
    """PROMPTS and YEARS cover exactly the released datasets, one ``{}`` per prompt; raises DataError if not."""
    names = set(release_names)
    for table_name, table in (("PROMPTS", PROMPTS), ("YEARS", YEARS)):
        if set(table) != names:
            raise DataError(
                f"{table_name} lacks {sorted(names - set(table))} and has unknown {sorted(set(table) - names)}"
            )
    for name, prompt in PROMPTS.items():
        if prompt.count("{}") != 1:
            raise DataError(f"PROMPTS[{name!r}] = {prompt!r} must hold exactly one '{{}}'")


def build_table(reference: Path) -> list[dict[str, Any]]:
    """The dataset table built from the reference directory, one dict per dataset in the URL file's order.

    Raises DataError if the reference files are missing, malformed or inconsistent.
    """
    url_file = reference / URL_FILE
    downloads = read_downloads(url_file)
    release_names = [name for name, _, _ in downloads]
    check_tables(release_names)
    class_files = class_files_by_name(reference / "classnames")
    classnames: dict[str, list[str]] = {}
    for name in release_names:
        path = class_files.get(normalise(name))
        if path is not None:
            classnames[name] = read_classnames(path, name)
        elif name not in RETRIEVAL:
            raise DataError(f"{reference / 'classnames'}: no class file for dataset {name!r}")
    orderings = read_orderings(reference / "streams")
    check_orderings(orderings, classnames, reference / "streams")
    streamed_entries = set(orderings[COMPLETE_ORDERING])
    check_roles(release_names, {dataset_of(entry) for entry in streamed_entries}, url_file)
    if YEAR_ORDERING not in orderings:
        raise DataError(f"{reference / 'streams' / YEAR_ORDERING}: file does not exist")
    check_years(orderings[YEAR_ORDERING], reference / "streams" / YEAR_ORDERING)
    table = []
    for name, download_name, url in downloads:
        role = "evaluation" if name in EVALUATION_ONLY else "adaptation"
        classes = classnames.get(name, [])
        # Only streamed datasets can have unstreamed classes; an evaluation dataset's classes are all evaluated.
        unstreamed = []
        if role == "adaptation":
            unstreamed = [c for c in classes if f"{name}{SEPARATOR}{c}" not in streamed_entries]
        table.append(
            {
                "name": name,
                "download_name": download_name,
                "url": url,
                "role": role,
                "kind": "retrieval" if name in RETRIEVAL else "classification",
                "classnames": classes,
                "unstreamed": unstreamed,
                "prompt": PROMPTS[name],
                "prompt_source": f"{REFERENCE_CODE}:data_lib/{PRIMERS[name][0]}",
                "caption_source": "native" if name in NATIVE_CAPTIONS else "generated",
                "year": YEARS[name],
            }
        )
    return table


def shipped_orderings(reference: Path) -> dict[str, bytes]:
    """The bytes of each ordering in SHIPPED_ORDERINGS (file name -> bytes), as released."""
    return {name: (reference / "streams" / name).read_bytes() for name in SHIPPED_ORDERINGS}


def render(table: list[dict[str, Any]]) -> str:
    """The table as JSON text: sorted keys, one-space indent (one class per line keeps diffs readable)."""
    return json.dumps(table, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the table; returns the exit status (1 with a message on stderr if the reference is unusable)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", nargs="?", type=Path, default=DEFAULT_REFERENCE, help="reference directory")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write")
    args = parser.parse_args(argv)
    try:
        table = build_table(args.reference)  # checks every ordering, the shipped ones included
        streams = shipped_orderings(args.reference)
    except DataError as err:
        print(f"import_fif_reference: {err}", file=sys.stderr)
        return 1
    with atomic_path(args.output) as tmp:
        tmp.write_text(render(table), encoding="utf-8")
    for name, data in streams.items():
        with atomic_path(args.output.parent / SHIPPED_FOLDER / name) as tmp:
            tmp.write_bytes(data)
    streamed = sum(len(row["classnames"]) - len(row["unstreamed"]) for row in table if row["role"] == "adaptation")
    print(f"wrote {args.output}: {len(table)} datasets, {streamed} streamed classes; "
          f"{len(streams)} ordering(s) to {args.output.parent / SHIPPED_FOLDER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
