"""Helpers and fixtures for the simulated provider's tests (conftest.py re-exports them).

A module with its own name rather than conftest.py, so ``from provider_harness import``
cannot pick up another folder's conftest.

Two ways to reach the simulator: in-process over ASGI with a manual clock (``sim``: no
waiting at all, every transition driven by ``clock.advance``), and as a real uvicorn server
on a free port (``live``) for the official ``openai`` SDK, with latencies of a few ms.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from runcoord.sim.provider.app import create_app
from runcoord.sim.provider.clock import ManualClock
from runcoord.sim.provider.config import config_from_dict
from tests.sim_server import LiveServer

if TYPE_CHECKING:
    # What starlette's TestClient answers with (httpx's successor, installed with it).
    from httpx2 import Response as TestResponse

SPEC_EXTRACT = Path(__file__).parent / "spec" / "openai-subset.json"
HEADERS = {"Authorization": "Bearer sk-test", "OpenAI-Beta": "assistants=v2"}
FAST_TIMING = {"queue_ms": 1, "step_ms": 5, "cancel_ms": 1, "poll_after_ms": 5}


# -- the spec ---------------------------------------------------------------------------


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` (which this 3.1 spec still uses) as JSON Schema."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    parts = node.get("allOf", [])
    if any(_only_nullable(part) for part in parts):
        # allOf: [{$ref}, {nullable: true}] means "the ref, or null".
        rest = [part for part in node.pop("allOf") if not _only_nullable(part)]
        node["anyOf"] = [{"allOf": rest}, {"type": "null"}]
    node = {key: _nullable(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def _only_nullable(part: Any) -> bool:
    return (
        isinstance(part, dict)
        and part.get("nullable") is True
        and not (set(part) - {"nullable", "description"})
    )


@dataclass
class SpecChecker:
    """Validates answers against the spec: 200s by endpoint, errors as ErrorResponse."""

    document: dict[str, Any]
    seen: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        normalized = _nullable(self.document)
        self.registry: Registry[Any] = Registry().with_resource(
            "spec", Resource.from_contents(normalized, default_specification=DRAFT202012)
        )
        self.schemas = normalized["components"]["schemas"]
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}
        self.templates = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path, method)
            for path, methods in self.document["paths"].items()
            for method in methods
        ]

    def operations(self) -> set[tuple[str, str]]:
        return {(method, path) for _, path, method in self.templates}

    def validate(self, schema_name: str, instance: Any) -> None:
        validator = self._validators.get(schema_name)
        if validator is None:
            validator = jsonschema.Draft202012Validator(
                {"$ref": f"spec#/components/schemas/{schema_name}"}, registry=self.registry
            )
            self._validators[schema_name] = validator
        validator.validate(instance)
        self._no_unknown_fields(schema_name, instance)

    def _properties(self, schema: dict[str, Any]) -> set[str]:
        # Declared properties, and the fields of the spec's own example (Response's shows
        # "store", which the API sends and the schema does not declare).
        names = set(schema.get("properties", {}))
        if isinstance(schema.get("example"), dict):
            names |= set(schema["example"])
        for part in schema.get("allOf", []):
            if "$ref" in part:
                part = self.schemas[part["$ref"].rsplit("/", 1)[1]]
            names |= self._properties(part)
        return names

    def _no_unknown_fields(self, schema_name: str, instance: Any) -> None:
        # The spec leaves objects open; a field it does not name is still a drift from it.
        schema = self.schemas[schema_name]
        declared = self._properties(schema)
        if isinstance(instance, dict) and declared:
            extra = set(instance) - declared
            assert not extra, f"{schema_name}: fields not in the spec: {sorted(extra)}"
            items_ref = schema.get("properties", {}).get("data", {}).get("items", {}).get("$ref")
            if items_ref and isinstance(instance.get("data"), list):
                for item in instance["data"]:
                    self._no_unknown_fields(items_ref.rsplit("/", 1)[1], item)

    def check(self, method: str, url_path: str, status: int, body: Any) -> None:
        path = url_path.removeprefix("/v1")
        if status >= 400:
            self.validate("ErrorResponse", body)
            return
        for pattern, template, template_method in self.templates:
            if template_method == method.lower() and pattern.match(path):
                schema_name = self.document["paths"][template][template_method].rsplit("/", 1)[1]
                if isinstance(body, dict) and body.get("data") == []:
                    # OpenAI answers first_id/last_id null on an empty page (spec: string).
                    body = {**body, "first_id": "", "last_id": ""}
                self.validate(schema_name, body)
                self.seen.add((template_method, template))
                return
        raise AssertionError(f"no spec operation for {method} {path}")


@pytest.fixture(scope="session")
def spec() -> SpecChecker:
    return SpecChecker(json.loads(SPEC_EXTRACT.read_text()))


# -- in-process, manual clock -----------------------------------------------------------


class SimClient:
    """A TestClient on /v1 with OpenAI's headers; every JSON answer is checked against the spec."""

    def __init__(self, client: TestClient, clock: ManualClock, spec: SpecChecker) -> None:
        self.http = client
        self.clock = clock
        self.spec = spec

    def call(self, method: str, path: str, json_body: Any = None, **kwargs: Any) -> TestResponse:
        headers = {**HEADERS, **kwargs.pop("headers", {})}
        response = self.http.request(
            method, "/v1" + path, json=json_body, headers=headers, **kwargs
        )
        if path.startswith("/"):
            self.spec.check(
                method, "/v1" + path.split("?")[0], response.status_code, response.json()
            )
        return response

    def ok(self, method: str, path: str, json_body: Any = None, **kwargs: Any) -> Any:
        response = self.call(method, path, json_body, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def error(self, status: int, method: str, path: str, json_body: Any = None) -> Any:
        response = self.call(method, path, json_body)
        assert response.status_code == status, response.text
        return response.json()["error"]

    def admin(self, method: str, path: str, json_body: Any = None) -> Any:
        response = self.http.request(method, "/_sim" + path, json=json_body)
        assert response.status_code == 200, response.text
        return response.json()


def make_sim(spec: SpecChecker, config: dict[str, Any] | None = None) -> Iterator[SimClient]:
    clock = ManualClock()
    settings = config_from_dict({"timing": {"queue_ms": 10, "step_ms": 100}, **(config or {})})
    with TestClient(create_app(settings, clock)) as client:
        yield SimClient(client, clock, spec)


@pytest.fixture
def sim(spec: SpecChecker) -> Iterator[SimClient]:
    yield from make_sim(spec)


# -- a real server ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    server = LiveServer(config_from_dict({"timing": FAST_TIMING, "seed": 7}))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live(live_server: LiveServer) -> LiveServer:
    """The session's server, emptied and with faults off."""
    live_server.reset()
    return live_server
