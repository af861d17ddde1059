from __future__ import annotations


def tools() -> None:
    """Serve the sandbox tool gateway (placeholder until the simulator lands)."""
    raise SystemExit("not built yet")
