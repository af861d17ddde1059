"""What the core needs to know from configuration, as plain frozen data."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# OpenAI's limit on one tool output; the registry may set a lower one per tool.
MAX_OUTPUT_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class ArgumentCondition:
    """A condition on one top-level argument of a call: ``above`` (a number greater than),
    or ``equals``. An argument that is missing, or not a number for ``above``, does not hold."""

    argument: str
    above: float | None = None
    equals: Any = None

    def holds(self, arguments: Mapping[str, Any]) -> bool:
        if self.argument not in arguments:
            return False
        value = arguments[self.argument]
        if self.above is not None:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            return number and math.isfinite(value) and value > self.above
        return bool(value == self.equals)


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """When a call of a tool waits for a person's decision before it is dispatched.

    ``required`` for every tenant, unless ``tenants`` says otherwise for one; and, when
    ``when`` is given, only for calls where one of its conditions holds. Arguments that cannot
    be read (not a JSON object) need approval whenever the tenant's rule applies: fail closed.
    """

    required: bool = True
    tenants: Mapping[str, bool] = field(default_factory=dict)
    when: tuple[ArgumentCondition, ...] = ()

    def needed(self, tenant: str, arguments: str) -> bool:
        if not self.tenants.get(tenant, self.required):
            return False
        if not self.when:
            return True
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return True
        if not isinstance(parsed, dict):
            return True
        return any(c.holds(parsed) for c in self.when)


@dataclass(frozen=True, slots=True)
class ToolRule:
    name: str
    write: bool
    tenants: frozenset[str]  # "*" = every tenant
    approval: ApprovalRule | None = None

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
    # How long a call may wait for a person's approval (the run's expires_at bounds it too,
    # with the Assistants protocol). Past it the model gets "not approved in time".
    approval_budget_ms: int = 3_600_000
    # The version of the approval rules in force (the registry's hash of them): recorded with
    # each request; a decision made under another version is refused.
    approval_version: str = ""

    def needs_approval(self, tenant: str, tool: str, arguments: str) -> bool:
        rule = self.tools.get(tool)
        return (
            rule is not None
            and rule.approval is not None
            and rule.approval.needed(tenant, arguments)
        )

    def refusal(self, tenant: str, tool: str) -> str | None:
        """Why this tenant may not call this tool, or None when it may."""
        rule = self.tools.get(tool)
        if rule is None:
            return f"unknown tool {tool!r}"
        if not rule.enabled_for(tenant):
            return f"tool {tool!r} is not enabled for tenant {tenant!r}"
        return None
