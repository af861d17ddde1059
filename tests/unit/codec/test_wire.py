"""The wire mapping: every message round-trips through Avro, and schemas follow the classes."""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runcoord.codec import AvroCodec
from runcoord.codec.wire import CATEGORIES, MESSAGE_TYPES, avro_schema, from_record, to_record
from runcoord.deadletter import DeadLetter
from runcoord.domain import events as ev
from runcoord.domain import inputs as inp
from runcoord.domain import intents as it
from runcoord.domain.model import Output, RunState, Step, ToolCall
from runcoord.domain.phases import Phase
from runcoord.errors import SerializationError
from runcoord.schemas import SCHEMA_DIR

CALL = ToolCall("call_1", "lookup", '{"q": "x"}')
OUT = Output("call_1", "ok", False, "tool", "ab" * 32)
SAMPLES: list[Any] = [
    ev.RunAccepted(
        run_id="r",
        seq=1,
        at_ms=5,
        tenant="t",
        thread_id="th",
        assistant_id="a",
        provider="assistants",
        input="hi",
        run_deadline_ms=9,
        create_key="ek1_x",
    ),
    ev.StepOpened(
        run_id="r", seq=3, at_ms=5, step_id="s", calls=(CALL,), deadline_ms=7, expires_at_ms=None
    ),
    ev.ToolOutputRecorded(run_id="r", seq=4, at_ms=5, step_id="s", output=OUT, effect_key=None),
    ev.RunFinished(run_id="r", seq=9, at_ms=5, status="completed", reason=None),
    inp.RunObserved("r", 3, "requires_action", "s", (CALL,), 10, None, True),
    inp.ToolResult("r", "t", "s", "call_1", "out", True, "intake", "ek1_y"),
    it.SubmitOutputsIntent(
        effect_key="k",
        run_id="r",
        tenant="t",
        thread_id="th",
        provider="responses",
        provider_run_id="p",
        step_id="s",
        outputs=(OUT, OUT),
        deadline_ms=3,
        assistant_id="gpt-4o",
        metadata={"team": "billing"},
    ),
    RunState(
        run_id="r",
        tenant="t",
        thread_id="th",
        assistant_id="a",
        provider="assistants",
        input="hi",
        accepted_at_ms=1,
        run_deadline_ms=2,
        seq=4,
        phase=Phase.REQUIRES_ACTION,
        step=Step("s", (CALL,), 7, (OUT,), None, None),
        closed_steps=("s0",),
        metadata={"team": "billing"},
    ),
    DeadLetter("runs.inbox", 2, 41, "r", "decode", "corrupt", None, b"\x00\xff", "coord-1", 7),
]


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec()


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_through_avro(codec: AvroCodec, message: Any) -> None:
    name, datum = to_record(message)
    decoded_name, decoded = codec.decode(codec.encode(name, datum))
    assert decoded_name == name
    assert from_record(decoded_name, decoded) == message


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_committed_current_schema_matches_the_class(codec: AvroCodec, name: str) -> None:
    category = next(c for c, classes in CATEGORIES.items() if MESSAGE_TYPES[name] in classes)
    files = sorted(
        (SCHEMA_DIR / category).glob(f"{name}.v*.avsc"),
        key=lambda p: int(p.name.split(".v")[1].split(".")[0]),
    )
    current = json.loads(Path(files[-1]).read_text())
    assert current == avro_schema(MESSAGE_TYPES[name]), (
        f"{name} changed: add schemas/{category}/{name}.v{len(files) + 1}.avsc "
        "(python -m runcoord.codec lock) instead of editing a committed version"
    )


def test_every_message_type_has_a_schema(codec: AvroCodec) -> None:
    assert set(MESSAGE_TYPES) <= codec.names()


def test_a_record_that_does_not_fit_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="does not map"):
        from_record("StartRun", {"run_id": "r"})
    with pytest.raises(SerializationError, match="not a message"):
        from_record("Nope", {})


_LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _values(tp: Any) -> st.SearchStrategy[Any]:
    """Any value of a declared field type, the way the domain would hold it."""
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType):  # X | None, the only union the wire maps
        return st.none() | _values(next(a for a in args if a is not type(None)))
    if typing.get_origin(tp) is tuple:
        return st.lists(_values(args[0]), max_size=3).map(tuple)
    if typing.get_origin(tp) in (Mapping, dict):
        return st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = {f.name: _values(hints[f.name]) for f in dataclasses.fields(tp)}
        return st.fixed_dictionaries(fields).map(lambda kwargs: tp(**kwargs))
    return {str: st.text(max_size=8), int: _LONG, bool: st.booleans(), bytes: st.binary()}[tp]


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_every_value_of_every_message_round_trips(codec: AvroCodec, name: str) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_values(MESSAGE_TYPES[name]))
    def round_trip(message: Any) -> None:
        record_name, datum = to_record(message)
        assert from_record(*codec.decode(codec.encode(record_name, datum))) == message

    round_trip()


def test_a_value_of_the_wrong_type_is_refused_not_coerced(codec: AvroCodec) -> None:
    # Fields declared as primitives are passed through as they are: the codec must refuse a
    # float where a long belongs rather than truncate it.
    name, datum = to_record(dataclasses.replace(SAMPLES[0], at_ms=1.5))
    with pytest.raises(SerializationError, match="at_ms"):
        codec.encode(name, datum)
