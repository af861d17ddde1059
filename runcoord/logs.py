"""Logging set-up shared by every runcoord process.

``RUNCOORD_LOG_FORMAT=json`` writes one JSON object per line (for log shippers), carrying
the correlation ids a log call passes as ``extra`` (run_id, thread_id, tool_call_id,
effect_key…). Payloads are never logged, only their hashes.
"""

from __future__ import annotations

import json
import logging
import time

from runcoord.config import load

# Fields a LogRecord always has; anything else came in through `extra`.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_CHATTY = ("httpx", "httpx2", "httpcore", "httpcore2")


def setup(level: str | None = None) -> None:
    settings = load()
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(
        level=(level or settings.log_level).upper(),
        handlers=[handler],
        force=True,
    )
    # HTTP clients log every request at INFO: a provider executor's polls made 95% of its log
    # (113k lines in 30 min of a soak) and cost CPU on the path that limits throughput. Their
    # failures still show as WARNING, and ours say what each failure meant.
    for chatty in _CHATTY:
        logging.getLogger(chatty).setLevel(logging.WARNING)
