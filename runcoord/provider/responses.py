"""The Responses adapter: a turn is a chain of background responses in one conversation.

Our ``thread_id`` is the conversation id and ``assistant_id`` the model. The turn's current
response is its ``provider_run_id``; a submission is the follow-up response carrying every
``function_call_output`` of the step, which becomes the current one
(``SubmitOutcome.new_provider_run_id``). What can and cannot be reconciled after a lost
answer is set out in README.md: in short, the conversation shows whether our items reached
it, never which response carried them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

import openai
from openai import AsyncOpenAI, Omit, omit
from openai._legacy_response import LegacyAPIResponse
from openai.types.responses import FunctionToolParam, ResponseInputItemParam

from runcoord.domain.model import Output
from runcoord.hedging import hedged
from runcoord.provider import responses_mapping as mapping
from runcoord.provider.errors import (
    STREAM_BROKEN,
    Attempt,
    ProviderUnavailable,
    Unreconcilable,
    answered_then,
    first_event,
    stream_broken,
    translate,
)
from runcoord.provider.headers import IDEMPOTENCY_HEADER, poll_after_ms
from runcoord.provider.polling import BackoffPolicy, Pace, watch
from runcoord.provider.port import (
    FOLLOW_MS,
    OBSERVE_MODES,
    RUN_ID_KEY,
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
from runcoord.provider.streaming import watch_stream

log = logging.getLogger(__name__)

# A scan of a conversation's items (responses_mapping): InputScan, OutputsScan, ProgressScan.
_S = TypeVar("_S", mapping.InputScan, mapping.OutputsScan, mapping.ProgressScan)

# runcoord_step on the response that opens a turn (follow-ups name the step they answer).
OPENING_STEP = "input"
_MAX_ITEMS_PER_CREATE = 20  # OpenAI's limit on conversations.items.create
_FOLLOW_UP_ITEMS = 6  # what a scan for a step's outputs reads past them before its calls


def _page_for(calls: frozenset[str]) -> int:
    """The first page of a scan about a step with these calls. Newest first, the calls come
    right after whatever answered them (their outputs, a follow-up's items): twice the calls
    and a few more covers it, usually."""
    return 2 * len(calls) + _FOLLOW_UP_ITEMS


class ResponsesProvider:
    """The port over ``client.responses`` and ``client.conversations``.

    ``tools`` are the function tools every response of a turn offers the model. ``observe``
    is how ``watch`` follows a response: ``poll`` (retrieve with adaptive backoff) or
    ``stream`` (its event stream, resumed from the last sequence number after a drop; see
    streaming.py). With ``stream`` the writes that make a response (the turn's opening one,
    a follow-up carrying outputs) are streamed too, and followed for up to ``follow_ms``
    until the model stops working: the state they saw is returned (``create_run``'s run,
    ``SubmitOutcome.seen``), so a step needs no watch of the working response. The caller
    owns (and closes) ``client``.
    """

    name = "responses"

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        tools: Sequence[FunctionToolParam],
        parallel_tool_calls: bool = True,
        instructions: str | None = None,
        backoff: BackoffPolicy | None = None,
        page_size: int = 100,
        observe: Observe = "poll",
        follow_ms: int = FOLLOW_MS,
    ) -> None:
        if observe not in OBSERVE_MODES:
            raise ValueError(f"observe must be one of {OBSERVE_MODES}, not {observe!r}")
        self.observe = observe
        self._read = client
        # Writes are sent once: the SDK's own retry of a lost create would start a second
        # response. Whether to send again is decided after reconciling, by the executor.
        self._write = client.with_options(max_retries=0)
        # What every response is created with (see _create).
        self._body = {
            "background": True,
            "parallel_tool_calls": parallel_tool_calls,
            "instructions": instructions,
            "tools": list(tools),
        }
        self._backoff = backoff or BackoffPolicy()
        self._pace = Pace()  # when a watch of a working run first polls (polling.py)
        self._page_size = page_size
        self._follow_s = follow_ms / 1000

    # -- creating ----------------------------------------------------------------------

    async def create_thread(
        self, *, conversation: str, effect_key: str, metadata: Mapping[str, str]
    ) -> str:
        attempt = Attempt("create_conversation", conversation, write=True, effect_key=effect_key)
        try:
            created = await self._write.conversations.create(
                metadata=dict(metadata), extra_headers={IDEMPOTENCY_HEADER: effect_key}
            )
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        return created.id

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
        """Open the turn with one background response; ``assistant_id`` names the model.

        Only after an unknown outcome is the conversation read first: on a first attempt an
        earlier turn with the same text would look like ours.
        """
        if after_unknown_outcome and await self._input_arrived(thread_id, input):
            # A response was created for our input (its items reach the conversation when
            # it is created), but nothing in the API names it: conversation items carry no
            # response id, and responses cannot be listed. Starting another would run the
            # turn twice.
            raise Unreconcilable(
                f"create_run {run_id}: an earlier attempt's input is in conversation"
                f" {thread_id}, so a response was started for it, but the Responses API"
                " cannot name that response; not starting a second one"
            )
        attempt = Attempt("create_run", thread_id, write=True, effect_key=effect_key)
        try:
            run = await self._create(
                attempt,
                model=assistant_id,
                conversation=thread_id,
                input=input,
                metadata=run_metadata(metadata, run_id, OPENING_STEP),
            )
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        return run, False

    async def _create(self, attempt: Attempt, *, model: str, **body: Any) -> ProviderRun:
        """One background response made (the SDK's errors are the caller's to translate).

        Streamed (``observe="stream"``), it is taken as made on its first event, and its
        events are followed until the response stops working: the last state seen is
        returned. A step seen so has just been made, so nobody can have answered it.

        The whole body (the model, ``body`` and what every response is created with) goes
        as ``extra_body``, sent as it is. The SDK transforms typed parameters by walking
        their annotations on every request, which does nothing to plain JSON values like
        these and cost more than the rest of the request: 1.1 ms of CPU for a follow-up's
        two output items, 0.1 to 0.2 ms for each other field (0.09 for the model alone: its
        type is a union of some hundred literals), and 8% of the provider executor's CPU for
        the tools' JSON schemas."""
        request: dict[str, Any] = {
            "extra_headers": {IDEMPOTENCY_HEADER: attempt.effect_key},
            "extra_body": {"model": model, **self._body, **body},
        }
        if self.observe != "stream":
            raw = await self._write.responses.with_raw_response.create(**request)
            try:
                return mapping.to_provider_run(_body(raw), poll_after=None)
            except mapping.ResponseShapeError as exc:
                raise answered_then(attempt, str(exc)) from exc
        async with self._write.responses.with_streaming_response.create(
            stream=True, **request
        ) as raw:
            events = read_events(raw.iter_lines())
            first = await first_event(events, attempt)
            try:
                _, made = mapping.stream_event(first.data)
            except mapping.StreamEventError as exc:
                raise answered_then(attempt, f"its first event is not one: {exc}") from exc
            if made is None:
                raise answered_then(attempt, f"its first event ({first.event}) has no response")
            return await self._follow_events(events) or made

    async def _follow_events(self, events: AsyncIterator[ServerSentEvent]) -> ProviderRun | None:
        """A streamed write's events, read until the response stops working or ``follow_ms``
        passes (None). Never raises: the write was made already, and a stream that breaks
        only leaves the response to the coordinator's watch."""
        try:
            async with asyncio.timeout(self._follow_s):
                async for event in events:
                    if event.event is not None and event.event not in mapping.FINAL_EVENTS:
                        continue  # the response still working, or one of its items
                    _, seen = mapping.stream_event(event.data)
                    if seen is not None and seen.status not in WORKING_STATUSES:
                        await drain(events)
                        return seen
        except TimeoutError:
            pass
        except Exception as exc:  # a broken or odd stream costs the sighting, nothing else
            log.info("stopped following a response's events: %s: %s", type(exc).__name__, exc)
        return None

    async def _input_arrived(self, conversation_id: str, text: str) -> bool:
        scan = await self._scan(conversation_id, lambda: mapping.InputScan(text))
        return scan.found

    # -- observing ---------------------------------------------------------------------

    async def retrieve(self, *, thread_id: str, provider_run_id: str) -> ProviderRun:
        attempt = Attempt("retrieve", thread_id, write=False, provider_run_id=provider_run_id)
        try:
            raw = await self._read.responses.with_raw_response.retrieve(provider_run_id)
            run = mapping.to_provider_run(_body(raw), poll_after=poll_after_ms(raw.headers))
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        except mapping.ResponseShapeError as exc:
            raise ProviderUnavailable(f"retrieve {provider_run_id}: {exc}") from exc
        if run.status == "requires_action":
            return await self._follow(thread_id, run)
        return run

    async def _follow(self, thread_id: str, run: ProviderRun) -> ProviderRun:
        """A step, or, if the conversation already answered it, where the turn is now.

        Parked on a step the conversation already answered: the turn went on in a follow-up
        whose id we lost. Follow it through the conversation instead."""
        moved = await self._progress(thread_id, run)
        return run if moved is None else moved

    async def _progress(self, thread_id: str, run: ProviderRun) -> ProviderRun | None:
        calls = frozenset(c.id for c in run.tool_calls)
        scan = await self._scan(thread_id, lambda: mapping.ProgressScan(calls), _page_for(calls))
        return scan.run(run.provider_run_id)

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

        # A step is a finished response: its stream could only replay history, and what
        # may still change (the step answered) shows in the conversation, which a poll
        # reads. The same goes for a finished turn. So only working responses are streamed.
        finished = since_status in TERMINAL_STATUSES or (
            since_status == "requires_action"
            and since_step is not None
            and mapping.base_response_id(since_step) == provider_run_id
        )

        if self.observe == "stream" and not finished:

            def events(after: int | None) -> AsyncGenerator[tuple[int, ProviderRun | None]]:
                return self._events(thread_id, provider_run_id, after)

            async def follow(run: ProviderRun) -> ProviderRun:
                # Even a response watched while it works may be a step already answered:
                # after a submission whose follow-up id was lost, the turn is watched on
                # the step's own response as working. The conversation tells.
                return await self._follow(thread_id, run)

            return await watch_stream(
                events,
                poll,
                follow,
                since_status=since_status,
                since_step=since_step,
                timeout_ms=timeout_ms,
                policy=self._backoff,
            )
        return await watch(
            poll,
            since_status=since_status,
            since_step=since_step,
            timeout_ms=timeout_ms,
            policy=self._backoff,
            pace=self._pace,
        )

    async def _events(
        self, thread_id: str, response_id: str, after: int | None
    ) -> AsyncGenerator[tuple[int, ProviderRun | None]]:
        """The response's event stream (after sequence number ``after``), each event as its
        sequence number and, for the events carrying the response, the state it shows."""
        attempt = Attempt("stream", thread_id, write=False, provider_run_id=response_id)
        try:
            async with self._read.responses.with_streaming_response.retrieve(
                response_id, stream=True, starting_after=omit if after is None else after
            ) as raw:
                async for event in read_events(raw.iter_lines()):
                    yield mapping.stream_event(event.data)
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        except mapping.StreamEventError as exc:
            # The stream broke on the provider's side; resuming may mend it.
            raise ProviderUnavailable(f"stream of {response_id} on {thread_id}: {exc}") from exc
        except STREAM_BROKEN as exc:
            raise stream_broken(exc, attempt) from exc

    async def _get(self, thread_id: str, response_id: str) -> mapping.Body:
        try:
            raw = await hedged(
                lambda: self._read.responses.with_raw_response.retrieve(response_id),
                self._backoff.hedge_ms,
            )
            return _body(raw)
        except openai.APIError as exc:
            attempt = Attempt("retrieve", thread_id, write=False, provider_run_id=response_id)
            raise translate(exc, attempt) from exc
        except mapping.ResponseShapeError as exc:
            raise ProviderUnavailable(f"retrieve {response_id}: {exc}") from exc

    # -- submitting --------------------------------------------------------------------

    async def submit_outputs(
        self,
        *,
        thread_id: str,
        provider_run_id: str,
        step_id: str,
        outputs: Sequence[Output],
        effect_key: str,
        turn: Turn | None = None,
        unanswered: bool = False,
    ) -> SubmitOutcome:
        """The follow-up response, carrying every output; it becomes the turn's current run."""
        # Look before sending, unless the caller vouches the step is unanswered (a first
        # send): a follow-up for calls the conversation has already answered would run the
        # model on them again, and OpenAI does not document refusing it. A partial answer is
        # not ours: sending the rest would duplicate some.
        # The follow-up names the turn's model and carries its metadata. Given the turn, that
        # is all: the follow-up goes to the conversation, not to the step's response, so the
        # conversation alone says whether the step may still be answered (a step's response
        # is finished, and stays so). Without it (an intent from before SubmitOutputsIntent
        # v2), the step's response gives them, read beside the scan: a step found in the
        # conversation (see retrieve) has the response we follow as its base.
        calls = frozenset(o.tool_call_id for o in outputs)
        scanning = (
            None if unanswered else asyncio.ensure_future(self._scan_outputs(thread_id, calls))
        )
        try:
            if turn is None:
                step = await self._get(thread_id, mapping.base_response_id(step_id))
                state = mapping.status(step)
                if state != "requires_action":
                    return SubmitOutcome("run_moved_on", f"response {step['id']} is {state}")
                given = {str(k): str(v) for k, v in (step.get("metadata") or {}).items()}
                turn = Turn(given.get(RUN_ID_KEY, ""), str(step.get("model")), given)
            scan = None if scanning is None else await scanning
        finally:  # a read failed, or the step moved on: the scan is not waited for
            if scanning is not None:
                scanning.cancel()
        if scan is not None:
            seen = scan.verdict(thread_id)
            if seen is not None and seen.outcome in ("already_submitted", "run_moved_on"):
                return seen
            if scan.answered and seen is None:
                return SubmitOutcome(
                    "rejected",
                    f"conversation {thread_id} already has outputs for {sorted(scan.answered)}"
                    " but not for every call of the step",
                )
        items: list[ResponseInputItemParam] = [
            {"type": "function_call_output", "call_id": o.tool_call_id, "output": o.output}
            for o in outputs
        ]
        attempt = Attempt(
            "submit_outputs", thread_id, True, provider_run_id, step_id, effect_key=effect_key
        )
        try:
            follow_up = await self._create(
                attempt,
                model=turn.assistant_id,
                conversation=thread_id,
                input=items,
                metadata=run_metadata(turn.metadata, turn.run_id, step_id),
            )
        except openai.BadRequestError as exc:
            # Outputs may have landed since we looked (a racing attempt); a 400 for them
            # looks like one for wrong call ids, and the conversation tells which.
            return await rejected_submission(
                self, exc.message, thread_id, provider_run_id, step_id, outputs
            )
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        return SubmitOutcome(
            "submitted",
            new_provider_run_id=follow_up.provider_run_id,
            seen=None if follow_up.status in WORKING_STATUSES else follow_up,
        )

    async def reconcile_submission(
        self,
        *,
        thread_id: str,
        provider_run_id: str,
        step_id: str,
        outputs: Sequence[Output],
    ) -> SubmitOutcome | None:
        """From the conversation: all the step's outputs in it = already_submitted (but the
        follow-up's id is lost: new_provider_run_id stays None); none = not_submitted; a
        part, or the step's calls not found = None."""
        scan = await self._scan_outputs(thread_id, frozenset(o.tool_call_id for o in outputs))
        return scan.verdict(thread_id)

    async def _scan_outputs(
        self, conversation_id: str, call_ids: frozenset[str]
    ) -> mapping.OutputsScan:
        return await self._scan(
            conversation_id, lambda: mapping.OutputsScan(call_ids), _page_for(call_ids)
        )

    async def _scan(
        self, conversation_id: str, new_scan: Callable[[], _S], first: int | None = None
    ) -> _S:
        """Show the conversation's items to a new scan, newest first, until it has seen
        enough (each request, a hedge among them, feeds a scan of its own).

        The first page holds `first` items when the caller knows the scan usually ends
        within them, the next ones `page_size`: the SDK builds a model of every item of a
        page, and a step's scan that stopped after its few newest items paid for a hundred.
        """
        attempt = Attempt("list_items", conversation_id, write=False)

        async def read() -> _S:
            scan = new_scan()
            after: str | Omit = omit
            limit = min(first or self._page_size, self._page_size)
            while True:
                page = await self._read.conversations.items.list(
                    conversation_id, order="desc", limit=limit, after=after
                )
                for item in page.data:
                    if scan.see(item):
                        return scan
                if not page.has_more or not page.last_id or not page.data:
                    return scan
                after, limit = page.last_id, self._page_size

        try:
            return await hedged(read, self._backoff.hedge_ms)
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc

    # -- cancelling --------------------------------------------------------------------

    async def cancel(self, *, thread_id: str, provider_run_id: str) -> str:
        """Stop the turn. A response still working is cancelled. A turn waiting on outputs
        has nothing running, but its open calls would make the conversation's next response
        fail ("No tool output found for function call"), so they are closed with an explicit
        error output added as conversation items, without running the model again.
        Safe to call again after OutcomeUnknown."""
        response = await self._get(thread_id, provider_run_id)
        state = mapping.status(response)
        if state in ("queued", "in_progress"):
            return await self._cancel_response(thread_id, provider_run_id)
        if state == "requires_action":
            await self._close_calls(thread_id, response)
            return "cancelled"
        return state

    async def _cancel_response(self, thread_id: str, response_id: str) -> str:
        attempt = Attempt("cancel", thread_id, write=True, provider_run_id=response_id)
        try:
            cancelled = _body(await self._write.responses.with_raw_response.cancel(response_id))
        except mapping.ResponseShapeError as exc:
            raise answered_then(attempt, str(exc)) from exc
        except openai.BadRequestError as exc:
            # It finished meanwhile: its status is the answer (or its open calls need closing).
            current = await self._get(thread_id, response_id)
            state = mapping.status(current)
            if state == "requires_action":
                await self._close_calls(thread_id, current)
                return "cancelled"
            if state in TERMINAL_STATUSES:
                return state
            raise translate(exc, attempt) from exc
        except openai.APIError as exc:
            raise translate(exc, attempt) from exc
        return mapping.status(cancelled)

    async def _close_calls(self, thread_id: str, response: mapping.Body) -> None:
        calls = mapping.function_calls(response)
        scan = await self._scan_outputs(thread_id, frozenset(c.id for c in calls))
        open_calls = [c for c in calls if c.id not in scan.answered]
        attempt = Attempt("close_calls", thread_id, write=True, provider_run_id=response["id"])
        for start in range(0, len(open_calls), _MAX_ITEMS_PER_CREATE):
            chunk = open_calls[start : start + _MAX_ITEMS_PER_CREATE]
            items: list[ResponseInputItemParam] = [
                {
                    "type": "function_call_output",
                    "call_id": c.id,
                    "output": mapping.CANCELLED_OUTPUT,
                }
                for c in chunk
            ]
            try:
                await self._write.conversations.items.create(thread_id, items=items)
            except openai.APIError as exc:
                raise translate(exc, attempt) from exc


def _body(raw: LegacyAPIResponse[Any]) -> mapping.Body:
    """A response's JSON, read as it came (responses_mapping.Body says why not as the SDK's
    model)."""
    try:
        data = raw.http_response.json()
    except ValueError as exc:
        raise mapping.ResponseShapeError(f"not JSON: {raw.http_response.text[:200]!r}") from exc
    return mapping.response_body(data)
