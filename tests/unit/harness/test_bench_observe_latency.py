"""bench/observe_latency.py's reading of the evidence: requires_action -> gateway, per step."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from runcoord.config import REPO_ROOT


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    # A script, not a package: loaded from its path.
    spec = importlib.util.spec_from_file_location(
        "observe_latency", REPO_ROOT / "bench" / "observe_latency.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


def response(completed_at: float | None, *calls: str) -> dict[str, object]:
    return {"id": "resp", "completed_at": completed_at, "call_ids": list(calls)}


def test_a_step_counts_from_its_completion_to_its_first_call_at_the_gateway(
    bench: ModuleType,
) -> None:
    records = {
        "runs": [
            response(100.0, "c1", "c2"),  # two calls: the earlier arrival counts
            response(200.0, "c3"),  # its call arrived twice (a retry): the first counts
            response(300.5),  # the final message: not a step
            response(None, "c9"),  # never completed: not a step yet
            response(400.0, "c4"),  # refused by policy: never reached the gateway
        ]
    }
    arrivals = [
        {"tool_call_id": "c2", "at": 100.25},
        {"tool_call_id": "c1", "at": 100.5},
        {"tool_call_id": "c3", "at": 201.0},
        {"tool_call_id": "c3", "at": 200.75},
        {"tool_call_id": None, "at": 1.0},
    ]
    latencies, unreached = bench.step_latencies(records, arrivals)
    assert latencies == [250.0, 750.0]
    assert unreached == 1


def test_the_cpu_is_the_provider_executors(bench: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "sim_records.json").write_text(json.dumps({"runs": [response(1.0, "c1")]}))
    (tmp_path / "gateway_arrivals.jsonl").write_text(json.dumps({"tool_call_id": "c1", "at": 1.1}))
    cpu = {"exec-provider-0": 2.0, "exec-provider-1": 1.0, "exec-tools-0": 9.0, "sim-provider": 4}
    (tmp_path / "system.json").write_text(json.dumps({"cpu_s": cpu}))
    result = bench.analyse(tmp_path, turns=10)
    assert (result.provider_cpu_s, result.sim_cpu_s, result.turns) == (3.0, 4, 10)
    assert result.pct(50) == pytest.approx(100.0)
