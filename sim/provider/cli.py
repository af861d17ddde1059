from __future__ import annotations


def provider() -> None:
    """Serve the simulated provider (placeholder until the simulator lands)."""
    raise SystemExit("not built yet")
