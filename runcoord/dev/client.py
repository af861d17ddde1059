"""`runcoord turn`: post a turn to the agent API `runcoord dev` runs, and follow its events.

The API's URL and the tenant's key come from ``dev.json``. A turn goes to
``POST /v1/threads/{thread}/turns`` with a fresh ``Idempotency-Key``; ``--follow`` reads
``GET /v1/runs/{run}/events`` (server-sent events, one per journal event, until the run ends;
a dropped connection is resumed with ``Last-Event-ID``) and then the run itself.

Without ``--thread`` the turn opens a new conversation; the API creates its provider thread.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from runcoord.errors import RuncoordError
from runcoord.stack.polling import Deadline


class TurnError(RuncoordError):
    """The API refused the turn or could not be reached; the message says which."""


@dataclass(frozen=True)
class Event:
    seq: int | None
    type: str
    data: Any


def _detail(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("detail", answer.text))
    except ValueError:
        return answer.text


class Api:
    def __init__(self, base_url: str, key: str, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def post_turn(
        self,
        thread_id: str,
        text: str,
        *,
        assistant_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"input": text}
        if assistant_id:
            body["assistant_id"] = assistant_id
        key = idempotency_key or str(uuid.uuid4())
        try:
            answer = self.http.post(
                f"/v1/threads/{thread_id}/turns", json=body, headers={"Idempotency-Key": key}
            )
        except httpx.HTTPError as exc:
            raise TurnError(f"the API at {self.http.base_url} did not answer: {exc}") from exc
        if answer.status_code != 202:
            raise TurnError(f"the API answered {answer.status_code}: {_detail(answer)}")
        return dict(answer.json())

    def run(self, run_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/v1/runs/{run_id}")
        if answer.status_code != 200:
            raise TurnError(f"GET run {run_id}: {answer.status_code} {_detail(answer)}")
        return dict(answer.json())

    def events(self, run_id: str, *, timeout: float = 600.0) -> Iterator[Event]:
        """The run's events until its stream ends (the run finished), resumed after a drop."""
        last: int | None = None
        deadline = Deadline(timeout)
        while not deadline.expired():
            headers = {} if last is None else {"Last-Event-ID": str(last)}
            try:
                with self.http.stream(
                    "GET", f"/v1/runs/{run_id}/events", headers=headers, timeout=None
                ) as answer:
                    if answer.status_code == 429:
                        time.sleep(float(answer.headers.get("Retry-After", "1")))
                        continue
                    if answer.status_code != 200:
                        answer.read()
                        raise TurnError(f"events of {run_id}: {answer.status_code} {answer.text}")
                    for event in parse_sse(answer.iter_lines()):
                        if event.seq is not None:
                            last = event.seq
                        yield event
                        if event.type == "RunFinished":
                            return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                time.sleep(0.5)  # the stream broke: resume after the last event seen
                continue
            # The stream ended without RunFinished: the run never started (its StartRun was
            # parked), or the server's stream reached its own time limit: then resume.
            if self.run(run_id).get("finished_at") is not None:
                return
        raise TurnError(f"the events of {run_id} did not end within {timeout:.0f} s")


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events from their lines: ``id``, ``event``, ``data`` (JSON when it is)."""
    seq: int | None = None
    kind, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield Event(seq, kind, value)
            seq, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue  # a comment: the keep-alive
        name, _, value_text = line.partition(":")
        value_text = value_text.removeprefix(" ")
        if name == "id" and value_text.isdigit():
            seq = int(value_text)
        elif name == "event":
            kind = value_text
        elif name == "data":
            data.append(value_text)


_REPEATED = frozenset({"run_id", "seq"})


def follow(api: Api, run_id: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Print the run's events as they come, then return the run as the API has it."""
    for event in api.events(run_id):
        shown = event.data
        if isinstance(shown, dict):  # what every event repeats is said once, above
            shown = {k: v for k, v in shown.items() if k not in _REPEATED}
        data = json.dumps(shown, separators=(",", ":"), default=str)
        if len(data) > 300:
            data = data[:300] + " …"
        say(f"{event.seq if event.seq is not None else '-':>3} {event.type:<22} {data}")
    # The stream ends at the run's last event; the projection may be a moment behind it.
    deadline = Deadline(30)
    run = api.run(run_id)
    while run.get("finished_at") is None and not deadline.expired():
        time.sleep(0.2)
        run = api.run(run_id)
    return run
