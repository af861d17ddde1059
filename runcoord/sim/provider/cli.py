"""``runcoord sim provider``: serve the simulated OpenAI provider with uvicorn."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from runcoord import tracing
from runcoord.errors import ConfigError
from runcoord.sim.provider.app import create_app
from runcoord.sim.provider.config import SimConfig, load_config
from runcoord.sim.provider.faults import EndpointFaults, FaultConfig, parse_faults

_Opt = typer.Option


def provider(
    host: Annotated[str, _Opt(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, _Opt(help="Port to listen on.")] = 8390,
    config: Annotated[
        Path | None, _Opt("--config", help="YAML file: timing, scripts, faults, seed.")
    ] = None,
    seed: Annotated[int | None, _Opt(help="Seed for ids and fault draws.")] = None,
    step_ms: Annotated[float | None, _Opt(help="Model latency per step (ms).")] = None,
    expires_after_s: Annotated[
        float | None, _Opt(help="A run's expires_at, in seconds after its creation.")
    ] = None,
    poll_after_ms: Annotated[
        int | None, _Opt(help="The openai-poll-after-ms hint on run retrieves.")
    ] = None,
    error_rate: Annotated[
        float | None, _Opt(help="Fault, all endpoints: 5xx before applying (0..1).")
    ] = None,
    lost_rate: Annotated[
        float | None, _Opt(help="Fault, all endpoints: apply, then lose the answer (0..1).")
    ] = None,
    lost_mode: Annotated[str | None, _Opt(help="How an answer is lost: 500 or drop.")] = None,
    spike_rate: Annotated[
        float | None, _Opt(help="Fault, all endpoints: latency spike probability (0..1).")
    ] = None,
    spike_ms: Annotated[float | None, _Opt(help="Extra latency of a spike (ms).")] = None,
    stream_drop_rate: Annotated[
        float | None, _Opt(help="Fault: drop an event stream before an event (0..1).")
    ] = None,
    slow_factor: Annotated[
        float | None, _Opt(help="Multiply every simulated model latency.")
    ] = None,
    log_level: Annotated[str, _Opt(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve the simulated provider (OpenAI Assistants and Responses shapes under /v1)."""
    tracing.setup("runcoord-sim-provider")
    settings = load_config(config)
    timing = {
        key: value
        for key, value in (
            ("step_ms", step_ms),
            ("expires_after_s", expires_after_s),
            ("poll_after_ms", poll_after_ms),
        )
        if value is not None
    }
    if timing:
        settings = settings.with_timing(**timing)
    if seed is not None:
        settings = replace(settings, seed=seed)
    settings = _with_fault_flags(
        settings,
        {
            "error_rate": error_rate,
            "lost_rate": lost_rate,
            "lost_mode": lost_mode,
            "spike_rate": spike_rate,
            "spike_ms": spike_ms,
            "stream_drop_rate": stream_drop_rate,
        },
        slow_factor,
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        ws="none",
        lifespan="off",
        access_log=False,
    )


def _with_fault_flags(
    settings: SimConfig, flags: dict[str, Any], slow_factor: float | None
) -> SimConfig:
    """Flags set the "*" rule (every endpoint class), on top of the config file's."""
    given = {k: v for k, v in flags.items() if v is not None}
    if not given and slow_factor is None:
        return settings
    current = settings.faults
    star = current.endpoints.get("*", EndpointFaults())
    rule = {**{k: getattr(star, k) for k in EndpointFaults.__dataclass_fields__}, **given}
    try:
        faults = parse_faults(
            {
                "endpoints": {
                    **{k: vars(v) for k, v in current.endpoints.items()},
                    "*": rule,
                },
                "slow_factor": current.slow_factor if slow_factor is None else slow_factor,
                "window_s": current.window_s,
            }
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"fault flags: {exc}") from exc
    assert isinstance(faults, FaultConfig)
    return replace(settings, faults=faults)
