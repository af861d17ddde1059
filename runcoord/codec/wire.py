"""Domain values <-> Avro records: one mapping, derived from the dataclasses' type hints.

Each message class is written as the record of the same name (``runcoord.<ClassName>``).
:func:`avro_schema` derives a class's schema; ``tests/unit/codec/test_wire.py`` fails when it no
longer equals the committed current ``.avsc``, so changing a dataclass forces a new schema
version (and the evolution guard) instead of silently changing the wire format.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import types
import typing
from collections.abc import Mapping
from typing import Any

from runcoord.deadletter import DeadLetter
from runcoord.domain import events, inputs, intents
from runcoord.domain.model import Output, RunState, Step, ToolCall
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
    # Per record on the hot path: one converter per type, built once (reflection was a fifth
    # of the coordinator's loop).
    convert = _CONVERTERS.get(type(value))
    if convert is None:
        convert = _CONVERTERS[type(value)] = _converter(type(value))
    return convert(value)


_CONVERTERS: dict[type[Any], typing.Callable[[Any], Any]] = {}


def _same(value: Any) -> Any:
    return value


def _converter(cls: type[Any]) -> typing.Callable[[Any], Any]:
    if _is_dataclass_type(cls):
        # Fields declared as Avro primitives are copied as they are (the codec validates
        # them); the others go through _to_datum, whatever the value turns out to be.
        fields = _fields(cls)
        plain = tuple(name for name, tp in fields if _is_primitive(tp))
        nested = tuple(name for name, tp in fields if not _is_primitive(tp))
        read_plain = _getter(plain)

        def record(value: Any) -> dict[str, Any]:
            datum = dict(zip(plain, read_plain(value), strict=True))
            for name in nested:
                datum[name] = _to_datum(getattr(value, name))
            return datum

        return record
    if issubclass(cls, enum.Enum):
        return lambda value: value.value
    if issubclass(cls, tuple):
        return lambda value: [_to_datum(v) for v in value]
    if issubclass(cls, Mapping):
        return dict
    return _same


def _getter(names: tuple[str, ...]) -> typing.Callable[[Any], tuple[Any, ...]]:
    """The values of `names` as a tuple (attrgetter returns a bare value for one name)."""
    if not names:
        return lambda value: ()
    if len(names) == 1:
        get = operator.attrgetter(names[0])
        return lambda value: (get(value),)
    return operator.attrgetter(*names)


def _is_primitive(tp: Any) -> bool:
    return (_optional(tp) or tp) in _PRIMITIVES


_READERS: dict[Any, typing.Callable[[Any], Any]] = {}


def _reader(tp: Any) -> typing.Callable[[Any], Any]:
    """The function that turns a decoded value of declared type `tp` back into its domain
    value, built once per type: decoding runs per record on the hot path."""
    read = _READERS.get(tp)
    if read is None:
        read = _READERS[tp] = _new_reader(tp)
    return read


def _new_reader(tp: Any) -> typing.Callable[[Any], Any]:
    inner = _optional(tp)
    if inner is not None:
        read_inner = _reader(inner)
        return lambda value: None if value is None else read_inner(value)
    if typing.get_origin(tp) is tuple:
        read_item = _reader(typing.get_args(tp)[0])
        return lambda value: tuple(read_item(v) for v in value)
    if typing.get_origin(tp) in (Mapping, dict):
        return dict
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp
    if _is_dataclass_type(tp):
        return _builder(tp)
    return _same


def _builder(cls: type[Any]) -> typing.Callable[[Mapping[str, Any]], Any]:
    fields = _fields(cls)
    plain = tuple(name for name, tp in fields if _is_primitive(tp))
    nested = tuple((name, _reader(tp)) for name, tp in fields if not _is_primitive(tp))

    def build(record: Mapping[str, Any]) -> Any:
        kwargs = {name: record[name] for name in plain}
        for name, read in nested:
            kwargs[name] = read(record[name])
        return cls(**kwargs)

    return build


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
        return _reader(cls)(record)
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
