"""The console in a real browser (Debian's headless chromium, driven by Playwright) against the
whole product: simulated provider, sandbox gateway, coordinator, executors, API, relay and
projector, on the real stack.

charge_card over 100.00 waits for a person (the approvals e2e's tools.yaml), so a run stays
in flight for as long as a test needs: its page must follow it live, its cancel and approve
buttons must act, and another tenant must not see it at all.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from runcoord.api import tenants
from runcoord.api.keys import create
from runcoord.stack.polling import wait_until
from runcoord.topics import TopicSpec
from tests.integration.e2e import SDK_WARNINGS, Stack, product_with_approvals, script

pytestmark = [pytest.mark.integration, *SDK_WARNINGS]

# Long enough for a test to open the page and act; the step budget (20 s in e2e.launch) is
# longer still, so the held call waits for the person, not for the step's deadline.
APPROVAL_BUDGET_MS = 15_000
WAIT_MS = 30_000
SLOW_MS = 1500  # within charge_card's timeout (tools.yaml): slow, never unknown


@dataclass
class World:
    stack: Stack
    base: str
    tenant: str
    approver: str  # the tenant's approver key
    plain: str  # the tenant's key without a role
    other: str  # a key of another tenant
    operator: str

    def turn(self, *calls: tuple[str, dict[str, Any]]) -> str:
        answer = httpx.post(
            f"{self.base}/v1/threads/th-{uuid.uuid4().hex[:8]}/turns",
            headers={"Authorization": f"Bearer {self.plain}", "Idempotency-Key": uuid.uuid4().hex},
            json={
                "input": "help",
                "assistant_id": self.stack.assistant_id,
                "metadata": {"sim_script": json.dumps(script(list(calls)))},
            },
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["run_id"])

    def held_turn(self) -> str:
        """A run whose charge waits for an approver."""
        return self.turn(("charge_card", {"customer_id": "C-9", "amount_cents": 25_000}))

    def projected(self, run_id: str) -> None:
        def seen() -> str | None:
            answer = httpx.get(
                f"{self.base}/v1/runs/{run_id}",
                headers={"Authorization": f"Bearer {self.plain}"},
                timeout=10,
            )
            status = answer.json().get("status")
            return None if status not in (None, "pending") else f"status {status}"

        wait_until(seen, timeout=60, what=f"{run_id} projected")

    def actions(self, run_id: str) -> list[dict[str, Any]]:
        rows = httpx.get(f"{self.stack.gateway}/_sim/audit", params={"run_id": run_id}).json()
        return list(rows["rows"])


@pytest.fixture(scope="module")
def world(
    bootstrap: str,
    pg_dsn: str,
    topic_specs: list[TopicSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("console")
    with product_with_approvals(
        bootstrap, pg_dsn, topic_specs, folder, APPROVAL_BUDGET_MS
    ) as stack:
        assert stack.api is not None
        # A charge takes a while once approved, so its page can be seen following it.
        stack.gateway_faults(
            {"seed": 1, "tools": {"charge_card": {"latency": {"rate": 1.0, "ms": SLOW_MS}}}}
        )
        tag = uuid.uuid4().hex[:8]
        tenant, other = f"ca-{tag}", f"cb-{tag}"
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            tenants.allow(conn, tenant, stack.assistant_id)
            yield World(
                stack,
                stack.api,
                tenant,
                approver=create(conn, tenant, name="alice", role="approver"),
                plain=create(conn, tenant),
                other=create(conn, other, name="mallory"),
                operator=create(conn, "ops", name="olga", role="operator"),
            )


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    ctx.set_default_timeout(WAIT_MS)
    yield ctx
    ctx.close()


def signed_in(context: BrowserContext, world: World, key: str) -> Page:
    page = context.new_page()
    page.goto(f"{world.base}/console")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/runs$"))
    return page


def test_a_wrong_key_is_refused_and_pages_need_a_session(
    context: BrowserContext, world: World
) -> None:
    page = context.new_page()
    page.goto(f"{world.base}/console/sign-in")
    page.fill("input[name=key]", "rk_nope_nope")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("not a valid API key")
    assert httpx.get(f"{world.base}/console/runs", follow_redirects=False).status_code == 303


def test_the_run_list_shows_a_run_posted_through_the_api(
    browser: Browser, context: BrowserContext, world: World
) -> None:
    run_id = world.turn(("lookup_customer", {"customer_id": "C-1"}))
    world.projected(run_id)
    page = signed_in(context, world, world.plain)
    row = page.locator(f"tr.run[data-run='{run_id}']")
    expect(row).to_be_visible()
    page.fill("input[name=q]", run_id)
    page.click(".filters button[type=submit]")
    expect(page.locator("tr.run")).to_have_count(1)
    expect(page.locator(".counts")).not_to_be_empty()

    # An operator sees every tenant's runs, with the tenant named.
    operators = browser.new_context()
    try:
        ops = signed_in(operators, world, world.operator)
        expect(ops.locator(f"tr.run[data-run='{run_id}']")).to_contain_text(world.tenant)
    finally:
        operators.close()


def test_another_tenant_sees_neither_the_run_nor_its_page(
    context: BrowserContext, world: World
) -> None:
    run_id = world.turn(("lookup_customer", {"customer_id": "C-2"}))
    world.projected(run_id)
    page = signed_in(context, world, world.other)
    expect(page.locator("h2")).to_contain_text("Runs of this tenant")
    expect(page.locator(f"tr.run[data-run='{run_id}']")).to_have_count(0)

    theirs = page.goto(f"{world.base}/console/runs/{run_id}")
    assert theirs is not None and theirs.status == 404
    shown = page.locator("main").inner_text()
    missing = page.goto(f"{world.base}/console/runs/run_{uuid.uuid4().hex}")
    assert missing is not None and missing.status == 404
    assert page.locator("main").inner_text() == shown  # exactly like a missing run


def test_the_page_follows_the_run_live_and_approve_dispatches_the_call(
    context: BrowserContext, world: World
) -> None:
    run_id = world.held_turn()
    world.projected(run_id)
    page = signed_in(context, world, world.approver)
    page.goto(f"{world.base}/console/runs/{run_id}")
    decide = page.locator("li.approval form.decide")
    expect(decide).to_be_visible()  # at once, or as soon as the request is projected
    assert world.actions(run_id) == []  # held, not dispatched

    decide.locator("input[name=reason]").fill("known customer")
    decide.locator("button[value=approve]").click()
    expect(page.locator(".notice")).to_contain_text("Decision recorded: approve")
    # From here the run moves on (decided, dispatched, acted, submitted, finished) while the
    # page stays open: its entries must appear without a reload.
    loaded = page.evaluate("window.consoleLoadedAt")
    before = page.locator("#timeline li.entry").count()
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("#timeline")).to_contain_text("gateway ACTED: charge_card")
    assert page.locator("#timeline li.entry").count() > before
    assert page.evaluate("window.consoleLoadedAt") == loaded  # followed live, not reloaded
    expect(page.locator("li.approval")).to_have_attribute("data-status", "approve")
    expect(page.locator("#timeline")).to_contain_text("gateway ACTED: charge_card")
    assert [r["tool"] for r in world.actions(run_id)] == ["charge_card"]
    expect(page.locator("form.cancel")).to_have_count(0)  # over: nothing to cancel


def test_cancel_from_the_page_ends_the_run_cancelled(context: BrowserContext, world: World) -> None:
    run_id = world.held_turn()
    world.projected(run_id)
    page = signed_in(context, world, world.plain)
    page.goto(f"{world.base}/console/runs/{run_id}")
    expect(page.locator("li.approval")).to_be_visible()
    # A key without the approver role is shown no decision buttons, and its POST is refused.
    expect(page.locator("form.decide")).to_have_count(0)
    approval_id = page.locator("li.approval").get_attribute("data-approval")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    refused = page.request.post(
        f"{world.base}/console/runs/{run_id}/approvals/{approval_id}",
        form={"csrf": csrf or "", "decision": "approve", "idempotency_key": "x"},
    )
    assert refused.status == 403
    # And a POST without the session's CSRF token is refused whoever sends it.
    forged = page.request.post(
        f"{world.base}/console/runs/{run_id}/cancel", form={"reason": "forged"}
    )
    assert forged.status == 403

    page.click("form.cancel button[type=submit]")
    expect(page.locator(".notice")).to_contain_text("Cancel requested")
    expect(page.locator("#run-status")).to_have_text("cancelled")
    assert world.stack.wait_finished({run_id}, timeout=30)[run_id][0] == "cancelled"
    assert world.actions(run_id) == []
    expect(page.locator("#timeline")).to_contain_text("cancel requested")


def test_signing_out_ends_the_session(context: BrowserContext, world: World) -> None:
    page = signed_in(context, world, world.plain)
    page.click("nav button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    page.goto(f"{world.base}/console/runs")
    expect(page).to_have_url(re.compile(r"/console/sign-in$"))
