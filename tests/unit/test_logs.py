from __future__ import annotations

import json
import logging

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
