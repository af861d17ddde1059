"""The schema-evolution guard: committed versions stay readable both ways and never change.

Runs over whatever is committed under schemas/, and over fixture pairs that prove it catches
each kind of breaking change.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.utils import generate_many
from fastavro.validation import validate
from typer.testing import CliRunner

from runcoord.codec import (
    LOCK_FILE,
    AvroCodec,
    SchemaCatalog,
    check_compatibility,
    check_lock,
    evolution_problems,
    update_lock,
)
from runcoord.codec.avro import MARKER
from runcoord.codec.cli import app
from runcoord.codec.datum import write_datum
from runcoord.codec.lock import read_lock
from runcoord.errors import ConfigError
from runcoord.schemas import SCHEMA_DIR

FIXTURES = Path(__file__).parents[2] / "fixtures" / "schemas"
CASES = FIXTURES / "evolution"
CATALOG_DIR = FIXTURES / "catalog"


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """fastavro's data generator draws from the global `random`; keep it deterministic."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def resolution_failures(writer: Any, reader: Any, count: int = 50) -> list[str]:
    """Write generated data with `writer`, read it with `reader`: the failures, if any."""
    writer, reader = parse_schema(writer, named_schemas={}), parse_schema(reader, named_schemas={})
    failures = []
    with seeded(11):
        data = list(generate_many(writer, count))
    for datum in data:
        buf = io.BytesIO()
        schemaless_writer(buf, writer, datum)
        buf.seek(0)
        try:
            schemaless_reader(buf, writer, reader)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    return failures


def load_case(case: str) -> tuple[dict[str, Any], dict[str, Any]]:
    old = json.loads((CASES / case / "old.avsc").read_text())
    new = json.loads((CASES / case / "new.avsc").read_text())
    return old, new


# --- the rules, proven on fixture pairs ----------------------------------------------------

# case folder -> expected problem reading old data with new (backward), new data with old
# (forward); None means compatible. The guard demands both directions.
EVOLUTION_CASES = [
    ("added_field_with_default", None, None),
    ("removed_field_with_default", None, None),
    ("enum_symbol_added_with_default", None, None),
    ("renamed_field_with_alias", None, None),
    ("added_field_without_default", "retries: missing from the writer and has no default", None),
    ("removed_required_field", None, "amount: missing from the writer and has no default"),
    ("string_to_int", "id: string cannot be read as int", "id: int cannot be read as string"),
    ("enum_symbol_removed", "s: symbols ['C'] of runcoord.State are unknown", None),
    ("nested_type_change", "items[].qty: int cannot be read as string", "items[].qty: string"),
    # Safe for upgraded readers, but an old reader cannot read a long: the guard rejects it.
    ("int_to_long", None, "n: long cannot be read as int"),
    ("int_to_nullable", None, "n: null cannot be read as int"),
]


def test_every_fixture_case_is_in_the_table() -> None:
    assert sorted(p.name for p in CASES.iterdir()) == sorted(c[0] for c in EVOLUTION_CASES)


@pytest.mark.parametrize(("case", "backward", "forward"), EVOLUTION_CASES)
def test_structural_check_reports_exactly_the_breaking_changes(
    case: str, backward: str | None, forward: str | None
) -> None:
    old, new = load_case(case)
    for writer, reader, expected in ((old, new, backward), (new, old, forward)):
        problems = check_compatibility(writer, reader)
        if expected is None:
            assert problems == []
        else:
            assert len(problems) == 1 and problems[0].startswith(expected), problems


@pytest.mark.parametrize(("case", "backward", "forward"), EVOLUTION_CASES)
def test_generated_data_agrees_with_the_structural_check(
    case: str, backward: str | None, forward: str | None
) -> None:
    old, new = load_case(case)
    for writer, reader, expected in ((old, new, backward), (new, old, forward)):
        failures = resolution_failures(writer, reader)
        if expected is None:
            assert failures == []
        else:
            assert failures, f"{case}: structurally incompatible, yet all generated data resolved"


def rec(*fields: dict[str, Any], name: str = "R") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "runcoord", "fields": list(fields)}


def field(type_: Any, name: str = "f", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


LINKED = rec(field(["null", "runcoord.R"], "next", default=None), field("int", "v"))
ENUM_AB = {"type": "enum", "name": "E", "symbols": ["A", "B"]}


def rule(
    id_: str,
    writer: dict[str, Any],
    reader: dict[str, Any],
    expected: str | None,
    data: bool = True,
) -> Any:
    return pytest.param(writer, reader, expected, data, id=id_)


def fixed(size: int) -> dict[str, Any]:
    return {"type": "fixed", "name": "H", "size": size}


def inner(name: str, **extra: Any) -> dict[str, Any]:
    return {**rec(field("int"), name=name), **extra}


RESOLUTION_RULES = [
    rule("int->float", rec(field("int")), rec(field("float")), None),
    rule("long->double", rec(field("long")), rec(field("double")), None),
    rule("float->double", rec(field("float")), rec(field("double")), None),
    rule("string->bytes", rec(field("string")), rec(field("bytes")), None),
    # Allowed by the spec; random bytes are rarely UTF-8, so no generated-data check.
    rule("bytes->string", rec(field("bytes")), rec(field("string")), None, data=False),
    rule("double->float", rec(field("double")), rec(field("float")), "f: double cannot be read"),
    rule("boolean->int", rec(field("boolean")), rec(field("int")), "f: boolean cannot be read"),
    rule("int->union-long", rec(field("int")), rec(field(["null", "long"])), None),
    rule("int->union-string", rec(field("int")), rec(field(["null", "string"])), "f: writer type"),
    rule("union->union", rec(field(["int", "string"])), rec(field(["string", "long"])), None),
    rule(
        "logical->long",
        rec(field({"type": "long", "logicalType": "timestamp-millis"})),
        rec(field("long")),
        None,
    ),
    rule("fixed-size", rec(field(fixed(4))), rec(field(fixed(8))), "f: fixed size 4 cannot be"),
    rule(
        "record-renamed",
        rec(field(inner("Inner"))),
        rec(field(inner("Other"))),
        "f: record runcoord.Inner cannot be read as runcoord.Other",
    ),
    rule(
        "record-alias",
        rec(field(inner("Inner"))),
        rec(field(inner("Other", aliases=["Inner"]))),
        None,
    ),
    rule(
        "enum-default",
        rec(field(ENUM_AB)),
        rec(field({**ENUM_AB, "symbols": ["A"], "default": "A"})),
        None,
    ),
    rule(
        "map-values",
        rec(field({"type": "map", "values": "int"})),
        rec(field({"type": "map", "values": "long"})),
        None,
    ),
    rule(
        "array-items",
        rec(field({"type": "array", "items": "long"})),
        rec(field({"type": "array", "items": "int"})),
        "f[]: long cannot be read as int",
    ),
    rule(
        "int->array",
        rec(field("int")),
        rec(field({"type": "array", "items": "int"})),
        "f: int cannot be read as array",
    ),
    rule("recursive", LINKED, LINKED, None),
    rule("recursive-added", LINKED, rec(*LINKED["fields"], field("int", "w", default=0)), None),
    rule(
        "recursive-changed",
        LINKED,
        rec(field(["null", "runcoord.R"], "next", default=None), field("string", "v")),
        "v: int cannot be read as string",
    ),
]


@pytest.mark.parametrize(("writer", "reader", "expected", "data"), RESOLUTION_RULES)
def test_resolution_rules(
    writer: dict[str, Any], reader: dict[str, Any], expected: str | None, data: bool
) -> None:
    problems = check_compatibility(writer, reader)
    if expected is None:
        assert problems == []
        if data:
            assert resolution_failures(writer, reader, count=20) == []
    else:
        assert problems and problems[0].startswith(expected), problems


# --- the committed schemas -----------------------------------------------------------------

COMMITTED = SchemaCatalog.load(SCHEMA_DIR)
OLD_VERSIONS = [
    pytest.param(old.name, old.version, id=old.label)
    for name in sorted(COMMITTED.names())
    for old in COMMITTED.versions(name)[:-1]
]


@pytest.mark.parametrize(("name", "version"), OLD_VERSIONS)
def test_committed_version_is_backward_and_forward_compatible(name: str, version: int) -> None:
    old, current = COMMITTED.get(name, version), COMMITTED.get(name)
    assert check_compatibility(old.parsed, current.parsed) == [], "backward"
    assert check_compatibility(current.parsed, old.parsed) == [], "forward"
    assert resolution_failures(old.raw, current.raw) == []
    assert resolution_failures(current.raw, old.raw) == []


@pytest.mark.parametrize(("name", "version"), OLD_VERSIONS)
def test_old_payloads_decode_into_the_current_shape(name: str, version: int) -> None:
    codec = AvroCodec(SCHEMA_DIR)
    old, current = COMMITTED.get(name, version), COMMITTED.get(name)
    with seeded(version):
        records = list(generate_many(old.parsed, 20))
    for record in records:
        payload = MARKER + old.fingerprint + write_datum(old, record)
        decoded_name, datum = codec.decode(payload)
        assert decoded_name == name
        assert validate(datum, current.parsed, raise_errors=False)


def test_committed_schemas_pass_the_whole_guard() -> None:
    assert evolution_problems(COMMITTED) == []


def test_committed_schemas_are_locked_unchanged() -> None:
    assert check_lock(COMMITTED, SCHEMA_DIR / LOCK_FILE) == []


def test_fixture_catalog_passes_the_whole_guard() -> None:
    catalog = SchemaCatalog.load(CATALOG_DIR)
    assert evolution_problems(catalog) == []
    assert check_lock(catalog, CATALOG_DIR / LOCK_FILE) == []


# --- the guard fails on a broken catalog and a changed file --------------------------------


@pytest.fixture
def catalog_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "schemas"
    shutil.copytree(CATALOG_DIR, copy)
    return copy


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))


def widget_v3_without_default(schema_dir: Path) -> None:
    """A breaking v3: a new field with no default (old data cannot fill it)."""
    v2 = json.loads((schema_dir / "events" / "Widget.v2.avsc").read_text())
    v2["fields"].append({"name": "owner", "type": "string"})
    (schema_dir / "events" / "Widget.v3.avsc").write_text(json.dumps(v2))


def test_a_breaking_new_version_fails_the_guard(catalog_copy: Path) -> None:
    widget_v3_without_default(catalog_copy)
    problems = evolution_problems(SchemaCatalog.load(catalog_copy))
    assert problems == [
        "Widget: Widget v1 data read as Widget v3 (backward): "
        "owner: missing from the writer and has no default in the reader",
        "Widget: Widget v2 data read as Widget v3 (backward): "
        "owner: missing from the writer and has no default in the reader",
    ]


def set_type(field_name: str, type_: Any) -> Callable[[dict[str, Any]], None]:
    def change(schema: dict[str, Any]) -> None:
        for f in schema["fields"]:
            if f["name"] == field_name:
                f["type"] = type_

    return change


def set_key(
    key: str, value: Any, field_name: str | None = None
) -> Callable[[dict[str, Any]], None]:
    def change(schema: dict[str, Any]) -> None:
        target = (
            next(f for f in schema["fields"] if f["name"] == field_name) if field_name else schema
        )
        target[key] = value

    return change


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        (
            "events/Widget.v1.avsc",
            set_type("count", "long"),
            "Widget v1: Widget.v1.avsc changed its wire",
        ),
        (
            "state/Gadget.v1.avsc",
            set_key("doc", "reworded"),
            r"Gadget v1: Gadget.v1.avsc changed \(docs",
        ),
        (
            "events/Widget.v2.avsc",
            set_key("default", 5, "priority"),
            r"Widget v2: .* changed \(docs or",
        ),
    ],
    ids=["type-change", "doc-change", "default-change"],
)
def test_lock_catches_a_changed_committed_file(
    catalog_copy: Path, file: str, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    edit_json(catalog_copy / file, change)
    lock = catalog_copy / LOCK_FILE
    before = lock.read_bytes()
    catalog = SchemaCatalog.load(catalog_copy)
    problems = check_lock(catalog, lock)
    assert len(problems) == 1 and re.match(message, problems[0]), problems
    with pytest.raises(ConfigError, match=r"refusing to update fingerprints\.lock"):
        update_lock(catalog, lock)
    assert lock.read_bytes() == before


def test_lock_catches_a_deleted_version(catalog_copy: Path) -> None:
    (catalog_copy / "events" / "Widget.v2.avsc").unlink()
    catalog = SchemaCatalog.load(catalog_copy)
    assert check_lock(catalog, catalog_copy / LOCK_FILE) == [
        "Widget v2: locked but its file is gone"
    ]
    with pytest.raises(ConfigError, match="Widget v2: locked but its file is gone"):
        update_lock(catalog, catalog_copy / LOCK_FILE)


def test_lock_adds_new_versions_only(catalog_copy: Path) -> None:
    lock = catalog_copy / LOCK_FILE
    before = lock.read_text().splitlines()
    v2 = json.loads((catalog_copy / "events" / "Widget.v2.avsc").read_text())
    v2["fields"].append({"name": "owner", "type": "string", "default": ""})
    (catalog_copy / "events" / "Widget.v3.avsc").write_text(json.dumps(v2))
    catalog = SchemaCatalog.load(catalog_copy)
    assert check_lock(catalog, lock) == [
        "Widget v3: not in fingerprints.lock; run `python -m runcoord.codec lock`"
    ]
    added = update_lock(catalog, lock)
    assert [e.label for e in added] == ["Widget v3"]
    after = lock.read_text().splitlines()
    assert [line for line in after if line not in before] == [added[0].line()]
    assert set(before) <= set(after)  # every existing line kept, byte for byte
    assert check_lock(catalog, lock) == []
    assert update_lock(catalog, lock) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Widget v1 nothex sha256:00\n", "fingerprints.lock:1: malformed line"),
        (
            "# c\n"
            + "Widget v1 "
            + "0" * 16
            + " sha256:"
            + "0" * 64
            + "\n" * 2
            + "Widget v1 "
            + "1" * 16
            + " sha256:"
            + "1" * 64
            + "\n",
            "fingerprints.lock:4: Widget v1 is locked twice",
        ),
    ],
    ids=["malformed", "duplicate"],
)
def test_malformed_lock_file(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / LOCK_FILE).write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_lock(tmp_path / LOCK_FILE)


# --- the command -------------------------------------------------------------------------


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_cli_check_and_lock(catalog_copy: Path) -> None:
    where = ("--schema-dir", str(catalog_copy))
    assert run("check", *where) == (0, "3 schema versions: locked and compatible\n")
    assert run("lock", *where) == (0, "nothing new to lock\n")

    widget_v3_without_default(catalog_copy)
    code, output = run("check", *where)
    assert code == 1
    assert "Widget v3: not in fingerprints.lock" in output
    assert "Widget v2 data read as Widget v3 (backward): owner: missing" in output

    code, output = run("lock", *where)
    assert code == 0 and output.startswith("locked Widget v3 ")

    edit_json(catalog_copy / "events" / "Widget.v1.avsc", set_key("doc", "edited"))
    before = (catalog_copy / LOCK_FILE).read_bytes()
    code, output = run("lock", *where)
    assert code == 1 and "refusing to update fingerprints.lock: Widget v1" in output
    assert (catalog_copy / LOCK_FILE).read_bytes() == before
