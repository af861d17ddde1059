"""The example in runcoord/provider/README.md runs, against the simulated provider."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from .conftest import Sim
from .world import ASSISTANT_TOOLS

README = Path(__file__).parents[3] / "runcoord" / "provider" / "README.md"

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated$:DeprecationWarning"),
]


def example_code() -> str:
    section = README.read_text().split("## Example", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no python block under '## Example'"
    return match.group(1)


async def test_the_readme_example_runs(client: AsyncOpenAI, sim: Sim) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(example_code(), str(README), "exec"), namespace)
    example: Callable[[str, str, str], Awaitable[str]] = namespace["example"]
    assistant = await client.beta.assistants.create(model="gpt-4o", tools=ASSISTANT_TOOLS)
    thread = await client.beta.threads.create()
    assert await example(sim.base_url + "/v1", assistant.id, thread.id) == "submitted"
    assert sim.records()["counts"]["creates_by_run_id"] == {"r-42": 1}
