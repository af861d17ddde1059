"""Output intake: each kind of bad answer is refused with a reason, good ones normalized."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runcoord.registry import ToolSpec
from runcoord.tools import intake
from runcoord.tools.intake import accept

SPEC = ToolSpec(
    endpoint="/tools/t",
    kind="write",
    idempotency="key",
    max_output_bytes=200,
    output_schema={"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
)
TEXT = ToolSpec(endpoint="/tools/x", kind="read", idempotency="none", max_output_bytes=64)
# A schema that follows the document down, as a tree-shaped output's would.
TREE = ToolSpec(
    endpoint="/tools/tree",
    kind="read",
    idempotency="none",
    max_output_bytes=100_000,
    output_schema={
        "$ref": "#/$defs/node",
        "$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
    },
)


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


@pytest.mark.parametrize(
    ("spec", "body", "reason"),
    [
        (SPEC, b"\xff\xfe", "not UTF-8"),
        (SPEC, b"{not json", "not JSON"),
        (SPEC, b'{"id": 7}', "does not fit its schema: id"),
        (SPEC, b'{"other": "x"}', "does not fit its schema"),
        (SPEC, json.dumps({"id": "x" * 500}).encode(), "bytes; the limit is 200"),
    ],
)
def test_refused_with_reason_and_explicit_error_output(
    spec: ToolSpec, body: bytes, reason: str
) -> None:
    result = accept(spec, body)
    assert result.is_error and result.rejection is not None and reason in result.rejection
    assert json.loads(result.output)["error"]["message"] == result.rejection


def test_json_is_normalized_so_equal_answers_hash_equal() -> None:
    a = accept(SPEC, b'{ "id": "T-1",  "z": 1 }')
    b = accept(SPEC, b'{"z":1,"id":"T-1"}')
    assert a.output == b.output == '{"id":"T-1","z":1}' and not a.is_error


def test_long_text_is_truncated_at_a_character_boundary_with_a_marker() -> None:
    result = accept(TEXT, ("é" * 100).encode())
    assert not result.is_error and result.rejection is None
    assert len(result.output.encode()) <= 64
    assert result.output.startswith("é") and "[truncated:" in result.output


# -- answers intake cannot read: refused, never raised ---------------------------------


def refused_as_invalid(spec: ToolSpec | None, body: bytes, reason: str) -> None:
    result = accept(spec, body)
    assert result.is_error and result.rejection is not None, result
    assert reason in result.rejection, result.rejection
    error = json.loads(result.output)["error"]
    assert (error["type"], error["message"]) == ("invalid_output", result.rejection)


@pytest.mark.parametrize("spec", [SPEC, TEXT, TREE, None], ids=["schema", "text", "tree", "none"])
@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, nested(100_000), b'{"a":' * 100_000, b'{"id": ' + b"[" * 100_000],
    ids=["open-arrays", "closed-arrays", "objects", "inside-an-object"],
)
def test_json_nested_too_deeply_to_parse_is_refused(spec: ToolSpec | None, body: bytes) -> None:
    refused_as_invalid(spec, body, "nested too deeply to parse")


def test_json_nested_too_deeply_for_its_schema_check_is_refused() -> None:
    # Parsed fine (the parser's recursion is cheap), but checking it against a schema that
    # follows it down takes several Python frames per level.
    assert json.loads(nested(600)) is not None
    refused_as_invalid(TREE, nested(600), "nested too deeply to check against its schema")
    assert accept(TREE, nested(20)).output == "[" * 20 + "]" * 20, "shallow trees are fine"


def test_json_nested_too_deeply_to_normalize_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Parsing and normalizing recurse alike, so only a deeper stack at the time of the
    # second can make it fail: stand that in.
    real = json.dumps

    def dumps(value: Any, **kwargs: Any) -> str:
        if "separators" in kwargs:  # the normalization, not the error output
            raise RecursionError("maximum recursion depth exceeded while encoding a JSON object")
        return real(value, **kwargs)

    monkeypatch.setattr(intake.json, "dumps", dumps)
    refused_as_invalid(SPEC, b'{"id": "T-1"}', "nested too deeply to normalize")


@pytest.mark.parametrize("spec", [SPEC, TEXT], ids=["schema", "text"])
def test_a_number_too_long_to_read_is_refused(spec: ToolSpec) -> None:
    refused_as_invalid(spec, b'{"id": "x", "n": ' + b"7" * 5_000 + b"}", "cannot read")
