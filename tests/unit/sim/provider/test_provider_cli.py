"""``runcoord sim provider``: the config file and flags reach the app uvicorn serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from runcoord.sim.cli import app
from runcoord.sim.provider.state import SimState


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    calls: dict[str, Any] = {}

    def fake_run(asgi_app: Any, **kwargs: Any) -> None:
        calls["state"] = asgi_app.state.sim
        calls.update(kwargs)

    monkeypatch.setattr(uvicorn, "run", fake_run)  # sim.provider.cli calls uvicorn.run
    return calls


def test_flags_on_top_of_the_config_file(tmp_path: Path, served: dict[str, Any]) -> None:
    config = tmp_path / "sim.yaml"
    config.write_text(
        "seed: 3\ntiming: {step_ms: 50}\nfaults:\n  endpoints:\n    create: {error_rate: 0.5}\n"
    )
    result = CliRunner().invoke(
        app,
        [
            "provider",
            "--port", "9999",
            "--config", str(config),
            "--poll-after-ms", "25",
            "--lost-rate", "0.1",
            "--lost-mode", "drop",
            "--slow-factor", "3",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    state: SimState = served["state"]
    assert (served["host"], served["port"]) == ("127.0.0.1", 9999)
    assert state.config.seed == 3
    assert (state.config.timing.step_ms, state.config.timing.poll_after_ms) == (50, 25)
    faults = state.faults.config
    assert faults.endpoints["create"].error_rate == 0.5
    assert (faults.endpoints["*"].lost_rate, faults.endpoints["*"].lost_mode) == (0.1, "drop")
    assert faults.slow_factor == 3


def test_no_faults_unless_asked(served: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["provider"])
    assert result.exit_code == 0, result.output
    assert served["state"].faults.config.endpoints == {}


def test_a_bad_fault_flag_is_refused(served: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["provider", "--error-rate", "3"])
    assert result.exit_code != 0
    assert "state" not in served
