"""The compiled writer: byte for byte what fastavro writes, and nothing fastavro would refuse.

Its one duty is never to disagree with the slow path it stands in for (validate, then
fastavro's writer): whatever it accepts must be a record fastavro accepts, written to the same
bytes. Everything else it declines, and write_datum falls back to fastavro.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import pytest
from fastavro import schemaless_writer
from fastavro.validation import validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runcoord.codec import AvroCodec, SchemaCatalog
from runcoord.codec.compiled import _RECENT_MAX, Declined, compile_writer
from runcoord.codec.datum import write_datum
from runcoord.errors import SerializationError
from runcoord.schemas import SCHEMA_DIR

CATALOG = SchemaCatalog.load(SCHEMA_DIR)
# Only a name's current version is ever written (older ones stay to be read).
VERSIONS = [CATALOG.get(name) for name in sorted(CATALOG.names())]
LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def fastavro_bytes(parsed: dict[str, Any], record: Any) -> bytes | None:
    """What the slow path writes, or None where it refuses the record."""
    try:
        if not validate(record, parsed, raise_errors=False):
            return None
        buf = io.BytesIO()
        schemaless_writer(buf, parsed, record, strict_allow_default=True)
    except Exception:
        return None
    return buf.getvalue()


def valid(schema: Any, named: Mapping[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that fit `schema`, of the exact types the compiled writer takes."""
    if isinstance(schema, list):
        return st.one_of(*(valid(branch, named, depth) for branch in schema))
    if isinstance(schema, str):
        if schema in named:
            return valid(named[schema], named, depth)
        return {
            "null": st.none(),
            "boolean": st.booleans(),
            "long": st.one_of(LONG, st.integers(0, 5000), st.integers(10**12, 2 * 10**12)),
            "string": st.text(max_size=12),
            "bytes": st.binary(max_size=12),
        }[schema]
    kind = schema["type"]
    if kind == "array":
        return st.lists(valid(schema["items"], named, depth + 1), max_size=3 if depth < 2 else 0)
    if kind == "map":
        size = 3 if depth < 2 else 0
        return st.dictionaries(
            st.text(max_size=6), valid(schema["values"], named, depth + 1), max_size=size
        )
    if kind == "record":
        return st.fixed_dictionaries(
            {f["name"]: valid(f["type"], named, depth + 1) for f in schema["fields"]}
        )
    return valid(kind, named, depth)


class Text(str):
    """A str subclass: fastavro takes it, the compiled writer declines it (type is not str)."""


ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.just("\udc80"),  # a lone surrogate: not UTF-8
    st.builds(Text, st.text(max_size=4)),
    st.binary(max_size=4),
    st.tuples(st.text(max_size=2)),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=2),
    st.dictionaries(st.integers(), st.text(max_size=2), min_size=1, max_size=2),
)


def spoil(record: Any, draw: Any) -> Any:
    """`record` with one value somewhere inside replaced, a field dropped or one added."""
    if isinstance(record, dict) and record:
        key = draw(st.sampled_from(sorted(record)))
        action = draw(st.sampled_from(["replace", "descend", "drop", "add"]))
        out = dict(record)
        if action == "drop":
            del out[key]
        elif action == "add":
            out[draw(st.text(min_size=1, max_size=4))] = draw(ODD)
        elif action == "descend" and isinstance(out[key], (dict, list)) and out[key]:
            out[key] = spoil(out[key], draw)
        else:
            out[key] = draw(ODD)
        return out
    if isinstance(record, list) and record:
        i = draw(st.integers(0, len(record) - 1))
        out_list = list(record)
        out_list[i] = spoil(record[i], draw) if draw(st.booleans()) else draw(ODD)
        return out_list
    return draw(ODD)


def test_every_committed_schema_compiles() -> None:
    """Our schemas use only what compiled.py writes; a new type would slow every record down
    silently, so it has to show here."""
    assert [v.label for v in VERSIONS if v.compiled is None] == []


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.label)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_records_are_written_as_fastavro_writes_them(version: Any, data: Any) -> None:
    record = data.draw(valid(version.parsed, version.parsed["__named_schemas"]))
    assert version.compiled(record) == fastavro_bytes(version.parsed, record)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.label)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_it_accepts_fastavro_accepts_and_writes_the_same(version: Any, data: Any) -> None:
    record = data.draw(valid(version.parsed, version.parsed["__named_schemas"]))
    spoiled = spoil(record, data.draw)
    try:
        written = version.compiled(spoiled)
    except Declined:
        return
    assert written == fastavro_bytes(version.parsed, spoiled)


def test_large_longs_past_the_cache_of_recent_ones() -> None:
    schema = {"type": "record", "name": "T", "fields": [{"name": "at", "type": "long"}]}
    write = compile_writer(schema)
    assert write is not None
    for n in [*range(10**12, 10**12 + 2 * _RECENT_MAX + 7, 1), -1, -(2**63), 2**63 - 1]:
        buf = io.BytesIO()
        schemaless_writer(buf, schema, {"at": n})
        assert write({"at": n}) == buf.getvalue()
    with pytest.raises(Declined):
        write({"at": 2**63})


def test_unsupported_types_do_not_compile() -> None:
    for field_type in ("int", "double", {"type": "enum", "name": "E", "symbols": ["A"]}):
        schema = {"type": "record", "name": "T", "fields": [{"name": "f", "type": field_type}]}
        assert compile_writer(schema) is None
    three = {
        "type": "record",
        "name": "T",
        "fields": [{"name": "f", "type": ["null", "string", "long"]}],
    }
    assert compile_writer(three) is None


def test_a_declined_record_gets_fastavros_verdict_naming_the_field() -> None:
    current = CATALOG.get("RunAccepted")
    record = AvroCodec().decode(
        AvroCodec().encode(
            "RunAccepted",
            {
                "run_id": "r",
                "seq": 1,
                "at_ms": 1,
                "tenant": "t",
                "thread_id": "th",
                "assistant_id": "a",
                "provider": "assistants",
                "input": "hi",
                "run_deadline_ms": 2,
                "create_key": "k",
                "metadata": {},
            },
        )
    )[1]
    for field, bad, message in (
        ("seq", True, "field 'seq': expected long, got bool"),
        ("run_id", None, "field 'run_id': expected string, got null"),
    ):
        with pytest.raises(SerializationError, match=message):
            write_datum(current, {**record, field: bad})
    without_metadata = {k: v for k, v in record.items() if k != "metadata"}
    with pytest.raises(Declined):
        current.compiled(without_metadata)
    # fastavro fills a field that has a default; the fallback writes what it writes.
    assert write_datum(current, without_metadata) == current.compiled(record)
