"""The tool gateway port: what the tool executor needs from the gateway that runs the tools.

Two operations. ``call`` asks a tool to act once; ``lookup`` asks a tool that offers one
(``lookup`` in tools.yaml) which actions it took for an effect key. What a call can end in,
in our own terms (no transport's exception ever leaves an adapter):

- a :class:`GatewayAnswer`: the tool answered (2xx: its result; another status: it refused
  this request, and the same request would be refused again);
- :class:`NotSent`: the request did not reach the tool, or the tool refused it before
  acting (throttled, or past its deadline). Sending it again is safe;
- :class:`OutcomeUnknown`: the tool may have acted and nobody answered (a timeout, a reset,
  a server error that does not say whether it acted). What to do next is the executor's
  decision, from the tool's registry entry, never the adapter's;
- :class:`ToolFenced`: the tool has seen a newer fencing token for this effect key and refused
  without acting. The caller's lease was taken over: it must stop and record nothing (the
  newer holder's outcome is the one of record);
- :class:`GatewayError`: the gateway could not be used at all (a bad URL, an answer outside
  the protocol). Not retried: the effect fails with the reason.

Every call carries an absolute request deadline (``deadline_ms``, unix milliseconds; by
default the send time plus the tool's ``timeout_ms``). A write tool does not act on a request
once its deadline has passed (it refuses it: NotSent); a tool reconciled by lookup MUST, since
that is what makes an empty lookup after the deadline proof that a request will never act
(tools.yaml, "Request deadlines and fencing").

Adapters: :class:`runcoord.tools.http_gateway.HttpToolGateway` (the real one, over HTTP) and
:class:`runcoord.tools.memory_gateway.MemoryToolGateway` (an in-memory fake for tests). Both
pass tests/tool_gateway_contract.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from runcoord.errors import Fatal, Retriable, RuncoordError
from runcoord.registry import ToolSpec


class NotSent(Retriable):
    """The request did not reach the tool, or the tool refused it before acting (throttled, or
    it came to act past its deadline): resend."""


class OutcomeUnknown(Retriable):
    """The request may have reached the tool and been acted on; no answer came back."""


class LookupUnavailable(Retriable):
    """The reconcile lookup could not be asked; ask again later (never send meanwhile)."""


class ToolFenced(Fatal):
    """The tool refused the request without acting: it has seen a newer fencing token for this
    effect key (another executor took the effect over). Not retried: the caller has lost its
    lease and must not record anything."""

    def __init__(self, message: str, *, seen: int | None = None) -> None:
        super().__init__(message)
        self.seen = seen  # the newest token the tool has seen, when it says


class GatewayError(RuncoordError):
    """The gateway cannot be used as the port expects (not retried: the effect fails)."""


@dataclass(frozen=True, slots=True)
class GatewayAnswer:
    """What the tool answered. ``status`` is HTTP's vocabulary whatever the adapter: below
    400 the tool's result is ``body``; 400 and above (429 and 5xx aside, which are NotSent or
    OutcomeUnknown) the tool refused this request and ``body`` says why."""

    status: int
    body: bytes
    # The tool answered from its records for a key it had already acted on (no new action).
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status < 400

    def message(self) -> str:
        """A refusal in one line: the tool's own error message if it gave one."""
        try:
            body = json.loads(self.body)
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and error.get("message"):
                return f"HTTP {self.status}: {error['message']}"
        except ValueError:
            pass
        return f"HTTP {self.status}: {self.body.decode('utf-8', errors='replace')[:300]}"


@dataclass(frozen=True, slots=True)
class LookupAnswer:
    """A tool's records of acting on one effect key, oldest first (none: it never acted).

    Each action is the tool's own record: ``response`` (what the tool answered when it
    acted), ``audit_id``, ``tenant``, ``run_id``, ``tool_call_id``, ``payload_hash``, ...
    """

    actions: tuple[Mapping[str, Any], ...]


class ToolGateway(Protocol):
    async def call(
        self,
        spec: ToolSpec,
        arguments: Any,
        *,
        effect_key: str,
        fencing_token: int,
        tenant: str,
        run_id: str,
        tool_call_id: str,
        timeout_s: float | None = None,
        deadline_ms: int | None = None,
    ) -> GatewayAnswer:
        """Ask ``spec``'s tool to act on ``arguments`` (a JSON value) once.

        ``effect_key`` goes as the idempotency key (a key-honouring tool answers a repeat
        with its first result, without acting again). ``fencing_token`` is the caller's
        claim: a write tool refuses a token lower than one it has seen for the same key
        (ToolFenced). ``timeout_s`` bounds the attempt (default: the spec's ``timeout_ms``).
        ``deadline_ms`` (unix ms; default: now + the timeout) is when the request expires: a
        write tool does not act on it afterwards (NotSent). Raises NotSent, OutcomeUnknown,
        ToolFenced or GatewayError.
        """
        ...

    async def lookup(
        self, spec: ToolSpec, *, effect_key: str, tenant: str, timeout_s: float | None = None
    ) -> LookupAnswer:
        """The actions ``spec``'s tool took for ``effect_key`` in ``tenant``, from its own
        records: every action whose request passed the tool's checks before the lookup was
        asked. An empty answer does not mean that a request still on its way will not act:
        only its deadline says that. Raises LookupUnavailable when it cannot be asked,
        GatewayError when its answer is not a lookup's, and ValueError when ``spec`` has no
        lookup."""
        ...


def timeout_of(spec: ToolSpec, timeout_s: float | None) -> float:
    return spec.timeout_ms / 1000 if timeout_s is None else timeout_s


def deadline_of(
    spec: ToolSpec, timeout_s: float | None, deadline_ms: int | None, now_s: float
) -> int:
    """The request's absolute deadline (unix ms): as given, else ``now_s`` plus the timeout."""
    if deadline_ms is not None:
        return deadline_ms
    return int(now_s * 1000 + timeout_of(spec, timeout_s) * 1000)


def needs_lookup(spec: ToolSpec) -> str:
    if spec.lookup is None:
        raise ValueError(f"{spec.name or spec.endpoint} has no lookup")
    return spec.lookup
