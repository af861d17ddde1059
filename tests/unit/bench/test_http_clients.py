"""bench/http_clients.py runs end to end (a few requests) and prints its figures as JSON."""

from __future__ import annotations

import json
import subprocess
import sys

from runcoord.config import REPO_ROOT


def test_it_measures_each_client_and_prints_json() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "http_clients.py"),
            "--requests",
            "3",
            "--rounds",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    for client in (
        "sdk_httpx",
        "sdk_aiohttp",
        "gateway_httpx",
        "gateway_aiohttp",
        "responses_write",
    ):
        assert figures[f"{client}_cpu_ms_per_request"] > 0
    assert figures["sdk_aiohttp_over_httpx"] > 0 and figures["gateway_aiohttp_over_httpx"] > 0
