"""What the simulator saw, for tests and the harness: every run created, every submission.

``GET /_sim/records`` serves this, so a test can prove "exactly one provider run per our
run_id" (``counts.creates_by_run_id``) and "exactly one accepted submission per step"
(``counts.accepted_by_step``) from the provider's side, lost responses included.
``counts.requests`` is every /v1 request answered, by method and route (``GET
/v1/threads/{thread_id}/runs/{run_id}``): what a client's polling costs the provider.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Api = Literal["assistants", "responses"]


@dataclass
class CreateRecord:
    api: Api
    id: str  # the provider's run id, or the response id
    container_id: str | None  # thread id, or conversation id
    metadata: dict[str, str]
    our_run_id: str | None  # metadata[run_id_key]
    created_at: float
    follow_up: bool = False  # a Responses follow-up (it carries outputs; see submissions)
    response_lost: str | None = None  # "500"/"drop" when the client never saw the answer


@dataclass
class SubmissionRecord:
    seq: int
    api: Api
    run_id: str  # provider run id, or the response whose function calls are answered
    container_id: str | None
    step_id: str | None  # run step id, or (Responses) the id of the response asking
    tool_call_ids: list[str]
    accepted: bool
    reason: str | None  # why it was rejected, in the words of the 4xx it got
    status_code: int
    at: float
    response_lost: str | None = None


@dataclass
class ContainerRecord:
    """A thread (Assistants) or conversation (Responses) created, and how often a request
    with the same Idempotency-Key was answered with it instead of a new one."""

    api: Api
    id: str
    metadata: dict[str, str]
    idempotency_key: str | None
    created_at: float
    replays: int = 0


@dataclass
class Records:
    run_id_key: str = "run_id"
    creates: list[CreateRecord] = field(default_factory=list)
    submissions: list[SubmissionRecord] = field(default_factory=list)
    containers: list[ContainerRecord] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)

    def created(self, record: CreateRecord) -> None:
        self.creates.append(record)

    def submitted(self, **fields: Any) -> SubmissionRecord:
        record = SubmissionRecord(seq=len(self.submissions) + 1, **fields)
        self.submissions.append(record)
        return record

    def to_json(self, now_of: Callable[[CreateRecord], dict[str, Any]]) -> dict[str, Any]:
        """``now_of`` gives what a created run or response is now (its status, ...)."""
        creates_by_run_id: Counter[str] = Counter()
        for create in self.creates:
            if create.our_run_id is not None and not create.follow_up:
                creates_by_run_id[create.our_run_id] += 1
        per_run: dict[str, Counter[str]] = {}
        accepted_by_step: Counter[str] = Counter()
        for sub in self.submissions:
            counts = per_run.setdefault(sub.run_id, Counter())
            counts["submissions"] += 1
            counts["accepted" if sub.accepted else "rejected"] += 1
            if sub.accepted and sub.step_id is not None:
                accepted_by_step[sub.step_id] += 1
        return {
            "run_id_key": self.run_id_key,
            "runs": [{**asdict(c), **now_of(c)} for c in self.creates],
            "submissions": [asdict(s) for s in self.submissions],
            "containers": [asdict(c) for c in self.containers],
            "counts": {
                "creates_by_run_id": dict(creates_by_run_id),
                "submissions_by_run": {
                    run: {k: counts[k] for k in ("submissions", "accepted", "rejected")}
                    for run, counts in per_run.items()
                },
                "accepted_by_step": dict(accepted_by_step),
                "requests": dict(sorted(self.requests.items())),
            },
        }
