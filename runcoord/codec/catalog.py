"""The committed Avro schemas, loaded and checked once: one entry per (record name, version).

Layout (see runcoord/schemas/README.md): ``<category>/<RecordName>.v<N>.avsc``, one
self-contained record schema per file, full name ``runcoord.<RecordName>``, versions 1..N with no
gaps. The highest
version of a name is its current (reader) schema; older ones stay so old payloads still decode.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from fastavro.schema import UnknownType, parse_schema, to_parsing_canonical_form
from fastavro.schema import fingerprint as crc64_hex

from runcoord.codec.compiled import compile_writer
from runcoord.errors import ConfigError, UnknownSchemaError

NAMESPACE = "runcoord"
_FILE_NAME = re.compile(r"^(?P<name>[A-Z][A-Za-z0-9]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One committed schema file, parsed once and reused by every encode and decode."""

    name: str  # record name without namespace, e.g. "RunAccepted"
    version: int
    category: str
    path: Path
    raw: dict[str, Any]  # the file's JSON as written: defaults and docs included
    parsed: dict[str, Any]  # fastavro's parsed form
    canonical: str  # Parsing Canonical Form (what the fingerprint covers)
    fingerprint: bytes  # CRC-64-AVRO of `canonical`, 8 bytes little-endian: the wire order
    content_sha256: str  # of the file itself; the lock file pins it (defaults are not canonical)

    @cached_property
    def compiled(self) -> Callable[[Mapping[str, Any]], bytes] | None:
        """This schema's compiled writer (runcoord/codec/compiled.py), built on first use."""
        return compile_writer(self.parsed)

    @property
    def full_name(self) -> str:
        return f"{NAMESPACE}.{self.name}"

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def crc64_avro(canonical: str) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of a Parsing Canonical Form, in wire order.

    fastavro returns the hex of the little-endian bytes the single-object header carries (checked
    against the Avro project's own test vectors in tests/unit/codec/test_codec.py).
    """
    return bytes.fromhex(crc64_hex(canonical, "CRC-64-AVRO"))


def parse_record_schema(raw: Any, where: str) -> dict[str, Any]:
    """Parse one self-contained record schema; any problem is a ConfigError naming `where`."""
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise ConfigError(f"{where}: must hold one Avro record schema")
    try:
        # A fresh named_schemas per file: a file may not lean on types defined in another file,
        # so a committed version's meaning can never change when some other file changes.
        parsed = parse_schema(raw, named_schemas={})
    except Exception as exc:  # fastavro raises SchemaParseException, UnknownType, ValueError...
        hint = ""
        if isinstance(exc, UnknownType):
            hint = " (records are self-contained: define nested types inline)"
        raise ConfigError(f"{where}: {type(exc).__name__}: {exc}{hint}") from exc
    assert isinstance(parsed, dict)
    return parsed


def load_version(path: Path, schema_dir: Path) -> SchemaVersion:
    rel = path.relative_to(schema_dir)
    match = _FILE_NAME.match(path.name)
    if len(rel.parts) != 2 or match is None:
        raise ConfigError(f"{rel}: schema files are named <category>/<RecordName>.v<N>.avsc")
    content = path.read_bytes().replace(b"\r\n", b"\n")  # a CRLF checkout is the same file
    try:
        raw = json.loads(content)
    except ValueError as exc:
        raise ConfigError(f"{rel}: not JSON: {exc}") from exc
    parsed = parse_record_schema(raw, str(rel))
    name = match["name"]
    if parsed["name"] != f"{NAMESPACE}.{name}":
        raise ConfigError(f"{rel}: declares {parsed['name']}, expected {NAMESPACE}.{name}")
    canonical = to_parsing_canonical_form(parsed)
    return SchemaVersion(
        name=name,
        version=int(match["version"]),
        category=rel.parts[0],
        path=path,
        raw=raw,
        parsed=parsed,
        canonical=canonical,
        fingerprint=crc64_avro(canonical),
        content_sha256=hashlib.sha256(content).hexdigest(),
    )


class SchemaCatalog:
    """Every committed version of every record name, indexed by name and by fingerprint."""

    def __init__(self, versions: Iterable[SchemaVersion]) -> None:
        by_name: dict[str, list[SchemaVersion]] = {}
        for v in versions:
            by_name.setdefault(v.name, []).append(v)
        self._by_name: dict[str, tuple[SchemaVersion, ...]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for name, found in sorted(by_name.items()):
            found.sort(key=lambda v: v.version)
            numbers = [v.version for v in found]
            if numbers != list(range(1, len(found) + 1)):
                raise ConfigError(f"{name}: versions must be 1..N without gaps, found {numbers}")
            if len({v.category for v in found}) != 1:
                raise ConfigError(f"{name}: every version must live in the same category folder")
            self._by_name[name] = tuple(found)
            for v in found:
                other = self._by_fingerprint.get(v.fingerprint)
                # Two versions of one name may share a canonical form (only docs or defaults
                # changed); decoding picks the name, so that is harmless. Across names it
                # would be a CRC-64 collision and decoding would be ambiguous.
                if other is not None and other.name != v.name:
                    raise ConfigError(f"{v.label} and {other.label} share a fingerprint")
                self._by_fingerprint.setdefault(v.fingerprint, v)

        self._names = frozenset(self._by_name)

    @classmethod
    def load(cls, schema_dir: Path) -> SchemaCatalog:
        if not schema_dir.is_dir():
            raise ConfigError(f"schema directory {schema_dir} does not exist")
        return cls(load_version(p, schema_dir) for p in sorted(schema_dir.rglob("*.avsc")))

    def names(self) -> frozenset[str]:
        return self._names

    def versions(self, name: str) -> tuple[SchemaVersion, ...]:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownSchemaError(f"no schema named {name!r}") from None

    def get(self, name: str, version: int | None = None) -> SchemaVersion:
        """The given version of `name`, or its current version when `version` is None."""
        versions = self.versions(name)
        if version is None:
            return versions[-1]
        if not 1 <= version <= len(versions):
            raise UnknownSchemaError(f"no version {version} of {name!r} (have 1..{len(versions)})")
        return versions[version - 1]

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(fingerprint)

    def __iter__(self) -> Iterator[SchemaVersion]:
        for versions in self._by_name.values():
            yield from versions
