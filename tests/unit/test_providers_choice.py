from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner, Result

from runcoord import logs, metrics, tracing
from runcoord.api import app as api_app
from runcoord.api import cli as api_cli
from runcoord.api.app import ApiConfig
from runcoord.config import REPO_ROOT, load
from runcoord.errors import ConfigError
from runcoord.providers import ProviderChoice, load_choice


@pytest.mark.parametrize(
    ("choice", "assistant", "url", "expected"),
    [
        (ProviderChoice(), "a", "https://api.openai.com/v1", "responses"),
        (ProviderChoice(), "a", "http://127.0.0.1:8390/v1", "assistants"),
        (ProviderChoice("responses"), "a", "http://127.0.0.1:8390/v1", "responses"),
        (
            ProviderChoice("auto", {"a": "assistants"}),
            "a",
            "https://api.openai.com/v1",
            "assistants",
        ),
    ],
)
def test_protocol_for(choice: ProviderChoice, assistant: str, url: str, expected: str) -> None:
    assert choice.protocol_for(assistant, url) == expected


@pytest.mark.parametrize(
    ("choice", "url", "expected"),
    [
        (ProviderChoice(), "https://api.openai.com/v1", {"responses"}),
        (ProviderChoice(), "http://127.0.0.1:8390/v1", {"assistants"}),
        (ProviderChoice("responses"), "http://127.0.0.1:8390/v1", {"responses"}),
        (
            ProviderChoice("auto", {"a": "assistants"}),
            "https://api.openai.com/v1",
            {"assistants", "responses"},
        ),
    ],
)
def test_protocols_a_choice_can_give(choice: ProviderChoice, url: str, expected: set[str]) -> None:
    """What the executors build at start (runcoord/provider/cli.py, Adapters)."""
    assert choice.protocols(url) == expected


def test_a_bad_value_is_a_clear_config_error(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("default: threads\n")
    with pytest.raises(ConfigError, match="'threads' is not assistants"):
        load_choice(path)


def test_the_shipped_file_loads() -> None:
    assert load_choice(Path(__file__).parents[2] / "providers.yaml").default == "auto"


def test_a_missing_file_means_auto_for_everyone(tmp_path: Path) -> None:
    assert load_choice(tmp_path / "absent.yaml") == ProviderChoice()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- responses\n", "must be a mapping"),
        ("default: auto\nassistant:\n  a: responses\n", r"unknown keys \['assistant'\]"),
        ("assistants:\n  - a\n", "assistants: must map assistant ids"),
        ("assistants:\n  asst_a: chat\n", "assistants.asst_a: 'chat' is not assistants"),
        ("default: [auto\n", "providers.yaml"),  # not YAML
    ],
)
def test_a_wrong_shape_is_a_config_error_not_a_crash(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_choice(path)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_choice(tmp_path)  # a folder


def test_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNCOORD_PROVIDERS_FILE", raising=False)
    monkeypatch.delenv("RUNCOORD_PROVIDER_URL", raising=False)
    settings = load()
    assert settings.providers_file == REPO_ROOT / "providers.yaml"
    assert settings.provider_url == "http://127.0.0.1:8390/v1"  # `runcoord sim provider`
    monkeypatch.setenv("RUNCOORD_PROVIDER_URL", "https://api.openai.com/v1")
    assert load().provider_url == "https://api.openai.com/v1"


# --------------------------------------------------------------------------- `api serve`


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[Result, ApiConfig | None]]:
    """`runcoord api serve ARGS`: (the CLI's result, the config the app was made with)."""
    made: list[ApiConfig] = []

    def create_app(config: ApiConfig) -> object:
        made.append(config)
        return object()

    monkeypatch.setattr(api_app, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", lambda *_a, **_k: None)
    for module in (logs, tracing, metrics):
        monkeypatch.setattr(module, "setup" if module is not metrics else "serve", _nothing)
    monkeypatch.delenv("RUNCOORD_PROVIDER_URL", raising=False)
    monkeypatch.delenv("RUNCOORD_PROVIDERS_FILE", raising=False)

    def run(*args: str, env: dict[str, str] | None = None) -> tuple[Result, ApiConfig | None]:
        result = CliRunner().invoke(api_cli.app, ["serve", *args], env=env)
        return result, (made[-1] if made else None)

    return run


def _nothing(*_args: object, **_kwargs: object) -> None:
    return None


def test_serve_chooses_by_the_provider_url_and_the_file(
    serve: Callable[..., tuple[Result, ApiConfig | None]], tmp_path: Path
) -> None:
    result, config = serve()
    assert result.exit_code == 0, result.output
    assert config is not None and config.protocol_for("asst_x", None) == "assistants"

    result, config = serve(env={"RUNCOORD_PROVIDER_URL": "https://api.openai.com/v1"})
    assert result.exit_code == 0, result.output
    assert config is not None and config.protocol_for("asst_x", None) == "responses"
    assert config.protocol_for("asst_x", "assistants") == "assistants"

    path = tmp_path / "providers.yaml"
    path.write_text("assistants:\n  asst_x: assistants\n")
    result, config = serve(
        "--provider-url", "https://api.openai.com/v1", "--providers-file", str(path)
    )
    assert result.exit_code == 0, result.output
    assert config is not None
    assert (config.protocol_for("asst_x", None), config.protocol_for("asst_y", None)) == (
        "assistants",
        "responses",
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--providers-file", "{bad}"], {}, "'threads' is not assistants|responses|auto"),
        ([], {"RUNCOORD_PROVIDERS_FILE": "{bad}"}, "'threads' is not assistants|responses|auto"),
        (["--provider-url", "api.openai.com"], {}, "expected http(s)://host"),
        (["--providers-file", "{missing}"], {}, "absent.yaml: no such file"),
        ([], {"RUNCOORD_PROVIDERS_FILE": "{missing}"}, "absent.yaml: no such file"),
    ],
)
def test_serve_refuses_a_bad_choice_with_its_message(
    serve: Callable[..., tuple[Result, ApiConfig | None]],
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    bad = tmp_path / "providers.yaml"
    bad.write_text("default: threads\n")
    fill = {"{bad}": str(bad), "{missing}": str(tmp_path / "absent.yaml")}
    result, config = serve(
        *(fill.get(a, a) for a in args), env={k: fill.get(v, v) for k, v in env.items()}
    )
    assert result.exit_code == 2, result.output
    assert config is None  # nothing was started
    assert _squeezed(message) in _squeezed(result.output)  # rich boxes and wraps the message
    assert "Traceback" not in result.output


def _squeezed(text: str) -> str:
    return "".join(c for c in text if not c.isspace() and c != "│")


@pytest.mark.parametrize("kind", ["provider", "submissions"])
def test_an_executor_refuses_a_bad_choice_with_its_message(tmp_path: Path, kind: str) -> None:
    """The executors read providers.yaml too (the adapters they build at start): a bad file
    stops them with its name and the reason, not a traceback. No server is needed: the
    reclaim at start is best effort, and the file is read before Kafka is touched."""
    bad = tmp_path / "providers.yaml"
    bad.write_text("default: threads\n")
    closed = {"RUNCOORD_REDIS_PORT": "1", "RUNCOORD_POSTGRES_PORT": "1", "RUNCOORD_KAFKA_PORT": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "runcoord.cli", "executor", kind],
        env={**os.environ, **closed, "RUNCOORD_PROVIDERS_FILE": str(bad)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {bad}: default: 'threads' is not assistants|responses|auto"
    )
    assert "Traceback" not in done.stderr
