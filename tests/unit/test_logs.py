from __future__ import annotations

import json
import logging

from runcoord import logs
from runcoord.logs import JsonFormatter


def test_json_lines_carry_correlation_ids() -> None:
    record = logging.makeLogRecord(
        {
            "name": "runcoord.x",
            "levelname": "INFO",
            "msg": "tool %s answered",
            "args": ("t",),
            "run_id": "r-1",
            "tool_call_id": "call_1",
            "effect_key": "ek1_x",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "tool t answered"
    assert (line["run_id"], line["tool_call_id"], line["effect_key"]) == ("r-1", "call_1", "ek1_x")
    assert line["level"] == "info" and "args" not in line


def test_http_clients_log_failures_but_not_every_request() -> None:
    logs.setup("INFO")
    for name in ("httpx", "httpx2"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        assert logging.getLogger(name).isEnabledFor(logging.WARNING)
    assert logging.getLogger("runcoord.executor").isEnabledFor(logging.INFO)
