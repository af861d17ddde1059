"""The executors report what a followed write saw (inputs.Sighting), and only on the attempt
that saw it: an outcome the ledger replays carries no sighting, since the run has moved on
since. Real SDK, the streamed Assistants adapter, the simulator."""

from __future__ import annotations

import json
import time

import pytest
from openai import AsyncOpenAI

from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.domain.model import Output
from runcoord.effects.guard import LedgerGuard
from runcoord.effects.ledger import InMemoryLedger
from runcoord.provider.executor import ProviderEffects
from runcoord.submitter.executor import Submissions

from .conftest import ASSISTANTS_MODULE, Sim
from .world import TWO_STEPS, World, assistants_world

pytestmark = ASSISTANTS_MODULE


@pytest.fixture
async def world(client: AsyncOpenAI, sim: Sim) -> World:
    return await assistants_world(client, sim, "stream")


def common(world: World) -> dict[str, str]:
    return {"run_id": "r1", "tenant": "t1", "thread_id": world.thread_id, "provider": "assistants"}


async def created(world: World, ledger: InMemoryLedger) -> inp.RunCreated:
    intent = it.CreateRunIntent(
        effect_key="ek-r1-create",
        **common(world),
        assistant_id=world.assistant_id,
        input="hi",
        metadata={"sim_script": json.dumps(TWO_STEPS)},
    )
    effects = ProviderEffects({"assistants": world.provider}, LedgerGuard(ledger, "exec-1"))
    (report,) = await effects(intent)
    assert isinstance(report, inp.RunCreated)
    return report


async def test_a_followed_create_reports_the_first_step_once(world: World) -> None:
    ledger = InMemoryLedger()
    report = await created(world, ledger)
    seen = report.seen
    assert report.status == "requires_action" and seen is not None
    assert seen.status == "requires_action" and seen.step_id is not None
    assert [c.name for c in seen.tool_calls] == ["create_ticket"]

    again = await created(world, ledger)  # redelivered: the ledger's outcome, no sighting
    assert (again.provider_run_id, again.reconciled, again.seen) == (
        report.provider_run_id,
        True,
        None,
    )


async def test_a_followed_submission_reports_the_next_step_once(world: World) -> None:
    ledger = InMemoryLedger()
    run = await created(world, ledger)
    assert run.seen is not None and run.seen.step_id is not None
    intent = it.SubmitOutputsIntent(
        effect_key="ek-r1-submit-1",
        **common(world),
        provider_run_id=run.provider_run_id,
        step_id=run.seen.step_id,
        outputs=tuple(Output(c.id, "T-1", False, "tool", "h") for c in run.seen.tool_calls),
        deadline_ms=int(time.time() * 1000) + 60_000,
    )
    submissions = Submissions({"assistants": world.provider}, LedgerGuard(ledger, "exec-1"))
    (result,) = await submissions(intent)
    assert isinstance(result, inp.SubmissionResult) and result.outcome == "submitted"
    assert result.seen is not None and result.seen.status == "requires_action"
    assert result.seen.step_id not in (None, run.seen.step_id)

    (again,) = await submissions(intent)
    assert isinstance(again, inp.SubmissionResult)
    assert (again.outcome, again.seen) == ("submitted", None)
