"""Responses API items (messages, function calls, their outputs) as stored and shown.

Input arrives in several shorthands (a bare string, ``{"role", "content": "text"}``);
items are stored once, normalized to the shapes the API answers with, ids included.
"""

from __future__ import annotations

from typing import Any

from runcoord.sim.provider.errors import bad_request
from runcoord.sim.provider.ids import Ids
from runcoord.sim.provider.params import check_function_name, invalid_type

Item = dict[str, Any]

_INPUT_PARTS = ("input_text", "input_image", "input_file")
_OUTPUT_PARTS = ("output_text", "refusal")


def user_message(ids: Ids, text: str) -> Item:
    return {
        "type": "message",
        "id": ids.hex("msg_"),
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
        "status": "completed",
    }


def assistant_message(ids: Ids, text: str, status: str = "completed") -> Item:
    return {
        "type": "message",
        "id": ids.hex("msg_"),
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        "status": status,
    }


def function_call(ids: Ids, name: str, arguments: str) -> Item:
    return {
        "type": "function_call",
        "id": ids.hex("fc_"),
        "call_id": ids.alnum("call_"),
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def parse_input(ids: Ids, value: object, param: str = "input") -> list[Item]:
    """An ``input`` (string or item array) or a conversation's ``items``, normalized."""
    if value is None:
        return []
    if isinstance(value, str):
        return [user_message(ids, value)]
    if not isinstance(value, list):
        raise invalid_type(param, "a string or an array", value)
    return [_item(ids, item, f"{param}[{index}]") for index, item in enumerate(value)]


def _item(ids: Ids, item: object, where: str) -> Item:
    if not isinstance(item, dict):
        raise invalid_type(where, "an object", item)
    kind = item.get("type", "message")
    if kind == "message":
        return _message(ids, item, where)
    if kind == "function_call_output":
        call_id = _required_string(item, "call_id", where)
        output = item.get("output")
        if not isinstance(output, str | list):
            raise invalid_type(f"{where}.output", "a string or an array", output)
        return {
            "type": "function_call_output",
            "id": ids.hex("fco_"),
            "call_id": call_id,
            "output": output,
            "status": "completed",
        }
    if kind == "function_call":
        # History a stateless client replays; calls the simulator made keep their ids.
        check_function_name(item.get("name"), f"{where}.name")
        return {
            "type": "function_call",
            "id": item.get("id") or ids.hex("fc_"),
            "call_id": _required_string(item, "call_id", where),
            "name": item["name"],
            "arguments": _required_string(item, "arguments", where),
            "status": "completed",
        }
    raise bad_request(
        f"Invalid value: '{kind}'. The simulated provider accepts items of type 'message',"
        " 'function_call' and 'function_call_output'.",
        param=f"{where}.type",
        code="invalid_value",
    )


def _message(ids: Ids, item: dict[str, Any], where: str) -> Item:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise bad_request(
            f"Invalid value: '{role}'. Supported values are: 'assistant', 'system', 'developer',"
            " and 'user'.",
            param=f"{where}.role",
            code="invalid_value",
        )
    content = item.get("content")
    parts: list[dict[str, Any]]
    if isinstance(content, str):
        parts = [
            {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
            if role == "assistant"
            else {"type": "input_text", "text": content}
        ]
    elif isinstance(content, list):
        allowed = _OUTPUT_PARTS if role == "assistant" else _INPUT_PARTS
        parts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in allowed:
                raise bad_request(
                    f"Invalid '{where}.content[{index}]': expected one of {list(allowed)}.",
                    param=f"{where}.content[{index}]",
                    code="invalid_value",
                )
            if part["type"] == "output_text":
                part = {"annotations": [], "logprobs": [], **part}
            parts.append(part)
    else:
        raise invalid_type(f"{where}.content", "a string or an array", content)
    return {
        "type": "message",
        "id": ids.hex("msg_"),
        "role": role,
        "content": parts,
        "status": "completed",
    }


def _required_string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if value is None:
        raise bad_request(
            f"Missing required parameter: '{where}.{key}'.",
            param=f"{where}.{key}",
            code="missing_required_parameter",
        )
    if not isinstance(value, str) or not value:
        raise invalid_type(f"{where}.{key}", "a non-empty string", value)
    return value
