"""Avro codec for every record runcoord writes to Kafka, and the schema-evolution guard.

``AvroCodec`` encodes a record under the current version of its schema and decodes any
committed version, resolved to the current one. Conventions: runcoord/schemas/README.md.
"""

from runcoord.codec.avro import AvroCodec
from runcoord.codec.catalog import SchemaCatalog, SchemaVersion
from runcoord.codec.compat import check_compatibility, evolution_problems
from runcoord.codec.lock import LOCK_FILE, check_lock, update_lock

__all__ = [
    "LOCK_FILE",
    "AvroCodec",
    "SchemaCatalog",
    "SchemaVersion",
    "check_compatibility",
    "check_lock",
    "evolution_problems",
    "update_lock",
]
