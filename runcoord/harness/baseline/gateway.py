"""Variant A's tool client: retry on timeout or 5xx, a new Idempotency-Key on every attempt.

That is the HTTP layer the seeds had: the key is made per request by a middleware, so a
retry of a call that acted but answered late is a second, un-deduplicated action.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from runcoord.registry import Registry


class BlindRetryTools:
    def __init__(
        self, http: httpx.AsyncClient, base_url: str, registry: Registry, attempts: int = 3
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.registry = registry
        self.attempts = attempts
        self.calls = 0
        self.retries = 0

    async def call(
        self, name: str, arguments: str, *, tenant: str, run_id: str, tool_call_id: str
    ) -> str:
        tool = self.registry.tools.get(name)
        if tool is None:
            return json.dumps({"error": f"unknown tool {name}"})
        try:
            body: Any = json.loads(arguments or "{}")
        except ValueError:
            return json.dumps({"error": "arguments are not JSON"})
        timeout = tool.timeout_ms / 1000
        last = "no attempt"
        for attempt in range(self.attempts):
            self.calls += 1
            if attempt:
                self.retries += 1
            headers = {
                "Idempotency-Key": uuid.uuid4().hex,  # per request: the seeds' middleware
                "X-Tenant": tenant,
                "X-Run-Id": run_id,
                "X-Tool-Call-Id": tool_call_id,
            }
            try:
                answer = await self.http.post(
                    f"{self.base_url}{tool.endpoint}", json=body, headers=headers, timeout=timeout
                )
            except httpx.HTTPError as exc:  # timeouts and dropped connections: try again
                last = type(exc).__name__
                continue
            if answer.status_code >= 500:
                last = f"HTTP {answer.status_code}"
                continue
            return answer.text
        return json.dumps({"error": f"tool failed after {self.attempts} attempts: {last}"})
