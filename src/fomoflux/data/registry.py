"""The dataset registry: what a dataset is, what it is for, and how to obtain it.

A registry maps dataset names to :class:`DatasetSpec`. The embedded mini benchmark contributes its entries
(``fomoflux.data.mini.mini_registry``); a config may add or override entries (``datasets:`` key) whose
``source`` is a ``download`` (URL + SHA-256) of an archive in ImageFolder layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fomoflux.errors import ConfigError

Kind = Literal["classification", "retrieval", "pretraining"]
Role = Literal["adaptation", "evaluation", "pretraining"]
ENTRY_SEPARATOR = "+++"
SOURCE_KINDS = ("generate", "download", "local", "webdataset")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset.

    name:           registry name; also the ``DATASET`` part of stream entries ``DATASET+++classname``.
    kind:           ``classification`` (class names, zero-shot top-1), ``retrieval`` (captions, R@k), or
                    ``pretraining`` (caption pairs only, the replay pool).
    role:           ``adaptation`` (streamed, counts towards A_KA), ``evaluation`` (never streamed, counts towards
                    A_ZS) or ``pretraining`` (the pool used to pretrain the base model and for replay).
    classnames:     the dataset's classes in its own order (retrieval sets streamed by pseudo-classes list them too).
    prompt:         the zero-shot prompt template with one ``{}`` for the class name.
    caption_source: ``native`` (the dataset has captions) or ``generated`` (visual description + class prompt).
    source:         how to obtain it, exactly one of: ``{"generate": {...}}`` (the mini benchmark),
                    ``{"download": {"url": ..., "sha256": ..., "format": ...}}`` (an archive fetched over http(s) or
                    file://), ``{"local": {"path": ..., "format": ...}}`` (an existing folder or archive on a shared
                    file system) or ``{"webdataset": {"urls": ...}}`` (existing webdataset shards, e.g. a replay pool).
    splits:         the splits it provides.
    year:           release year (time-incremental streams order datasets by it); None if unknown.
    unstreamed:     classes that exist for evaluation but are never streamed (FoMo-in-Flux streams a few classes of
                    some datasets not at all, as they have no training images); ``entries()`` leaves them out.
    """

    name: str
    kind: Kind
    role: Role
    classnames: tuple[str, ...] = ()
    prompt: str = "a photo of a {}."
    caption_source: Literal["native", "generated"] = "generated"
    source: Mapping[str, Any] = field(default_factory=dict)
    splits: tuple[str, ...] = ("train", "test")
    year: int | None = None
    unstreamed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "classification" and not self.classnames:
            raise ConfigError(f"dataset {self.name!r}: a classification dataset needs classnames")
        if "{}" not in self.prompt:
            raise ConfigError(f"dataset {self.name!r}: prompt {self.prompt!r} has no '{{}}' for the class name")
        if len(set(self.classnames)) != len(self.classnames):
            raise ConfigError(f"dataset {self.name!r}: duplicate class names")
        for cls in self.classnames:
            if ENTRY_SEPARATOR in cls:
                raise ConfigError(f"dataset {self.name!r}: class name {cls!r} contains {ENTRY_SEPARATOR!r}")
        if len(self.source) != 1 or next(iter(self.source)) not in SOURCE_KINDS:
            raise ConfigError(
                f"dataset {self.name!r}: source must have exactly one of {', '.join(SOURCE_KINDS)}, "
                f"got {dict(self.source)}"
            )
        stray = sorted(set(self.unstreamed) - set(self.classnames))
        if stray:
            raise ConfigError(f"dataset {self.name!r}: unstreamed class(es) {stray} are not among its classnames")

    @property
    def obtained_by(self) -> str:
        return next(iter(self.source))

    def entries(self) -> list[str]:
        """The dataset's stream entries ``DATASET+++classname`` in class order (its unstreamed classes left out)."""
        skip = set(self.unstreamed)
        return [f"{self.name}{ENTRY_SEPARATOR}{cls}" for cls in self.classnames if cls not in skip]

    def class_prompt(self, classname: str) -> str:
        return self.prompt.format(classname)


def split_entry(entry: str) -> tuple[str, str]:
    """``"DATASET+++classname"`` -> ``("DATASET", "classname")``; a malformed entry is a ConfigError naming it."""
    dataset, sep, classname = entry.partition(ENTRY_SEPARATOR)
    if not sep or not dataset or not classname:
        raise ConfigError(f"stream entry {entry!r} is not of the form DATASET{ENTRY_SEPARATOR}classname")
    return dataset, classname


def spec_from_config(name: str, raw: Mapping[str, Any]) -> DatasetSpec:
    """Build a DatasetSpec from a config ``datasets:`` entry (already schema-validated)."""
    try:
        return DatasetSpec(
            name=name,
            kind=raw["kind"],
            role=raw["role"],
            classnames=tuple(raw.get("classnames", ())),
            prompt=raw.get("prompt", "a photo of a {}."),
            caption_source=raw.get("caption_source", "generated"),
            source=dict(raw["source"]),
            splits=tuple(raw.get("splits", ("train", "test"))),
            year=raw.get("year"),
            unstreamed=tuple(raw.get("unstreamed", ())),
        )
    except KeyError as missing:
        raise ConfigError(f"datasets.{name}: missing key {missing}") from None
