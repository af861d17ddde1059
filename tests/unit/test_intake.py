"""Output intake: each kind of bad answer is refused with a reason, good ones normalized."""

from __future__ import annotations

import json

import pytest

from runcoord.registry import ToolSpec
from runcoord.tools.intake import accept

SPEC = ToolSpec(
    endpoint="/tools/t",
    kind="write",
    idempotency="key",
    max_output_bytes=200,
    output_schema={"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
)
TEXT = ToolSpec(endpoint="/tools/x", kind="read", idempotency="none", max_output_bytes=64)


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
