"""The sandbox's tools, shaped like the seeds' workload: what each takes, how it treats an
Idempotency-Key, and what it answers. Read tools answer from their arguments alone
(deterministic, no audit); write tools answer from the audit id of the action they took.

Keep in step with tools.yaml at the repo root (the product's registry of these tools).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Args(BaseModel):
    # Agents send extra fields; a real API would ignore them, and so do we (they still count
    # in the payload hash, which is taken over the body as sent).
    model_config = ConfigDict(extra="allow")


class CreateTicket(_Args):
    subject: str = Field(min_length=1)
    body: str = ""
    customer_id: str | None = None
    priority: Literal["low", "normal", "high", "urgent"] = "normal"


class SendEmail(_Args):
    to: str = Field(min_length=3)
    subject: str = Field(min_length=1)
    body: str = ""


class ChargeCard(_Args):
    customer_id: str = Field(min_length=1)
    amount_cents: int = Field(gt=0)
    currency: str = Field(default="usd", min_length=3, max_length=3)


class UpdateCrm(_Args):
    customer_id: str = Field(min_length=1)
    fields: dict[str, Any]


class PostNote(_Args):
    text: str = Field(min_length=1)
    ticket_id: str | None = None


class LookupCustomer(_Args):
    customer_id: str = Field(min_length=1)


class SearchKb(_Args):
    query: str = Field(min_length=1)
    limit: int = Field(default=3, ge=1, le=10)


class GetOrderStatus(_Args):
    order_id: str = Field(min_length=1)


def _h(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def _pick(options: tuple[str, ...], *parts: object) -> str:
    return options[int(_h(*parts)[:8], 16) % len(options)]


# ---- outputs: write tools from (args, audit id), read tools from args --------------------


def _ticket(a: Any, n: int | None) -> dict[str, Any]:
    return {"ticket_id": f"TCK-{n:07d}", "status": "open", "subject": a.subject}


def _email(a: Any, n: int | None) -> dict[str, Any]:
    return {"message_id": f"msg-{n:07d}", "status": "queued", "to": a.to}


def _charge(a: Any, n: int | None) -> dict[str, Any]:
    return {
        "charge_id": f"ch_{n:07d}",
        "status": "succeeded",
        "amount_cents": a.amount_cents,
        "currency": a.currency.lower(),
    }


def _crm(a: Any, n: int | None) -> dict[str, Any]:
    return {
        "crm_update_id": f"crm-{n:07d}",
        "customer_id": a.customer_id,
        "updated_fields": sorted(a.fields),
    }


def _note(a: Any, n: int | None) -> dict[str, Any]:
    return {"note_id": f"note-{n:07d}", "ticket_id": a.ticket_id}


def _customer(a: Any, _: int | None) -> dict[str, Any]:
    return {
        "customer_id": a.customer_id,
        "name": f"Customer {_h('name', a.customer_id)[:6]}",
        "tier": _pick(("free", "pro", "enterprise"), "tier", a.customer_id),
        "email": f"{a.customer_id}@example.test",
    }


def _kb(a: Any, _: int | None) -> dict[str, Any]:
    return {
        "results": [
            {
                "id": f"kb-{_h('kb', a.query, i)[:8]}",
                "title": f"{a.query.strip().capitalize()} ({i + 1})",
                "score": round(1.0 - i * 0.1 - int(_h("s", a.query, i)[:2], 16) / 5000, 4),
            }
            for i in range(a.limit)
        ]
    }


def _order(a: Any, _: int | None) -> dict[str, Any]:
    status = _pick(("processing", "shipped", "delivered", "cancelled"), "order", a.order_id)
    eta = 0 if status in ("delivered", "cancelled") else int(_h("eta", a.order_id)[:2], 16) % 7 + 1
    return {"order_id": a.order_id, "status": status, "eta_days": eta}


@dataclass(frozen=True)
class Tool:
    name: str
    kind: Literal["read", "write"]
    # "key": a repeat with the same Idempotency-Key returns the first answer without acting.
    # "none": every call acts; the key is only recorded (audit, and `ref` for lookups).
    idempotency: Literal["key", "none"]
    # update_crm offers GET /tools/update_crm/actions?ref=<Idempotency-Key> to reconcile.
    lookup: bool
    args: type[_Args]
    respond: Callable[[Any, int | None], dict[str, Any]]


TOOLS: Mapping[str, Tool] = {
    t.name: t
    for t in (
        Tool("create_ticket", "write", "key", False, CreateTicket, _ticket),
        Tool("send_email", "write", "key", False, SendEmail, _email),
        Tool("charge_card", "write", "key", False, ChargeCard, _charge),
        Tool("update_crm", "write", "none", True, UpdateCrm, _crm),
        Tool("post_note", "write", "none", False, PostNote, _note),
        Tool("lookup_customer", "read", "none", False, LookupCustomer, _customer),
        Tool("search_kb", "read", "none", False, SearchKb, _kb),
        Tool("get_order_status", "read", "none", False, GetOrderStatus, _order),
    )
}
