"""Cut the part of OpenAI's OpenAPI spec that the simulated provider serves.

The full spec (3 MB of YAML, MIT: ``openai-openapi.LICENSE``) is kept here gzipped,
``openai-openapi.yaml.gz``; the conformance tests read this extract instead: for each endpoint
the simulator implements, the schema of its 200 answer, and every component schema those reach
through ``$ref`` (plus ErrorResponse and the stream events the simulator sends).

    .venv/bin/python tests/unit/sim/provider/spec/extract.py [PATH/TO/openai-openapi.yaml]

Without a path it cuts from the kept spec; with one (a newer spec), gzip that file over the
kept one too. The extract records the full spec's sha256 (of the YAML, not the gzip);
``test_provider_spec.py`` compares it with the kept spec, so the two cannot drift apart.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
EXTRACT = HERE / "openai-subset.json"
SPEC = HERE / "openai-openapi.yaml.gz"

# (method, path) of every endpoint the simulator implements.
OPERATIONS: list[tuple[str, str]] = [
    ("post", "/assistants"),
    ("get", "/assistants"),
    ("get", "/assistants/{assistant_id}"),
    ("delete", "/assistants/{assistant_id}"),
    ("post", "/threads"),
    ("post", "/threads/runs"),
    ("get", "/threads/{thread_id}"),
    ("delete", "/threads/{thread_id}"),
    ("post", "/threads/{thread_id}/messages"),
    ("get", "/threads/{thread_id}/messages"),
    ("get", "/threads/{thread_id}/messages/{message_id}"),
    ("post", "/threads/{thread_id}/runs"),
    ("get", "/threads/{thread_id}/runs"),
    ("get", "/threads/{thread_id}/runs/{run_id}"),
    ("post", "/threads/{thread_id}/runs/{run_id}/cancel"),
    ("post", "/threads/{thread_id}/runs/{run_id}/submit_tool_outputs"),
    ("get", "/threads/{thread_id}/runs/{run_id}/steps"),
    ("get", "/threads/{thread_id}/runs/{run_id}/steps/{step_id}"),
    ("post", "/responses"),
    ("get", "/responses/{response_id}"),
    ("post", "/responses/{response_id}/cancel"),
    ("get", "/responses/{response_id}/input_items"),
    ("post", "/conversations"),
    ("get", "/conversations/{conversation_id}"),
    ("post", "/conversations/{conversation_id}"),
    ("delete", "/conversations/{conversation_id}"),
    ("post", "/conversations/{conversation_id}/items"),
    ("get", "/conversations/{conversation_id}/items"),
    ("get", "/conversations/{conversation_id}/items/{item_id}"),
]
# The events a background response's stream sends (GET /responses/{id}?stream=true); the
# 200's schema names only the JSON answer, so they are listed here.
STREAM_EVENTS = [
    "ResponseCreatedEvent",
    "ResponseQueuedEvent",
    "ResponseInProgressEvent",
    "ResponseOutputItemAddedEvent",
    "ResponseOutputItemDoneEvent",
    "ResponseCompletedEvent",
    "ResponseFailedEvent",
    "ResponseIncompleteEvent",
    # Assistants: what a streamed create or submission sends (run_streams.py).
    "ThreadStreamEvent",
    "RunStreamEvent",
    "RunStepStreamEvent",
    "DoneEvent",
]
EXTRA_SCHEMAS = ["ErrorResponse", *STREAM_EVENTS]


def spec_bytes(path: Path) -> bytes:
    """The spec's YAML, from a plain or a gzipped file."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if path.suffix == ".gz" else raw


def load_spec(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec: dict[str, Any] = yaml.load(spec_bytes(path), Loader=loader)
    return spec


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec["components"]["schemas"]
    paths: dict[str, dict[str, str]] = {}
    wanted: list[str] = list(EXTRA_SCHEMAS)
    for method, path in OPERATIONS:
        content = spec["paths"][path][method]["responses"]["200"]["content"]
        ref = content["application/json"]["schema"]["$ref"]
        paths.setdefault(path, {})[method] = ref
        wanted.append(ref.rsplit("/", 1)[1])
    closure: dict[str, Any] = {}
    while wanted:
        name = wanted.pop()
        if name in closure:
            continue
        closure[name] = schemas[name]
        wanted.extend(_refs(schemas[name]))
    return {
        "source": f"openai-openapi.yaml, info.version {spec['info']['version']}",
        "paths": paths,
        "components": {"schemas": dict(sorted(closure.items()))},
    }


def _refs(node: object) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.append(ref.rsplit("/", 1)[1])
        for value in node.values():
            found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(spec_bytes(path)).hexdigest()


def main(argv: list[str]) -> None:
    path = Path(argv[1]) if len(argv) > 1 else SPEC
    document = {**extract(load_spec(path)), "source_sha256": sha256(path)}
    EXTRACT.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"wrote {EXTRACT} ({EXTRACT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv)
