"""Checks that fail early with a message that says what to do, before anything is started."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from runcoord.errors import StackError

# Jars (43 MB), a broker's first segments and indexes, a fresh PostgreSQL cluster (~40 MB)
# and their logs fit in this with room to spare; below it things fail half-way and obscurely.
MIN_FREE_BYTES = 512 * 1024 * 1024

JAVA_MIN = 17  # Kafka 4.x brokers need Java 17.


def check_state_dir(root: Path) -> None:
    """The state folder exists, is writable, and has room; otherwise say which and what to do."""
    hint = "set RUNCOORD_STATE_DIR to a writable folder with space"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as exc:
        raise StackError(f"state folder {root} is not writable ({exc.strerror}); {hint}") from exc
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise StackError(
            f"only {free // 2**20} MiB free under {root} (the stack needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB): free some disk space or {hint}"
        )


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise StackError(
            f"Java {JAVA_MIN}+ not found (Kafka runs on the JVM): install it "
            "(apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
        )
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', probe.stderr + probe.stdout)
    major = int(match.group(1)) if match else 0
    if major < JAVA_MIN:
        raise StackError(
            f"{java} is Java {major or '?'}; Kafka 4 needs Java {JAVA_MIN}+: install "
            "openjdk-17-jre-headless or point JAVA_HOME at a newer JDK"
        )
    return java


def find_maven() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError(
            "Maven (mvn) not found: it fetches the Kafka jars from Maven Central once. "
            "Install it (apt-get install -y maven)"
        )
    return mvn
