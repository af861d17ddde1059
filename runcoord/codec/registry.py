"""Confluent Schema Registry wire format: magic byte 0, 4-byte big-endian schema id, datum.

Subjects follow the RecordNameStrategy (subject = full record name, e.g. ``runcoord.RunAccepted``):
`encode` is given a record name, not a topic, and one topic (runs.events) carries many record
types, each evolving on its own, exactly like our per-name versions. Registry failures are never
the message's fault, so they are not SerializationError: an unreachable registry is Retriable,
a registry that rejects our schema (incompatible, unauthorised) is a ConfigError.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError
from fastavro.schema import to_parsing_canonical_form

from runcoord.codec.catalog import NAMESPACE, SchemaCatalog, parse_record_schema
from runcoord.codec.compat import check_compatibility
from runcoord.codec.datum import read_datum, short, write_datum
from runcoord.errors import ConfigError, Retriable, SerializationError, UnknownSchemaError

_PREFIX = struct.Struct(">bI")


class SchemaRegistryUnavailable(Retriable):
    """The Schema Registry could not be reached or answered with a server error."""


@dataclass(frozen=True, eq=False)
class _IdReader:
    name: str
    label: str
    writer: dict[str, Any]
    reader: dict[str, Any] | None  # None when the writer is our current schema
    problem: str | None  # why the writer cannot be read as our current schema, if it cannot


class RegistryFraming:
    def __init__(self, catalog: SchemaCatalog, client: Any) -> None:
        self.client = client
        self._catalog = catalog
        self._ids: dict[str, tuple[int, bytes]] = {}  # name -> (schema id, 5-byte prefix)
        self._readers: dict[int, _IdReader] = {}

    @classmethod
    def connect(
        cls, catalog: SchemaCatalog, url: str, config: Mapping[str, Any] | None
    ) -> RegistryFraming:
        # new_client picks the in-memory MockSchemaRegistryClient for mock:// URLs.
        return cls(catalog, SchemaRegistryClient.new_client({**(config or {}), "url": url}))

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        current = self._catalog.get(name)
        known = self._ids.get(name)
        if known is None:
            known = self._register(name)
        return known[1] + write_datum(current, record)

    def decode(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        if len(payload) < _PREFIX.size:
            raise SerializationError(f"payload of {len(payload)} bytes is shorter than a header")
        schema_id = _PREFIX.unpack_from(payload)[1]
        entry = self._readers.get(schema_id)
        if entry is None:
            entry = self._readers[schema_id] = self._fetch(schema_id)
        if entry.problem is not None:
            raise SerializationError(entry.problem)
        return entry.name, read_datum(
            entry.label, payload, _PREFIX.size, entry.writer, entry.reader
        )

    def _register(self, name: str) -> tuple[int, bytes]:
        current = self._catalog.get(name)
        subject = current.full_name
        schema = Schema(json.dumps(current.raw, separators=(",", ":")), "AVRO")
        schema_id = self._call(
            f"registering {subject}", self.client.register_schema, subject, schema
        )
        known = (schema_id, _PREFIX.pack(0, schema_id))
        self._ids[name] = known
        # We wrote it from our current schema, so reading it back needs no fetch.
        self._readers.setdefault(
            schema_id, _IdReader(name, current.label, current.parsed, None, None)
        )
        return known

    def _fetch(self, schema_id: int) -> _IdReader:
        schema = self._call(f"fetching schema id {schema_id}", self.client.get_schema, schema_id)
        if schema.schema_type not in (None, "AVRO"):
            raise UnknownSchemaError(f"schema id {schema_id} is {schema.schema_type}, not Avro")
        try:
            writer = parse_record_schema(json.loads(schema.schema_str), f"schema id {schema_id}")
        except (ValueError, ConfigError) as exc:
            raise UnknownSchemaError(f"schema id {schema_id} is not a usable Avro record") from exc
        full_name: str = writer["name"]
        namespace, _, name = full_name.rpartition(".")
        if namespace != NAMESPACE or name not in self._catalog.names():
            raise UnknownSchemaError(f"schema id {schema_id} is {full_name}, which we do not know")
        current = self._catalog.get(name)
        label = f"{name} (schema id {schema_id})"
        problems = check_compatibility(writer, current.parsed)
        problem = None
        if problems:
            problem = f"{label} cannot be read as {current.label}: {problems[0]}"
        same = to_parsing_canonical_form(writer) == current.canonical
        return _IdReader(name, label, writer, None if same else current.parsed, problem)

    @staticmethod
    def _call(what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except SchemaRegistryError as exc:
            status = exc.http_status_code
            if status == 404:
                raise UnknownSchemaError(f"{what}: not found in the registry") from exc
            if status in (401, 403, 409, 422):
                raise ConfigError(f"{what}: the registry refused: {short(exc)}") from exc
            raise SchemaRegistryUnavailable(f"{what}: {short(exc)}") from exc
        except Exception as exc:  # httpx / socket errors from the REST client
            raise SchemaRegistryUnavailable(f"{what}: {short(exc)}") from exc
