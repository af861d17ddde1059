"""`runcoord dev`: the whole product in one command; `runcoord turn`: try it.

``runcoord dev [--sim]`` takes the single-instance lock (``dev.lock``), brings the stack up
(as ``runcoord stack up``), applies the topics and the migrations, makes (or reuses) a local
tenant's API key, starts and supervises every product process (runcoord/dev/supervisor.py) and
shows their combined log (runcoord/dev/logs.py). Once the API answers ``/healthz`` it prints
the URLs and the key and writes them to ``dev.json`` (rewritten whenever a process restarts,
with every process's current pid). Ctrl-C (SIGINT), SIGTERM or SIGHUP stops every process it
started, removes ``dev.json`` and leaves the stack running (``--stop-stack`` stops it too).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from runcoord.config import Settings, load
from runcoord.dev import state
from runcoord.dev.logs import CombinedLog, timestamp
from runcoord.dev.supervisor import STOP_GRACE_S, Spec, Supervisor
from runcoord.errors import RuncoordError
from runcoord.stack.console import exits_cleanly
from runcoord.stack.polling import Deadline

# The processes that serve /metrics, in the order they are numbered from --metrics-port-base.
METRICS_PROCESSES = (
    "coord-0",
    "coord-1",
    "exec",
    "projector",
    "relay",
    "api",
)
DEFAULT_TENANT = "t1"  # tools.yaml enables the sandbox's write tools for t1-t4
LOOP = "127.0.0.1"


def _local(host: str) -> str:
    """Where to reach a server listening on ``host`` from here."""
    return LOOP if host in ("0.0.0.0", "", "::") else host


@dataclass(frozen=True)
class Ports:
    api: int
    sim_provider: int
    sim_tools: int
    metrics: dict[str, int]  # process -> port; empty when metrics are off


@dataclass(frozen=True)
class Plan:
    specs: list[Spec]
    env: dict[str, str]  # set for every child, on top of ours
    provider_url: str
    gateway_url: str


def plan(
    settings: Settings,
    *,
    sim: bool,
    api_host: str,
    ports: Ports,
    topic_prefix: str,
    providers_file: Path | None,
    json_logs: bool,
) -> Plan:
    """Every product process, in start order (the simulators first)."""
    env = {"PYTHONUNBUFFERED": "1"}
    if json_logs:
        env["RUNCOORD_LOG_FORMAT"] = "json"
    provider_url, gateway_url = settings.provider_url, settings.gateway_url
    if sim:
        provider_url = f"http://127.0.0.1:{ports.sim_provider}/v1"
        gateway_url = f"http://127.0.0.1:{ports.sim_tools}"
        env["RUNCOORD_PROVIDER_URL"] = provider_url
        env["RUNCOORD_GATEWAY_URL"] = gateway_url
    prefix = ("--topic-prefix", topic_prefix)

    def metrics(name: str) -> tuple[str, ...]:
        # Always given: a RUNCOORD_METRICS_PORT in our environment would give every child the
        # same port; 0 turns it off.
        return ("--metrics-port", str(ports.metrics.get(name, 0)))

    specs: list[Spec] = []
    if sim:
        specs += [
            Spec("sim-provider", ("sim", "provider", "--port", str(ports.sim_provider))),
            Spec("sim-tools", ("sim", "tools", "--port", str(ports.sim_tools))),
        ]
    args: tuple[str, ...]
    for i in (0, 1):
        name = f"coord-{i}"
        args = (
            "coordinator",
            "--instance-id",
            name,
            "--group",
            f"{topic_prefix}runcoord-coordinator",
        )
        specs.append(Spec(name, (*args, *prefix, *metrics(name))))
    # Every kind of executor in one replica (runcoord/executors.py).
    args = ("executor", "all", "--instance-id", "exec-0", *prefix, *metrics("exec"))
    specs.append(Spec("exec", args))
    group = ("--group", f"{topic_prefix}runcoord-forensics-projector")
    specs += [
        Spec("projector", ("forensics", "project", *group, *prefix, *metrics("projector"))),
        Spec("relay", ("api", "relay", *prefix, *metrics("relay"))),
    ]
    api = ["api", "serve", "--host", api_host, "--port", str(ports.api), *prefix]
    if providers_file is not None:
        api += ["--providers-file", str(providers_file)]
    specs.append(Spec("api", (*api, *metrics("api"))))
    return Plan(
        [Spec(s.name, s.args, s.env, ports.metrics.get(s.name)) for s in specs],
        env,
        provider_url,
        gateway_url,
    )


def choose_ports(
    *, api: int, sim: bool, sim_provider: int, sim_tools: int, metrics_base: int | None
) -> Ports:
    """The ports asked for; metrics base 0: a free port each; None: no metrics."""
    if metrics_base is None:
        metrics: dict[str, int] = {}
    elif metrics_base == 0:
        from runcoord.harness.replay.procs import free_port

        metrics = {name: free_port() for name in METRICS_PROCESSES}
    else:
        metrics = {name: metrics_base + i for i, name in enumerate(METRICS_PROCESSES)}
    return Ports(api, sim_provider if sim else 0, sim_tools if sim else 0, metrics)


def check_ports(ports: Ports, api_host: str) -> None:
    """Every port we are about to listen on is free, or a StackError naming its holder."""
    from runcoord.errors import StackError
    from runcoord.stack.procs import port_in_use, who_listens

    wanted = [("the API", "--api-port", ports.api, _local(api_host))]
    if ports.sim_provider:
        wanted.append(("the simulated provider", "--sim-provider-port", ports.sim_provider, LOOP))
    if ports.sim_tools:
        wanted.append(("the sandbox tool gateway", "--sim-tools-port", ports.sim_tools, LOOP))
    wanted += [(f"{n}'s metrics", "--metrics-port-base", p, LOOP) for n, p in ports.metrics.items()]
    for what, option, port, host in wanted:
        if port_in_use(port, host):
            holder = who_listens(port) or "another process"
            raise StackError(
                f"port {port} for {what} is taken ({holder}); pass {option} to use another"
            )


def _sim_providers_file(run_dir: Path) -> Path:
    """Turns on the simulator use the Responses protocol (OpenAI's own): the model is free, so
    no assistant has to be created at the provider first (the Assistants protocol needs one)."""
    path = run_dir / "dev-providers.yaml"
    path.write_text(
        "# Written by `runcoord dev --sim` (see runcoord/providers.py): every turn on the\n"
        "# simulator uses the Responses protocol, as turns on OpenAI itself do.\n"
        "default: responses\nassistants: {}\n"
    )
    return path


def _wait_answering(
    urls: dict[str, str], sup: Supervisor, stop: threading.Event, timeout: float
) -> str | None:
    """None once every URL answers (below 500); else why not, at the deadline or on stop."""
    deadline, pending = Deadline(timeout), dict(urls)
    last: dict[str, str] = {}
    with httpx.Client(timeout=1.0) as http:
        while True:
            for name, url in list(pending.items()):
                try:
                    code = http.get(url).status_code
                except httpx.HTTPError as exc:
                    last[name] = type(exc).__name__
                    continue
                if code < 500:
                    del pending[name]
                else:
                    last[name] = f"HTTP {code}"
            if not pending:
                return None
            if stop.is_set():
                return "interrupted"
            if deadline.expired():
                return "; ".join(f"{n} at {pending[n]}: {last.get(n, '?')}" for n in pending)
            sup.tick()
            stop.wait(0.25)


def summary_lines(info: dict[str, Any], state_path: Path) -> list[str]:
    api, key = info["api_url"], info["tenant_key"]
    lines = [
        f"runcoord dev is up: {len(info['processes'])} processes; Ctrl-C stops them",
        f"  API        {api}   (OpenAPI: {api}/openapi.json)",
        f"  tenant     {info['tenant']}",
        f"  key        {key}",
    ]
    metrics = info.get("metrics") or {}
    for i, (name, url) in enumerate(metrics.items()):
        lines.append(f"  {'metrics' if i == 0 else '':<10} {name:<17} {url}")
    if info.get("sim"):
        lines.append(f"  simulators provider {info['provider_url']}, tools {info['gateway_url']}")
    else:
        lines.append(f"  provider   {info['provider_url']}   tools {info['gateway_url']}")
    lines += [
        f"  dev.json   {state_path}",
        "  try it     runcoord turn 'Open a ticket for my late order' --follow",
        "  or curl    (the thread must exist at the provider: `runcoord turn` makes one)",
        f"    curl -sS -X POST {api}/v1/threads/$THREAD/turns \\",
        f"      -H 'Authorization: Bearer {key}' \\",
        '      -H "Idempotency-Key: $(cat /proc/sys/kernel/random/uuid)" \\',
        "      -H 'Content-Type: application/json' -d '{\"input\": \"Open a ticket\"}'",
        f"    curl -sSN {api}/v1/runs/$RUN_ID/events -H 'Authorization: Bearer {key}'",
    ]
    return lines


RunDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Folder of dev.lock, dev.json and the local key (default: the state folder, "
        "RUNCOORD_STATE_DIR). The stack keeps its own.",
        show_default=False,
    ),
]


@exits_cleanly
def dev(
    sim: Annotated[
        bool,
        typer.Option(
            "--sim", help="Also run the simulated provider and tool gateway, and use them."
        ),
    ] = False,
    json_logs: Annotated[
        bool, typer.Option("--json", help="One JSON object per log line, with `process`.")
    ] = False,
    api_host: Annotated[str, typer.Option(help="Interface the API listens on.")] = "127.0.0.1",
    api_port: Annotated[int, typer.Option(help="The API's port.")] = 8400,
    sim_provider_port: Annotated[int, typer.Option(help="The simulated provider's port.")] = 8390,
    sim_tools_port: Annotated[int, typer.Option(help="The sandbox tool gateway's port.")] = 8391,
    metrics_port_base: Annotated[
        int,
        typer.Option(
            help="Each process serves /metrics on its own port from here on (0: any free ports)."
        ),
    ] = 9400,
    metrics: Annotated[bool, typer.Option(help="Serve /metrics from every process.")] = True,
    topic_prefix: Annotated[
        str, typer.Option(help="Prefix of every topic name (and consumer group).")
    ] = "",
    tenant: Annotated[str, typer.Option(help="The local tenant the key acts for.")] = (
        DEFAULT_TENANT
    ),
    run_dir: RunDirOpt = None,
    startup_timeout: Annotated[
        float, typer.Option(help="Seconds the API (and simulators) get to answer.")
    ] = 90.0,
    stop_stack: Annotated[
        bool, typer.Option(help="On exit, stop the stack too (`runcoord stack down`).")
    ] = False,
) -> None:
    """The whole product in one command: the stack, topics, migrations and every process,
    supervised (restarted when one dies), with one combined log. Ctrl-C stops what it started."""
    settings = load()
    folder = run_dir or settings.state_dir
    try:
        lock = state.DevLock(folder / state.LOCK_FILE)
    except state.AlreadyRunning as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    try:
        _run(
            settings,
            folder,
            sim=sim,
            json_logs=json_logs,
            api_host=api_host,
            ports=choose_ports(
                api=api_port,
                sim=sim,
                sim_provider=sim_provider_port,
                sim_tools=sim_tools_port,
                metrics_base=metrics_port_base if metrics else None,
            ),
            topic_prefix=topic_prefix,
            tenant=tenant,
            startup_timeout=startup_timeout,
            stop_stack=stop_stack,
        )
    except KeyboardInterrupt:  # before the processes started: nothing of ours to stop
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    finally:
        lock.release()


def _run(
    settings: Settings,
    folder: Path,
    *,
    sim: bool,
    json_logs: bool,
    api_host: str,
    ports: Ports,
    topic_prefix: str,
    tenant: str,
    startup_timeout: float,
    stop_stack: bool,
) -> None:
    from runcoord.stack import orchestrate

    providers_file = _sim_providers_file(folder) if sim else None
    the_plan = plan(
        settings,
        sim=sim,
        api_host=api_host,
        ports=ports,
        topic_prefix=topic_prefix,
        providers_file=providers_file,
        json_logs=json_logs,
    )
    log = CombinedLog([s.name for s in the_plan.specs], json_lines=json_logs)
    check_ports(ports, api_host)
    info = _prepare(settings, folder, log, the_plan, providers_file, tenant, topic_prefix)
    api_url = f"http://{_local(api_host)}:{ports.api}"
    metrics_host = _local(settings.metrics_host)
    info.update(
        api_url=api_url,
        events_url=f"{api_url}/v1/runs/{{run_id}}/events",
        metrics={n: f"http://{metrics_host}:{p}/metrics" for n, p in ports.metrics.items()},
        sim=sim,
        topic_prefix=topic_prefix,
        started_at=timestamp(),
    )
    state_path = folder / state.STATE_FILE
    ready = threading.Event()
    sup = Supervisor(the_plan.specs, log, {**os.environ, **the_plan.env})

    def write_state() -> None:  # once ready, and whenever a process restarts (its new pid)
        if ready.is_set():
            info.update(pid=os.getpid(), processes=sup.processes())
            state.write_json(state_path, info)

    sup.on_change = write_state
    stop, hurry = threading.Event(), threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        (hurry if stop.is_set() else stop).set()  # a second Ctrl-C: SIGKILL what is left

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    started = time.monotonic()
    try:
        sup.start_all()
        log.say(f"started {len(sup.children)} processes; waiting for the API at {api_url}")
        urls = {"api": f"{api_url}/healthz"}
        if sim:
            urls["sim-provider"] = the_plan.provider_url.removesuffix("/v1") + "/_sim/health"
            urls["sim-tools"] = the_plan.gateway_url + "/_sim/health"
        problem = _wait_answering(urls, sup, stop, startup_timeout)
        if problem == "interrupted":
            return
        if problem is not None:
            raise RuncoordError(
                f"not up within {startup_timeout:.0f} s: {problem} (see the log above)"
            )
        ready.set()
        write_state()
        if json_logs:
            log.say("ready", event="ready", state_file=str(state_path), **info)
        else:
            log.block(summary_lines(info, state_path))
            log.say(f"ready in {time.monotonic() - started:.1f} s")
        while not stop.wait(0.2):
            sup.tick()
    finally:
        n = len(sup.children)
        log.say(f"stopping {n} processes (SIGTERM; SIGKILL after {STOP_GRACE_S:.0f} s)")
        sup.stop_all(STOP_GRACE_S, hurry)
        state.remove(state_path)
        if stop_stack:
            orchestrate.down(settings, lambda m: log.say(f"stack: {m}"))
            log.say(f"stopped the {n} processes runcoord dev started, and the stack")
        else:
            log.say(
                f"stopped the {n} processes runcoord dev started; the stack is still running "
                "(`runcoord stack down` stops it)"
            )
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _prepare(
    settings: Settings,
    folder: Path,
    log: CombinedLog,
    the_plan: Plan,
    providers_file: Path | None,
    tenant: str,
    topic_prefix: str,
) -> dict[str, Any]:
    """The stack up, the topics and migrations applied, the tenant's key: what dev.json says
    besides the processes."""
    from runcoord import db, topics
    from runcoord.api.app import config_from
    from runcoord.kafka import TopicNames
    from runcoord.stack import orchestrate

    # What the API will make of its provider settings, checked before anything starts (a bad
    # providers.yaml would otherwise only show as an API restarting for ever).
    api_config = config_from(
        settings,
        topics=TopicNames.with_prefix(topic_prefix),
        provider_url=the_plan.provider_url,
        providers_file=providers_file,
    )
    if "RUNCOORD_PROVIDER_URL" not in the_plan.env and (
        the_plan.provider_url == Settings.model_fields["provider_url"].default
    ):
        log.say(
            f"provider: {the_plan.provider_url} is the simulator's address and --sim is off: "
            "run `runcoord sim provider` yourself, set RUNCOORD_PROVIDER_URL, or use --sim",
            level="warning",
        )
    orchestrate.up(settings, lambda m: log.say(f"stack: {m}"))
    log.say("stack: up")
    specs = topics.load_specs(settings.topics_file)
    found = topics.apply(settings.bootstrap, specs, topic_prefix)
    said: dict[tuple[str, str], list[str]] = {}  # one line per message, naming its topics
    for f in found:
        if f.level is not topics.Level.INFO:
            said.setdefault((f.level.value, f.message), []).append(f.topic)
    for (level, message), names in said.items():
        log.say(f"topics: {', '.join(names)}: {message}", level=level)
    if topics.has_errors(found):
        raise RuncoordError("the topics differ from topics.yaml (see above); not starting")
    created = sum(1 for f in found if f.level is topics.Level.INFO)
    log.say(f"topics: {created} created, all {len(specs)} as declared")
    applied = db.migrate(settings.dsn)
    log.say(f"database: {len(applied)} migrations applied, up to date")
    key, new = state.local_key(settings.dsn, tenant, folder / state.KEY_FILE)
    log.say(f"tenant {tenant}: {'a new' if new else 'its saved'} API key")
    return {
        "pid": None,
        "api_url": None,
        "tenant": tenant,
        "tenant_key": key,
        "provider_url": the_plan.provider_url,
        "gateway_url": the_plan.gateway_url,
        "protocol": api_config.protocol_for(api_config.assistant_id, None),
        "processes": [],
    }


@exits_cleanly
def turn(
    text: Annotated[str, typer.Argument(help="The user's message.")],
    thread: Annotated[
        str | None,
        typer.Option(
            help="Your conversation id (the same one for the next turn); default: a new one.",
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Print the run's events until it ends.")
    ] = False,
    assistant_id: Annotated[
        str | None, typer.Option(help="The assistant (the model, on Responses).")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retry a turn with the key it was posted with.")
    ] = None,
    run_dir: RunDirOpt = None,
) -> None:
    """Post a turn to the API `runcoord dev` runs (URL and key from its dev.json)."""
    from runcoord.dev import client

    settings = load()
    path = (run_dir or settings.state_dir) / state.STATE_FILE
    info = state.read_json(path)
    if info is None:
        raise RuncoordError(f"no {path}: is `runcoord dev` running (try `runcoord dev --sim`)?")
    # A conversation id of the user's own: runcoord creates its provider thread on the
    # first turn and keeps using it for the next ones.
    thread_id = thread or f"conv-{uuid.uuid4().hex[:12]}"
    with client.Api(info["api_url"], info["tenant_key"]) as api:
        accepted = api.post_turn(
            thread_id, text, assistant_id=assistant_id, idempotency_key=idempotency_key
        )
        typer.echo(f"run {accepted['run_id']} on thread {accepted['thread_id']}")
        if not follow:
            return
        run = client.follow(api, accepted["run_id"], typer.echo)
    outcome = f" ({run['outcome']})" if run.get("outcome") not in (None, run["status"]) else ""
    typer.echo(f"run {run['run_id']}: {run['status']}{outcome}")
    if run["status"] != "completed":
        raise typer.Exit(1)
