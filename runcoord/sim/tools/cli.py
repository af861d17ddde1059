"""``runcoord sim tools`` / ``runcoord sim mcp``: serve the sandbox tool gateway with uvicorn
(both serve the HTTP routes and MCP at /mcp; they differ in default port and in help)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import psycopg
import typer
import uvicorn
import yaml
from pydantic import ValidationError

from runcoord import tracing
from runcoord.config import load
from runcoord.errors import ConfigError
from runcoord.sim.tools import store
from runcoord.sim.tools.app import create_app
from runcoord.sim.tools.catalog import TOOLS
from runcoord.sim.tools.faults import FaultConfig

_Opt = typer.Option


def load_faults(path: Path | None) -> FaultConfig:
    if path is None:
        return FaultConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        config = FaultConfig.model_validate(data)
        config.check_tools(TOOLS)
    except (OSError, yaml.YAMLError, ValidationError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config


def _check_schema(dsn: str) -> None:
    """Fail at start, with the fix, rather than on the first tool call."""
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute(store.SCHEMA_READY).fetchone()
    except psycopg.OperationalError as exc:
        raise ConfigError(f"cannot reach PostgreSQL at {dsn}: {exc}") from exc
    if not (row and row[0]):
        raise ConfigError("the sandbox tables are missing: run `runcoord db migrate` first")


_Host = Annotated[str, _Opt(help="Interface to listen on.")]
_Port = Annotated[int, _Opt(help="Port to listen on.")]
_Dsn = Annotated[
    str | None, _Opt(help="PostgreSQL DSN for the audit log (default: RUNCOORD_POSTGRES_DSN).")
]
_Config = Annotated[
    Path | None, _Opt("--config", help="YAML fault config (see runcoord/sim/tools/faults.py).")
]
_PoolSize = Annotated[int, _Opt(help="PostgreSQL connections.")]
_LogLevel = Annotated[str, _Opt(help="uvicorn log level.")]


def tools(
    host: _Host = "127.0.0.1",
    port: _Port = 8391,
    dsn: _Dsn = None,
    config: _Config = None,
    pool_size: _PoolSize = 10,
    log_level: _LogLevel = "warning",
) -> None:
    """Serve the sandbox tool gateway: tools with real (audited) side effects and fault knobs."""
    _serve(host, port, dsn, config, pool_size, log_level)


def mcp(
    host: _Host = "127.0.0.1",
    port: _Port = 8392,
    dsn: _Dsn = None,
    config: _Config = None,
    pool_size: _PoolSize = 10,
    log_level: _LogLevel = "warning",
) -> None:
    """Serve the sandbox tool gateway for MCP clients: MCP (Streamable HTTP) at /mcp.

    The same tools, audit log and fault knobs as `runcoord sim tools`, with its routes too."""
    _serve(host, port, dsn, config, pool_size, log_level)


def _serve(
    host: str, port: int, dsn: str | None, config: Path | None, pool_size: int, log_level: str
) -> None:
    """One gateway app for both commands (create_app serves both transports)."""
    target = dsn or load().dsn
    try:
        tracing.setup("runcoord-gateway")
        faults = load_faults(config)
        _check_schema(target)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    uvicorn.run(
        create_app(target, faults, pool_size),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        # h11 explicitly: drop_after_act reaches into the protocol's request cycle.
        http="h11",
        ws="none",
        lifespan="on",
    )
