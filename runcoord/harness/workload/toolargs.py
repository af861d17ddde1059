"""Realistic small arguments for each sandbox tool, and the user words that lead to them.

Arguments carry a turn-specific detail (an order number, an amount, a subject line), so two
different turns rarely send the same payload by chance: a duplicate-like cluster in the
audit log then means something (a retry, a resubmission, or a repeat the trace planted).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

Args = dict[str, Any]

_TOPICS = (
    "late delivery",
    "refund request",
    "billing question",
    "password reset",
    "damaged item",
    "plan upgrade",
    "invoice copy",
    "address change",
)
_KB = (
    "return policy",
    "shipping times",
    "cancel subscription",
    "change payment method",
    "warranty claim",
    "two-factor login",
)
_FIELDS = ("plan", "phone", "address", "segment", "language", "newsletter")


def _customer(rng: random.Random) -> str:
    return f"cus_{rng.randrange(1000, 100000)}"


def _create_ticket(rng: random.Random, customer: str) -> Args:
    topic = rng.choice(_TOPICS)
    return {
        "subject": f"{topic.capitalize()} #{rng.randrange(10**5, 10**6)}",
        "body": f"Customer {customer} reports: {topic}.",
        "customer_id": customer,
        "priority": rng.choices(("low", "normal", "high", "urgent"), (2, 6, 2, 1))[0],
    }


def _send_email(rng: random.Random, customer: str) -> Args:
    topic = rng.choice(_TOPICS)
    return {
        "to": f"{customer}@example.test",
        "subject": f"About your {topic} (ref {rng.randrange(10**5, 10**6)})",
        "body": f"Hello, we are looking into your {topic}.",
    }


def _charge_card(rng: random.Random, customer: str) -> Args:
    return {
        "customer_id": customer,
        "amount_cents": rng.randrange(199, 50000),
        "currency": rng.choices(("usd", "eur", "gbp"), (6, 3, 1))[0],
    }


def _update_crm(rng: random.Random, customer: str) -> Args:
    chosen = rng.sample(_FIELDS, rng.randint(1, 2))
    return {"customer_id": customer, "fields": {f: f"v{rng.randrange(1000)}" for f in chosen}}


def _post_note(rng: random.Random, customer: str) -> Args:
    ticket = f"TCK-{rng.randrange(10**6, 10**7):07d}" if rng.random() < 0.5 else None
    return {"text": f"Spoke with {customer} about {rng.choice(_TOPICS)}.", "ticket_id": ticket}


def _lookup_customer(rng: random.Random, customer: str) -> Args:
    return {"customer_id": customer}


def _search_kb(rng: random.Random, customer: str) -> Args:
    return {"query": rng.choice(_KB), "limit": rng.randint(1, 5)}


def _get_order_status(rng: random.Random, customer: str) -> Args:
    return {"order_id": f"ORD-{rng.randrange(10**5, 10**6)}"}


FACTORIES: dict[str, Callable[[random.Random, str], Args]] = {
    "create_ticket": _create_ticket,
    "send_email": _send_email,
    "charge_card": _charge_card,
    "update_crm": _update_crm,
    "post_note": _post_note,
    "lookup_customer": _lookup_customer,
    "search_kb": _search_kb,
    "get_order_status": _get_order_status,
}

# Relative weights within each kind (reads share 55% of calls, writes 45%).
WEIGHTS: dict[str, float] = {
    "lookup_customer": 40,
    "search_kb": 35,
    "get_order_status": 25,
    "create_ticket": 30,
    "send_email": 25,
    "update_crm": 20,
    "post_note": 15,
    "charge_card": 10,
}

_ASKS = {
    "create_ticket": "Please open a ticket about my {topic}.",
    "send_email": "Can you email me a summary of my {topic}?",
    "charge_card": "Go ahead and charge my card for the {topic}.",
    "update_crm": "Update my account details, please.",
    "post_note": "Add a note about my {topic}.",
    "lookup_customer": "What do you have on file for me?",
    "search_kb": "How does your {topic} work?",
    "get_order_status": "Where is my order?",
}


def user_input(rng: random.Random, first_tool: str | None) -> str:
    if first_tool is None:
        return rng.choice(("Thanks, that is all.", "Hello!", "Who am I talking to?"))
    return _ASKS.get(first_tool, "Help me, please.").format(topic=rng.choice(_TOPICS))
