"""compose.yaml, checked without Docker (this project's machines have none).

Every runcoord service must run a real `runcoord` command whose options parse, every address
a service is given must name a service that listens there, Prometheus must scrape every
--metrics-port (and only those), and every image build must find its Dockerfile.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from typing import Any

import pytest
import typer
import yaml
from typer.core import TyperGroup
from typer.testing import CliRunner

from runcoord import cli
from runcoord.config import REPO_ROOT

COMPOSE = REPO_ROOT / "compose.yaml"
PROMETHEUS = REPO_ROOT / "deploy" / "prometheus.yml"
IMAGE = "runcoord:local"
# The full stack the compose file promises (README, "Running it with Docker").
EXPECTED = {
    "kafka",
    "postgres",
    "redis",
    "init",
    "api",
    "relay",
    "coordinator-0",
    "coordinator-1",
    "executor-provider",
    "executor-tools",
    "executor-submissions",
    "sim-provider",
    "sim-tools",
    "projector",
    "prometheus",
    "jaeger",
}


@cache
def services() -> dict[str, dict[str, Any]]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return dict(loaded["services"])


@cache
def root_command() -> TyperGroup:
    if not cli.app.registered_groups:
        cli._mount()  # every group, as `runcoord --help` sees them
    command = typer.main.get_command(cli.app)
    assert isinstance(command, TyperGroup)
    return command


def runcoord_argvs(service: dict[str, Any]) -> list[list[str]]:
    """The `runcoord …` argument lists a service of the runcoord image runs."""
    entrypoint, command = service.get("entrypoint"), service.get("command")
    if entrypoint == ["sh", "-c"]:
        (script,) = command
        argvs = [shlex.split(part) for part in script.split("&&")]
        assert all(argv[0] == "runcoord" for argv in argvs), script
        return [argv[1:] for argv in argvs]
    assert entrypoint is None, "the image's entrypoint is runcoord"
    return [[str(arg) for arg in command]]


def ours() -> list[str]:
    return sorted(name for name, s in services().items() if s.get("image") == IMAGE)


def commands() -> list[tuple[str, list[str]]]:
    return [(name, argv) for name in ours() for argv in runcoord_argvs(services()[name])]


def parse(argv: list[str]) -> dict[str, Any]:
    """Resolve the subcommands and parse every option as the CLI would (types included)."""
    command: Any = root_command()
    args, path = list(argv), ["runcoord"]
    while isinstance(command, TyperGroup):
        name = args.pop(0)
        found = command.commands.get(name)
        assert found is not None, f"no command {' '.join([*path, name])}"
        command, path = found, [*path, name]
    with command.make_context(" ".join(path), args) as ctx:
        return dict(ctx.params)


def test_compose_holds_the_full_stack() -> None:
    assert set(services()) >= EXPECTED
    assert {"coordinator-0", "coordinator-1"} <= set(ours())


@pytest.mark.parametrize(("service", "argv"), commands(), ids=lambda v: str(v))
def test_every_command_is_a_real_runcoord_command(service: str, argv: list[str]) -> None:
    root_command()  # every group mounted
    result = CliRunner().invoke(cli.app, [*argv, "--help"])
    assert result.exit_code == 0, f"{service}: runcoord {' '.join(argv)}\n{result.output}"
    parse(argv)  # and its options parse, values included


def test_coordinators_have_distinct_instance_ids() -> None:
    ids = [
        parse(argv)["instance_id"]
        for name, argv in commands()
        if argv[0] in ("coordinator", "executor")
    ]
    assert None not in ids and len(ids) == len(set(ids))


def metrics_ports() -> dict[str, int]:
    """service -> the --metrics-port its command serves on."""
    found = {}
    for name, argv in commands():
        port = parse(argv).get("metrics_port")
        if port is not None:
            found[name] = port
    return found


def test_prometheus_scrapes_every_metrics_port_of_a_service_that_exposes_it() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    scraped = {}
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in services(), f"{target}: no service {host}"
        assert port in [str(p) for p in services()[host].get("expose", [])], (
            f"{target}: {host} does not expose {port}"
        )
        scraped[host] = int(port)
    assert scraped == metrics_ports()  # each metrics port scraped, at the port it serves
    for name in scraped:
        # prometheus_client listens on RUNCOORD_METRICS_HOST; loopback is unreachable.
        assert services()[name]["environment"]["RUNCOORD_METRICS_HOST"] == "0.0.0.0"
    assert PROMETHEUS.relative_to(REPO_ROOT).as_posix() in str(services()["prometheus"])


def listening(name: str) -> set[int]:
    """The ports a service listens on inside the network."""
    service = services()[name]
    ports = {int(p) for p in service.get("expose", [])}
    ports |= {int(str(p).rsplit(":", 1)[1].split("/")[0]) for p in service.get("ports", [])}
    if service.get("image") == IMAGE:
        for argv in runcoord_argvs(service):
            params = parse(argv)
            ports |= {params[k] for k in ("port", "metrics_port") if params.get(k)}
    if name == "kafka":
        advertised = service["environment"]["KAFKA_ADVERTISED_LISTENERS"]
        ports |= {int(p) for p in re.findall(r"//kafka:(\d+)", advertised)}
    return ports


def test_every_address_names_a_service_listening_there() -> None:
    checked = 0
    for name in ours():
        service = services()[name]
        words = [*service.get("command", []), *service["environment"].values()]
        text = " ".join(map(str, words))
        for host, port in re.findall(r"(?:^|[/@\s])([a-z][a-z0-9-]*):(\d+)", text):
            assert host in services(), f"{name}: {host}:{port} is not a service"
            assert int(port) in listening(host), f"{name}: {host} does not listen on {port}"
            checked += 1
    assert checked >= 6  # kafka, postgres, redis, jaeger, the simulators


def test_the_one_shot_init_is_awaited_by_every_runcoord_service() -> None:
    # `docker compose up --wait` accepts a one-shot service that exited 0 only when the
    # services depending on it ask for service_completed_successfully.
    assert services()["init"]["restart"] == "no"
    for name in ours():
        if name != "init":
            assert services()[name]["depends_on"]["init"] == {
                "condition": "service_completed_successfully"
            }, name


def test_every_image_build_finds_its_dockerfile() -> None:
    builds = {name: s["build"] for name, s in services().items() if "build" in s}
    assert set(builds) == set(ours())  # every service of our image can build it
    for name, build in builds.items():
        dockerfile = COMPOSE.parent / build["context"] / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        text = dockerfile.read_text(encoding="utf-8")
        assert re.search(r"^FROM python:3\.11-slim", text, re.M), "python:3.11-slim base"
        assert re.search(r"^USER (?!root)\w+", text, re.M), "runs as a non-root user"
        assert 'ENTRYPOINT ["runcoord"]' in text


def test_compose_only_mounts_files_that_exist() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source}"


def test_dockerignore_keeps_what_the_image_needs() -> None:
    ignored = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for needed in ("topics.yaml", "tools.yaml", "providers.yaml", "pyproject.toml", "README.md"):
        assert (REPO_ROOT / needed).is_file()
        assert needed not in ignored
