"""Scripts and the config file, including the examples in runcoord/sim/provider/README.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from runcoord.sim.provider.config import config_from_dict
from runcoord.sim.provider.scripts import (
    EMPTY_BOOK,
    Script,
    ScriptError,
    Step,
    ToolCallSpec,
    default_script,
    parse_script,
)

README = Path(__file__).resolve().parents[4] / "runcoord" / "sim" / "provider" / "README.md"


def test_a_full_script() -> None:
    script = parse_script(
        {
            "steps": [
                {"tool_calls": [{"name": "a", "arguments": {"x": 1}}], "latency_ms": 7},
                {"tool_calls": [{"name": "b", "arguments": "{raw"}, {"name": "c"}]},
            ],
            "final": {"status": "failed", "error": "nope"},
            "latency_ms": 50,
            "queue_ms": 2,
            "expires_after_s": 9,
        }
    )
    assert script.steps[0] == Step((ToolCallSpec("a", '{"x":1}'),), 7)
    assert script.steps[1].tool_calls == (ToolCallSpec("b", "{raw"), ToolCallSpec("c", "{}"))
    assert [script.step_latency_ms(i, 999) for i in range(3)] == [7, 50, 50]
    assert (script.final.status, script.final.error) == ("failed", "nope")
    assert (script.queue_ms, script.expires_after_s) == (2, 9)


def test_an_empty_script_just_answers() -> None:
    script = parse_script({})
    assert script.steps == () and script.final.status == "completed"
    assert script.step_latency_ms(0, 123) == 123


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"steps": [{"tool_calls": []}]}, "script.steps[0].tool_calls"),
        (
            {"steps": [{"tool_calls": [{"name": "has space"}]}]},
            "script.steps[0].tool_calls[0].name",
        ),
        ({"steps": [{"tool_calls": [{"name": "a", "arguments": 3}]}]}, "arguments"),
        ({"final": {"status": "exploded"}}, "script.final.status"),
        ({"steps": [{"tool_calls": [{"name": "a"}], "latency_ms": -1}]}, "latency_ms"),
        ({"stepz": []}, "script: Additional properties"),
        ([], "script: [] is not of type 'object'"),
    ],
)
def test_bad_scripts_say_where(data: Any, where: str) -> None:
    with pytest.raises(ScriptError, match=re.escape(where)):
        parse_script(data)


def test_script_text_is_inline_json_or_a_config_name() -> None:
    book = config_from_dict({"scripts": {"quick": {"final": {"message": "hi"}}}}).scripts
    assert book.from_text("quick").final.message == "hi"
    assert book.from_text(' {"final": {"message": "yo"}}').final.message == "yo"
    with pytest.raises(ScriptError, match="no script named"):
        EMPTY_BOOK.from_text("quick")


def test_default_script_calls_the_first_tool_with_sample_arguments() -> None:
    script = default_script(
        [
            {
                "name": "book",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "nights": {"type": "integer"},
                        "kind": {"enum": ["hotel", "hostel"]},
                        "guests": {"type": "array"},
                        "extras": {"type": ["null", "object"], "properties": {}},
                        "note": {"type": "string"},
                    },
                    "required": ["city", "nights", "kind", "guests", "extras"],
                },
            },
            {"name": "other"},
        ]
    )
    (step,) = script.steps
    (call,) = step.tool_calls
    assert call.name == "book"
    assert json.loads(call.arguments) == {
        "city": "sample",
        "nights": 1,
        "kind": "hotel",
        "guests": [],
        "extras": {},
    }
    assert default_script([]) == Script()
    assert json.loads(default_script([{"name": "bare"}]).steps[0].tool_calls[0].arguments) == {}


def test_sequential_splits_parallel_calls() -> None:
    script = parse_script(
        {"steps": [{"tool_calls": [{"name": "a"}, {"name": "b"}], "latency_ms": 30}]}
    ).sequential()
    assert [[c.name for c in s.tool_calls] for s in script.steps] == [["a"], ["b"]]
    assert [s.latency_ms for s in script.steps] == [30, 0]


def test_config_refuses_what_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        config_from_dict({"timming": {}})
    with pytest.raises(ValueError, match="no script named 'missing'"):
        config_from_dict({"assistants": {"bot": "missing"}})
    with pytest.raises(ValueError, match=r"scripts\.bad"):
        config_from_dict({"scripts": {"bad": {"steps": "x"}}})


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_config_example_loads() -> None:
    (block,) = _blocks("yaml")
    config = config_from_dict(yaml.safe_load(block))
    assert config.seed == 7
    assert config.scripts.for_assistant("asst_x", "support-bot") is not None
    assert config.scripts.for_model("sim-two-lookups") is not None
    assert config.faults.endpoints["create"].lost_mode == "drop"


def test_the_readme_script_example_parses() -> None:
    script_block = _blocks("json")[0]
    script = parse_script(json.loads(script_block))
    assert [len(s.tool_calls) for s in script.steps] == [1, 2]
    assert script.steps[1].tool_calls[1].arguments == "{not json"
