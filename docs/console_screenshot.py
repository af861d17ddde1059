"""Take docs/console-run.png: the console's page of a run with two tool steps, one of whose
calls has an unknown outcome (post_note under the sandbox's drop_after_act fault: it acted,
the answer was lost, and a tool without idempotency is never retried).

The whole product runs as processes on the local stack (`make stack-up` first), the browser
is Debian's chromium (installed through apt when missing and root), as in the console tests:

    PYTHONPATH=. .venv/bin/python docs/console_screenshot.py [--out docs/console-run.png]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
import warnings
from pathlib import Path

import httpx
import psycopg
from playwright.sync_api import sync_playwright

from runcoord.api import tenants
from runcoord.api.keys import create
from runcoord.config import REPO_ROOT, load
from runcoord.kafka import TopicNames
from runcoord.stack.polling import wait_until
from runcoord.topics import apply as apply_topics
from runcoord.topics import delete as delete_topics
from runcoord.topics import load_specs
from tests.integration.console.conftest import ensure_chromium
from tests.integration.e2e import launch, script

TENANT = "t1"  # tools.yaml lets t1 call post_note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "console-run.png")
    out = parser.parse_args().out
    warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's Assistants notice
    settings = load()
    prefix = f"shot{uuid.uuid4().hex[:8]}."
    apply_topics(settings.bootstrap, load_specs(settings.topics_file), prefix)
    topics = TopicNames.with_prefix(prefix)
    try:
        with (
            tempfile.TemporaryDirectory() as folder,
            launch(
                settings.bootstrap, settings.dsn, topics, Path(folder), api=True, projector=True
            ) as stack,
        ):
            stack.gateway_faults(
                {"seed": 1, "tools": {"post_note": {"drop_after_act": {"rate": 1.0}}}}
            )
            with psycopg.connect(settings.dsn, autocommit=True) as conn:
                tenants.allow(conn, TENANT, stack.assistant_id)
                key = create(conn, TENANT, name="docs")
            turn = script(
                [("lookup_customer", {"customer_id": "C-42"})],
                [("post_note", {"ticket_id": "T-42", "text": "refund promised"})],
            )
            answer = httpx.post(
                f"{stack.api}/v1/threads/th-docs-{uuid.uuid4().hex[:6]}/turns",
                headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex},
                json={
                    "input": "note the refund",
                    "assistant_id": stack.assistant_id,
                    "metadata": {"sim_script": json.dumps(turn)},
                },
                timeout=30,
            )
            answer.raise_for_status()
            run_id = answer.json()["run_id"]
            stack.wait_finished({run_id}, timeout=120)

            def projected() -> str | None:
                got = httpx.get(
                    f"{stack.api}/v1/runs/{run_id}",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=10,
                ).json()
                return None if got.get("finished_at") else f"status {got.get('status')}"

            wait_until(projected, timeout=60, what=f"{run_id} projected as finished")
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=str(ensure_chromium()), args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{stack.api}/console/sign-in")
                page.fill("input[name=key]", key)
                page.click("button[type=submit]")
                page.goto(f"{stack.api}/console/runs/{run_id}")
                page.locator("#timeline li.entry details").nth(3).evaluate("d => d.open = true")
                page.screenshot(path=str(out), full_page=True)
                browser.close()
            print(f"{out}: run {run_id}")
    finally:
        delete_topics(settings.bootstrap, list(topics.all()))


if __name__ == "__main__":
    main()
