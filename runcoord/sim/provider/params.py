"""Request parsing with OpenAI's validation messages.

Bodies are read by hand rather than through pydantic models so that every rejection carries
OpenAI's error body (``param`` and ``code`` included) instead of FastAPI's 422.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from fastapi import Request

from runcoord.sim.provider.errors import bad_request

# Scripts travel in metadata (see README); they may be longer than OpenAI's 512 characters.
SIM_SCRIPT_KEY = "sim_script"
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def invalid_type(param: str, expected: str, value: object) -> Exception:
    return bad_request(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


async def read_json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you"
            " aren't using your HTTP library correctly. The OpenAI API expects a JSON payload,"
            " but what was sent was not valid JSON.)"
        ) from None
    if not isinstance(data, dict):
        raise invalid_type("body", "an object", data)
    return data


class Body:
    """One JSON object of a request; getters check presence and type, naming the param."""

    def __init__(self, data: dict[str, Any], allowed: Iterable[str], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix
        allowed_set = set(allowed)
        for key in data:
            if key not in allowed_set:
                raise bad_request(
                    f"Unknown parameter: '{prefix}{key}'.",
                    param=f"{prefix}{key}",
                    code="unknown_parameter",
                )

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.data or (required and self.data[key] is None):
            if required:
                raise bad_request(
                    f"Missing required parameter: '{self.prefix}{key}'.",
                    param=f"{self.prefix}{key}",
                    code="missing_required_parameter",
                )
            return None
        return self.data[key]

    def _typed(self, key: str, required: bool, kinds: tuple[type, ...], expected: str) -> Any:
        value = self._get(key, required)
        if value is None:
            return None
        # bool is an int in Python; JSON keeps them apart.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise invalid_type(f"{self.prefix}{key}", expected, value)
        return value

    def string(self, key: str, *, required: bool = False) -> str | None:
        result: str | None = self._typed(key, required, (str,), "a string")
        return result

    def integer(self, key: str) -> int | None:
        result: int | None = self._typed(key, False, (int,), "an integer")
        return result

    def number(self, key: str) -> float | None:
        value = self._typed(key, False, (int, float), "a number")
        return None if value is None else float(value)

    def boolean(self, key: str) -> bool | None:
        result: bool | None = self._typed(key, False, (bool,), "a boolean")
        return result

    def array(self, key: str, *, required: bool = False) -> list[Any] | None:
        result: list[Any] | None = self._typed(key, required, (list,), "an array")
        return result

    def obj(self, key: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._typed(key, False, (dict,), "an object")
        return result

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def metadata(self, key: str = "metadata") -> dict[str, str]:
        return parse_metadata(self.data.get(key), f"{self.prefix}{key}")


def parse_metadata(value: object, param: str = "metadata") -> dict[str, str]:
    """OpenAI's limits: at most 16 pairs, keys up to 64 characters, values up to 512."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    if len(value) > 16:
        raise bad_request(
            f"Invalid '{param}': too many properties. Expected an object with at most 16"
            f" properties, but got an object with {len(value)} properties instead.",
            param=param,
            code="object_above_max_properties",
        )
    result: dict[str, str] = {}
    for key, item in value.items():
        if len(key) > 64:
            raise bad_request(
                f"Invalid '{param}': key too long. Expected a key with maximum length 64,"
                f" but got a key with length {len(key)} instead.",
                param=param,
                code="string_above_max_length",
            )
        if not isinstance(item, str):
            raise invalid_type(f"{param}.{key}", "a string", item)
        if len(item) > 512 and key != SIM_SCRIPT_KEY:
            raise bad_request(
                f"Invalid '{param}.{key}': string too long. Expected a string with maximum"
                f" length 512, but got a string with length {len(item)} instead.",
                param=f"{param}.{key}",
                code="string_above_max_length",
            )
        result[key] = item
    return result


def function_tools(tools: list[Any], param: str) -> list[dict[str, Any]]:
    """Check an Assistants ``tools`` array (function, code_interpreter, file_search)."""
    checked: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        where = f"{param}[{index}]"
        if not isinstance(tool, dict):
            raise invalid_type(where, "an object", tool)
        kind = tool.get("type")
        if kind not in ("function", "code_interpreter", "file_search"):
            raise bad_request(
                f"Invalid value: '{kind}'. Supported values are: 'code_interpreter',"
                " 'file_search', and 'function'.",
                param=f"{where}.type",
                code="invalid_value",
            )
        if kind == "function":
            function = tool.get("function")
            if not isinstance(function, dict):
                raise bad_request(
                    f"Missing required parameter: '{where}.function'.",
                    param=f"{where}.function",
                    code="missing_required_parameter",
                )
            check_function_name(function.get("name"), f"{where}.function.name")
        checked.append(tool)
    return checked


def check_function_name(name: object, param: str) -> str:
    if name is None:
        raise bad_request(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    if not isinstance(name, str):
        raise invalid_type(param, "a string", name)
    if not _FUNCTION_NAME.match(name):
        raise bad_request(
            f"Invalid '{param}': string does not match pattern. Expected a string that matches"
            f" the pattern '^[a-zA-Z0-9_-]+$'.",
            param=param,
            code="invalid_value",
        )
    return name


def query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter (``true``/``false``, as the SDK sends them); absent is false."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise bad_request(
        f"Invalid value for '{name}': expected a boolean, but got '{raw}' instead.",
        param=name,
        code="invalid_type",
    )


def query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(
            f"Invalid '{name}': expected an integer, but got '{raw}' instead.",
            param=name,
            code="invalid_type",
        ) from None
