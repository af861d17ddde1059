"""tools.yaml (the product's registry) against the sandbox gateway's catalog: same tools, same
idempotency, and every output the gateway gives validates against the declared schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from sim.tools.catalog import TOOLS

REGISTRY: dict[str, Any] = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "tools.yaml").read_text(encoding="utf-8")
)["tools"]

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
    entry, tool = REGISTRY[name], TOOLS[name]
    assert entry["endpoint"] == f"/tools/{name}"
    assert (entry["kind"], entry["idempotency"]) == (tool.kind, tool.idempotency)
    assert (entry["reconcile"] is not None) == tool.lookup
    assert entry["timeout_ms"] > 0 and entry["max_output_bytes"] > 0
    tenants = set(entry["tenants"])
    if tool.kind == "write":
        assert tenants <= {"t1", "t2", "t3", "t4", "t5"}, "write tools are opt-in per tenant"
    else:
        assert tenants == {"*"}


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_gateway_outputs_fit_the_declared_schema_and_size(name: str) -> None:
    entry, tool = REGISTRY[name], TOOLS[name]
    Draft202012Validator.check_schema(entry["output_schema"])
    validator = Draft202012Validator(entry["output_schema"])
    for args in EXAMPLES[name]:
        output = tool.respond(tool.args.model_validate(args), 1234567)
        validator.validate(output)
        assert len(json.dumps(output).encode()) <= entry["max_output_bytes"]
