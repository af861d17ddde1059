"""The fault matrix: every named scenario (``plans/matrix/*.yaml``) replayed against runcoord,
each run on a fresh trace, and judged from the evidence the replay left, as Jepsen judges a
database: every write keyed by its run and tool call, counted; every input followed to the
journal.

Per run (one replay of one scenario on one trace seed):

- ``expected_writes`` / ``observed_writes``: the report's (the trace and tools.yaml / the
  gateway's audit log, ``sandbox_audit``);
- ``excess``: the report's ``excess_writes``: audit rows beyond what the runs' scripts ask,
  per (run, tool, payload), plus rows naming no run of the replay; ``duplicate_keys``: audit
  rows beyond the first per (run id, tool call id) (each call of a script may act once);
  ``extra_provider_runs``: provider runs created beyond one per run (the provider's records).
  ``extra_threads``: provider threads runcoord created beyond one per conversation. All must
  be 0;
- ``missing_writes`` and ``missing_writes_by_cause`` (report/missing.py): ``unexplained`` must
  be 0;
- ``stalls``: the report's ``coordinator_stalls``: must be 0;
- ``inputs_lost``: runs the driver sent (``runs.jsonl``) whose run id appears in neither the
  journal (``runs.events``: any record keyed by it, ``journal.jsonl``) nor the dead-letter topic
  (``runs.dlq``: a letter keyed by it, ``dlq.jsonl``), read from the topics once the replay
  ended. Sends the driver's producer reported failed are counted in it (``send_errors``): the
  client lost them, and nothing would tell a user. Must be 0. Without the journal evidence it
  cannot be computed, and the run fails;
- every fault the plan fired must have fired (a kill point never reached proves nothing);
- at least half the runs completed (``MIN_COMPLETED``): with every run failed, nothing acts
  twice and nothing is lost, and nothing is proven either (a broken build, a fault that took
  the whole system down). Runs that did not complete are listed by status.

PASS when all of those hold; the bench (bench/fault_matrix.py) exits 1 on any FAIL.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runcoord.config import Settings
from runcoord.harness.faultplan.model import (
    FaultPlan,
    StackSpec,
    load_plan,
    matrix_plans,
    plan_path,
)
from runcoord.harness.report.data import read_jsonl

SYSTEM = "runcoord"
DEFAULT_TURNS = 60
DEFAULT_RATE = 6.0
MIN_COMPLETED = 0.5  # of the runs sent, or the run proves nothing
# Faults that are bookkeeping, not the fault: a restart "already running" is fine.
_MUST_FIRE = frozenset(
    {
        "kill", "kill_at", "kill_at_death", "pause", "resume", "pause_watch", "stopped",
        "leader_kill", "leader_up", "broker_down", "broker_up", "broker_back", "partition_cut",
        "partition_heal", "redis_down", "redis_up", "postgres_down", "postgres_up",
        "provider_window", "gateway_window", "duplicate", "resubmit", "restart",
    }
)  # fmt: skip


@dataclass
class MatrixRun:
    scenario: str
    run: int
    seed: int
    turns: int
    folder: str
    took_s: float = 0.0  # the whole replay: set-up, send window, drain, evidence, tear-down
    wall_s: float | None = None  # the replay's own window (first send to end)
    runs_sent: int = 0
    resubmissions: int = 0
    expected_writes: int = 0
    observed_writes: int = 0
    excess: int | None = None
    duplicate_keys: int | None = None
    extra_provider_runs: int | None = None
    extra_threads: int | None = None  # provider threads beyond one per conversation
    missing_writes: int | None = None
    missing_by_cause: dict[str, int] = field(default_factory=dict)
    unexplained: int | None = None
    stalls: int | None = None
    unresolved_steps: int | None = None
    inputs_lost: int | None = None
    lost_runs: list[str] = field(default_factory=list)
    unfinished: int = 0
    completed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    terminal_rate: float | None = None
    faults_fired: int = 0
    drawn: dict[str, int] = field(default_factory=dict)  # what the simulators' windows drew
    faults_failed: list[str] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # why a figure is unknown
    verdict: str = "FAIL"
    reasons: list[str] = field(default_factory=list)


def scenarios(only: Sequence[str] = ()) -> list[str]:
    """The matrix's scenario names (``NAME`` of ``plans/matrix/NAME.yaml``), or ``only``."""
    every = [n.removeprefix("matrix/") for n in matrix_plans()]
    if not only:
        return every
    unknown = sorted(set(only) - set(every))
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {every}")
    return [n for n in every if n in only]


def load_scenario(name: str) -> FaultPlan:
    return load_plan(f"matrix/{name}")


# --------------------------------------------------------------------------- judging


def inputs_lost(folder: Path) -> tuple[int | None, list[str], str | None]:
    """(lost, their run ids, why unknown) for one system's evidence folder."""
    manifest_path = folder / "evidence.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    errors = manifest.get("errors", {})
    for name in ("journal.jsonl", "dlq.jsonl"):
        if name in errors:
            return None, [], f"{name} not saved: {errors[name]}"
        if not (folder / name).exists():
            return None, [], f"{name} missing (no journal evidence)"
    reached = {r.get("run_id") for r in read_jsonl(folder / "journal.jsonl")}
    reached |= {r.get("run_id") for r in read_jsonl(folder / "dlq.jsonl")}
    sent = [r["run_id"] for r in read_jsonl(folder / "runs.jsonl")]
    lost = sorted(run_id for run_id in sent if run_id not in reached)
    return len(lost), lost, None


def duplicate_keys(folder: Path) -> int:
    """Audit rows beyond the first per (run id, tool call id)."""
    counts = Counter(
        (r.get("run_id"), r.get("tool_call_id"))
        for r in read_jsonl(folder / "audit.jsonl")
        if r.get("run_id") and r.get("tool_call_id")
    )
    return sum(n - 1 for n in counts.values() if n > 1)


def extra_threads(folder: Path) -> int:
    """Provider threads (or conversations) runcoord created beyond one per conversation (the
    simulator lists every container with the conversation it was made for)."""
    path = folder / "sim_records.json"
    records = json.loads(path.read_text()) if path.exists() else {}
    made = Counter(
        str(c.get("metadata", {}).get("runcoord_conversation"))
        for c in records.get("containers", [])
        if c.get("metadata", {}).get("runcoord_conversation")
    )
    return sum(n - 1 for n in made.values())


def judge(row: MatrixRun) -> MatrixRun:
    reasons: list[str] = []
    if row.error:
        reasons.append(f"the replay failed: {row.error.splitlines()[-1][:200]}")
    for label, value in (
        ("excess writes", row.excess),
        ("duplicate (run, tool call) keys", row.duplicate_keys),
        ("extra provider runs", row.extra_provider_runs),
        ("extra provider threads", row.extra_threads),
        ("stalls", row.stalls),
        ("inputs lost", row.inputs_lost),
    ):
        if value is None:
            if not row.error:
                why = f" ({'; '.join(row.notes)})" if row.notes else ""
                reasons.append(f"{label}: unknown{why}")
        elif value:
            reasons.append(f"{label}: {value}")
    if row.unexplained:
        reasons.append(f"unexplained missing writes: {row.unexplained}")
    if row.runs_sent and row.completed < MIN_COMPLETED * row.runs_sent and not row.error:
        reasons.append(
            f"only {row.completed}/{row.runs_sent} runs completed ({row.statuses}): "
            "nothing was proven"
        )
    if row.faults_failed:
        reasons.append(f"faults that did not fire: {'; '.join(row.faults_failed)[:300]}")
    row.reasons = reasons
    row.verdict = "FAIL" if reasons else "PASS"
    return row


def read_run(row: MatrixRun, replay_dir: Path) -> MatrixRun:
    """Fill ``row`` from a replay's evidence (its report.json is written here too)."""
    from runcoord.harness.report.build import build_report
    from runcoord.harness.report.data import load_replay

    report = build_report(load_replay(replay_dir))
    (replay_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    f = report["systems"][SYSTEM]
    folder = replay_dir / SYSTEM
    row.wall_s = f.get("wall_s")
    row.runs_sent = f["runs_sent"]
    row.resubmissions = f["resubmissions_sent"]
    row.expected_writes = f["expected_writes"]
    row.observed_writes = f["observed_writes"]
    row.excess = f["excess_writes"]
    row.duplicate_keys = duplicate_keys(folder)
    per_run = f.get("provider_runs_per_run")
    row.extra_provider_runs = (
        None if per_run is None else max(0, round(per_run * row.runs_sent) - row.runs_sent)
    )
    row.extra_threads = extra_threads(folder)
    row.missing_writes = f["missing_writes"]
    row.missing_by_cause = dict(f.get("missing_writes_by_cause") or {})
    row.unexplained = row.missing_by_cause.get("unexplained") if row.missing_by_cause else None
    row.stalls = f["coordinator_stalls"]
    row.unresolved_steps = f.get("unresolved_steps")
    row.terminal_rate = f.get("terminal_rate")
    row.unfinished = f["runs_sent"] - f["runs_finished"]
    row.statuses = dict(f.get("statuses") or {})
    row.completed = row.statuses.get("completed", 0)
    lost, lost_runs, why = inputs_lost(folder)
    info = json.loads((folder / "system.json").read_text())
    send_errors = int(info.get("send_error_count", 0))
    row.inputs_lost = None if lost is None else lost
    row.lost_runs = lost_runs[:50]
    if why:
        row.notes.append(why)
    if send_errors and row.inputs_lost is not None:
        # A failed send never reached the journal either, so it is in the count already.
        row.lost_runs.append(f"({send_errors} send error(s) at the driver)")
    fired = read_jsonl(folder / "faults.jsonl")
    provider = info.get("faults_fired_by_sims", {}).get("provider", {}) or {}
    row.drawn = {f"provider.{k}": int(v) for k, v in provider.items()}
    for record in fired:
        if record["kind"] == "gateway_drawn":
            row.drawn |= {f"gateway.{k}": int(v) for k, v in record.get("counts", {}).items()}
    row.faults_fired = sum(1 for x in fired if x.get("applicable", True) and x.get("ok"))
    row.faults_failed = [
        f"{x['kind']} {x['label']}: {x['detail']}"
        for x in fired
        if x.get("applicable", True) and not x.get("ok") and x["kind"] in _MUST_FIRE
    ]
    # A simulator window is a fault only if it drew something.
    for side in ("provider", "gateway"):
        opened = any(x["kind"] == f"{side}_window" and x.get("ok") for x in fired)
        if opened and not any(k.startswith(f"{side}.") and v for k, v in row.drawn.items()):
            row.faults_failed.append(f"{side} windows opened, but drew no fault")
    return row


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def stacks(
    settings: Settings, root: Path, say: Callable[[str], None]
) -> Iterator[Callable[[StackSpec], Settings]]:
    """A private stack per distinct ``StackSpec``, kept up while consecutive scenarios share
    it and stopped when the next one needs another (or at the end)."""
    from runcoord.harness.replay.faults import private_stack

    current: list[Any] = [None, None, settings]  # spec, exit stack, settings

    def get(spec: StackSpec) -> Settings:
        if current[0] == spec:
            return current[2]  # type: ignore[no-any-return]
        if current[1] is not None:
            current[1].close()
            current[:] = [None, None, settings]  # stopped: never handed out again
        exits = contextlib.ExitStack()
        current[:] = [spec, exits, exits.enter_context(private_stack(spec, settings, root, say))]
        return current[2]  # type: ignore[no-any-return]

    try:
        yield get
    finally:
        if current[1] is not None:
            current[1].close()


def run_once(
    name: str,
    plan: FaultPlan,
    *,
    run: int,
    seed: int,
    turns: int,
    rate: float,
    out: Path,
    settings: Settings,
    say: Callable[[str], None],
    budget_s: float = 120.0,
) -> MatrixRun:
    """One replay of scenario ``name`` on the trace of ``seed``, judged."""
    from runcoord.harness.replay.run import ReplayConfig, new_replay_id, replay
    from runcoord.harness.workload.generate import GeneratorConfig, generate
    from runcoord.harness.workload.trace import write_trace
    from runcoord.registry import load_registry

    folder = out / f"{name}-{run}"
    folder.mkdir(parents=True, exist_ok=True)
    row = MatrixRun(name, run, seed, turns, str(folder))
    started = time.monotonic()
    try:
        trace = generate(
            GeneratorConfig(turns=turns, seed=seed, rate=rate),
            load_registry(settings.tools_file),
        )
        write_trace(folder / "trace.jsonl", trace)
        config = ReplayConfig(
            trace_path=folder / "trace.jsonl",
            plan=plan,
            out=folder / "replay",
            systems=(SYSTEM,),
            rate=rate,
            coordinators=plan.replicas.coordinators or 2,
            executors=plan.replicas.executors or 1,
            budget_s=budget_s,
            tools_file=settings.tools_file,
            replay_id=new_replay_id(),
        )
        replay(config, trace, settings, say)
        shutil.copy(plan_path(f"matrix/{name}"), folder / "replay" / "plan.yaml")
        read_run(row, folder / "replay")
    except Exception:
        row.error = traceback.format_exc()
    row.took_s = round(time.monotonic() - started, 1)
    return judge(row)


def run_matrix(
    names: Sequence[str],
    *,
    repeat: int,
    turns: int,
    rate: float,
    seed: int,
    out: Path,
    settings: Settings,
    say: Callable[[str], None],
    on_run: Callable[[MatrixRun], None] = lambda _: None,
    budget_s: float = 120.0,
) -> list[MatrixRun]:
    """Every scenario ``repeat`` times, one replay at a time, each on a fresh trace seed
    (``seed``, ``seed + 1``, ...: the table names each one, so a run can be replayed)."""
    rows: list[MatrixRun] = []
    next_seed = seed
    with stacks(settings, settings.state_dir / "matrix" / "stack", say) as stack_for:
        for name in names:
            plan = load_scenario(name)
            try:
                own = stack_for(plan.stack)
            except Exception:
                error = traceback.format_exc()
                for run in range(1, repeat + 1):
                    row = judge(MatrixRun(name, run, next_seed, turns, "", error=error))
                    next_seed += 1
                    rows.append(row)
                    on_run(row)
                continue
            for run in range(1, repeat + 1):
                say(f"== {name} run {run}/{repeat} (seed {next_seed}, {turns} turns at {rate:g}/s)")
                row = run_once(
                    name, plan, run=run, seed=next_seed, turns=turns, rate=rate, out=out,
                    settings=own, say=say, budget_s=budget_s,
                )  # fmt: skip
                next_seed += 1
                rows.append(row)
                on_run(row)
    return rows


# --------------------------------------------------------------------------- the table


def _cause_text(row: MatrixRun) -> str:
    if row.missing_writes is None:
        return "?"
    causes = {k: v for k, v in row.missing_by_cause.items() if v}
    if not row.missing_writes:
        return "0"
    inner = ", ".join(f"{k} {v}" for k, v in sorted(causes.items()))
    return f"{row.missing_writes} ({inner})" if inner else str(row.missing_writes)


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def markdown(rows: Sequence[MatrixRun]) -> str:
    """The table, one line per run, then one per scenario (sums; the worst verdict)."""
    head = (
        "| scenario | run | seed | took s | runs (completed) | expected | observed | excess | "
        "missing (by cause) | stalls | inputs lost | verdict |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |\n"
    )
    lines = []
    for r in rows:
        excess_text = _n(r.excess)
        if r.duplicate_keys:
            excess_text += f", {r.duplicate_keys} dup (run, call) keys"
        if r.extra_provider_runs:
            excess_text += f", +{r.extra_provider_runs} provider runs"
        if r.extra_threads:
            excess_text += f", +{r.extra_threads} provider threads"
        verdict = r.verdict if r.verdict == "PASS" else f"FAIL: {'; '.join(r.reasons)[:160]}"
        lines.append(
            f"| {r.scenario} | {r.run} | {r.seed} | {r.took_s:.0f} | "
            f"{r.runs_sent} ({r.completed}) | "
            f"{r.expected_writes} | {r.observed_writes} | {excess_text} | {_cause_text(r)} | "
            f"{_n(r.stalls)} | {_n(r.inputs_lost)} | {verdict} |"
        )
    summary = [
        "",
        "| scenario | runs | PASS | took s (sum) | expected | observed | excess | "
        "unexplained | stalls | inputs lost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in dict.fromkeys(r.scenario for r in rows):
        mine = [r for r in rows if r.scenario == name]

        def total(values: Sequence[int | None]) -> str:
            return "?" if any(v is None for v in values) else str(sum(v or 0 for v in values))

        summary.append(
            f"| {name} | {len(mine)} | {sum(r.verdict == 'PASS' for r in mine)} | "
            f"{sum(r.took_s for r in mine):.0f} | {sum(r.expected_writes for r in mine)} | "
            f"{sum(r.observed_writes for r in mine)} | "
            f"{total([r.excess for r in mine])} | "
            f"{total([r.unexplained for r in mine])} | {total([r.stalls for r in mine])} | "
            f"{total([r.inputs_lost for r in mine])} |"
        )
    return head + "\n".join(lines) + "\n" + "\n".join(summary) + "\n"


def as_json(rows: Sequence[MatrixRun], **meta: Any) -> dict[str, Any]:
    return {**meta, "runs": [asdict(r) for r in rows]}
