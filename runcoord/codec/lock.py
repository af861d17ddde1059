"""The lock file pins every committed schema version, so none can change after it shipped.

One line per version: ``<RecordName> v<N> <fingerprint> sha256:<content hash>``. The
fingerprint (CRC-64-AVRO, hex in wire byte order) is what payloads carry; the content hash
also covers what the canonical form leaves out, defaults above all, which decide how old data
resolves. `update_lock` only ever appends: it refuses to run while a locked file differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from runcoord.codec.catalog import SchemaCatalog, SchemaVersion
from runcoord.errors import ConfigError

LOCK_FILE = "fingerprints.lock"
LOCK_COMMAND = "python -m runcoord.codec lock"
_HEADER = f"""\
# Committed schema versions: <RecordName> v<N> <CRC-64-AVRO, wire order> sha256:<file content>
# Written by `{LOCK_COMMAND}`, which only adds lines. Never edit a line: a
# committed version is immutable; add v<N+1> instead (runcoord/schemas/README.md).
"""
_LINE = re.compile(
    r"^(?P<name>\w+) v(?P<version>\d+) (?P<fp>[0-9a-f]{16}) sha256:(?P<sha>[0-9a-f]{64})$"
)


@dataclass(frozen=True)
class LockEntry:
    name: str
    version: int
    fingerprint: str
    sha256: str

    @classmethod
    def of(cls, version: SchemaVersion) -> LockEntry:
        return cls(version.name, version.version, version.fingerprint.hex(), version.content_sha256)

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    def line(self) -> str:
        return f"{self.name} v{self.version} {self.fingerprint} sha256:{self.sha256}"


def read_lock(path: Path) -> dict[tuple[str, int], LockEntry]:
    if not path.exists():
        return {}
    entries: dict[tuple[str, int], LockEntry] = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        match = _LINE.match(text)
        if match is None:
            raise ConfigError(f"{path.name}:{number}: malformed line {text[:60]!r}")
        entry = LockEntry(match["name"], int(match["version"]), match["fp"], match["sha"])
        if (entry.name, entry.version) in entries:
            raise ConfigError(f"{path.name}:{number}: {entry.label} is locked twice")
        entries[entry.name, entry.version] = entry
    return entries


def changed_entries(catalog: SchemaCatalog, locked: dict[tuple[str, int], LockEntry]) -> list[str]:
    """Locked versions whose file changed or disappeared."""
    present = {(v.name, v.version): v for v in catalog}
    problems = []
    for key, entry in sorted(locked.items()):
        version = present.get(key)
        if version is None:
            problems.append(f"{entry.label}: locked but its file is gone")
        elif version.fingerprint.hex() != entry.fingerprint:
            problems.append(
                f"{entry.label}: {version.path.name} changed its wire fingerprint "
                f"({entry.fingerprint} -> {version.fingerprint.hex()}); add a new version instead"
            )
        elif version.content_sha256 != entry.sha256:
            problems.append(
                f"{entry.label}: {version.path.name} changed (docs or defaults); "
                "committed versions never change"
            )
    return problems


def check_lock(catalog: SchemaCatalog, path: Path) -> list[str]:
    """Changed, missing and unlocked versions; [] when the lock matches the catalog exactly."""
    locked = read_lock(path)
    problems = changed_entries(catalog, locked)
    for version in catalog:
        if (version.name, version.version) not in locked:
            problems.append(f"{version.label}: not in {path.name}; run `{LOCK_COMMAND}`")
    return problems


def update_lock(catalog: SchemaCatalog, path: Path) -> list[LockEntry]:
    """Add entries for new versions; refuse (ConfigError) if any locked version changed."""
    locked = read_lock(path)
    problems = changed_entries(catalog, locked)
    if problems:
        raise ConfigError(f"refusing to update {path.name}: " + "; ".join(problems))
    added = [LockEntry.of(v) for v in catalog if (v.name, v.version) not in locked]
    if added or not path.exists():
        entries = sorted([*locked.values(), *added], key=lambda e: (e.name, e.version))
        path.write_text(_HEADER + "".join(f"{e.line()}\n" for e in entries))
    return added
