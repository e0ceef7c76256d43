"""Validating a config against config/schema/config.schema.yaml: defaults filled, one line per violation.

Snakemake's ``snakemake.utils.validate`` reports a violation with the whole sub-schema and instance (83 lines for
one mistyped key). :func:`validate_config` fills the schema's defaults the same way (``default`` of every
property, recursively, as the jsonschema FAQ's ``extend_with_default``) and raises one :class:`ConfigError` line
that names the key path and what is allowed there, chosen with jsonschema's ``best_match``::

    config key 'training.lrr': unknown key (allowed: augmentation, batch_size, budget, ...)
    config key 'training.budget': 'cheap' is not allowed (allowed: maf, flops, fixed, table)
    config key 'training.lr': 'fast' has the wrong type (allowed: number)

:func:`typed_overrides` gives ``--config`` values the types a config file would give them: Snakemake parses the
top-level value of ``--config key=value`` as int, float or bool but everything nested inside a YAML value
(``--config 'training={lr: 0.01}'``) as strings.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fomoflux.errors import ConfigError

__all__ = ["load_schema", "validate_config", "describe_error", "key_path", "typed_overrides"]

_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?")
_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


def load_schema(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"config schema {path}: cannot be read ({err})") from None


def _validator_filling_defaults(schema: Mapping[str, Any]):
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, subschema):
        # Only objects get defaults: a oneOf branch of another type (a mixture given by name, not inline) is
        # visited too and must not be touched. Copies, so that filled configs never share the schema's dicts.
        if isinstance(instance, dict):
            for name, prop in properties.items():
                if isinstance(prop, Mapping) and "default" in prop and name not in instance:
                    instance[name] = copy.deepcopy(prop["default"])
        yield from validate_properties(validator, properties, instance, subschema)

    cls = validators.extend(Draft202012Validator, {"properties": properties_with_defaults})
    return cls(schema)


def validate_config(config: dict[str, Any], schema: str | Path | Mapping[str, Any]) -> None:
    """Fill the schema's defaults into ``config`` (in place) and raise ConfigError, one line, on the most relevant
    violation (jsonschema's ``best_match``)."""
    from jsonschema.exceptions import best_match

    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    error = best_match(_validator_filling_defaults(schema).iter_errors(config))
    if error is None:
        return
    # best_match descends into the alternatives of a oneOf; when the value fits none of them at its own level (not
    # deeper inside), naming every alternative says more than naming the branch it happened to pick.
    while (error.parent is not None and error.parent.validator in ("oneOf", "anyOf")
           and list(error.parent.absolute_path) == list(error.absolute_path)):
        error = error.parent
    raise ConfigError(describe_error(error))


def key_path(parts: Iterable[Any]) -> str:
    """``training.lr``, ``benchmark.datasets[2]``; ``<top level>`` for the config itself."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _branch(schema: Mapping[str, Any]) -> str:
    """A short description of one oneOf / anyOf alternative."""
    if "enum" in schema:
        return " | ".join(map(str, schema["enum"]))
    if "$ref" in schema:
        return f"a {schema['$ref'].rsplit('/', 1)[-1]} object"
    kind = schema.get("type", "any value")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and "items" in schema:
        kind = f"a list of {_branch(schema['items'])}"
    bounds = [f"{op} {schema[k]}" for k, op in _BOUNDS if k in schema]
    return f"{kind} {' and '.join(bounds)}" if bounds else kind


def describe_error(error) -> str:
    """One line for a jsonschema ValidationError: the key path, the value at fault and what is allowed."""
    path = list(error.absolute_path)
    kind, expected, instance, schema = error.validator, error.validator_value, error.instance, error.schema
    if kind == "additionalProperties" and expected is False:
        known = sorted(schema.get("properties", {}))
        extras = sorted(k for k in instance if k not in known)
        allowed = ", ".join(known) if known else "none"
        return f"config key {key_path(path + extras[:1])!r}: unknown key (allowed: {allowed})"
    if kind == "required":
        missing = [k for k in expected if k not in instance]
        return f"config key {key_path(path + missing[:1])!r}: missing (required: {', '.join(expected)})"
    if kind == "enum":
        allowed = ", ".join(map(str, expected))
        return f"config key {key_path(path)!r}: {_value(instance)} is not allowed (allowed: {allowed})"
    if kind == "const":
        return f"config key {key_path(path)!r}: {_value(instance)} is not allowed (allowed: {expected!r})"
    if kind == "type":
        allowed = " or ".join(expected) if isinstance(expected, list) else expected
        return f"config key {key_path(path)!r}: {_value(instance)} has the wrong type (allowed: {allowed})"
    if kind in ("oneOf", "anyOf"):
        branches = "; ".join(_branch(s) for s in expected)
        return f"config key {key_path(path)!r}: {_value(instance)} is not allowed (allowed: {branches})"
    if kind in dict(_BOUNDS):
        return f"config key {key_path(path)!r}: {_value(instance)} is out of range (allowed: {_branch(schema)})"
    if kind == "pattern":
        if "propertyNames" in error.relative_schema_path:
            return (
                f"config key {key_path(path)!r}: name {instance!r} is not allowed (allowed: names matching {expected})"
            )
        return (
            f"config key {key_path(path)!r}: {_value(instance)} is not allowed (allowed: strings matching {expected})"
        )
    if kind in ("minProperties", "maxProperties") and schema.get("minProperties") == schema.get("maxProperties") == 1:
        return f"config key {key_path(path)!r}: give exactly one of {', '.join(schema.get('properties', {}))}"
    # minItems, maxItems, minProperties, ...: jsonschema's own sentence names the limit.
    return f"config key {key_path(path)!r}: {error.message}"


def _typed_scalar(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    return value


def _typed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_typed(item) for item in value]
    return _typed_scalar(value)


def typed_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``--config`` values with the nested strings Snakemake leaves (YAML's BaseLoader) typed as a config file would:
    integers, floats (``1e-3`` included), true / false and null. Top-level values are kept as Snakemake parsed them
    (a top-level string stays a string)."""
    return {key: _typed(value) if isinstance(value, (Mapping, list, tuple)) else value
            for key, value in overrides.items()}
