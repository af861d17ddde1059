"""The whole report: the protocol, and each compared system's figures."""

from __future__ import annotations

from typing import Any

from runcoord.harness.report.data import ReplayData
from runcoord.harness.report.figures import system_figures


def build_report(replay: ReplayData) -> dict[str, Any]:
    write_tools = {
        tool: frozenset(tenants) for tool, tenants in replay.protocol.get("write_tools", {}).items()
    }
    return {
        "protocol": replay.protocol,
        "systems": {
            name: system_figures(data, replay.trace, replay.protocol, write_tools)
            for name, data in replay.systems.items()
        },
    }
