"""The agent API's request metrics: counted by route template, never by raw path."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from runcoord import metrics


def _count(route: str, method: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "runcoord_api_requests_total", {"route": route, "method": method, "status": status}
    )
    return value or 0.0


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(metrics.HttpMetrics)

    @app.get("/t/runs/{run_id}")
    def get(run_id: str) -> dict[str, str]:
        if run_id == "missing":
            raise HTTPException(404, "no such run")
        return {"run_id": run_id}

    return app


def test_requests_are_counted_by_route_template_and_status() -> None:
    client = TestClient(_app())
    ok_before = _count("/t/runs/{run_id}", "GET", "200")
    missing_before = _count("/t/runs/{run_id}", "GET", "404")
    unmatched_before = _count("unmatched", "GET", "404")
    for run_id in ("a", "b", "missing"):
        client.get(f"/t/runs/{run_id}")
    client.get("/nowhere")
    assert _count("/t/runs/{run_id}", "GET", "200") - ok_before == 2
    assert _count("/t/runs/{run_id}", "GET", "404") - missing_before == 1
    assert _count("unmatched", "GET", "404") - unmatched_before == 1
    # No series was made from a raw path (they hold ids).
    assert _count("/t/runs/a", "GET", "200") == 0
    seconds = REGISTRY.get_sample_value(
        "runcoord_api_request_seconds_count", {"route": "/t/runs/{run_id}"}
    )
    assert seconds is not None and seconds >= 3
