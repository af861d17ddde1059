"""``RUNCOORD_OTEL_EXPORTER=file:PATH``: finished spans as JSON lines, for tests and debugging.

Imported only when that exporter is chosen (the SDK is slow to import).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


def span_record(s: ReadableSpan) -> dict[str, Any]:
    """A finished span as one flat object; ids in lowercase hex, as in ``traceparent``."""
    ctx = s.context
    return {
        "service": s.resource.attributes.get("service.name"),
        "name": s.name,
        "kind": s.kind.name,
        "trace_id": f"{ctx.trace_id:032x}" if ctx else None,
        "span_id": f"{ctx.span_id:016x}" if ctx else None,
        "parent_span_id": f"{s.parent.span_id:016x}" if s.parent else None,
        "start_ns": s.start_time,
        "end_ns": s.end_time,
        "status": s.status.status_code.name,
        "attributes": dict(s.attributes or {}),
    }


class JsonLinesExporter(SpanExporter):
    """Appends one JSON line per span, a whole export in one write: several processes may
    share a file without their lines interleaving."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        text = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        try:
            with self._lock, self.path.open("a", encoding="utf-8") as out:
                out.write(text)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass
