"""The tool gateway over HTTP (the sandbox's `runcoord sim tools`, or a real one alike).

A call is ``POST <base><endpoint>`` with the arguments as the JSON body and the headers
``Idempotency-Key`` (the effect key), ``X-Fencing-Token``, ``X-Tenant``, ``X-Run-Id``,
``X-Tool-Call-Id`` and ``X-Request-Deadline`` (unix ms: the tool must not act on the request
afterwards); a lookup is ``GET <base><lookup>`` (``{idempotency_key}`` = the effect
key) with ``X-Tenant``. Both are bounded by the tool's ``timeout_ms``.

What HTTP outcomes mean (tools.yaml; DESIGN.md, "Unknown outcomes of tools"):

- connect error, connect or pool timeout: the request never left: NotSent;
- any other transport error (read timeout, reset, dropped connection): OutcomeUnknown;
- 429: throttled before acting: NotSent;
- 408 ``deadline_exceeded``: the request came to act past its deadline, and did not: NotSent;
- 409 ``fenced``: the tool has seen a newer fencing token for this key, and did not act:
  ToolFenced (the caller's lease was taken over);
- 5xx: it does not say whether the tool acted before failing: OutcomeUnknown for a write
  tool, NotSent for a read tool (which never acts);
- anything else: the answer, status and body as they came.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from runcoord.registry import ToolSpec
from runcoord.tools.gateway import (
    GatewayAnswer,
    GatewayError,
    LookupAnswer,
    LookupUnavailable,
    NotSent,
    OutcomeUnknown,
    ToolFenced,
    deadline_of,
    needs_lookup,
    timeout_of,
)
from runcoord.transport import not_sent


class HttpToolGateway:
    def __init__(self, base_url: str, http: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http

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
        deadline = deadline_of(spec, timeout_s, deadline_ms, time.time())
        headers = {
            "Idempotency-Key": effect_key,
            "X-Fencing-Token": str(fencing_token),
            "X-Tenant": tenant,
            "X-Run-Id": run_id,
            "X-Tool-Call-Id": tool_call_id,
            "X-Request-Deadline": str(deadline),
        }
        try:
            response = await self.http.post(
                self.base_url + spec.endpoint,
                json=arguments,
                headers=headers,
                timeout=timeout_of(spec, timeout_s),
            )
        except httpx.TransportError as exc:
            # Only a request that never left (runcoord/transport.py) is NotSent; a read
            # timeout, a reset, a dropped connection: it may have acted.
            if not_sent(exc):
                raise NotSent(type(exc).__name__) from exc
            raise OutcomeUnknown(f"{type(exc).__name__}: {exc}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise GatewayError(f"{spec.name} at {self.base_url + spec.endpoint}: {exc!r}") from exc
        status = response.status_code
        if status == 429:
            raise NotSent("429: throttled before acting")
        if status in (408, 409):
            error = _error_of(response)
            if status == 408 and error.get("type") == "deadline_exceeded":
                raise NotSent(f"408: past its deadline, not acted on: {error.get('message')}")
            if status == 409 and error.get("type") == "fenced":
                seen = error.get("seen")
                raise ToolFenced(
                    f"{spec.name}: fencing token {fencing_token} refused: {error.get('message')}",
                    seen=seen if isinstance(seen, int) else None,
                )
        if status >= 500:
            # A 5xx does not say whether the tool acted before failing.
            if spec.write:
                raise OutcomeUnknown(f"HTTP {status}")
            raise NotSent(f"HTTP {status}")
        replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
        return GatewayAnswer(status, response.content, replayed)

    async def lookup(
        self, spec: ToolSpec, *, effect_key: str, tenant: str, timeout_s: float | None = None
    ) -> LookupAnswer:
        url = self.base_url + needs_lookup(spec).format(idempotency_key=effect_key)
        try:
            response = await self.http.get(
                url, headers={"X-Tenant": tenant}, timeout=timeout_of(spec, timeout_s)
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise LookupUnavailable(f"{spec.name} lookup: {exc}") from exc
        except httpx.InvalidURL as exc:
            raise GatewayError(f"{spec.name} lookup at {url}: {exc}") from exc
        try:
            body = response.json()
        except (ValueError, RecursionError) as exc:  # not JSON, or nested past any reader
            raise GatewayError(f"{spec.name} lookup answered no usable JSON: {exc!r}") from exc
        # Never read "no actions" into an answer that is not a lookup's: that would send.
        actions = (body.get("actions") or []) if isinstance(body, dict) else None
        if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
            raise GatewayError(
                f"{spec.name} lookup: `actions` is not a list of objects: {json.dumps(body)[:300]}"
            )
        return LookupAnswer(tuple(actions))


def _error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a refusal's JSON body, or {} (another kind of 408 or 409)."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}
