"""Which protocol a posted turn gets: the request's own `provider`, else providers.yaml's for
its assistant (per assistant, then its default), else auto by the provider's base URL.

Checked on what the API writes: the turn row and the StartRun in its outbox row."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from runcoord.api import tenants
from runcoord.api.app import ApiConfig, config_from, create_app
from runcoord.api.keys import create
from runcoord.codec import AvroCodec
from runcoord.codec.wire import from_record
from runcoord.config import load
from runcoord.db import migrate
from runcoord.domain.inputs import StartRun
from runcoord.kafka import TopicNames

pytestmark = pytest.mark.integration

OPENAI = "https://api.openai.com/v1"
SIMULATOR = "http://127.0.0.1:8390/v1"


@pytest.fixture
def names(unique: str) -> TopicNames:
    """Topic names of this test's own; no topic is created (nothing is relayed here)."""
    return TopicNames.with_prefix(f"t{unique}.")


class Api:
    def __init__(self, client: TestClient, key: str, tenant: str, dsn: str, inbox: str) -> None:
        self.client, self.key, self.tenant, self.dsn, self.inbox = client, key, tenant, dsn, inbox

    def post(self, assistant_id: str | None = None, provider: str | None = None) -> Any:
        body: dict[str, Any] = {"input": "refund please"}
        if assistant_id is not None:
            body["assistant_id"] = assistant_id
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                tenants.allow(conn, self.tenant, assistant_id)  # naming it needs the right
        if provider is not None:
            body["provider"] = provider
        return self.client.post(
            f"/v1/threads/th-{uuid.uuid4().hex[:12]}/turns",
            json=body,
            headers={"Authorization": f"Bearer {self.key}", "Idempotency-Key": uuid.uuid4().hex},
        )

    def protocol(self, assistant_id: str | None = None, provider: str | None = None) -> str:
        """Post a turn; the protocol it was recorded with (the turn row and its StartRun agree)."""
        response = self.post(assistant_id, provider)
        assert response.status_code == 202, response.text
        run_id = response.json()["run_id"]
        with psycopg.connect(self.dsn) as conn:
            turn = conn.execute(
                "SELECT assistant_id, provider FROM api_turns WHERE run_id = %s", (run_id,)
            ).fetchone()
            outbox = conn.execute(
                "SELECT payload FROM api_outbox WHERE topic = %s AND record_key = %s",
                (self.inbox, run_id.encode()),
            ).fetchall()
        assert turn is not None and len(outbox) == 1
        start = from_record(*AvroCodec().decode(bytes(outbox[0][0])))
        assert isinstance(start, StartRun)
        assert (start.run_id, start.assistant_id) == (run_id, turn[0])
        assert start.provider == turn[1]
        return start.provider


@contextmanager
def served(config: ApiConfig) -> Iterator[Api]:
    migrate(config.dsn)
    tenant = f"tp-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        key = create(conn, tenant)
    with TestClient(create_app(config)) as client:
        yield Api(client, key, tenant, config.dsn, config.topics.inbox)


@pytest.fixture
def from_env(monkeypatch: pytest.MonkeyPatch, names: TopicNames) -> Any:
    """The API configured as `runcoord api serve` configures it from the environment alone."""

    def make(provider_url: str) -> ApiConfig:
        monkeypatch.setenv("RUNCOORD_PROVIDER_URL", provider_url)
        monkeypatch.delenv("RUNCOORD_PROVIDERS_FILE", raising=False)
        return config_from(load(), topics=names)

    return make


def test_openai_base_url_means_responses_without_any_flag(from_env: Any) -> None:
    config = from_env(OPENAI)
    assert config.providers.default == "auto"  # the shipped providers.yaml was read
    with served(config) as api:
        assert api.protocol() == "responses"
        assert api.protocol("asst_other") == "responses"


def test_any_other_base_url_means_assistants(from_env: Any) -> None:
    with served(from_env(SIMULATOR)) as api:
        assert api.protocol() == "assistants"
        assert api.protocol("asst_other") == "assistants"


def test_providers_yaml_per_assistant_then_its_default_win_over_auto(
    names: TopicNames, tmp_path: Path
) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("default: auto\nassistants:\n  asst_legacy: assistants\n")
    settings = load().model_copy(update={"provider_url": OPENAI, "providers_file": path})
    with served(config_from(settings, topics=names)) as api:
        path.write_text("default: assistants\n")  # read at startup only: this changes nothing
        assert api.protocol("asst_legacy") == "assistants"  # the file, for this assistant
        assert api.protocol("asst_new") == "responses"  # auto, by the base URL

    path.write_text("default: responses\nassistants:\n  asst_legacy: assistants\n")
    settings = settings.model_copy(update={"provider_url": SIMULATOR})
    with served(config_from(settings, topics=names)) as api:
        assert api.protocol("asst_legacy") == "assistants"  # per assistant beats the default
        assert api.protocol("asst_new") == "responses"  # the file's default beats auto


def test_a_turn_naming_its_provider_wins_over_the_file(names: TopicNames, tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("default: assistants\nassistants:\n  asst_billing: responses\n")
    settings = load().model_copy(update={"provider_url": OPENAI, "providers_file": path})
    with served(config_from(settings, topics=names)) as api:
        assert api.protocol("asst_billing") == "responses"
        assert api.protocol("asst_billing", provider="assistants") == "assistants"
        assert api.protocol("asst_new") == "assistants"
        assert api.protocol("asst_new", provider="responses") == "responses"
        refused = api.post("asst_new", provider="threads")
        assert refused.status_code == 422, refused.text
