"""Which run protocol a turn uses: `assistants` or `responses`, chosen per assistant.

OpenAI's hosted Assistants API is gone (sunset 2026-08-26), so a turn aimed at OpenAI's own
base URL uses the Responses API unless configured otherwise; any other base URL is taken to
be an Assistants-compatible server. ``providers.yaml`` overrides either, per assistant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import yaml

from runcoord.errors import ConfigError

Protocol = Literal["assistants", "responses"]
PROTOCOLS: frozenset[str] = frozenset({"assistants", "responses"})
OPENAI_HOSTS = frozenset({"api.openai.com"})


@dataclass(frozen=True)
class ProviderChoice:
    default: str = "auto"  # auto | assistants | responses
    assistants: Mapping[str, str] = field(default_factory=dict)

    def protocol_for(self, assistant_id: str, base_url: str) -> str:
        chosen = self.assistants.get(assistant_id) or self.default
        if chosen != "auto":
            return chosen
        host = urlparse(base_url).hostname or ""
        return "responses" if host in OPENAI_HOSTS else "assistants"

    def protocols(self, base_url: str) -> frozenset[str]:
        """Every protocol this choice can give a turn at `base_url`."""
        named = {self.protocol_for(a, base_url) for a in self.assistants}
        return frozenset({self.protocol_for("", base_url), *named})


def load_choice(path: Path) -> ProviderChoice:
    """The configured choice; a missing file means every default. Anything else that is not a
    valid choice (unreadable, not YAML, wrong shape, unknown protocol) is a ConfigError."""
    if not path.exists():
        return ProviderChoice()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping with `default` and `assistants`")
    unknown = sorted(str(k) for k in raw if k not in ("default", "assistants"))
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; only `default` and `assistants`")
    assistants = raw.get("assistants") or {}
    if not isinstance(assistants, dict):
        raise ConfigError(f"{path}: assistants: must map assistant ids to a protocol")
    default = str(raw.get("default", "auto"))
    per = {str(k): str(v) for k, v in assistants.items()}
    for where, value in [("default", default), *((f"assistants.{k}", v) for k, v in per.items())]:
        if value not in PROTOCOLS | {"auto"}:
            raise ConfigError(f"{path}: {where}: {value!r} is not assistants|responses|auto")
    return ProviderChoice(default, per)
