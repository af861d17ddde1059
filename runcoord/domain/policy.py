"""What the core needs to know from configuration, as plain frozen data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# OpenAI's limit on one tool output; the registry may set a lower one per tool.
MAX_OUTPUT_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class ToolRule:
    name: str
    write: bool
    tenants: frozenset[str]  # "*" = every tenant

    def enabled_for(self, tenant: str) -> bool:
        return "*" in self.tenants or tenant in self.tenants


@dataclass(frozen=True, slots=True)
class Policy:
    tools: Mapping[str, ToolRule] = field(default_factory=dict)
    # A step must be answered this long before the provider's expires_at.
    safety_margin_ms: int = 30_000
    # The longest we let one step wait for its tools, whatever expires_at says. The
    # Responses API has no expiry at all, so this is the only guard against a stall there.
    step_budget_ms: int = 60_000
    # A turn not finished by then is cancelled with a reason; past give-up we stop waiting.
    run_budget_ms: int = 600_000
    cancel_grace_ms: int = 30_000
    # An executor's watch reports at the latest after this; past it plus grace we renew it.
    watch_timeout_ms: int = 20_000
    watch_grace_ms: int = 10_000
    # A larger tool output is refused with an explicit error.
    max_output_bytes: int = MAX_OUTPUT_BYTES
    # A step's outputs all travel in one submission intent and in the run's snapshot, each
    # one Kafka record (1 MB by default): an output that would take them past this is
    # refused the same way, so the step is still answered.
    max_step_output_bytes: int = 768 * 1024

    def refusal(self, tenant: str, tool: str) -> str | None:
        """Why this tenant may not call this tool, or None when it may."""
        rule = self.tools.get(tool)
        if rule is None:
            return f"unknown tool {tool!r}"
        if not rule.enabled_for(tenant):
            return f"tool {tool!r} is not enabled for tenant {tenant!r}"
        return None
