"""Orderings given as a file: the FoMo-in-Flux format, one JSON list of ``DATASET+++classname`` strings.

A file is either one of the user's (``ordering: file`` + ``path``) or one of the reference release's streams that
fomoflux ships in ``fomoflux/data/streams/`` (``ordering: file`` + ``release: <name>``), byte for byte as released
(repository pseudope/fomo_in_flux at commit 3e123d9, folder ``stream_construction/``). The paper's experiments all
stream ``random_sequence_1``; the shipped copy is checked against its SHA-256 whenever it is read, because the
paper's stream is a fact to reproduce, not a file to edit.

:func:`check_stream_file` checks a file's entries against the stream's datasets and names the file and the first
entry at fault: an entry that is not a streamed class of those datasets, an entry given twice, or (with
``complete``) a streamed class of those datasets that the file leaves out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from fomoflux.data.registry import ENTRY_SEPARATOR, DatasetSpec
from fomoflux.errors import ConfigError, DataError

RELEASE_PROVENANCE = "pseudope/fomo_in_flux@3e123d9:stream_construction"
RELEASE_STREAMS_FOLDER = "streams"  # inside the fomoflux.data package
# The shipped release streams and the SHA-256 of each file as released.
RELEASE_STREAMS: Mapping[str, str] = {
    "random_sequence_1": "0f010db0ba21ad652eb35bfb01573fe0ae0db56cebad8c59d438021d7bd525ea",
}


def release_stream_path(name: str) -> Path:
    """Where the shipped release stream ``name`` lies; an unknown name is a ConfigError listing the known ones."""
    if name not in RELEASE_STREAMS:
        raise ConfigError(f"unknown release stream {name!r} (shipped: {', '.join(RELEASE_STREAMS)})")
    # fomoflux is installed as plain files (setuptools package-data), so the resource is a real path.
    return Path(str(resources.files("fomoflux.data").joinpath(RELEASE_STREAMS_FOLDER).joinpath(f"{name}.json")))


def _parse(text: str, path: str | Path) -> list[str]:
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"stream file {path} is not valid JSON: {err}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"stream file {path} must hold a JSON list of 'DATASET{ENTRY_SEPARATOR}classname' strings, "
                          f"not a JSON {type(entries).__name__}")
    for position, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise ConfigError(f"stream file {path}: entry {position} {entry!r} is not a "
                              f"'DATASET{ENTRY_SEPARATOR}classname' string")
    return entries


def read_stream_file(path: str | Path) -> list[str]:
    """The entries of a FoMo-in-Flux ordering file, in file order; a missing, non-JSON or malformed file is a
    ConfigError naming it (and the first entry that is not a string)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"stream file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"stream file {path} is a directory, not a JSON file") from None
    return _parse(text, path)


def read_release_stream(name: str) -> list[str]:
    """The entries of the shipped release stream ``name``.

    Raises ConfigError for an unknown name, DataError when the shipped file is missing or its bytes are not the
    release's (a broken installation or an edited copy).
    """
    path = release_stream_path(name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"release stream {name!r}: {path} is missing from the fomoflux installation "
                        "(package data of pyproject.toml)") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != RELEASE_STREAMS[name]:
        raise DataError(f"release stream {name!r}: {path} has SHA-256 {digest}, the release's file "
                        f"({RELEASE_PROVENANCE}/{name}.json) has {RELEASE_STREAMS[name]}")
    return _parse(data.decode("utf-8"), path)


def check_stream_file(
    entries: Sequence[str],
    registry: Mapping[str, DatasetSpec],
    datasets: Sequence[str],
    source: str,
    *,
    complete: bool,
) -> None:
    """Every entry is a streamed class of one of ``datasets`` (registry names), none occurs twice and, with
    ``complete``, every streamed class of ``datasets`` occurs; otherwise a ConfigError naming ``source`` (the file)
    and the first entry at fault."""
    chosen = set(datasets)
    classes = {name: set(registry[name].classnames) for name in chosen}
    first_at: dict[str, int] = {}
    for position, entry in enumerate(entries):
        dataset, sep, classname = entry.partition(ENTRY_SEPARATOR)
        at = f"{source}: entry {position} {entry!r}"
        if not sep or not dataset or not classname:
            raise ConfigError(f"{at} is not of the form DATASET{ENTRY_SEPARATOR}classname")
        if dataset not in registry:
            raise ConfigError(f"{at}: unknown dataset {dataset!r}")
        if registry[dataset].role != "adaptation":
            raise ConfigError(f"{at}: {dataset!r} is not an adaptation dataset (its role is "
                              f"{registry[dataset].role!r}; it is never streamed)")
        if dataset not in chosen:
            raise ConfigError(f"{at}: dataset {dataset!r} is not one of the stream's datasets (its 'datasets' list)")
        if classname not in classes[dataset]:
            raise ConfigError(f"{at}: dataset {dataset!r} has no class {classname!r}")
        if classname in registry[dataset].unstreamed:
            raise ConfigError(f"{at}: class {classname!r} of {dataset!r} is never streamed (it has no training "
                              "samples)")
        if entry in first_at:
            raise ConfigError(f"{at} occurs twice (first at entry {first_at[entry]})")
        first_at[entry] = position
    if not complete:
        return
    missing = [entry for name in datasets for entry in registry[name].entries() if entry not in first_at]
    if missing:
        raise ConfigError(f"{source}: {len(missing)} streamed class(es) of the stream's datasets are missing, the "
                          f"first {missing[0]!r} (give 'complete: false' to stream a subset of them)")
