"""Tool-result intake: validate and normalize a tool's answer before a model sees it.

Policy (README "Tool outputs"):
- The body must be UTF-8. A tool with an ``output_schema`` must answer JSON that fits it.
- JSON is normalized (compact, keys sorted), so the same answer always has the same hash and
  a redelivered result is recognised as a duplicate.
- Size: above the tool's ``max_output_bytes`` (never above OpenAI's 512 KiB per output),
  plain text is truncated at a character boundary with a marker saying how much was cut;
  JSON is never cut (half a JSON document misleads a model worse than none): it is replaced
  by an error output naming the size, and the original goes to the dead letters.
- JSON intake cannot read is refused too: nested deeper than Python's recursion limit
  allows to parse, check against the schema or normalize (``"[" * 100000``), or holding a
  number too long to convert. Intake never raises on a tool's answer.
Anything refused becomes an explicit error output for the model plus a reason for the
dead letters; a run never waits on a bad answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jsonschema

from runcoord.domain import error_output
from runcoord.registry import MAX_OUTPUT_BYTES, ToolSpec

_MARKER = "\n[truncated: {n} more bytes]"


@dataclass(frozen=True, slots=True)
class Intake:
    output: str  # what the model will see
    is_error: bool
    rejection: str | None  # why the original was refused (for the dead letters), or None


def accept(spec: ToolSpec | None, body: bytes) -> Intake:
    limit = min(spec.max_output_bytes if spec else MAX_OUTPUT_BYTES, MAX_OUTPUT_BYTES)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _refuse("invalid_output", f"tool output is not UTF-8 ({exc.reason} at {exc.start})")
    wants_json = spec is not None and spec.output_schema is not None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if wants_json:
            return _refuse("invalid_output", f"tool output is not JSON: {exc.msg} at {exc.pos}")
        return Intake(_truncate(text, limit), False, None)
    except RecursionError:
        return _too_deep("parse")
    except ValueError as exc:  # valid JSON Python will not read: an over-long integer
        return _refuse("invalid_output", f"tool output is JSON intake cannot read: {exc}")
    if wants_json and spec is not None:
        try:
            problem = _schema_problem(spec.output_schema or {}, value)
        except RecursionError:
            return _too_deep("check against its schema")
        if problem is not None:
            return _refuse("invalid_output", f"tool output does not fit its schema: {problem}")
    try:
        normalized = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        return _too_deep("normalize")
    size = len(normalized.encode())
    if size > limit:
        return _refuse("output_too_large", f"tool output is {size} bytes; the limit is {limit}")
    return Intake(normalized, False, None)


def _schema_problem(schema: dict[str, object], value: object) -> str | None:
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message[:200]}"


def _truncate(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    room = max(0, limit - len(_MARKER.format(n=len(raw)).encode()))
    kept = raw[:room].decode("utf-8", errors="ignore")  # never split a character
    return kept + _MARKER.format(n=len(raw) - len(kept.encode()))


def _too_deep(stage: str) -> Intake:
    return _refuse(
        "invalid_output", f"tool output is JSON nested too deeply to {stage} (recursion limit)"
    )


def _refuse(kind: str, reason: str) -> Intake:
    return Intake(error_output(kind, reason), True, reason)
