"""Fault knobs: 5xx before the change, lost answers after it, spikes, slow models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI
from provider_harness import SimClient, SpecChecker, make_sim

from runcoord.errors import ConfigError
from runcoord.sim.provider.config import load_config
from runcoord.sim.provider.middleware import ConnectionDropped
from tests.sim_server import LiveServer

pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]
ONE_CALL = json.dumps({"steps": [{"tool_calls": [{"name": "t"}]}]})


def faults(sim: SimClient, **endpoints: dict[str, Any]) -> Any:
    return sim.admin("POST", "/faults", {"endpoints": endpoints})


def thread_and_assistant(sim: SimClient) -> tuple[str, str]:
    assistant = sim.ok("POST", "/assistants", {"model": "m"})
    return sim.ok("POST", "/threads", {})["id"], assistant["id"]


def create_body(assistant_id: str, run_id: str = "ours") -> dict[str, Any]:
    return {"assistant_id": assistant_id, "metadata": {"run_id": run_id, "sim_script": ONE_CALL}}


def test_faults_are_off_by_default(sim: SimClient) -> None:
    assert sim.admin("GET", "/faults") == {
        "endpoints": {},
        "slow_factor": 1.0,
        "window_s": None,
        "fired": {},
    }


def test_a_5xx_applies_nothing(sim: SimClient) -> None:
    thread_id, assistant_id = thread_and_assistant(sim)
    faults(sim, create={"error_rate": 1, "error_status": 503})
    error = sim.error(503, "POST", f"/threads/{thread_id}/runs", create_body(assistant_id))
    assert error["type"] == "server_error"
    assert sim.admin("GET", "/records")["runs"] == []
    assert sim.ok("GET", f"/threads/{thread_id}/runs")["data"] == []
    sim.admin("POST", "/faults", {})
    sim.ok("POST", f"/threads/{thread_id}/runs", create_body(assistant_id))
    assert sim.admin("GET", "/records")["counts"]["creates_by_run_id"] == {"ours": 1}


def test_a_lost_create_was_applied(sim: SimClient) -> None:
    thread_id, assistant_id = thread_and_assistant(sim)
    faults(sim, create={"lost_rate": 1})
    error = sim.error(500, "POST", f"/threads/{thread_id}/runs", create_body(assistant_id))
    assert error["type"] == "server_error"
    records = sim.admin("GET", "/records")
    assert records["counts"]["creates_by_run_id"] == {"ours": 1}
    assert records["runs"][0]["response_lost"] == "500"
    (run,) = sim.ok("GET", f"/threads/{thread_id}/runs")["data"]
    assert run["metadata"]["run_id"] == "ours"
    assert sim.admin("GET", "/faults")["fired"] == {"create.lost": 1}


def test_a_lost_submission_was_accepted(sim: SimClient) -> None:
    thread_id, assistant_id = thread_and_assistant(sim)
    run = sim.ok("POST", f"/threads/{thread_id}/runs", create_body(assistant_id))
    sim.clock.advance(1)
    run = sim.ok("GET", f"/threads/{thread_id}/runs/{run['id']}")
    call_id = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    body = {"tool_outputs": [{"tool_call_id": call_id, "output": "x"}]}
    path = f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs"
    faults(sim, submit={"lost_rate": 1, "max_faults": 1})
    sim.error(500, "POST", path, body)
    assert sim.ok("GET", f"/threads/{thread_id}/runs/{run['id']}")["status"] != "requires_action"
    sim.error(400, "POST", path, body)  # the blind retry is refused
    subs = sim.admin("GET", "/records")["submissions"]
    assert [(s["accepted"], s["response_lost"]) for s in subs] == [(True, "500"), (False, None)]


def test_a_5xx_submission_is_recorded_as_rejected(sim: SimClient) -> None:
    thread_id, assistant_id = thread_and_assistant(sim)
    run = sim.ok("POST", f"/threads/{thread_id}/runs", create_body(assistant_id))
    faults(sim, submit={"error_rate": 1})
    body = {"tool_outputs": [{"tool_call_id": "c", "output": "x"}]}
    sim.error(500, "POST", f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs", body)
    (sub,) = sim.admin("GET", "/records")["submissions"]
    assert (sub["accepted"], sub["status_code"]) == (False, 500)


def test_a_dropped_connection_in_process(sim: SimClient) -> None:
    thread_id, assistant_id = thread_and_assistant(sim)
    faults(sim, create={"lost_rate": 1, "lost_mode": "drop"})
    with pytest.raises(ConnectionDropped):
        sim.http.post(f"/v1/threads/{thread_id}/runs", json=create_body(assistant_id), headers=_h())
    assert sim.admin("GET", "/records")["runs"][0]["response_lost"] == "drop"


def _h() -> dict[str, str]:
    from provider_harness import HEADERS

    return dict(HEADERS)


def test_spike_holds_the_request(sim: SimClient) -> None:
    faults(sim, retrieve={"spike_rate": 1, "spike_ms": 2500})
    thread_id, _ = thread_and_assistant(sim)
    before = sim.clock.now()
    sim.ok("GET", f"/threads/{thread_id}")  # the manual clock "sleeps" by moving on
    assert sim.clock.now() - before == pytest.approx(2.5)


def test_slow_factor_multiplies_model_latency(sim: SimClient) -> None:
    sim.admin("POST", "/faults", {"slow_factor": 10})
    thread_id, assistant_id = thread_and_assistant(sim)
    run = sim.ok("POST", f"/threads/{thread_id}/runs", create_body(assistant_id))
    sim.clock.advance(0.5)  # queue 10 ms and step 100 ms, times ten
    assert sim.ok("GET", f"/threads/{thread_id}/runs/{run['id']}")["status"] == "in_progress"
    sim.clock.advance(0.7)
    assert sim.ok("GET", f"/threads/{thread_id}/runs/{run['id']}")["status"] == "requires_action"


def test_max_faults_and_window(sim: SimClient) -> None:
    thread_id, _ = thread_and_assistant(sim)
    faults(sim, retrieve={"error_rate": 1, "max_faults": 2})
    statuses = [sim.call("GET", f"/threads/{thread_id}").status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    sim.admin("POST", "/faults", {"endpoints": {"*": {"error_rate": 1}}, "window_s": 10})
    assert sim.call("GET", f"/threads/{thread_id}").status_code == 500
    sim.clock.advance(10)
    assert sim.call("GET", f"/threads/{thread_id}").status_code == 200
    assert sim.admin("GET", "/faults")["endpoints"] == {}


def test_seeded_faults_repeat(sim: SimClient) -> None:
    thread_id, _ = thread_and_assistant(sim)

    def pattern() -> list[int]:
        sim.admin("POST", "/faults", {"endpoints": {"*": {"error_rate": 0.5}}, "seed": 3})
        return [sim.call("GET", f"/threads/{thread_id}").status_code for _ in range(20)]

    first = pattern()
    assert first == pattern()
    assert set(first) == {200, 500}


def test_bad_fault_settings_are_refused(sim: SimClient) -> None:
    response = sim.http.post("/_sim/faults", json={"endpoints": {"create": {"error_rate": 2}}})
    assert response.status_code == 400
    assert "error_rate" in response.json()["error"]["message"]
    response = sim.http.post("/_sim/faults", json={"endpoints": {"nope": {}}})
    assert response.status_code == 400


def test_faults_from_the_config_file(tmp_path: Path, spec: SpecChecker) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("faults:\n  endpoints:\n    retrieve: {error_rate: 1.0}\n")
    config = load_config(path)
    assert config.faults.endpoints["retrieve"].error_rate == 1.0
    path.write_text("faults:\n  endpoints:\n    retrieve: {errr_rate: 1.0}\n")
    with pytest.raises(ConfigError, match="errr_rate"):
        load_config(path)
    for sim in make_sim(spec, {"faults": {"endpoints": {"retrieve": {"error_rate": 1.0}}}}):
        thread_id, _ = thread_and_assistant(sim)
        assert sim.call("GET", f"/threads/{thread_id}").status_code == 500
        sim.admin("POST", "/faults", {})
        assert sim.call("GET", f"/threads/{thread_id}").status_code == 200
        sim.admin("POST", "/reset")  # back to the faults the simulator started with
        assert sim.admin("GET", "/faults")["endpoints"]["retrieve"]["error_rate"] == 1.0


# -- through the SDK, over a real connection ------------------------------------------------


@pytest.fixture
def sdk(live: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=live.base_url + "/v1", api_key="sk-test", max_retries=0) as client:
        yield client


def _thread(sdk: OpenAI) -> tuple[str, str]:
    assistant = sdk.beta.assistants.create(model="gpt-4o")
    return sdk.beta.threads.create().id, assistant.id


def test_sdk_sees_an_error_but_the_run_exists(sdk: OpenAI, live: LiveServer) -> None:
    thread_id, assistant_id = _thread(sdk)
    live.faults({"endpoints": {"create": {"lost_rate": 1, "max_faults": 1}}})
    with pytest.raises(openai.InternalServerError):
        sdk.beta.threads.runs.create(thread_id, assistant_id=assistant_id, metadata={"run_id": "L"})
    found = [
        r for r in sdk.beta.threads.runs.list(thread_id) if (r.metadata or {}).get("run_id") == "L"
    ]
    assert len(found) == 1
    assert live.records()["runs"][0]["response_lost"] == "500"


def test_sdk_dropped_connection(sdk: OpenAI, live: LiveServer) -> None:
    thread_id, assistant_id = _thread(sdk)
    live.faults({"endpoints": {"create": {"lost_rate": 1, "lost_mode": "drop", "max_faults": 1}}})
    with pytest.raises(openai.APIConnectionError):
        sdk.beta.threads.runs.create(thread_id, assistant_id=assistant_id, metadata={"run_id": "D"})
    assert live.records()["counts"]["creates_by_run_id"] == {"D": 1}
    assert len(sdk.beta.threads.runs.list(thread_id).data) == 1


def test_sdk_blind_retry_after_a_lost_create(live: LiveServer) -> None:
    # The SDK retries a 500 on its own; the thread's active run refuses the duplicate.
    with OpenAI(base_url=live.base_url + "/v1", api_key="sk-test", max_retries=2) as client:
        thread_id, assistant_id = _thread(client)
        live.faults({"endpoints": {"create": {"lost_rate": 1, "max_faults": 1}}})
        with pytest.raises(openai.BadRequestError, match="already has an active run"):
            client.beta.threads.runs.create(
                thread_id,
                assistant_id=assistant_id,
                metadata={"run_id": "B", "sim_script": ONE_CALL},
            )
    assert live.records()["counts"]["creates_by_run_id"] == {"B": 1}
