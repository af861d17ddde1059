"""The Kafka jars: fetched from Maven Central once with the pom beside this file, then cached.

The cache is a folder per Kafka version under the state folder; a marker file written last
means "complete", so an interrupted download is redone rather than half-used.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from runcoord.errors import StackError
from runcoord.stack.component import Say
from runcoord.stack.preflight import find_maven
from runcoord.stack.procs import tail_text

POM = Path(__file__).with_name("pom.xml")
LOG4J2_CONFIG = Path(__file__).with_name("log4j2.properties")
_MARKER = ".complete"


def ensure_jars(libs: Path, version: str, say: Say) -> Path:
    """The folder holding Kafka ``version``'s jars, downloading them on first use."""
    if (libs / _MARKER).exists():
        return libs
    mvn = find_maven()
    say(f"kafka: fetching Kafka {version} jars from Maven Central (first run only)")
    partial = libs.with_name(libs.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    argv = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-Dkafka.version={version}",
        f"-DoutputDirectory={partial}",
    ]
    run = subprocess.run(argv, capture_output=True, text=True, check=False)
    jars = list(partial.glob("kafka_2.13-*.jar")) if partial.exists() else []
    if run.returncode != 0 or not jars:
        raise StackError(
            f"Maven could not fetch Kafka {version} (exit {run.returncode}); is Maven Central "
            f"reachable and is {version} a released version?\n"
            + tail_text(run.stdout + run.stderr, 15)
        )
    (partial / _MARKER).write_text(version + "\n")
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    return libs
