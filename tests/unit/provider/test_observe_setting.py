"""How the provider executor watches a Responses run is one setting (RUNCOORD_OBSERVE), the
event stream unless told otherwise; a value that names no mode is refused at startup."""

from __future__ import annotations

import pydantic
import pytest

from runcoord.config import Settings
from runcoord.provider.port import OBSERVE_MODES


def test_the_event_stream_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNCOORD_OBSERVE", raising=False)
    assert Settings().observe == "stream"
    assert Settings().observe in OBSERVE_MODES


def test_the_environment_chooses_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNCOORD_OBSERVE", "poll")
    assert Settings().observe == "poll"


def test_a_mode_that_does_not_exist_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNCOORD_OBSERVE", "webhook")
    with pytest.raises(pydantic.ValidationError, match="observe"):
        Settings()
