"""The simulator's settings: a YAML file (``--config``), then command-line flags on top.

Every fault is off unless the file or a flag turns it on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from runcoord.errors import ConfigError
from runcoord.sim.provider.faults import FaultConfig, parse_faults
from runcoord.sim.provider.scripts import EMPTY_BOOK, Script, ScriptBook, ScriptError, parse_script
from runcoord.sim.provider.timing import Timing

_TOP_KEYS = {"seed", "timing", "faults", "scripts", "assistants", "models", "records", "checks"}


@dataclass(frozen=True)
class SimConfig:
    timing: Timing = field(default_factory=Timing)
    faults: FaultConfig = field(default_factory=FaultConfig)
    scripts: ScriptBook = EMPTY_BOOK
    seed: int | None = None  # ids and fault draws repeat from one start to the next
    run_id_key: str = "run_id"  # the metadata key that carries the coordinator's run id
    require_beta_header: bool = True  # OpenAI refuses Assistants calls without it
    require_api_key: bool = True  # any bearer token will do; none is a 401, as at OpenAI

    def with_timing(self, **changes: Any) -> SimConfig:
        return replace(self, timing=replace(self.timing, **changes))


def load_config(path: Path | None) -> SimConfig:
    if path is None:
        return SimConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return config_from_dict(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def config_from_dict(data: object) -> SimConfig:
    if not isinstance(data, dict):
        raise ValueError("expected a mapping at the top level")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    timing_data = data.get("timing") or {}
    known_timing = {f.name for f in fields(Timing)}
    if set(timing_data) - known_timing:
        raise ValueError(f"timing: unknown keys {sorted(set(timing_data) - known_timing)}")
    named: dict[str, Script] = {}
    for name, script in (data.get("scripts") or {}).items():
        try:
            named[str(name)] = parse_script(script)
        except ScriptError as exc:
            raise ValueError(f"scripts.{name}: {exc}") from None
    by_assistant = {str(k): str(v) for k, v in (data.get("assistants") or {}).items()}
    by_model = {str(k): str(v) for k, v in (data.get("models") or {}).items()}
    for section, mapping in (("assistants", by_assistant), ("models", by_model)):
        for key, script_name in mapping.items():
            if script_name not in named:
                raise ValueError(f"{section}.{key}: no script named '{script_name}'")
    records = data.get("records") or {}
    checks = data.get("checks") or {}
    seed = data.get("seed")
    return SimConfig(
        timing=Timing(**timing_data),
        faults=parse_faults(data.get("faults")),
        scripts=ScriptBook(named, by_assistant, by_model),
        seed=None if seed is None else int(seed),
        run_id_key=str(records.get("run_id_key", "run_id")),
        require_beta_header=bool(checks.get("beta_header", True)),
        require_api_key=bool(checks.get("api_key", True)),
    )
