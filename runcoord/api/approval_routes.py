"""The approval routes: a tenant's approval requests, and a person's decision on one.

Read from the forensics projection; decided once at the API (see approvals.py). Any key of the
tenant reads them; only a key whose role is ``approver`` decides, signing with its name.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' Annotated
# dependencies at runtime, and they name aliases local to routes().

from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from runcoord import tracing
from runcoord.api import approvals
from runcoord.api.keys import APPROVER, Key
from runcoord.api.problems import Problem
from runcoord.api.runs import iso
from runcoord.codec import AvroCodec

# runcoord.domain.ids.approval_id's format.
APPROVAL_ID_PATTERN = r"^apr_[0-9a-f]{32}$"
MAX_REASON_CHARS = 1000  # it goes back to the model with a rejection
MAX_LISTED = 500

Status = Literal["pending", "approve", "reject", "expired"]


class ApprovalOut(BaseModel):
    approval_id: str
    run_id: str
    step_id: str
    tool_call_id: str
    tool: str
    arguments_hash: str = Field(
        description="sha256 (hex) of the call's arguments: a decision is for these only."
    )
    policy_version: str = Field(description="The approval rules' version at the request.")
    deadline: str = Field(
        description="ISO 8601. Undecided by then, the call is not made and the model is told "
        "it was not approved in time."
    )
    requested_at: str
    status: Status = Field(description="pending until the coordinator records a decision.")
    reason: str | None
    approver: str | None = Field(description="The deciding key's name (else its id), or runcoord.")
    decided_at: str | None


class ApprovalDetailOut(ApprovalOut):
    arguments: str | None = Field(
        description="The call's arguments (JSON text, as the model sent them), read from the "
        "journal; null when they cannot be read now."
    )


class ApprovalList(BaseModel):
    approvals: list[ApprovalOut] = Field(description="Newest request first.")


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject"]
    reason: str = Field(
        default="",
        max_length=MAX_REASON_CHARS,
        pattern=r"^[^\x00]*$",  # PostgreSQL text holds no NUL
        description="Why; a rejection tells the model 'rejected by NAME: reason'.",
    )


class RecordedDecision(BaseModel):
    decision: Literal["approve", "reject", "expired"]
    reason: str
    approver: str
    decided_at: str | None


class DecisionOut(RecordedDecision):
    approval_id: str
    run_id: str
    status: Status = Field(
        description="The approval's status as projected now: pending until the coordinator's "
        "decision is (it may still find the decision too late: expired)."
    )
    replayed: bool = Field(description="True: this decision was recorded before.")


class DecisionConflict(BaseModel):
    detail: str
    recorded: RecordedDecision | None = Field(
        description="The decision that stands; null when there is none to show."
    )


def _out(request: approvals.Request) -> dict[str, Any]:
    return {
        "approval_id": request.approval_id,
        "run_id": request.run_id,
        "step_id": request.step_id,
        "tool_call_id": request.tool_call_id,
        "tool": request.tool,
        "arguments_hash": request.arguments_hash,
        "policy_version": request.policy_version,
        "deadline": iso(request.deadline_at),
        "requested_at": iso(request.requested_at),
        "status": request.status,
        "reason": request.reason,
        "approver": request.approver,
        "decided_at": iso(request.decided_at),
    }


def _recorded(recorded: approvals.Recorded) -> RecordedDecision:
    return RecordedDecision(
        decision=recorded.decision,  # type: ignore[arg-type]
        reason=recorded.reason,
        approver=recorded.approver,
        decided_at=iso(recorded.decided_at),
    )


def _conflict(request: approvals.Request, decided: approvals.Decided) -> JSONResponse:
    recorded = decided.recorded
    if decided.outcome == "key_reused":
        detail = "Idempotency-Key was used for a decision on another approval"
    elif recorded is None:
        detail = (
            f"run {request.run_id} is over: approval {request.approval_id} can no longer be decided"
        )
    elif recorded.decision == "expired":
        detail = f"approval {request.approval_id} expired: {recorded.reason}"
    else:
        detail = (
            f"approval {request.approval_id} was already decided: "
            f"{recorded.decision} by {recorded.approver}"
        )
    body = DecisionConflict(
        detail=detail, recorded=None if recorded is None else _recorded(recorded)
    )
    return JSONResponse(body.model_dump(), status_code=409)


def routes(
    *,
    journal: str,
    inbox: str,
    bootstrap: str,
    codec: AvroCodec,
    db: Callable[[], Iterator[Any]],
    caller: Callable[..., Key],
    errors: dict[int | str, dict[str, Any]],
) -> APIRouter:
    """The routes on ``journal``'s projection; decisions go to ``inbox`` through the outbox.
    ``db`` and ``caller`` are the app's dependencies (a pooled connection, the caller's key),
    ``errors`` its documented error answers."""
    router = APIRouter()
    Db = Annotated[Any, Depends(db, scope="function")]
    Caller = Annotated[Key, Depends(caller)]
    ApprovalId = Annotated[str, Path(pattern=APPROVAL_ID_PATTERN)]
    not_found = {
        **errors,
        404: {"model": Problem, "description": "No such approval for this tenant (yet)."},
    }

    listing = {code: answer for code, answer in errors.items() if code != 404}

    @router.get("/v1/approvals", response_model=ApprovalList, responses=listing)
    def list_approvals(
        conn: Db,
        who: Caller,
        status: Annotated[Status, Query(description="Which approvals.")] = "pending",
        limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 100,
    ) -> ApprovalList:
        found = approvals.listed(conn, journal, who.tenant, status, limit)
        return ApprovalList(approvals=[ApprovalOut(**_out(r)) for r in found])

    @router.get(
        "/v1/approvals/{approval_id}", response_model=ApprovalDetailOut, responses=not_found
    )
    def get_approval(approval_id: ApprovalId, conn: Db, who: Caller) -> ApprovalDetailOut:
        request = approvals.get(conn, journal, who.tenant, approval_id)
        if request is None:
            raise HTTPException(404, "no such approval (or not projected yet)")
        shown = approvals.arguments(conn, bootstrap, journal, request, codec)
        return ApprovalDetailOut(**_out(request), arguments=shown)

    @router.post(
        "/v1/approvals/{approval_id}",
        status_code=202,
        response_model=DecisionOut,
        responses={
            **not_found,
            200: {"model": DecisionOut, "description": "This decision was recorded before."},
            403: {"model": Problem, "description": "The API key's role is not approver."},
            409: {
                "model": DecisionConflict,
                "description": "Another decision stands (another approver's first, or expired), "
                "the run is over, or the Idempotency-Key was used on another approval.",
            },
        },
    )
    def post_decision(
        approval_id: ApprovalId,
        body: DecisionIn,
        conn: Db,
        who: Caller,
        idempotency_key: Annotated[
            str,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=255,
                description="Retry with the same key and body: the decision is made once.",
            ),
        ],
    ) -> JSONResponse:
        if who.role != APPROVER:
            raise HTTPException(
                403,
                f"this API key may not decide approvals: its role is {who.role or 'none'}, "
                f"not {APPROVER} (runcoord api keys create --role {APPROVER})",
            )
        request = approvals.get(conn, journal, who.tenant, approval_id)
        if request is None:
            raise HTTPException(
                404, "no such approval for this tenant, or not projected yet: retry shortly"
            )
        decided = approvals.decide(
            conn, request, who, body.decision, body.reason, idempotency_key, inbox, codec
        )
        tracing.annotate(
            run_id=request.run_id, approval_id=request.approval_id, outcome=decided.outcome
        )
        if decided.outcome not in ("accepted", "replayed") or decided.recorded is None:
            return _conflict(request, decided)
        replayed = decided.outcome == "replayed"
        out = DecisionOut(
            **_recorded(decided.recorded).model_dump(),
            approval_id=request.approval_id,
            run_id=request.run_id,
            status=request.status,  # type: ignore[arg-type]
            replayed=replayed,
        )
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return JSONResponse(out.model_dump(), status_code=200 if replayed else 202, headers=headers)

    return router
