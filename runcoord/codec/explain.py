"""Say in one short line which field of a record does not fit its schema.

Only called after an encode failed, so it may be slow. Values are never echoed (they can be
tool outputs holding personal data); the message names the field, the expected type and the
type it got. Returns None when it finds nothing wrong, and the caller falls back to the
library's own message.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

_INT_RANGE = {"int": 2**31, "long": 2**63}
# Python values fastavro's writers accept for a logical type, besides the underlying type.
_LOGICAL_VALUES: dict[str, tuple[type, ...]] = {
    "timestamp-millis": (datetime.datetime,),
    "timestamp-micros": (datetime.datetime,),
    "local-timestamp-millis": (datetime.datetime,),
    "local-timestamp-micros": (datetime.datetime,),
    "date": (datetime.date,),
    "time-millis": (datetime.time,),
    "time-micros": (datetime.time,),
    "uuid": (uuid.UUID,),
    "decimal": (decimal.Decimal,),
}


def explain(schema: dict[str, Any], datum: Any) -> str | None:
    """The first mismatch between `datum` and the parsed record `schema`, or None."""
    return _Explainer(schema.get("__named_schemas", {})).check(schema, datum, "")


def _got(datum: Any) -> str:
    return "null" if datum is None else type(datum).__name__


def _where(path: str) -> str:
    return f"field {path!r}" if path else "record"


class _Explainer:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self._named = named

    def check(self, schema: Any, datum: Any, path: str) -> str | None:
        if isinstance(schema, str):
            if schema in self._named:
                return self.check(self._named[schema], datum, path)
            return _primitive(schema, datum, path)
        if isinstance(schema, list):
            problems = [self.check(branch, datum, path) for branch in schema]
            if None in problems:
                return None
            # A mapping meant for the union's only record branch: say what is wrong inside it.
            records = [p for b, p in zip(schema, problems, strict=True) if self._is_record(b)]
            if isinstance(datum, Mapping) and len(records) == 1:
                return records[0]
            return f"{_where(path)}: {_got(datum)} matches no branch of the union"
        kind = schema["type"]
        logical = _LOGICAL_VALUES.get(schema.get("logicalType", ""), ())
        if logical and isinstance(datum, logical):
            return None
        if kind == "record":
            return self._record(schema, datum, path)
        if kind == "enum":
            if datum in schema["symbols"]:
                return None
            shown = f"{datum[:40]!r}" if isinstance(datum, str) else _got(datum)
            return f"{_where(path)}: {shown} is not a symbol of {schema['name']}"
        if kind == "array":
            if not isinstance(datum, Sequence) or isinstance(datum, str | bytes):
                return f"{_where(path)}: expected an array, got {_got(datum)}"
            for i, item in enumerate(datum):
                if problem := self.check(schema["items"], item, f"{path}[{i}]"):
                    return problem
            return None
        if kind == "map":
            if not isinstance(datum, Mapping):
                return f"{_where(path)}: expected a map, got {_got(datum)}"
            for key, value in datum.items():
                if not isinstance(key, str):
                    return f"{_where(path)}: map keys must be strings, got {_got(key)}"
                if problem := self.check(schema["values"], value, f"{path}[{key!r}]"):
                    return problem
            return None
        if kind == "fixed":
            if isinstance(datum, bytes) and len(datum) == schema["size"]:
                return None
            return f"{_where(path)}: expected {schema['size']} bytes, got {_got(datum)}"
        return self.check(kind, datum, path)  # {"type": "long", "logicalType": ...} and alike

    def _is_record(self, schema: Any) -> bool:
        schema = self._named.get(schema, schema) if isinstance(schema, str) else schema
        return isinstance(schema, dict) and schema.get("type") == "record"

    def _record(self, schema: Mapping[str, Any], datum: Any, path: str) -> str | None:
        if not isinstance(datum, Mapping):
            return f"{_where(path)}: expected a mapping for {schema['name']}, got {_got(datum)}"
        fields = schema["fields"]
        unknown = set(datum) - {f["name"] for f in fields}
        if unknown:
            field = sorted(map(str, unknown))[0]
            return f"{_where(path)}: unknown field {field!r} (not in {schema['name']})"
        for field in fields:
            name = field["name"]
            sub = f"{path}.{name}" if path else name
            if name not in datum:
                if "default" in field:
                    continue
                return f"{_where(sub)} is missing"
            if problem := self.check(field["type"], datum[name], sub):
                return problem
        return None


def _primitive(kind: str, datum: Any, path: str) -> str | None:
    if kind == "null":
        ok = datum is None
    elif kind == "boolean":
        ok = isinstance(datum, bool)
    elif kind in _INT_RANGE:
        if isinstance(datum, int) and not isinstance(datum, bool):
            bound = _INT_RANGE[kind]
            if -bound <= datum < bound:
                return None
            return f"{_where(path)}: {datum} is out of range for {kind}"
        ok = False
    elif kind in ("float", "double"):
        ok = isinstance(datum, int | float) and not isinstance(datum, bool)
    elif kind == "string":
        ok = isinstance(datum, str)
    elif kind == "bytes":
        ok = isinstance(datum, bytes | bytearray)
    else:
        return None  # a type we do not model: let the library's message speak
    return None if ok else f"{_where(path)}: expected {kind}, got {_got(datum)}"
