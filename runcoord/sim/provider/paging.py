"""Cursor pages the way OpenAI lists them: ``limit``, ``order``, ``after``, ``before``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request

from runcoord.sim.provider.errors import bad_request

T = TypeVar("T")


@dataclass(frozen=True)
class PageParams:
    limit: int
    order: str
    after: str | None
    before: str | None


def page_params(request: Request, *, default_order: str = "desc") -> PageParams:
    query = request.query_params
    raw_limit = query.get("limit")
    limit = 20
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise bad_request(
                f"Invalid 'limit': expected an integer, but got '{raw_limit}' instead.",
                param="limit",
                code="invalid_type",
            ) from None
        if limit < 1:
            raise bad_request(
                f"Invalid 'limit': integer below minimum value. Expected a value >= 1, but got"
                f" {limit} instead.",
                param="limit",
                code="integer_below_min_value",
            )
        if limit > 100:
            raise bad_request(
                f"Invalid 'limit': integer above maximum value. Expected a value <= 100, but"
                f" got {limit} instead.",
                param="limit",
                code="integer_above_max_value",
            )
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise bad_request(
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
            param="order",
            code="invalid_value",
        )
    return PageParams(limit, order, query.get("after"), query.get("before"))


def paginate(
    items_oldest_first: Sequence[T], params: PageParams, key: Callable[[T], str]
) -> tuple[list[T], bool]:
    """The page and ``has_more``. ``before`` pages back towards the start of the order."""
    ordered = list(items_oldest_first)
    if params.order == "desc":
        ordered.reverse()
    ids = [key(item) for item in ordered]
    start, stop = 0, len(ordered)
    if params.after is not None:
        start = _cursor(ids, params.after, "after") + 1
    if params.before is not None:
        stop = _cursor(ids, params.before, "before")
    window = ordered[start:stop]
    if params.before is not None and params.after is None:
        # The page right before the cursor; "more" means more further back.
        page = window[-params.limit :]
        return page, len(window) > len(page)
    page = window[: params.limit]
    return page, len(window) > len(page)


def _cursor(ids: list[str], cursor: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise bad_request(
            f"Invalid '{param}': no object with id '{cursor}' in this list.", param=param
        ) from None


def list_body(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    # OpenAI answers first_id/last_id null on an empty page (the spec says string; see README).
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
