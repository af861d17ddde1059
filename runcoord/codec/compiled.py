"""A writer compiled per schema: one pass that checks each value's type and writes its bytes.

fastavro writes a record by walking the schema for every datum, and because its writer
silently truncates 1.5 into an int or takes True as 1, write_datum validates first (a second
walk). Together they were half of the coordinator's loop (the snapshot of a run: 40 us). For a
schema it can compile, :func:`compile_writer` generates Python source once: straight-line code
per field that accepts a value only of the exact type the field declares and writes the same
bytes fastavro would.

The compiled writer is an accelerator, never the authority: on anything it does not take (a
missing field, an extra one, a subclass, a tuple where a list is expected, a number out of
range) it raises :class:`Declined` and the caller writes the record the slow way, which
either succeeds (with the very same bytes, tests/unit/codec/test_compiled.py checks) or raises
the error that names the field. Types outside what our schemas use (int, float, double, enum,
fixed, unions other than a null and one type) make a schema not compile at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_SMALL = 4096  # non-negative longs below this come from a table


class Declined(Exception):
    """The compiled writer does not take this record; write it the slow way."""


def _varint(n: int) -> bytes:
    """The Avro (zig-zag, variable length) encoding of the long `n`."""
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise Declined
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_TABLE = tuple(_varint(n) for n in range(_SMALL))
_RECENT: dict[int, bytes] = {}  # larger longs seen lately: timestamps repeat within a batch
_RECENT_MAX = 4096


def _large(n: int) -> bytes:
    """_varint(n), from _RECENT when `n` was written lately."""
    b = _RECENT.get(n)
    if b is None:
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.clear()
        b = _RECENT[n] = _varint(n)
    return b


class _Source:
    """The generated module: one function per record type, named after it."""

    def __init__(self) -> None:
        self.functions: dict[str, list[str]] = {}  # record full name -> its function's lines
        self.names: dict[str, str] = {}  # record full name -> function name
        self._fresh = 0

    def var(self, stem: str) -> str:
        self._fresh += 1
        return f"{stem}{self._fresh}"

    def record(self, schema: Mapping[str, Any], named: Mapping[str, Any]) -> str:
        """The function writing record `schema`, generated on first use."""
        full = schema["name"]
        if full in self.names:
            return self.names[full]
        fn = self.names[full] = f"_w{len(self.names)}"
        fields = schema["fields"]
        lines = [
            f"def {fn}(d, ap):",
            f"    if type(d) is not dict or len(d) != {len(fields)}:",
            "        raise Declined",
        ]
        self.functions[full] = lines
        for field in fields:
            v = self.var("v")
            lines.append(f"    {v} = d[{field['name']!r}]")  # a KeyError declines too
            lines += self.value(field["type"], v, named, "    ")
        return fn

    def value(self, schema: Any, v: str, named: Mapping[str, Any], pad: str) -> list[str]:
        """Lines writing the value held in variable `v` under `schema`."""
        if isinstance(schema, str):
            if schema in named:
                return [f"{pad}{self.record(named[schema], named)}({v}, ap)"]
            return self.primitive(schema, v, pad)
        if isinstance(schema, list):
            return self.union(schema, v, named, pad)
        kind = schema.get("type")
        if "logicalType" in schema:
            raise _Unsupported(f"logical type {schema['logicalType']}")
        if kind == "record":
            return [f"{pad}{self.record(schema, named)}({v}, ap)"]
        if kind == "array":
            x = self.var("x")
            return [
                f"{pad}if type({v}) is not list:",
                f"{pad}    raise Declined",
                f"{pad}if {v}:",
                f"{pad}    ap(_long(len({v})))",
                f"{pad}    for {x} in {v}:",
                *self.value(schema["items"], x, named, pad + "        "),
                f"{pad}ap(b'\\x00')",
            ]
        if kind == "map":
            k, x = self.var("k"), self.var("x")
            return [
                f"{pad}if type({v}) is not dict:",
                f"{pad}    raise Declined",
                f"{pad}if {v}:",
                f"{pad}    ap(_long(len({v})))",
                f"{pad}    for {k}, {x} in {v}.items():",
                *self.primitive("string", k, pad + "        "),
                *self.value(schema["values"], x, named, pad + "        "),
                f"{pad}ap(b'\\x00')",
            ]
        if isinstance(kind, str) and kind in _PRIMITIVE_TYPES:
            return self.primitive(kind, v, pad)
        raise _Unsupported(f"type {kind!r}")

    def union(self, schema: list[Any], v: str, named: Mapping[str, Any], pad: str) -> list[str]:
        if len(schema) != 2 or "null" not in schema or schema[0] == schema[1]:
            raise _Unsupported("a union other than null and one type")
        null_at = schema.index("null")
        other = schema[1 - null_at]
        return [
            f"{pad}if {v} is None:",
            f"{pad}    ap({_varint(null_at)!r})",
            f"{pad}else:",
            f"{pad}    ap({_varint(1 - null_at)!r})",
            *self.value(other, v, named, pad + "    "),
        ]

    def primitive(self, kind: str, v: str, pad: str) -> list[str]:
        if kind == "null":
            return [f"{pad}if {v} is not None:", f"{pad}    raise Declined"]
        if kind == "boolean":
            return [
                f"{pad}if {v} is True:",
                f"{pad}    ap(b'\\x01')",
                f"{pad}elif {v} is False:",
                f"{pad}    ap(b'\\x00')",
                f"{pad}else:",
                f"{pad}    raise Declined",
            ]
        if kind == "long":
            return [
                f"{pad}if type({v}) is not int:",
                f"{pad}    raise Declined",
                f"{pad}ap(_TABLE[{v}] if 0 <= {v} < {_SMALL} else _large({v}))",
            ]
        if kind in ("string", "bytes"):
            b, n = self.var("b"), self.var("n")
            encode = f"{v}.encode()" if kind == "string" else v
            return [
                f"{pad}if type({v}) is not {'str' if kind == 'string' else 'bytes'}:",
                f"{pad}    raise Declined",
                f"{pad}{b} = {encode}",  # a lone surrogate raises UnicodeEncodeError: declined
                f"{pad}{n} = len({b})",
                f"{pad}ap(_TABLE[{n}] if {n} < {_SMALL} else _varint({n}))",
                f"{pad}ap({b})",
            ]
        raise _Unsupported(f"type {kind!r}")


_PRIMITIVE_TYPES = frozenset({"null", "boolean", "long", "string", "bytes"})


class _Unsupported(Exception):
    pass


def _long(n: int) -> bytes:
    return _TABLE[n] if n < _SMALL else _varint(n)


def compile_writer(parsed: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bytes] | None:
    """The compiled writer of record schema `parsed` (fastavro's parsed form), or None when
    the schema uses a type this module does not compile."""
    # fastavro's parsed form keeps every named type it defines by full name; later uses of
    # one refer to it by that name.
    named: Mapping[str, Any] = parsed.get("__named_schemas", {})
    source = _Source()
    try:
        top = source.record(parsed, named)
    except _Unsupported:
        return None
    code = "\n".join(line for lines in source.functions.values() for line in lines)
    scope: dict[str, Any] = {
        "Declined": Declined,
        "_TABLE": _TABLE,
        "_varint": _varint,
        "_large": _large,
        "_long": _long,
    }
    # The source holds no value from a schema but field names, written as repr() literals.
    exec(compile(code, f"<avro writer {parsed['name']}>", "exec"), scope)
    write_into = scope[top]

    def write(record: Mapping[str, Any]) -> bytes:
        parts: list[bytes] = []
        try:
            write_into(record, parts.append)
        except Declined:
            raise
        except Exception as exc:  # KeyError (a field missing), UnicodeEncodeError...
            raise Declined from exc
        return b"".join(parts)

    return write
