"""AvroCodec: wire format, round trips of every committed schema, typed errors on bad input."""

from __future__ import annotations

import datetime
import json
import random
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from fastavro.utils import generate_many
from hypothesis import given, settings
from hypothesis import strategies as st

from runcoord.codec import AvroCodec, SchemaCatalog
from runcoord.codec.avro import MARKER
from runcoord.codec.catalog import crc64_avro
from runcoord.codec.datum import write_datum
from runcoord.codec.registry import SchemaRegistryUnavailable
from runcoord.errors import ConfigError, Retriable, SerializationError, UnknownSchemaError
from runcoord.schemas import SCHEMA_DIR

FIXTURE_DIR = Path(__file__).parents[2] / "fixtures" / "schemas" / "catalog"
CODEC = AvroCodec(FIXTURE_DIR)
WIDGET_FP = CODEC.fingerprint("Widget")


def widget(**overrides: Any) -> dict[str, Any]:
    return {"id": "w-1", "count": 3, "status": "DONE", "note": None, **overrides}


def widget_v2(**overrides: Any) -> dict[str, Any]:
    return {**widget(tags=["a", "b"], priority=2**40), **overrides}


def gadget(**overrides: Any) -> dict[str, Any]:
    return {
        "key": "g-1",
        "blob": b"\x00\xff",
        "ratio": 0.25,
        "enabled": True,
        "seq": 2**62,
        "at": datetime.datetime(2026, 11, 23, 15, 27, 9, 123000, tzinfo=datetime.UTC),
        "digest": b"abcd",
        "counters": {"calls": 2, "errors": 0},
        "parts": [{"label": "x", "weight": 1}, {"label": "y", "weight": -2}],
        "main": {"label": "m", "weight": 0},
        "kind": "LARGE",
        **overrides,
    }


def without(record: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != field}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """fastavro's data generator draws from the global `random`; keep it deterministic."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


# --- fingerprints --------------------------------------------------------------------------

# From the Avro project's share/test/data/schema-tests.txt (cross-checked there by Java's
# SchemaNormalization): canonical form -> fingerprint as a Java long. Single-object encoding
# writes that long little-endian (Avro spec, "Single-object encoding").
AVRO_VECTORS = [
    ('"null"', 7195948357588979594),
    ('"int"', 8247732601305521295),
    ('"string"', -8142146995180207161),
    ('["int","boolean"]', 5392556393470105090),
    ('{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ('{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771),
    (
        '{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"},'
        '{"name":"f2","type":"int"}]}',
        -4860222112080293046,
    ),
    ('{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}', -4448647247586288245),
    ('{"type":"map","values":"string"}', -8732877298790414990),
]


def rabin64(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification's reference code computes it."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize(("canonical", "java_long"), AVRO_VECTORS)
def test_fingerprint_matches_avro_test_vectors(canonical: str, java_long: int) -> None:
    assert crc64_avro(canonical) == struct.pack("<q", java_long)
    assert rabin64(canonical.encode()) == java_long & 0xFFFFFFFFFFFFFFFF


ALL_VERSIONS = [
    pytest.param(v, id=f"{label}:{v.label}")
    for label, directory in (("schemas", SCHEMA_DIR), ("fixtures", FIXTURE_DIR))
    for v in SchemaCatalog.load(directory)
]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_schema_fingerprint_is_the_spec_rabin_in_little_endian(version: Any) -> None:
    assert version.fingerprint == rabin64(version.canonical.encode()).to_bytes(8, "little")


def test_fingerprint_names_versions() -> None:
    assert CODEC.names() == frozenset({"Widget", "Gadget"})
    assert CODEC.fingerprint("Widget") == CODEC.fingerprint("Widget", 2)
    assert CODEC.fingerprint("Widget", 1) != CODEC.fingerprint("Widget", 2)
    assert len(WIDGET_FP) == 8


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("Nope", None, "no schema named 'Nope'"),
        ("Widget", 0, "no version 0 of 'Widget'"),
        ("Widget", 3, "no version 3 of 'Widget'"),
    ],
)
def test_fingerprint_of_unknown_schema(name: str, version: int | None, message: str) -> None:
    with pytest.raises(UnknownSchemaError, match=message):
        CODEC.fingerprint(name, version)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "record", "expected"),
    [
        ("Widget", widget(), widget(tags=[], priority=0)),  # defaults fill the v2 fields
        ("Widget", widget_v2(note="n", status="NEW"), widget_v2(note="n", status="NEW")),
        ("Gadget", gadget(), gadget()),
        (
            "Gadget",
            gadget(main=None, parts=[], counters={}),
            gadget(main=None, parts=[], counters={}),
        ),
    ],
    ids=["widget-defaults", "widget-full", "gadget", "gadget-empty-collections"],
)
def test_round_trip(name: str, record: dict[str, Any], expected: dict[str, Any]) -> None:
    payload = CODEC.encode(name, record)
    assert payload[:10] == MARKER + CODEC.fingerprint(name)
    assert CODEC.decode(payload) == (name, expected)


def test_old_version_payload_decodes_in_current_shape() -> None:
    v1 = CODEC.catalog.get("Widget", 1)
    payload = MARKER + v1.fingerprint + write_datum(v1, widget())
    assert CODEC.decode(payload) == ("Widget", widget(tags=[], priority=0))


REAL_NAMES = [
    pytest.param(directory, name, id=f"{label}:{name}")
    for label, directory in (("schemas", SCHEMA_DIR), ("fixtures", FIXTURE_DIR))
    for name in sorted(SchemaCatalog.load(directory).names())
]


@pytest.mark.parametrize(("schema_dir", "name"), REAL_NAMES)
def test_generated_records_round_trip(schema_dir: Path, name: str) -> None:
    """Every record type committed under schemas/ (and the fixtures) survives encode/decode."""
    codec = AvroCodec(schema_dir)
    with seeded(7):
        records = list(generate_many(codec.catalog.get(name).parsed, 25))
    for record in records:
        payload = codec.encode(name, record)
        decoded_name, datum = codec.decode(payload)
        assert decoded_name == name
        # float32 and millisecond timestamps lose precision once; after that it is exact.
        assert codec.encode(name, datum) == payload
        assert codec.decode(codec.encode(name, datum)) == (name, datum)


# --- encode errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "record", "message"),
    [
        ("Widget", without(widget(), "id"), "field 'id' is missing"),
        ("Widget", widget(id=3), "field 'id': expected string, got int"),
        ("Widget", widget(count=1.5), "field 'count': expected int, got float"),
        ("Widget", widget(count=True), "field 'count': expected int, got bool"),
        ("Widget", widget(count=2**31), "field 'count': 2147483648 is out of range for int"),
        ("Widget", widget(status="GONE"), "field 'status': 'GONE' is not a symbol"),
        ("Widget", widget(note=7), "field 'note': int matches no branch of the union"),
        ("Widget", widget(tags="abc"), "field 'tags': expected an array, got str"),
        ("Widget", widget(tags=["a", None]), r"field 'tags\[1\]': expected string, got null"),
        ("Widget", widget(color="red"), "record: unknown field 'color'"),
        ("Widget", ["not", "a", "mapping"], "record: expected a mapping for runcoord.Widget"),
        ("Gadget", gadget(digest=b"abc"), "field 'digest': expected 4 bytes, got bytes"),
        ("Gadget", gadget(blob="text"), "field 'blob': expected bytes, got str"),
        ("Gadget", gadget(counters={"a": "1"}), r"field \"counters\['a'\]\": expected long"),
        (
            "Gadget",
            gadget(parts=[{"label": "x", "weight": 1}, {"label": "y", "weight": "2"}]),
            r"field 'parts\[1\].weight': expected int, got str",
        ),
        ("Gadget", gadget(main={"label": "m"}), "field 'main.weight' is missing"),
        ("Gadget", gadget(main=["m"]), "field 'main': list matches no branch of the union"),
        ("Gadget", gadget(at="yesterday"), "field 'at': expected long, got str"),
    ],
)
def test_encode_rejects_a_record_that_does_not_fit(name: str, record: Any, message: str) -> None:
    with pytest.raises(SerializationError, match=message) as caught:
        CODEC.encode(name, record)
    text = str(caught.value)
    assert text.startswith(f"cannot encode {name} v")
    assert len(text) < 160
    assert "red" not in text and "text" not in text  # values are never echoed


def test_encode_unknown_name() -> None:
    with pytest.raises(UnknownSchemaError, match="no schema named 'Nope'"):
        CODEC.encode("Nope", {})


# --- decode errors -------------------------------------------------------------------------

GOOD = CODEC.encode("Widget", widget())
HEADER = MARKER + WIDGET_FP
# Widget v2 datum by hand: id "w", count 0, status index, note union index, tags [], priority 0.
_ENUM_5 = HEADER + b"\x02w" + b"\x00" + b"\x0a" + b"\x00" + b"\x00" + b"\x00"
_UNION_7 = HEADER + b"\x02w" + b"\x00" + b"\x00" + b"\x0e" + b"\x00" + b"\x00"
_BAD_UTF8 = HEADER + b"\x02\xff" + b"\x00" + b"\x00" + b"\x00" + b"\x00" + b"\x00"


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (b"", SerializationError, "empty payload"),
        (b"\xc3", SerializationError, "unknown marker c3, expected c301"),
        (MARKER + WIDGET_FP[:3], SerializationError, "payload of 5 bytes is shorter than a header"),
        (b"\xc3\x02" + GOOD[2:], SerializationError, "unknown marker c302"),
        (b'{"id": "w-1"}', SerializationError, "unknown marker 7b22"),
        (MARKER + bytes(8) + GOOD[10:], UnknownSchemaError, "fingerprint 0000000000000000"),
        (HEADER, SerializationError, "truncated Widget v2 datum"),
        (GOOD[:-1], SerializationError, "truncated Widget v2 datum"),
        (GOOD + b"\x00", SerializationError, "corrupt Widget v2 datum: 1 trailing bytes"),
        (_ENUM_5, SerializationError, "corrupt Widget v2 datum: IndexError"),
        (_UNION_7, SerializationError, "corrupt Widget v2 datum: IndexError"),
        (_BAD_UTF8, SerializationError, "corrupt Widget v2 datum: UnicodeDecodeError"),
        (b"\x00\x00\x00\x00\x01" + GOOD[10:], SerializationError, "no registry_url configured"),
        (bytearray(b"\xc3\x01") + bytes(8), UnknownSchemaError, "fingerprint 0000000000000000"),
        (memoryview(GOOD)[:-1], SerializationError, "truncated Widget v2 datum"),
    ],
    ids=[
        "empty",
        "one-byte",
        "short-header",
        "wrong-marker",
        "json",
        "unknown-fingerprint",
        "header-only",
        "truncated",
        "trailing",
        "enum-index",
        "union-index",
        "bad-utf8",
        "confluent-without-registry",
        "bytearray",
        "memoryview",
    ],
)
def test_decode_rejects_bad_payloads(
    payload: bytes, error: type[SerializationError], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        CODEC.decode(payload)
    assert isinstance(caught.value, UnknownSchemaError) == (error is UnknownSchemaError)
    assert len(str(caught.value)) < 160


def test_decode_rejects_a_non_bytes_payload() -> None:
    with pytest.raises(SerializationError, match="payload is int, not bytes"):
        CODEC.decode(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("cut", range(len(CODEC.encode("Gadget", gadget()))))
def test_every_truncation_is_rejected(cut: int) -> None:
    reasons = "empty payload|unknown marker|shorter than a header|truncated Gadget v1 datum"
    with pytest.raises(SerializationError, match=reasons):
        CODEC.decode(CODEC.encode("Gadget", gadget())[:cut])


def decodes_or_serialization_error(codec: AvroCodec, payload: bytes) -> None:
    with suppress(SerializationError):
        codec.decode(payload)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_raises_nothing_but_serialization_error(payload: bytes) -> None:
    decodes_or_serialization_error(CODEC, payload)


KNOWN_FINGERPRINTS = sorted({v.fingerprint for v in CODEC.catalog})


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(KNOWN_FINGERPRINTS), st.binary(max_size=64))
def test_garbage_behind_a_valid_header_raises_nothing_but_serialization_error(
    fingerprint: bytes, datum: bytes
) -> None:
    decodes_or_serialization_error(CODEC, MARKER + fingerprint + datum)


# --- loading the schema folder -------------------------------------------------------------


def record(name: str, *fields: dict[str, Any], namespace: str = "runcoord") -> str:
    return json.dumps(
        {"type": "record", "name": name, "namespace": namespace, "fields": list(fields)}
    )


ID = {"name": "id", "type": "string"}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"Widget.v1.avsc": record("Widget", ID)}, r"<category>/<RecordName>\.v<N>\.avsc"),
        ({"events/deep/Widget.v1.avsc": record("Widget", ID)}, "<category>/<RecordName>"),
        ({"events/widget.v1.avsc": record("widget", ID)}, "<category>/<RecordName>"),
        ({"events/Widget.v0.avsc": record("Widget", ID)}, "<category>/<RecordName>"),
        ({"events/Widget.v1.avsc": "{"}, "events/Widget.v1.avsc: not JSON"),
        ({"events/Widget.v1.avsc": '{"type": "string"}'}, "must hold one Avro record schema"),
        (
            {"events/Widget.v1.avsc": record("Widget", ID, namespace="other")},
            "declares other.Widget, expected runcoord.Widget",
        ),
        ({"events/Widget.v1.avsc": record("Gadget", ID)}, "declares runcoord.Gadget"),
        (
            {
                "events/Widget.v1.avsc": record(
                    "Widget", {"name": "n", "type": "int", "default": "x"}
                )
            },
            "events/Widget.v1.avsc: ",
        ),
        (
            {
                "events/Widget.v1.avsc": record("Widget", ID),
                "events/Widget.v3.avsc": record("Widget", ID),
            },
            r"Widget: versions must be 1\.\.N without gaps, found \[1, 3\]",
        ),
        (
            {
                "events/Widget.v1.avsc": record("Widget", ID),
                "state/Widget.v2.avsc": record("Widget", ID),
            },
            "same category folder",
        ),
        (
            {
                "events/Other.v1.avsc": record("Other", ID),
                "events/Widget.v1.avsc": record("Widget", {"name": "o", "type": "runcoord.Other"}),
            },
            "records are self-contained",
        ),
    ],
    ids=[
        "top-level",
        "too-deep",
        "lowercase",
        "version-0",
        "not-json",
        "not-a-record",
        "wrong-namespace",
        "name-mismatch",
        "bad-default",
        "version-gap",
        "two-categories",
        "cross-file-reference",
    ],
)
def test_schema_folder_conventions_are_enforced(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    with pytest.raises(ConfigError, match=message):
        AvroCodec(tmp_path)


def test_missing_schema_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        AvroCodec(tmp_path / "nope")


def test_crlf_checkout_is_the_same_file(tmp_path: Path) -> None:
    original = FIXTURE_DIR / "events" / "Widget.v1.avsc"
    (tmp_path / "events").mkdir()
    copy = tmp_path / "events" / "Widget.v1.avsc"
    copy.write_bytes(original.read_bytes().replace(b"\n", b"\r\n"))
    loaded = SchemaCatalog.load(tmp_path).get("Widget")
    assert loaded.content_sha256 == CODEC.catalog.get("Widget", 1).content_sha256


# --- Confluent Schema Registry framing -----------------------------------------------------


@pytest.fixture
def registry_codec() -> AvroCodec:
    return AvroCodec(FIXTURE_DIR, registry_url="mock://runcoord-tests")


def confluent(schema_id: int, datum: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + datum


def test_registry_round_trip_registers_under_the_record_name(registry_codec: AvroCodec) -> None:
    payload = registry_codec.encode("Widget", widget_v2())
    again = registry_codec.encode("Widget", widget_v2(id="w-2"))
    client = registry_codec.registry_client
    assert payload[0] == 0 and payload[1:5] == again[1:5]
    assert client.get_subjects() == ["runcoord.Widget"]
    assert client.get_versions("runcoord.Widget") == [1]
    assert registry_codec.decode(payload) == ("Widget", widget_v2())
    assert registry_codec.decode(again) == ("Widget", widget_v2(id="w-2"))


def test_registry_decodes_an_old_writer_into_the_current_shape(registry_codec: AvroCodec) -> None:
    v1 = registry_codec.catalog.get("Widget", 1)
    client = registry_codec.registry_client
    schema_id = client.register_schema("runcoord.Widget", Schema(json.dumps(v1.raw), "AVRO"))
    payload = confluent(schema_id, write_datum(v1, widget()))
    assert registry_codec.decode(payload) == ("Widget", widget(tags=[], priority=0))


def test_registry_codec_still_reads_single_object_payloads(registry_codec: AvroCodec) -> None:
    assert registry_codec.decode(GOOD) == ("Widget", widget(tags=[], priority=0))


def register(codec: AvroCodec, subject: str, schema: dict[str, Any]) -> int:
    schema_id: int = codec.registry_client.register_schema(
        subject, Schema(json.dumps(schema), "AVRO")
    )
    return schema_id


FOREIGN = {"type": "record", "name": "Thing", "namespace": "other", "fields": [ID]}
INCOMPATIBLE = {"type": "record", "name": "Widget", "namespace": "runcoord", "fields": [ID]}


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        (lambda c: confluent(99, b"\x00"), UnknownSchemaError, "schema id 99: not found"),
        (lambda c: b"\x00\x00\x01", SerializationError, "payload of 3 bytes is shorter"),
        (
            lambda c: confluent(register(c, "other.Thing", FOREIGN), b"\x02x"),
            UnknownSchemaError,
            r"schema id \d+ is other.Thing, which we do not know",
        ),
        (
            lambda c: confluent(register(c, "runcoord.Widget", INCOMPATIBLE), b"\x02x"),
            SerializationError,
            r"Widget \(schema id \d+\) cannot be read as Widget v2: count: missing",
        ),
        (
            lambda c: confluent(
                c.registry_client.register_schema("runcoord.Widget", Schema("{}", "JSON")), b""
            ),
            UnknownSchemaError,
            "is JSON, not Avro",
        ),
        (
            lambda c: c.encode("Widget", widget_v2())[:-1],
            SerializationError,
            "truncated Widget v2 datum",
        ),
    ],
    ids=["unknown-id", "short", "foreign-record", "incompatible-writer", "not-avro", "truncated"],
)
def test_registry_decode_errors(
    registry_codec: AvroCodec,
    setup: Callable[[AvroCodec], bytes],
    error: type[SerializationError],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        registry_codec.decode(setup(registry_codec))


def test_unreachable_registry_is_retriable_not_a_bad_message() -> None:
    codec = AvroCodec(
        FIXTURE_DIR,
        registry_url="http://127.0.0.1:1",
        registry_config={"max.retries": 0, "timeout": 2},
    )
    with pytest.raises(SchemaRegistryUnavailable, match=r"registering runcoord\.Widget") as caught:
        codec.encode("Widget", widget_v2())
    assert isinstance(caught.value, Retriable)
    assert not isinstance(caught.value, SerializationError)
    with pytest.raises(SchemaRegistryUnavailable, match="fetching schema id 5"):
        codec.decode(confluent(5, b""))
