"""Fixtures for the simulated provider's tests; they live in provider_harness.py."""

from provider_harness import live, live_server, sim, spec

__all__ = ["live", "live_server", "sim", "spec"]
