"""OpenTelemetry traces whose context travels with the work: in Kafka headers, in the API's
outbox rows and in HTTP headers (W3C Trace Context, ``traceparent``/``tracestate``).

The rule every process follows: each record it produces carries the context of the span
that produced it, and each record it consumes starts a child span from the record's header.
A turn's trace therefore runs API request → relay → coordinator (one span per input applied)
→ executor (one span per intent) → tool gateway, and back through the coordinator.

``RUNCOORD_OTEL_EXPORTER`` chooses where spans go, read once by :func:`setup`:

- ``none`` (the default): nothing is set up; :data:`ENABLED` stays False and the hot paths
  check it before building a header or a span, so tracing off costs one flag test.
- ``otlp``: OTLP over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the SDK's standard variables).
- ``console``: spans printed to stdout.
- ``file:PATH``: one JSON object per finished span, appended to PATH as each span ends (tests
  read it); ``{service}`` in PATH is replaced by the service name.

Span attributes are correlation ids only (run_id, thread_id, tool_call_id, effect_key,
kind…), never payloads. The SDK is kept out of the global OpenTelemetry providers on purpose:
a library that traces through the global API (FastAPI does) stays off.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from runcoord.config import load
from runcoord.errors import ConfigError

if TYPE_CHECKING:
    from confluent_kafka import Message
    from opentelemetry.sdk.trace import TracerProvider
    from starlette.types import ASGIApp, Receive, Scope, Send
    from starlette.types import Message as AsgiMessage

ENV = "RUNCOORD_OTEL_EXPORTER"
# The only carrier keys W3C Trace Context uses; every other header is left alone.
FIELDS = ("traceparent", "tracestate")

# Read on hot paths (per input, per intent): only the flag, never a call, when off.
ENABLED = False
_tracer: Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator()

KafkaHeaders = list[tuple[str, str | bytes | None]]


def setup(service_name: str, spec: str | None = None) -> bool:
    """Configure tracing for this process from ``spec`` or ``RUNCOORD_OTEL_EXPORTER``.

    Returns whether tracing is on. Calling it again replaces the earlier set-up (tests).
    """
    global ENABLED, _tracer, _provider
    spec = (load().otel_exporter if spec is None else spec).strip()
    shutdown()
    if spec in ("", "none"):
        return False
    # Imported only when tracing is on: the SDK and its exporters cost start-up time.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    service = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if spec == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif spec == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif spec.startswith("file:") and len(spec) > len("file:"):
        from runcoord.spanfile import JsonLinesExporter

        path = Path(spec.removeprefix("file:").replace("{service}", service))
        # Written as each span ends, so a reader never waits for a batch (or for an exit).
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    else:
        raise ConfigError(f"{ENV}={spec!r}: expected none, otlp, console or file:PATH")
    _provider = provider
    _tracer = provider.get_tracer("runcoord")
    ENABLED = True
    return True


def shutdown() -> None:
    """Flush and stop the exporter (also done at exit); tracing is off afterwards."""
    global ENABLED, _tracer, _provider
    ENABLED = False
    _tracer = trace.NoOpTracer()
    provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


# -- carrying the context ---------------------------------------------------------------


def inject(headers: KafkaHeaders) -> KafkaHeaders:
    """Append the current span's ``traceparent`` (and ``tracestate``) to Kafka headers."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    headers.extend((key, value.encode()) for key, value in carrier.items())
    return headers


def inject_http(headers: MutableMapping[str, str]) -> None:
    """Add the current span's context to HTTP request headers (a dict or httpx.Headers)."""
    _propagator.inject(headers)


def traceparent() -> str | None:
    """The current span's ``traceparent``, to store beside work that is sent later."""
    if not ENABLED:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def extract(source: Message | Sequence[tuple[str, Any]] | Mapping[str, str] | None) -> Context:
    """The context a Kafka message (or its headers, or a plain mapping) carries; empty if none."""
    if source is None:
        return Context()
    if isinstance(source, Mapping):
        return _propagator.extract(source)
    raw: Any = source if isinstance(source, Sequence) else source.headers()
    pairs: list[tuple[str, Any]] = list(raw.items() if isinstance(raw, Mapping) else raw or [])
    carrier: dict[str, str] = {}
    for key, value in pairs:
        if key not in FIELDS or value is None:
            continue
        if isinstance(value, bytes):
            try:
                value = value.decode()
            except UnicodeDecodeError:
                # Informational only: an undecodable context is no context (a new trace),
                # never a reason to refuse, or fail on, the record that carries it.
                continue
        carrier[key] = str(value)
    return _propagator.extract(carrier) if carrier else Context()


# -- spans ------------------------------------------------------------------------------


@contextmanager
def span(
    name: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    parent: Context | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A span made current for the block: a child of ``parent``, or of the current span."""
    with _tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=_clean(attributes)
    ) as current:
        yield current


@contextmanager
def consume(
    name: str,
    message: Message | Sequence[tuple[str, Any]] | None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A consumer span for one record, the child of the context in the record's headers (a
    new trace when it has none), current for the block: what the block produces carries it."""
    with span(name, attributes, parent=extract(message), kind=SpanKind.CONSUMER) as current:
        yield current


def annotate(**attributes: Any) -> None:
    """Set attributes on the current span (None values are skipped); a no-op when off."""
    if ENABLED:
        trace.get_current_span().set_attributes(_clean(attributes))


def rename(name: str) -> None:
    """Rename the current span (once what it handles is known); a no-op when off."""
    if ENABLED:
        trace.get_current_span().update_name(name)


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {k: v for k, v in attributes.items() if v is not None}


# -- HTTP -------------------------------------------------------------------------------


def httpx_event_hooks() -> dict[str, list[Any]]:
    """httpx ``event_hooks`` that put the current context on every request (none when off)."""
    if not ENABLED:
        return {}

    async def carry(request: Any) -> None:
        inject_http(request.headers)

    return {"request": [carry]}


class TraceMiddleware:
    """ASGI middleware: one server span per HTTP request, the child of the request's
    ``traceparent``; named by method and route template once the router has matched.

    Added to an app only when tracing is on (see :func:`instrument`).
    """

    def __init__(self, app: ASGIApp, exclude: Sequence[str] = ()) -> None:
        self.app = app
        self.exclude = tuple(exclude)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exclude and scope["path"].startswith(self.exclude)):
            await self.app(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope["headers"]
            if key in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        status = 0

        async def observed(message: AsgiMessage) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        attributes = {"http.request.method": method, "url.path": scope["path"]}
        with span(
            method, attributes, parent=_propagator.extract(carrier), kind=SpanKind.SERVER
        ) as current:
            try:
                await self.app(scope, receive, observed)
            finally:
                # The router put the matched route into this same scope.
                route = getattr(scope.get("route"), "path", None)
                if route:
                    current.update_name(f"{method} {route}")
                    current.set_attribute("http.route", route)
                if status:
                    current.set_attribute("http.response.status_code", status)
                if status >= 500:
                    current.set_status(StatusCode.ERROR)


def instrument(app: Any, exclude: Sequence[str] = ()) -> None:
    """Add :class:`TraceMiddleware` to a Starlette/FastAPI app when tracing is on."""
    if ENABLED:
        app.add_middleware(TraceMiddleware, exclude=exclude)
