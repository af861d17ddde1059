"""Avro schema-resolution rules, checked structurally: can a reader read a writer's data?

fastavro resolves data but has no compatibility checker. This follows the "Schema Resolution"
section of the Avro specification (the same rules as Java's SchemaCompatibility), so the answer
is deterministic and names the field at fault:

- a reader field absent from the writer needs a default in the reader; writer-only fields are
  skipped;
- promotions: int -> long, float, double; long -> float, double; float -> double;
  string <-> bytes;
- named types match on unqualified name (or a reader alias); fixed sizes must be equal;
- every writer enum symbol must be a reader symbol, unless the reader enum has a default;
- every branch of a writer union must be readable; a non-union writer must be readable as
  some branch of a reader union;
- logical types resolve on their underlying type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastavro.schema import parse_schema

from runcoord.codec.catalog import SchemaCatalog

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
PROMOTIONS: Mapping[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


def check_compatibility(writer_schema: Any, reader_schema: Any) -> list[str]:
    """Problems reading data written with `writer_schema` using `reader_schema`; [] if none.

    Takes raw (JSON-like) or fastavro-parsed schemas.
    """
    writer, reader = _parsed(writer_schema), _parsed(reader_schema)
    checker = _Checker(_named(writer), _named(reader))
    checker.check(writer, reader, "")
    return checker.problems


def evolution_problems(catalog: SchemaCatalog) -> list[str]:
    """Every committed version must be backward and forward compatible with the current one."""
    problems = []
    for name in sorted(catalog.names()):
        current = catalog.get(name)
        for old in catalog.versions(name)[:-1]:
            for direction, writer, reader in (
                ("backward", old, current),
                ("forward", current, old),
            ):
                for problem in check_compatibility(writer.parsed, reader.parsed):
                    problems.append(
                        f"{name}: {writer.label} data read as {reader.label} ({direction}): "
                        f"{problem}"
                    )
    return problems


def _parsed(schema: Any) -> Any:
    if isinstance(schema, dict) and "__fastavro_parsed" in schema:
        return schema
    return parse_schema(schema, named_schemas={})


def _named(schema: Any) -> Mapping[str, Any]:
    return schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}


def _at(path: str) -> str:
    return path or "<root>"


class _Checker:
    def __init__(self, writer_named: Mapping[str, Any], reader_named: Mapping[str, Any]) -> None:
        self._writer_named = writer_named
        self._reader_named = reader_named
        # Recursive types: a (writer, reader) pair of named types already under check is
        # assumed compatible when met again, so recursion ends; its problems are reported once.
        self._seen: set[tuple[str, str]] = set()
        self.problems: list[str] = []

    def check(self, writer: Any, reader: Any, path: str) -> None:
        writer = _resolve(writer, self._writer_named)
        reader = _resolve(reader, self._reader_named)
        if isinstance(writer, list):
            for branch in writer:
                self.check(branch, reader, path)
            return
        if isinstance(reader, list):
            for branch in reader:
                if not self._probe(writer, branch, path):
                    return
            self.problems.append(
                f"{_at(path)}: writer type {_describe(writer)} is not in the reader union "
                f"[{', '.join(_describe(_resolve(b, self._reader_named)) for b in reader)}]"
            )
            return
        w_type, r_type = _kind(writer), _kind(reader)
        if w_type in PRIMITIVES and r_type in PRIMITIVES:
            if w_type != r_type and r_type not in PROMOTIONS.get(w_type, ()):
                self.problems.append(f"{_at(path)}: {w_type} cannot be read as {r_type}")
            return
        if w_type != r_type:
            self.problems.append(
                f"{_at(path)}: {_describe(writer)} cannot be read as {_describe(reader)}"
            )
            return
        if w_type == "array":
            self.check(writer["items"], reader["items"], f"{path}[]")
        elif w_type == "map":
            self.check(writer["values"], reader["values"], f"{path}{{}}")
        elif _names_match(writer, reader, path, self.problems):
            key = (writer["name"], reader["name"])
            if key in self._seen:
                return
            self._seen.add(key)
            if w_type == "record":
                self._record(writer, reader, path)
            elif w_type == "enum":
                self._enum(writer, reader, path)
            elif writer["size"] != reader["size"]:
                self.problems.append(
                    f"{_at(path)}: fixed size {writer['size']} cannot be read as {reader['size']}"
                )

    def _probe(self, writer: Any, reader: Any, path: str) -> list[str]:
        """The problems of one candidate pairing, without recording them."""
        saved, self.problems = self.problems, []
        seen = set(self._seen)
        try:
            self.check(writer, reader, path)
            return self.problems
        finally:
            self.problems, self._seen = saved, seen

    def _record(self, writer: Mapping[str, Any], reader: Mapping[str, Any], path: str) -> None:
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            sub = f"{path}.{field['name']}" if path else field["name"]
            names = [field["name"], *field.get("aliases", [])]
            found = next((writer_fields[n] for n in names if n in writer_fields), None)
            if found is not None:
                self.check(found["type"], field["type"], sub)
            elif "default" not in field:
                self.problems.append(
                    f"{sub}: missing from the writer and has no default in the reader"
                )

    def _enum(self, writer: Mapping[str, Any], reader: Mapping[str, Any], path: str) -> None:
        unknown = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if unknown and "default" not in reader:
            self.problems.append(
                f"{_at(path)}: symbols {unknown} of {writer['name']} are unknown to the reader, "
                "which has no default symbol"
            )


def _resolve(schema: Any, named: Mapping[str, Any]) -> Any:
    """Follow a named-type reference; unwrap {"type": primitive} (logical types included)."""
    if isinstance(schema, str):
        return named.get(schema, schema)
    if isinstance(schema, dict) and schema.get("type") in PRIMITIVES:
        return schema["type"]
    return schema


def _kind(schema: Any) -> str:
    return schema if isinstance(schema, str) else str(schema["type"])


def _describe(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    if "name" in schema:
        return f"{schema['type']} {schema['name']}"
    return str(schema["type"])


def _names_match(
    writer: Mapping[str, Any], reader: Mapping[str, Any], path: str, problems: list[str]
) -> bool:
    w_name, r_name = writer["name"], reader["name"]
    w_short, r_short = w_name.rpartition(".")[2], r_name.rpartition(".")[2]
    aliases = reader.get("aliases", [])
    if w_short == r_short or w_name in aliases or w_short in aliases:
        return True
    problems.append(f"{_at(path)}: {writer['type']} {w_name} cannot be read as {r_name}")
    return False
