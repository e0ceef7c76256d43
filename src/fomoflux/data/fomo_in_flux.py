"""The 63 datasets of the FoMo-in-Flux benchmark as registry entries.

The table ``fomo_in_flux.json`` (written by ``scripts/import_fif_reference.py`` from the public release) holds each
dataset's release name, tar URL, role, kind, classes, never-streamed classes, prompt template (the authors' code's
``PRIMER`` string, verbatim; ``prompt_source`` names the file it is from), caption source and release year.
:func:`fif_registry` turns it into :class:`DatasetSpec` entries whose names are the ``DATASET`` part of the
release's stream orderings, so the 29 reference orderings validate against it unchanged.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any, Literal

from fomoflux.data.registry import DatasetSpec
from fomoflux.errors import ConfigError

ADAPTATION_COUNT = 41  # streamed datasets (A_KA)
EVALUATION_COUNT = 22  # evaluation-only datasets (A_ZS)
STREAMED_CLASSES = 18381  # entries of every full-length reference ordering
ARCHIVE_FORMAT = "fomo_in_flux"  # the layout of the release's preprocessed tars
TABLE_FILE = "fomo_in_flux.json"


@functools.cache
def _table() -> tuple[dict[str, Any], ...]:
    """The parsed table, read once per process (it is ~0.7 MB of JSON)."""
    text = resources.files("fomoflux.data").joinpath(TABLE_FILE).read_text(encoding="utf-8")
    return tuple(json.loads(text))


def fif_datasets() -> list[dict[str, Any]]:
    """One dict per dataset, in the release's order (keys: name, download_name, url, role, kind, classnames,
    unstreamed, prompt, prompt_source, caption_source, year).

    The table is read once; each call returns fresh copies, so a caller that edits them cannot alter later results.
    """
    return [{**row, "classnames": list(row["classnames"]), "unstreamed": list(row["unstreamed"])} for row in _table()]


def _check_names(names: Sequence[str], known: Sequence[str], argument: str) -> None:
    """Raises ConfigError listing the names of ``names`` that are not ``known`` (and the known ones)."""
    known_set = set(known)
    unknown = [name for name in names if name not in known_set]
    if unknown:
        raise ConfigError(
            f"fif_registry({argument}=...): unknown FoMo-in-Flux dataset(s) {unknown} (known: {', '.join(known)})"
        )


def _chosen_names(datasets: Literal["all"] | Sequence[str], known: Sequence[str]) -> set[str]:
    """The selected dataset names; raises ConfigError for a bare string other than "all" or an unknown name."""
    if datasets == "all":
        return set(known)
    # A bare string is a sequence of characters: reject it instead of looking its letters up.
    if isinstance(datasets, str) or not isinstance(datasets, Sequence):
        raise ConfigError(f"fif_registry(datasets=...): expected 'all' or a list of dataset names, got {datasets!r}")
    _check_names(datasets, known, "datasets")
    return set(datasets)


def _source(name: str, sources: Mapping[str, Mapping[str, Any]], url: str) -> dict[str, Any]:
    """The dataset's source: the caller's replacement if given, else a download of the release's tar."""
    if name not in sources:
        return {"download": {"url": url, "format": ARCHIVE_FORMAT}}
    replacement = sources[name]
    if not isinstance(replacement, Mapping):
        raise ConfigError(f"fif_registry(sources=...): the source of {name!r} must be a mapping, got {replacement!r}")
    return dict(replacement)


def _spec(row: Mapping[str, Any], source: Mapping[str, Any]) -> DatasetSpec:
    """The DatasetSpec of one table row (adaptation datasets have a train split, evaluation-only ones do not)."""
    return DatasetSpec(
        name=row["name"],
        kind=row["kind"],
        role=row["role"],
        classnames=tuple(row["classnames"]),
        prompt=row["prompt"],
        caption_source=row["caption_source"],
        source=source,
        splits=("train", "test") if row["role"] == "adaptation" else ("test",),
        year=row["year"],
        unstreamed=tuple(row["unstreamed"]),
    )


def fif_registry(
    datasets: Literal["all"] | Sequence[str] = "all",
    *,
    sources: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, DatasetSpec]:
    """Registry entries of the chosen FoMo-in-Flux datasets, in the release's order.

    ``datasets``: ``"all"`` or a list of release names (``CIFAR100``, ``iNATURALIST2021``, ...).
    ``sources``: release name -> a replacement source mapping, e.g.
    ``{"CIFAR100": {"local": {"path": "/datasets/CIFAR100.tar", "format": "fomo_in_flux"}}}``; every other dataset is
    downloaded from the release's URL.
    Raises ConfigError for an unknown name in either argument (listing the known names) or a malformed source.
    """
    rows = _table()
    known = [row["name"] for row in rows]
    chosen = _chosen_names(datasets, known)
    sources = sources or {}
    _check_names(list(sources), known, "sources")
    return {row["name"]: _spec(row, _source(row["name"], sources, row["url"])) for row in rows if row["name"] in chosen}
