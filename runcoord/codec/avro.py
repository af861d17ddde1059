"""AvroCodec: record dicts to Avro single-object encoding and back, for every committed schema.

Single-object encoding (Avro spec): marker C3 01, the writer schema's CRC-64-AVRO fingerprint
(8 bytes little-endian), then the binary datum. A payload names its exact writer version, so
old payloads decode forever and come out resolved to the current (reader) schema of their name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runcoord.codec.catalog import SchemaCatalog, SchemaVersion
from runcoord.codec.datum import read_datum, write_datum
from runcoord.errors import SerializationError, UnknownSchemaError
from runcoord.schemas import SCHEMA_DIR

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8
CONFLUENT_MAGIC = 0


@dataclass(frozen=True, eq=False)
class _Writer:
    version: SchemaVersion
    header: bytes  # marker + fingerprint, built once


@dataclass(frozen=True, eq=False)
class _Reader:
    version: SchemaVersion  # the writer's version, as named by the payload
    reader: dict[str, Any] | None  # the current schema; None when the writer is the current one


class AvroCodec:
    """Encode and decode every record type in `schema_dir`.

    Without `registry_url` the wire format is Avro single-object encoding. With it, `encode`
    writes the Confluent format (magic byte 0, 4-byte big-endian schema id, datum) and registers
    each current schema under its full record name on first use; `decode` reads both formats.
    """

    def __init__(
        self,
        schema_dir: Path = SCHEMA_DIR,
        *,
        registry_url: str | None = None,
        registry_config: dict[str, Any] | None = None,
    ) -> None:
        self._catalog = SchemaCatalog.load(schema_dir)
        # Everything a payload needs is looked up once here: per name the writer and its header,
        # per fingerprint the writer version and the current schema to resolve it to.
        self._writers: dict[str, _Writer] = {}
        self._readers: dict[bytes, _Reader] = {}
        for name in self._catalog.names():
            current = self._catalog.get(name)
            self._writers[name] = _Writer(current, MARKER + current.fingerprint)
            for version in self._catalog.versions(name):
                same = version.canonical == current.canonical
                reader = _Reader(version, None if same else current.parsed)
                self._readers.setdefault(version.fingerprint, reader)
        self._registry = None
        if registry_url is not None:
            from runcoord.codec.registry import RegistryFraming  # confluent_kafka only if asked

            self._registry = RegistryFraming.connect(self._catalog, registry_url, registry_config)

    @property
    def catalog(self) -> SchemaCatalog:
        return self._catalog

    @property
    def registry_client(self) -> Any:
        """The Schema Registry client in use, or None in single-object mode."""
        return None if self._registry is None else self._registry.client

    def names(self) -> frozenset[str]:
        return self._catalog.names()

    def fingerprint(self, name: str, version: int | None = None) -> bytes:
        """CRC-64-AVRO of the schema's canonical form, in wire (little-endian) byte order."""
        return self._catalog.get(name, version).fingerprint

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """`record` under the current version of `name`."""
        if self._registry is not None:
            return self._registry.encode(name, record)
        writer = self._writers.get(name)
        if writer is None:
            raise UnknownSchemaError(f"no schema named {name!r}")
        return writer.header + write_datum(writer.version, record)

    def decode(self, payload: bytes) -> tuple[str, dict[str, Any]]:
        """(record name, datum resolved to the current schema of that name)."""
        if not payload:  # also a tombstone's None, should one slip through
            raise SerializationError("empty payload")
        if type(payload) is not bytes:  # bytearray/memoryview slices would not hash as keys
            try:
                payload = memoryview(payload).tobytes()  # bytes(5) would make 5 zero bytes
            except TypeError as exc:
                raise SerializationError(f"payload is {type(payload).__name__}, not bytes") from exc
        if payload[:2] == MARKER:
            if len(payload) < HEADER_SIZE:
                raise SerializationError(
                    f"payload of {len(payload)} bytes is shorter than a header"
                )
            entry = self._readers.get(payload[2:HEADER_SIZE])
            if entry is None:
                fingerprint = payload[2:HEADER_SIZE].hex()
                raise UnknownSchemaError(f"unknown writer schema fingerprint {fingerprint}")
            datum = read_datum(
                entry.version.label, payload, HEADER_SIZE, entry.version.parsed, entry.reader
            )
            return entry.version.name, datum
        if payload[:1] == bytes([CONFLUENT_MAGIC]):
            if self._registry is None:
                raise SerializationError("Confluent-framed payload but no registry_url configured")
            return self._registry.decode(payload)
        raise SerializationError(f"unknown marker {payload[:2].hex()}, expected c301")
