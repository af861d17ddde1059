"""Write and read one Avro binary datum, turning every library failure into SerializationError.

The framing (single-object header or Confluent schema id) is the caller's business; these two
functions are shared by both wire formats so that both validate and report the same way.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import validate

from runcoord.codec.catalog import SchemaVersion
from runcoord.codec.compiled import Declined
from runcoord.codec.explain import explain
from runcoord.errors import SerializationError

_MAX_REASON = 160


def short(exc: BaseException) -> str:
    """A library exception as one short line (fastavro's messages can embed whole schemas)."""
    text = " ".join(str(exc).split())
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def write_datum(schema: SchemaVersion, record: Mapping[str, Any]) -> bytes:
    """The binary datum of `record` under `schema`, or SerializationError naming the field."""
    compiled = schema.compiled
    if compiled is not None:
        try:
            return compiled(record)
        except Declined:
            pass  # fastavro decides: the same bytes, or the error that names the field
    cause: Exception | None = None
    try:
        # fastavro's writer silently truncates 1.5 into an int, wraps 2**40 into an int and takes
        # True as 1; validate() (compiled, a few microseconds) rejects those first. The writer's
        # strict_allow_default rejects unknown fields and missing fields that have no default.
        if validate(record, schema.parsed, raise_errors=False):
            buf = io.BytesIO()
            schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
            return buf.getvalue()
    except Exception as exc:  # TypeError, ValueError, AttributeError, OverflowError...
        cause = exc
    try:
        reason = explain(schema.parsed, record)
    except Exception:  # the explainer must never hide the real failure
        reason = None
    if reason is None:
        reason = short(cause) if cause is not None else "does not match the schema"
    raise SerializationError(f"cannot encode {schema.label}: {reason}") from cause


def read_datum(
    label: str,
    payload: bytes,
    offset: int,
    writer: dict[str, Any],
    reader: dict[str, Any] | None,
) -> dict[str, Any]:
    """Read the datum at `payload[offset:]`, which must be consumed exactly."""
    buf = io.BytesIO(payload)  # shares the bytes; no copy until written to
    buf.seek(offset)
    try:
        datum = schemaless_reader(buf, writer, reader)
    except Exception as exc:  # EOFError, IndexError (bad union/enum index), UnicodeDecodeError...
        # Running out of bytes shows as EOFError or, in the compiled varint reader, IndexError;
        # a reader that stopped at the very end was cut short either way.
        if isinstance(exc, EOFError) or buf.tell() >= len(payload):
            raise SerializationError(f"truncated {label} datum") from exc
        raise SerializationError(f"corrupt {label} datum: {short(exc)}") from exc
    trailing = len(payload) - buf.tell()
    if trailing:
        raise SerializationError(f"corrupt {label} datum: {trailing} trailing bytes")
    if not isinstance(datum, dict):
        raise SerializationError(f"corrupt {label} datum: not a record")
    return datum
