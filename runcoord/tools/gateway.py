"""The tool gateway port: what the tool executor needs from the gateway that runs the tools.

Two operations. ``call`` asks a tool to act once; ``lookup`` asks a tool that offers one
(``lookup`` in tools.yaml) which actions it took for an effect key. What a call can end in,
in our own terms (no transport's exception ever leaves an adapter):

- a :class:`GatewayAnswer`: the tool answered (2xx: its result; another status: it refused
  this request, and the same request would be refused again);
- :class:`NotSent`: the request did not reach the tool, or the tool refused it before
  acting (throttled). Sending it again is safe;
- :class:`OutcomeUnknown`: the tool may have acted and nobody answered (a timeout, a reset,
  a server error that does not say whether it acted). What to do next is the executor's
  decision, from the tool's registry entry, never the adapter's;
- :class:`GatewayError`: the gateway could not be used at all (a bad URL, an answer outside
  the protocol). Not retried: the effect fails with the reason.

Adapters: :class:`runcoord.tools.http_gateway.HttpToolGateway` (the real one, over HTTP) and
:class:`runcoord.tools.memory_gateway.MemoryToolGateway` (an in-memory fake for tests). Both
pass tests/tool_gateway_contract.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from runcoord.errors import Retriable, RuncoordError
from runcoord.registry import ToolSpec


class NotSent(Retriable):
    """The request did not reach the tool, or the tool refused it before acting: resend."""


class OutcomeUnknown(Retriable):
    """The request may have reached the tool and been acted on; no answer came back."""


class LookupUnavailable(Retriable):
    """The reconcile lookup could not be asked; ask again later (never send meanwhile)."""


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
    ) -> GatewayAnswer:
        """Ask ``spec``'s tool to act on ``arguments`` (a JSON value) once.

        ``effect_key`` goes as the idempotency key (a key-honouring tool answers a repeat
        with its first result, without acting again). ``timeout_s`` bounds the attempt
        (default: the spec's ``timeout_ms``). Raises NotSent, OutcomeUnknown or GatewayError.
        """
        ...

    async def lookup(
        self, spec: ToolSpec, *, effect_key: str, tenant: str, timeout_s: float | None = None
    ) -> LookupAnswer:
        """The actions ``spec``'s tool took for ``effect_key`` in ``tenant``, from its own
        records. Raises LookupUnavailable when it cannot be asked, GatewayError when its
        answer is not a lookup's, and ValueError when ``spec`` has no lookup."""
        ...


def timeout_of(spec: ToolSpec, timeout_s: float | None) -> float:
    return spec.timeout_ms / 1000 if timeout_s is None else timeout_s


def needs_lookup(spec: ToolSpec) -> str:
    if spec.lookup is None:
        raise ValueError(f"{spec.name or spec.endpoint} has no lookup")
    return spec.lookup
