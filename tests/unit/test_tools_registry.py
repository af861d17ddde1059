"""tools.yaml (the product's registry) against the sandbox gateway's catalog: the loader accepts
it, the same tools with the same idempotency, arguments the gateway takes fit `parameters`, and
every output the gateway gives fits `output_schema` and `max_output_bytes`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from runcoord.registry import ToolSpec, load_registry
from runcoord.sim.tools.catalog import TOOLS

REGISTRY: dict[str, ToolSpec] = load_registry(
    Path(__file__).resolve().parents[2] / "tools.yaml"
).tools

EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "create_ticket": [{"subject": "Refund"}, {"subject": "x" * 500, "priority": "urgent"}],
    "send_email": [{"to": "a@example.test", "subject": "Hi"}],
    "charge_card": [{"customer_id": "c-1", "amount_cents": 1, "currency": "EUR"}],
    "update_crm": [{"customer_id": "c-1", "fields": {"a": 1, "b": 2}}],
    "post_note": [{"text": "n"}, {"text": "n", "ticket_id": "TCK-0000001"}],
    "lookup_customer": [{"customer_id": "c-1"}, {"customer_id": "c-2"}],
    "search_kb": [{"query": "refund"}, {"query": "refund policy " * 10, "limit": 10}],
    "get_order_status": [{"order_id": f"o-{i}"} for i in range(20)],
}


def test_the_registry_and_the_gateway_list_the_same_tools() -> None:
    assert set(REGISTRY) == set(TOOLS) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_each_entry_matches_the_gateway(name: str) -> None:
    spec, tool = REGISTRY[name], TOOLS[name]
    assert spec.endpoint == f"/tools/{name}"
    assert (spec.kind, spec.idempotency) == (tool.kind, tool.idempotency)
    assert (spec.lookup is not None) == tool.lookup
    assert spec.description
    tenants = set(spec.tenants)
    if tool.kind == "write":
        assert tenants <= {"t1", "t2", "t3", "t4", "t5"}, "write tools are opt-in per tenant"
    else:
        assert tenants == {"*"}


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_parameters_describe_what_the_gateway_accepts(name: str) -> None:
    spec, tool = REGISTRY[name], TOOLS[name]
    assert spec.parameters is not None
    Draft202012Validator.check_schema(spec.parameters)
    declared = set(spec.parameters.get("required", []))
    accepted = {f for f, info in tool.args.model_fields.items() if info.is_required()}
    assert declared == accepted
    for args in EXAMPLES[name]:
        Draft202012Validator(spec.parameters).validate(args)
        tool.args.model_validate(args)


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_gateway_outputs_fit_the_declared_schema_and_size(name: str) -> None:
    spec, tool = REGISTRY[name], TOOLS[name]
    assert spec.output_schema is not None
    Draft202012Validator.check_schema(spec.output_schema)
    validator = Draft202012Validator(spec.output_schema)
    for args in EXAMPLES[name]:
        output = tool.respond(tool.args.model_validate(args), 1234567)
        validator.validate(output)
        assert len(json.dumps(output).encode()) <= spec.max_output_bytes
