"""Builders shared by the domain tests."""

from __future__ import annotations

from runcoord.domain import Policy, ToolCall, ToolRule, decide
from runcoord.domain import inputs as inp
from runcoord.domain.decide import Decision
from runcoord.domain.model import RunState

POLICY = Policy(
    tools={
        "lookup": ToolRule("lookup", write=False, tenants=frozenset({"*"})),
        "create_ticket": ToolRule("create_ticket", write=True, tenants=frozenset({"t1"})),
    },
    safety_margin_ms=1_000,
    step_budget_ms=10_000,
    run_budget_ms=120_000,
    cancel_grace_ms=5_000,
    watch_timeout_ms=5_000,
    watch_grace_ms=2_000,
)


def start(run_id: str = "r1", tenant: str = "t1") -> inp.StartRun:
    return inp.StartRun(run_id, tenant, "th1", "asst1", "assistants", "hello", 0)


def call(i: int, name: str = "lookup") -> ToolCall:
    return ToolCall(f"call_{i}", name, "{}")


class Driver:
    """Feeds inputs to one run and keeps everything the decisions produced."""

    def __init__(self, policy: Policy = POLICY) -> None:
        self.policy = policy
        self.state: RunState | None = None
        self.now = 0
        self.decisions: list[Decision] = []

    def feed(self, message: inp.Input, *, at: int | None = None) -> Decision:
        if at is not None:
            self.now = at
        d = decide(self.state, message, now_ms=self.now, policy=self.policy)
        self.state = d.state
        self.decisions.append(d)
        return d

    @property
    def run(self) -> RunState:
        assert self.state is not None
        return self.state

    @property
    def journal(self) -> list[object]:
        return [e for d in self.decisions for e in d.events]

    def observe(
        self,
        status: str,
        step: str | None = None,
        calls: tuple[ToolCall, ...] = (),
        expires: int | None = None,
    ) -> Decision:
        return self.feed(
            inp.RunObserved(
                self.run.run_id, self.run.watch, status, step, calls, expires, None, True
            )
        )

    def created(self, status: str = "queued", expires: int | None = 600_000) -> Decision:
        return self.feed(
            inp.RunCreated(self.run.run_id, self.run.create_key, "prov_1", status, expires, False)
        )

    def result(
        self,
        call_id: str,
        output: str = '{"ok": true}',
        *,
        step: str | None = None,
        tenant: str | None = None,
    ) -> Decision:
        r = self.run
        step_id = step or (r.step.step_id if r.step else "none")
        return self.feed(
            inp.ToolResult(
                r.run_id, tenant or r.tenant, step_id, call_id, output, False, "tool", None
            )
        )
