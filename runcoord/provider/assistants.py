"""The Assistants adapter: runs, run steps and ``submit_tool_outputs`` (``client.beta.threads``).

Serves Assistants-compatible servers (OpenAI sunset its hosted Assistants API). The SDK
marks these methods deprecated and warns on each call; Python hides DeprecationWarning
outside ``__main__`` by default, and tests let exactly that warning through (see
README.md). Reconciliation is described in README.md; in short: a run carries our run id
in its metadata and is found by listing the thread's runs, and a submission is judged from
the run and its steps.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.beta.threads import Run
from openai.types.beta.threads.run_submit_tool_outputs_params import ToolOutput

from runcoord.domain.model import Output
from runcoord.hedging import gravest_first, hedged
from runcoord.provider import assistants_mapping as mapping
from runcoord.provider.errors import (
    Attempt,
    OutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    answered_then,
    first_event,
    translate,
)
from runcoord.provider.headers import IDEMPOTENCY_HEADER, poll_after_ms
from runcoord.provider.polling import BackoffPolicy, Pace, watch
from runcoord.provider.port import (
    FOLLOW_MS,
    OBSERVE_MODES,
    TERMINAL_STATUSES,
    WORKING_STATUSES,
    Observe,
    ProviderRun,
    SubmitOutcome,
    Turn,
    rejected_submission,
    run_metadata,
)
from runcoord.provider.sse import ServerSentEvent, drain, read_events

log = logging.getLogger(__name__)

_STEP_CACHE_SIZE = 4096


class AssistantsProvider:
    """The port over ``client.beta.threads.runs``. The caller owns (and closes) ``client``."""

    name = "assistants"

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        backoff: BackoffPolicy | None = None,
        page_size: int = 100,
        observe: Observe = "poll",
        follow_ms: int = FOLLOW_MS,
    ) -> None:
        """``observe="stream"``: create runs and submit outputs with ``stream: true`` and
        follow the run's events for up to ``follow_ms`` until the model stops working; the
        write then returns that state (README.md, "Following a write"). Watches poll in
        both modes: the Assistants API streams no run but from a write."""
        if observe not in OBSERVE_MODES:
            raise ValueError(f"observe must be one of {OBSERVE_MODES}, not {observe!r}")
        self.observe = observe
        self._follow_s = follow_ms / 1000
        self._read = client
        # Writes are sent once: the SDK's own retry of a lost write would be a blind resend.
        # Whether to send again is decided after reconciling, by the executor.
        self._write = client.with_options(max_retries=0)
        self._backoff = backoff or BackoffPolicy()
        self._pace = Pace()  # when a watch of a working run first polls (polling.py)
        self._page_size = page_size
        # (run id, waiting call ids) -> run step id: a step's id never changes, so one steps
        # list per step is enough however often the run is polled.
        self._steps: dict[tuple[str, frozenset[str]], str] = {}

    # -- creating ----------------------------------------------------------------------

    async def create_thread(
        self, *, conversation: str, effect_key: str, metadata: Mapping[str, str]
    ) -> str:
        attempt = Attempt("create_thread", conversation, write=True, effect_key=effect_key)
        try:
            thread = await self._write.beta.threads.create(
                metadata=dict(metadata), extra_headers={IDEMPOTENCY_HEADER: effect_key}
            )
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        return thread.id

    async def create_run(
        self,
        *,
        run_id: str,
        thread_id: str,
        assistant_id: str,
        input: str,
        effect_key: str,
        metadata: Mapping[str, str] | None = None,
        after_unknown_outcome: bool = False,
    ) -> tuple[ProviderRun, bool]:
        # Look first whenever an earlier attempt may have sent: the ledger marks an effect
        # sent before the request goes out (and never clears it), so an executor that died
        # mid-call leaves after_unknown_outcome set for the next one. A first attempt needs
        # no listing; if a paused attempt wakes up and creates after all, the thread is busy
        # and the BadRequest path below finds the run.
        if after_unknown_outcome:
            found, _ = await self._find(thread_id, run_id)
            if found is not None:
                return await self._observed(found, None), True
        attempt = Attempt("create_run", thread_id, write=True, effect_key=effect_key)
        request: dict[str, Any] = {
            "assistant_id": assistant_id,
            # The input goes in with the run, atomically: no message without its run.
            "additional_messages": [{"role": "user", "content": input}],
            "metadata": run_metadata(metadata, run_id),
            "extra_headers": {IDEMPOTENCY_HEADER: effect_key},
        }
        try:
            if self.observe == "stream":
                return await self._create_streamed(thread_id, request, attempt), False
            run = await self._write.beta.threads.runs.create(thread_id, **request)
        except openai.BadRequestError as exc:
            # Another attempt may have created our run between the listing and this call
            # (a paused executor waking up); the thread then has an active run: ours.
            found, newest = await self._find(thread_id, run_id)
            if found is not None:
                return await self._observed(found, None), True
            if newest is not None and newest.status not in TERMINAL_STATUSES:
                # Someone else's run still holds the thread (an earlier turn still
                # cancelling, say): nothing was applied, and it will end by itself.
                raise ProviderUnavailable(
                    f"create_run {run_id}: thread {thread_id} is busy with run {newest.id}"
                    f" ({newest.status}): {exc.message}"
                ) from exc
            raise translate(exc, attempt) from exc
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        return mapping.to_provider_run(run, step_id=None, poll_after=None), False

    async def _create_streamed(
        self, thread_id: str, request: dict[str, Any], attempt: Attempt
    ) -> ProviderRun:
        """The create with ``stream: true``: the run from its first event, then followed."""
        async with self._write.beta.threads.runs.with_streaming_response.create(
            thread_id, stream=True, **request
        ) as raw:
            events = read_events(raw.iter_lines())
            first = await first_event(events, attempt)
            try:
                created = Run.model_validate_json(first.data)
            except ValueError as exc:  # pydantic's ValidationError is one
                raise answered_then(attempt, f"its first event is not a run: {exc}") from exc
            run = mapping.to_provider_run(created, step_id=None, poll_after=None)
            return await self._follow(events) or run

    async def _follow(self, events: AsyncIterator[ServerSentEvent]) -> ProviderRun | None:
        """A write's event stream, read until the run stops working (its first state past
        the working phase) or ``follow_ms`` passes (None). Never raises: the write was
        answered already, and a stream that breaks only leaves the run to the next watch.
        The tool_calls steps it shows go into the step cache, so the waiting step needs no
        steps list."""
        try:
            async with asyncio.timeout(self._follow_s):
                async for event in events:
                    name = event.event or ""
                    if name.startswith("thread.run.step."):
                        self._note_step(json.loads(event.data))
                    elif name in mapping.WORKING_RUN_EVENTS:
                        continue  # the run still working: its whole body is not decoded
                    elif name.startswith("thread.run."):
                        data = json.loads(event.data)
                        if data.get("status") not in WORKING_STATUSES:
                            await drain(events)
                            return await self._observed(Run.model_validate(data), None)
                    elif name == "done":
                        break
        except TimeoutError:
            pass
        except Exception as exc:  # a broken or odd stream costs the sighting, nothing else
            log.info("stopped following a run's event stream: %s: %s", type(exc).__name__, exc)
        return None

    def _note_step(self, step: dict[str, Any]) -> None:
        calls = mapping.streamed_step_calls(step)
        if calls:
            self._remember((str(step["run_id"]), calls), str(step["id"]))

    def _remember(self, key: tuple[str, frozenset[str]], step_id: str) -> None:
        if len(self._steps) >= _STEP_CACHE_SIZE:
            del self._steps[next(iter(self._steps))]
        self._steps[key] = step_id

    async def _find(self, thread_id: str, run_id: str) -> tuple[Run | None, Run | None]:
        """(our run, the thread's newest run): ours by the run id in its metadata, looked
        for newest first through every page."""
        newest: Run | None = None
        try:
            async for run in self._read.beta.threads.runs.list(
                thread_id, order="desc", limit=self._page_size
            ):
                newest = newest or run
                if mapping.ours(run, run_id):
                    return run, newest
        except openai.APIError as exc:
            raise translate(exc, Attempt("list_runs", thread_id, write=False)) from exc
        return None, newest

    # -- observing ---------------------------------------------------------------------

    async def retrieve(self, *, thread_id: str, provider_run_id: str) -> ProviderRun:
        attempt = Attempt("retrieve", thread_id, write=False, provider_run_id=provider_run_id)
        try:
            raw = await self._read.beta.threads.runs.with_raw_response.retrieve(
                provider_run_id, thread_id=thread_id
            )
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        return await self._observed(raw.parse(), poll_after_ms(raw.headers))

    async def watch(
        self,
        *,
        thread_id: str,
        provider_run_id: str,
        since_status: str,
        since_step: str | None,
        timeout_ms: int,
    ) -> tuple[ProviderRun, bool]:
        async def poll() -> ProviderRun:
            return await self.retrieve(thread_id=thread_id, provider_run_id=provider_run_id)

        return await watch(
            poll,
            since_status=since_status,
            since_step=since_step,
            timeout_ms=timeout_ms,
            policy=self._backoff,
            pace=self._pace,
        )

    async def _observed(self, run: Run, poll_after: int | None) -> ProviderRun:
        step_id = await self._waiting_step(run) if run.status == "requires_action" else None
        return mapping.to_provider_run(run, step_id=step_id, poll_after=poll_after)

    async def _waiting_step(self, run: Run) -> str:
        key = (run.id, mapping.waiting_call_ids(run))
        cached = self._steps.get(key)
        if cached is not None:
            return cached
        attempt = Attempt("list_run_steps", run.thread_id, write=False, provider_run_id=run.id)
        try:
            # The waiting step is the run's newest: the first page nearly always has it.
            async for step in self._read.beta.threads.runs.steps.list(
                run.id, thread_id=run.thread_id, order="desc", limit=20
            ):
                if mapping.is_waiting_step(run, step):
                    self._remember(key, step.id)
                    return step.id
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        # Never invent an id instead: the step id must be the same on every poll.
        raise ProviderUnavailable(
            f"run {run.id} waits on calls {sorted(key[1])} but its steps do not list them (yet)"
        )

    # -- submitting --------------------------------------------------------------------

    async def submit_outputs(
        self,
        *,
        thread_id: str,
        provider_run_id: str,
        step_id: str,
        outputs: Sequence[Output],
        effect_key: str,
        turn: Turn | None = None,  # a run keeps its assistant and metadata: nothing to restate
        unanswered: bool = False,  # nothing is read before sending: the run refuses a second set
    ) -> SubmitOutcome:
        """Hedged, unlike every other write: a run takes one set of outputs per step (it
        leaves ``requires_action`` as it takes them, and answers 400 to any later set), so
        a second request beside a slow one can never be applied twice. It answers the step
        if the first is held before the provider handles it (a latency spike), and is
        answered 400 otherwise, which reconciles to ``already_submitted``."""
        attempt = Attempt(
            "submit_outputs", thread_id, True, provider_run_id, step_id, effect_key=effect_key
        )
        tool_outputs: list[ToolOutput] = [
            {"tool_call_id": o.tool_call_id, "output": o.output} for o in outputs
        ]

        # A streamed submission's open answers, each closed once the outcome is known (two
        # can only both be open if the provider took one step's outputs twice).
        opened: list[AsyncExitStack] = []

        async def post() -> tuple[SubmitOutcome, AsyncIterator[ServerSentEvent] | None]:
            headers = {IDEMPOTENCY_HEADER: effect_key}
            runs = self._write.beta.threads.runs
            try:
                if self.observe != "stream":
                    await runs.submit_tool_outputs(
                        provider_run_id,
                        thread_id=thread_id,
                        tool_outputs=tool_outputs,
                        extra_headers=headers,
                    )
                    return SubmitOutcome("submitted"), None
                answer = AsyncExitStack()
                opened.append(answer)
                # The 200 (the outputs taken) comes before the first event.
                raw = await answer.enter_async_context(
                    runs.with_streaming_response.submit_tool_outputs(
                        provider_run_id,
                        thread_id=thread_id,
                        tool_outputs=tool_outputs,
                        stream=True,
                        extra_headers=headers,
                    )
                )
                events = read_events(raw.iter_lines())
                await first_event(events, attempt)
                return SubmitOutcome("submitted"), events
            except openai.BadRequestError as exc:
                # OpenAI answers 400 alike to a step already answered, a run that moved on,
                # and outputs that do not match the step; the run and its steps tell which.
                verdict = await rejected_submission(
                    self, exc.message, thread_id, provider_run_id, step_id, outputs
                )
                return verdict, None
            except openai.APIError as exc:
                raise translate(exc, attempt) from exc

        try:
            outcome, events = await hedged(post, self._backoff.hedge_ms, gravity=_GRAVITY)
            if events is None:
                return outcome
            return replace(outcome, seen=await self._follow(events))
        finally:
            for answer in opened:
                await answer.aclose()

    async def reconcile_submission(
        self,
        *,
        thread_id: str,
        provider_run_id: str,
        step_id: str,
        outputs: Sequence[Output],
    ) -> SubmitOutcome | None:
        run = await self._get(thread_id, provider_run_id)
        waiting = await self._waiting_step(run) if run.status == "requires_action" else None
        step = None
        if waiting != step_id:
            attempt = Attempt("retrieve_step", thread_id, False, provider_run_id, step_id)
            try:
                step = await self._read.beta.threads.runs.steps.retrieve(
                    step_id, thread_id=thread_id, run_id=provider_run_id
                )
            except openai.NotFoundError:
                step = None
            except openai.APIError as exc:
                raise translate(exc, attempt) from exc
        return mapping.submission_verdict(run, waiting, step, step_id)

    # -- cancelling --------------------------------------------------------------------

    async def cancel(self, *, thread_id: str, provider_run_id: str) -> str:
        """Cancelling twice is harmless, so after OutcomeUnknown just call cancel again."""
        attempt = Attempt("cancel", thread_id, write=True, provider_run_id=provider_run_id)
        try:
            run = await self._write.beta.threads.runs.cancel(provider_run_id, thread_id=thread_id)
        except openai.BadRequestError as exc:
            # OpenAI refuses to cancel a run that is already ending or ended: that is the answer.
            current = await self._get(thread_id, provider_run_id)
            if current.status in TERMINAL_STATUSES or current.status == "cancelling":
                return current.status
            raise translate(exc, attempt) from exc
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        return run.status

    async def _get(self, thread_id: str, provider_run_id: str) -> Run:
        try:
            return await self._read.beta.threads.runs.retrieve(provider_run_id, thread_id=thread_id)
        except openai.APIError as exc:
            attempt = Attempt("retrieve", thread_id, write=False, provider_run_id=provider_run_id)
            raise translate(exc, attempt) from exc


# When no request of a hedged submission succeeded, the one that says most: maybe applied
# (unknown: reconcile), then refused, then surely not applied (unavailable).
_GRAVITY = gravest_first(OutcomeUnknown, ProviderRejected, ProviderUnavailable)
