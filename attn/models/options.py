"""Options as frozen dataclasses: one definition gives a config section's keys, defaults, types
and valid values, and checks a section before anything is built.

    @dataclasses.dataclass(frozen=True)
    class Options:
        num_layers: int = option(2, minimum=1)
        norm: str = option("layer_norm", choices=("layer_norm", "rms_norm"))
        score: str = option("scaled_dot", catalog="score")

    options = parse_options(Options, config.model, "model")   # checked, or ValueError
    section = as_config_dict(options)                         # the config section

Errors name the dotted key (``model.attention.score``), the value and the valid choices.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import ml_collections

from attn import catalog

__all__ = [
    "as_config_dict",
    "blank_floats",
    "float_values",
    "option",
    "parse_options",
    "with_values",
]

OptionsT = TypeVar("OptionsT")


def option(
    default: Any,
    *,
    choices: Sequence[Any] | None = None,
    minimum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    catalog_kind: str | None = None,
) -> Any:
    """A dataclass field with the checks :func:`parse_options` applies: a value in ``choices``;
    ``minimum <= value``, ``above < value`` and ``value < below`` for numbers; a spec that
    ``attn.catalog`` resolves in table ``catalog_kind``. A ``None`` value is not checked."""
    metadata = {
        "choices": choices,
        "minimum": minimum,
        "above": above,
        "below": below,
        "catalog": catalog_kind,
    }
    if dataclasses.is_dataclass(default) or isinstance(default, dict):
        # A fresh copy per instance: dataclasses refuse a shared mutable default.
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _fail(key: str, message: str) -> typing.NoReturn:
    raise ValueError(f"{key}: {message}")


@functools.cache
def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _allowed(annotation: Any) -> tuple[type, ...]:
    """The runtime types a field annotation admits (``int | None`` -> ``(int, NoneType)``)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed(arg))
    origin = typing.get_origin(annotation)
    return (origin or annotation,)


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    allowed = _allowed(annotation)
    if isinstance(value, bool) and bool not in allowed:
        ok = False  # True is an int to Python, never to a config
    elif isinstance(value, int) and float in allowed:
        return float(value) if int not in allowed else value
    else:
        ok = isinstance(value, allowed)
    if not ok:
        names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
        _fail(key, f"must be {names}, got {value!r} ({type(value).__name__})")
    return value


def _check_value(key: str, value: Any, metadata: Mapping[str, Any]) -> None:
    if value is None:
        return
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        _fail(key, f"{value!r} is not valid{hint} (valid: {', '.join(map(str, choices))})")
    minimum, above, below = metadata.get("minimum"), metadata.get("above"), metadata.get("below")
    low = f"[{minimum}" if minimum is not None else f"({above}" if above is not None else None
    if (
        (minimum is not None and value < minimum)
        or (above is not None and value <= above)
        or (below is not None and value >= below)
    ):
        if low is None:
            limit = f"< {below}"
        elif below is None:
            limit = f">= {minimum}" if minimum is not None else f"> {above}"
        else:
            limit = f"in {low}, {below})"
        _fail(key, f"must be {limit}, got {value!r}")
    if metadata.get("catalog") is not None:
        try:
            catalog.get(metadata["catalog"], value)
        except (ValueError, TypeError) as error:
            _fail(key, str(error))


def _plain(values: Any, key: str) -> dict[str, Any]:
    if isinstance(values, ml_collections.ConfigDict):
        values = values.to_dict()
    if not isinstance(values, Mapping):
        _fail(key, f"must be a section (dict of options), got {values!r}")
    return dict(values)


def parse_options(cls: type[OptionsT], values: Any, key: str) -> OptionsT:
    """``cls`` filled from the mapping (or ConfigDict) ``values`` of config section ``key``.

    Unknown keys (with the closest valid one), wrong types and invalid values raise
    ``ValueError`` naming the dotted key. Nested dataclass fields are parsed from nested
    sections; missing keys take their defaults.
    """
    values = _plain(values, key)
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(fields), n=1)
        hint = f"; did you mean {key}.{close[0]}?" if close else ""
        _fail(
            f"{key}.{unknown[0]}",
            f"unknown key{hint} (valid keys of {key}: {', '.join(fields)})",
        )
    hints = _types(cls)
    parsed = {}
    for name, value in values.items():
        field, annotation = fields[name], hints[name]
        if dataclasses.is_dataclass(annotation):
            parsed[name] = parse_options(annotation, value, f"{key}.{name}")
            continue
        value = _check_type(f"{key}.{name}", value, annotation)
        _check_value(f"{key}.{name}", value, field.metadata)
        parsed[name] = value
    missing = [
        field.name
        for field in fields.values()
        if field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
        and field.name not in parsed
    ]
    if missing:
        _fail(f"{key}.{missing[0]}", "is required")
    return cls(**parsed)


def as_config_dict(options: Any) -> ml_collections.ConfigDict:
    """The config section holding every field of the dataclass ``options`` (nested ones too)."""
    return ml_collections.ConfigDict(dataclasses.asdict(options))


def float_values(options: Any, prefix: str = "") -> dict[str, float]:
    """Every ``float`` option of ``options`` by dotted name (nested sections included), e.g.
    ``{"dropout_rate": 0.1, "attention.dropout_rate": 0.0}``.

    A float option enters a model only through arithmetic, never its structure, so a model
    built with any of these replaced by a traced scalar has the same parameters and graph:
    this is what a sweep vmaps over (an option of type ``float | None`` is left out, since its
    ``None`` is structural). So do the float arguments of score and weighting specs, named
    ``key(argument)``: ``{"attention.weighting(temperature)": 2.0}``.
    """
    hints = _types(type(options))
    values = {}
    for field in dataclasses.fields(options):
        value, annotation = getattr(options, field.name), hints[field.name]
        if dataclasses.is_dataclass(annotation):
            values.update(float_values(value, f"{prefix}{field.name}."))
        elif annotation is float:
            values[f"{prefix}{field.name}"] = value
        else:
            values.update(_spec_floats(field, value, f"{prefix}{field.name}"))
    return values


def _spec_floats(field: dataclasses.Field, spec: Any, key: str) -> dict[str, float]:
    """The float arguments of a score or weighting spec option, as ``key(argument)``:
    ``"softmax(temperature=2.0)"`` -> ``{"attention.weighting(temperature)": 2.0}``."""
    bound = catalog.bound_arguments(field.metadata.get("catalog") or "", spec)
    if bound is None:
        return {}
    return {f"{key}({name})": value for name, value in bound[1].items() if isinstance(value, float)}


def blank_floats(options: Any, blank: str) -> dict[str, Any]:
    """``options`` as a dict (nested sections too) with each value :func:`float_values` names
    replaced by ``blank``: equal for options that differ only in those values."""
    hints = _types(type(options))
    blanked: dict[str, Any] = {}
    for field in dataclasses.fields(options):
        value, annotation = getattr(options, field.name), hints[field.name]
        bound = catalog.bound_arguments(field.metadata.get("catalog") or "", value)
        if dataclasses.is_dataclass(annotation):
            blanked[field.name] = blank_floats(value, blank)
        elif annotation is float:
            blanked[field.name] = blank
        elif bound is not None:
            name, arguments = bound
            shown = {k: blank if isinstance(v, float) else v for k, v in sorted(arguments.items())}
            blanked[field.name] = f"{name}({shown})"
        else:
            blanked[field.name] = value
    return blanked


def with_values(options: OptionsT, values: Mapping[str, Any]) -> OptionsT:
    """``options`` with the dotted fields in ``values`` replaced (unchecked: the values may be
    traced arrays standing for checked floats, see :func:`float_values`)."""
    nested: dict[str, dict[str, Any]] = {}
    direct = {}
    for key, value in values.items():
        head, dot, rest = key.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    for head, inner in nested.items():
        direct[head] = with_values(getattr(options, head), inner)
    arguments: dict[str, dict[str, Any]] = {}
    for head in [key for key in direct if "(" in key]:
        name, _, argument = head.rstrip(")").partition("(")
        arguments.setdefault(name, {})[argument] = direct.pop(head)
    for name, replaced in arguments.items():
        # A spec's float arguments: the spec's function bound to them (they may be traced).
        kind = {field.name: field for field in dataclasses.fields(options)}[name].metadata[
            "catalog"
        ]
        function, bound = catalog.bound_arguments(kind, getattr(options, name))
        direct[name] = catalog.with_arguments(kind, function, {**bound, **replaced})
    return dataclasses.replace(options, **direct)
