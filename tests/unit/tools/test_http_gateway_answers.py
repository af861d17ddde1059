"""HttpToolGateway: an answer outside the protocol is a clear GatewayError, whatever its bytes."""

from __future__ import annotations

import httpx
import pytest

from runcoord.config import load
from runcoord.registry import load_registry
from runcoord.tools.gateway import GatewayError
from runcoord.tools.http_gateway import HttpToolGateway

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe", b"[" * 100_000, b'{"actions": 3}', b'{"actions": ["x"]}'],
    ids=["text", "not-utf8", "too-deep", "not-a-list", "not-objects"],
)
async def test_a_lookup_answer_that_is_not_a_lookups_is_a_gateway_error(body: bytes) -> None:
    spec = load_registry(load().tools_file).tools["update_crm"]
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    async with httpx.AsyncClient(transport=transport) as http:
        gateway = HttpToolGateway("http://gateway.test", http)
        with pytest.raises(GatewayError, match="update_crm lookup"):
            await gateway.lookup(spec, effect_key="ek1", tenant="t1")
