"""A named registry of classes (methods, lr schedules, merge operators): one decorator to add, one lookup to get.

An unknown name is a ConfigError that lists the known ones, so a typo in a config fails with the fix in sight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from fomoflux.errors import ConfigError

__all__ = ["Registry", "resolve_options"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes (or functions) by name. ``kind`` names the things in messages ("method", "lr schedule", ...).

    ``base``, when given, is what every registered class must subclass. Registering sets ``obj.name`` on classes.
    """

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise TypeError(f"{self.kind} {name!r}: expected a subclass of {self.base.__name__}, got {obj!r}")
            known = self._entries.get(name)
            if known is not None and known is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({known!r}, {obj!r})")
            if isinstance(obj, type):
                obj.name = name  # type: ignore[attr-defined]
            self._entries[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def resolve_options(what: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by ``given``, checked: ``what`` (e.g. "method 'lora'") names the owner in errors.

    An unknown option, or a value of another type than its default, is a ConfigError naming the option and the
    value. Ints are accepted (and converted) where the default is a float; floats must be finite; a default of None
    accepts any value (the owner's ``validate`` checks it).
    """
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise ConfigError(f"{what} has no option {unknown[0]!r} (given {given[unknown[0]]!r}; its options: {known})")
    values = dict(defaults)
    for key, value in given.items():
        default = defaults[key]
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None:
            wrong_bool = isinstance(default, bool) != isinstance(value, bool)
            if wrong_bool or not isinstance(value, type(default)):
                raise ConfigError(f"{what}: option {key!r} must be {type(default).__name__}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{what}: option {key!r} must be finite, got {value!r}")
        values[key] = value
    return values
