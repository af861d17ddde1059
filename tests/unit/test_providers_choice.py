from __future__ import annotations

from pathlib import Path

import pytest

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


def test_a_bad_value_is_a_clear_config_error(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("default: threads\n")
    with pytest.raises(ConfigError, match="'threads' is not assistants"):
        load_choice(path)


def test_the_shipped_file_loads() -> None:
    assert load_choice(Path(__file__).parents[2] / "providers.yaml").default == "auto"
