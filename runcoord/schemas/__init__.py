"""Avro schemas of every event, command, intent and observation (the `.avsc` files here)."""

from pathlib import Path

SCHEMA_DIR = Path(__file__).parent
