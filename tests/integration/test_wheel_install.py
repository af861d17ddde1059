"""The package as a user gets it: the wheel installed (not editable) into a fresh venv, run from
a folder that is not the checkout, finds its configuration and schemas inside the package,
brings the stack up (here: checks the running one), applies the topics and replays a few turns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from runcoord.config import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

# Generic names the package must not put into a user's top-level imports.
GENERIC = {"api", "sim", "harness", "effects", "forensics", "schemas", "coordinator", "submitter"}


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[str, str]:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout, done.stderr


@pytest.mark.timeout(900)
def test_the_wheel_installs_and_runs_outside_the_checkout(
    settings: Settings, tmp_path: Path, unique: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOORD_", "PYTHON"))}
    dist = tmp_path / "dist"
    build = "".join(
        _run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(REPO_ROOT)],
            tmp_path,
            env,
            300,
        )
    )
    assert "deprecat" not in build.lower(), build
    (wheel,) = dist.glob("runcoord-*.whl")
    with zipfile.ZipFile(wheel) as z:
        top = {name.split("/", 1)[0] for name in z.namelist()}
        names = set(z.namelist())
    assert {t for t in top if not t.endswith(".dist-info")} == {"runcoord"}
    assert not GENERIC & top
    shipped_files = (
        "defaults/tools.yaml",
        "defaults/topics.yaml",
        "schemas/fingerprints.lock",
        "harness/plans/matrix/broker-restart.yaml",
    )
    for shipped in shipped_files:
        assert f"runcoord/{shipped}" in names, shipped

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 120)
    install = "".join(
        _run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], tmp_path, env, 600)
    )
    assert "deprecat" not in install.lower(), install

    # A user's folder, not the checkout: configuration comes from the package's defaults.
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    env |= {
        "RUNCOORD_HOME": str(home),
        "RUNCOORD_BOOTSTRAP_SERVERS": settings.bootstrap,
        "RUNCOORD_POSTGRES_DSN": settings.dsn,
        "RUNCOORD_REDIS_URL": settings.redis,
    }
    runcoord = str(venv / "bin" / "runcoord")
    where, _ = _run(
        [str(venv / "bin" / "python"), "-c", "import runcoord; print(runcoord.__file__)"],
        work,
        env,
        60,
    )
    assert str(venv) in where and str(REPO_ROOT) not in where, where

    _run([runcoord, "stack", "up"], work, env, 120)
    _run([runcoord, "topics", "apply", "--prefix", f"{unique}."], work, env, 120)
    _run([runcoord, "db", "migrate"], work, env, 120)
    trace = work / "trace.jsonl"
    _run(
        [runcoord, "workload", "generate", "--turns", "6", "--seed", "3", "--out", str(trace)],
        work,
        env,
        60,
    )
    out = work / "replay"
    _run(
        [
            runcoord,
            "replay",
            str(trace),
            "--system",
            "runcoord",
            "--rate",
            "3",
            "--coordinators",
            "1",
            "--budget-s",
            "60",
            "--out",
            str(out),
        ],
        work,
        env,
        600,
    )
    report = json.loads(_run([runcoord, "report", str(out), "--json"], work, env, 120)[0])
    figures = report["systems"]["runcoord"]
    assert figures["turns_sent"] == 6
    assert figures["terminal_rate"] == 1.0, figures["statuses"]
    assert figures["system_duplicates"] == 0
