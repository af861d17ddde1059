"""Domain values <-> Avro records: one mapping, derived from the dataclasses' type hints.

Each message class is written as the record of the same name (``runcoord.<ClassName>``).
:func:`avro_schema` derives a class's schema; ``tests/unit/test_wire.py`` fails when it no
longer equals the committed current ``.avsc``, so changing a dataclass forces a new schema
version (and the evolution guard) instead of silently changing the wire format.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from typing import Any

from coordinator.domain import events, inputs, intents
from coordinator.domain.model import Output, RunState, Step, ToolCall
from runcoord.deadletter import DeadLetter
from runcoord.errors import SerializationError

CATEGORIES: dict[str, tuple[type[Any], ...]] = {
    "events": typing.get_args(events.JournalEvent),
    "inputs": tuple(t for t in typing.get_args(inputs.Input) if t is not inputs.Tick),
    "intents": typing.get_args(intents.EffectIntent),
    "state": (RunState,),
    "dlq": (DeadLetter,),
}
MESSAGE_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls for classes in CATEGORIES.values() for cls in classes
}
_PRIMITIVES: dict[type[Any], str] = {str: "string", int: "long", bool: "boolean", bytes: "bytes"}


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


_FIELDS: dict[type[Any], tuple[tuple[str, Any], ...]] = {}


def _fields(cls: type[Any]) -> tuple[tuple[str, Any], ...]:
    # Resolving type hints is slow; this runs per record on the hot path.
    fields = _FIELDS.get(cls)
    if fields is None:
        hints = _hints(cls)
        fields = _FIELDS[cls] = tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))
    return fields


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _optional(tp: Any) -> Any | None:
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) and len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return None


def _avro_type(tp: Any, defined: set[str]) -> Any:
    inner = _optional(tp)
    if inner is not None:
        return ["null", _avro_type(inner, defined)]
    if tp in _PRIMITIVES:
        return _PRIMITIVES[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "string"  # strings, not Avro enums: a new phase must not break old readers
    if typing.get_origin(tp) is tuple:
        return {"type": "array", "items": _avro_type(typing.get_args(tp)[0], defined)}
    if typing.get_origin(tp) in (Mapping, dict):
        return {"type": "map", "values": _avro_type(typing.get_args(tp)[1], defined)}
    if _is_dataclass_type(tp):
        name = tp.__name__
        if name in defined:
            return name
        defined.add(name)
        return {"type": "record", "name": name, "fields": _avro_fields(tp, defined)}
    raise TypeError(f"no Avro mapping for {tp!r}")


def _avro_fields(cls: type[Any], defined: set[str]) -> list[dict[str, Any]]:
    out = []
    for name, tp in _fields(cls):
        field: dict[str, Any] = {"name": name, "type": _avro_type(tp, defined)}
        default = _default(cls, name)
        if default is not _NO_DEFAULT:
            field["default"] = default
        elif _optional(tp) is not None:
            field["default"] = None
        out.append(field)
    return out


_NO_DEFAULT = object()


def _default(cls: type[Any], name: str) -> Any:
    """The Avro default of a field: what old payloads without it decode to."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return _to_datum(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return _to_datum(f.default_factory())
    return _NO_DEFAULT


def avro_schema(cls: type[Any]) -> dict[str, Any]:
    doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else None
    schema: dict[str, Any] = {"type": "record", "name": cls.__name__, "namespace": "runcoord"}
    if doc:
        schema["doc"] = doc
    schema["fields"] = _avro_fields(cls, {cls.__name__})
    return schema


def _to_datum(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_datum(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [_to_datum(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _from_datum(tp: Any, value: Any) -> Any:
    inner = _optional(tp)
    if inner is not None:
        return None if value is None else _from_datum(inner, value)
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return tuple(_from_datum(item, v) for v in value)
    if typing.get_origin(tp) in (Mapping, dict):
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if _is_dataclass_type(tp):
        return _build(tp, value)
    return value


def _build(cls: type[Any], record: Mapping[str, Any]) -> Any:
    return cls(**{name: _from_datum(tp, record[name]) for name, tp in _fields(cls)})


def to_record(message: Any) -> tuple[str, dict[str, Any]]:
    """(record name, datum) for a domain message."""
    name = type(message).__name__
    if name not in MESSAGE_TYPES:
        raise SerializationError(f"{name} is not a wire message")
    return name, _to_datum(message)


def from_record(name: str, record: Mapping[str, Any]) -> Any:
    """The domain message for a decoded record; a bad value raises SerializationError."""
    cls = MESSAGE_TYPES.get(name)
    if cls is None:
        raise SerializationError(f"record {name} is not a message this consumer handles")
    try:
        return _build(cls, record)
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"record {name} does not map onto {cls.__name__}: {exc}") from exc


# Names the codec must know, for the checks at start-up.
__all__ = [
    "CATEGORIES",
    "MESSAGE_TYPES",
    "Output",
    "Step",
    "ToolCall",
    "avro_schema",
    "from_record",
    "to_record",
]
