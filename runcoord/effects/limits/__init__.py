"""Backpressure: how many tool calls may be in flight per tenant and per tool."""

from runcoord.effects.limits.limiter import ConcurrencyLimiter, Limits, Permit

__all__ = ["ConcurrencyLimiter", "Limits", "Permit"]
