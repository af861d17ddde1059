"""The console's HTML: plain functions returning strings, every value escaped on the way in.

No template engine and no build step: the pages are small, and an f-string with ``_e`` around
each value keeps what is escaped visible at the place it is written. Scripts and styles come
from files served by the console itself, so the Content-Security-Policy allows no inline code.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote

from runcoord.api.approvals import Request
from runcoord.api.console.queries import Filters, RunHead, RunRow
from runcoord.forensics.timeline import Line, Story


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _at(value: datetime | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        value = datetime.fromtimestamp(value / 1000, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _idem() -> str:
    """A form's own Idempotency-Key: the same form submitted twice acts once."""
    return uuid.uuid4().hex


def layout(title: str, body: str, *, who: str | None = None, csrf: str | None = None) -> str:
    nav = ""
    if who is not None and csrf is not None:
        nav = (
            '<nav><a href="/console/runs">Runs</a> <a href="/console/reports">Reports</a>'
            f' <span class="who">{_e(who)}</span>'
            '<form method="post" action="/console/sign-out" class="inline">'
            f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
            '<button type="submit">Sign out</button></form></nav>'
        )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)} · runcoord</title>"
        '<link rel="stylesheet" href="/console/static/console.css">'
        '<script src="/console/static/console.js" defer></script>'
        f"</head><body><header><h1>runcoord</h1>{nav}</header><main>{body}</main></body></html>"
    )


def sign_in(error: str | None = None) -> str:
    problem = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    return layout(
        "Sign in",
        f"<h2>Sign in</h2>{problem}"
        '<form method="post" action="/console/sign-in" class="signin">'
        '<label>API key <input type="password" name="key" autocomplete="off" required '
        'placeholder="rk_…"></label> <button type="submit">Sign in</button></form>'
        "<p>A tenant's key shows that tenant's runs; an operator key shows every tenant's.</p>",
    )


def not_found(who: str, csrf: str) -> str:
    return layout(
        "Not found",
        '<h2>Not found</h2><p class="notfound">No such run.</p>',
        who=who,
        csrf=csrf,
    )


def _marks(marks: Iterable[str]) -> str:
    return " ".join(f'<span class="mark">{_e(m)}</span>' for m in marks)


def _select(name: str, options: Iterable[str], chosen: str | None) -> str:
    opts = ['<option value="">any</option>']
    for o in options:
        sel = " selected" if o == chosen else ""
        opts.append(f'<option value="{_e(o)}"{sel}>{_e(o)}</option>')
    return f'<select name="{_e(name)}">{"".join(opts)}</select>'


def runs_page(
    rows: list[RunRow],
    counts: Mapping[str, int],
    f: Filters,
    *,
    operator: bool,
    tenants: list[str],
    who: str,
    csrf: str,
) -> str:
    since = f.since.strftime("%Y-%m-%dT%H:%M") if f.since else ""
    tenant_filter = (
        f"<label>tenant {_select('tenant', tenants, f.tenant)}</label>" if operator else ""
    )
    form = (
        '<form method="get" action="/console/runs" class="filters">'
        f"<label>status {_select('status', sorted(counts), f.status)}</label>{tenant_filter}"
        f'<label>since <input type="datetime-local" name="since" value="{_e(since)}"></label>'
        f'<label>tool <input name="tool" value="{_e(f.tool)}"></label>'
        f'<label>run or thread id <input name="q" value="{_e(f.search)}"></label>'
        '<button type="submit">Filter</button></form>'
    )
    tally = " ".join(
        f'<span class="count" data-status="{_e(s)}">{_e(s)}: {n}</span>'
        for s, n in sorted(counts.items())
    )
    head = "<tr><th>run</th>" + ("<th>tenant</th>" if operator else "")
    head += "<th>thread</th><th>status</th><th>steps</th><th>accepted</th><th>marks</th></tr>"
    body = []
    for r in rows:
        tenant_cell = f"<td>{_e(r.tenant)}</td>" if operator else ""
        body.append(
            f'<tr class="run" data-run="{_e(r.run_id)}">'
            f'<td><a href="/console/runs/{quote(r.run_id)}">{_e(r.run_id)}</a></td>{tenant_cell}'
            f"<td>{_e(r.thread_id)}</td><td>{_e(r.status)}</td><td>{r.steps}</td>"
            f"<td>{_e(_at(r.accepted_at))}</td><td>{_marks(r.marks)}</td></tr>"
        )
    table = (
        f'<table class="runs"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
        if rows
        else '<p class="empty">No runs.</p>'
    )
    scope = "every tenant" if operator else "this tenant"
    return layout(
        "Runs",
        f"<h2>Runs of {scope}</h2>{form}<p class=counts>{tally}</p>{table}",
        who=who,
        csrf=csrf,
    )


def _entry(n: int, line: Line) -> str:
    gap = f", {line.gap_ms / 1000:.3f} s after the previous" if line.gap_ms else ""
    return (
        f'<li class="entry src-{_e(line.source)}"><details id="entry-{n}">'
        f'<summary><span class="clock">+{line.since_start_ms / 1000:.3f} s</span> '
        f'<span class="src">{_e(line.source)}</span> {_e(line.text)}</summary>'
        f"<dl><dt>at</dt><dd>{_e(_at(line.at_ms))}{_e(gap)}</dd>"
        f"<dt>record</dt><dd><code>{_e(line.ref or '—')}</code></dd></dl></details></li>"
    )


def _calls(story: Story, argument_hashes: Mapping[str, str]) -> str:
    if not story.calls:
        return ""
    rows = "".join(
        f'<tr class="call" data-call="{_e(c.tool_call_id)}"><td>{_e(c.tool)}</td>'
        f"<td>{_e(c.tool_call_id)}</td><td>{_e(c.outcome)}</td><td>{c.actions}</td>"
        f"<td>{'yes' if c.retried else 'no'}</td>"
        f"<td><code>{_e(argument_hashes.get(c.tool_call_id, '')[:16])}</code></td>"
        f"<td>{_e(c.explanation)}</td></tr>"
        for c in story.calls
    )
    return (
        '<h3>Tool calls</h3><table class="calls"><thead><tr><th>tool</th><th>call</th>'
        "<th>outcome</th><th>actions</th><th>retried</th><th>arguments sha256</th>"
        f"<th>why</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _approvals(
    run_id: str, requests: list[Request], *, may_decide: bool, csrf: str, finished: bool
) -> str:
    if not requests:
        return ""
    items = []
    for a in requests:
        state = a.status if a.status != "pending" or not finished else "pending (run over)"
        decided = f" by {a.approver}: {a.reason}" if a.approver else ""
        buttons = ""
        if may_decide and a.awaiting:
            buttons = (
                f'<form method="post" class="decide" '
                f'action="/console/runs/{quote(run_id)}/approvals/{quote(a.approval_id)}">'
                f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
                f'<input type="hidden" name="idempotency_key" value="{_idem()}">'
                '<input name="reason" placeholder="reason" maxlength="1000">'
                '<button type="submit" name="decision" value="approve">Approve</button>'
                '<button type="submit" name="decision" value="reject">Reject</button></form>'
            )
        items.append(
            f'<li class="approval" data-approval="{_e(a.approval_id)}" '
            f'data-status="{_e(a.status)}"><b>{_e(a.tool)}</b> ({_e(a.tool_call_id)}): '
            f"{_e(state)}{_e(decided)}; arguments sha256 <code>{_e(a.arguments_hash[:16])}"
            f"</code>, due {_e(_at(a.deadline_at))}{buttons}</li>"
        )
    return f'<h3>Approvals</h3><ul class="approvals">{"".join(items)}</ul>'


def run_live(
    head: RunHead,
    story: Story | None,
    requests: list[Request],
    argument_hashes: Mapping[str, str],
    *,
    may_decide: bool,
    csrf: str,
) -> str:
    """The part of the run page that follows the run: reloaded in place while it is live."""
    status = (
        f'<p class="status">status <b id="run-status">{_e(head.status)}</b>'
        + (f" — {_e(head.outcome)}" if head.outcome else "")
        + "</p>"
    )
    cancel = ""
    if not head.finished:
        cancel = (
            f'<form method="post" action="/console/runs/{quote(head.run_id)}/cancel" '
            'class="cancel">'
            f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
            f'<input type="hidden" name="idempotency_key" value="{_idem()}">'
            '<input name="reason" value="cancelled from the console" maxlength="1000">'
            '<button type="submit">Cancel run</button></form>'
        )
    approvals = _approvals(
        head.run_id, requests, may_decide=may_decide, csrf=csrf, finished=head.finished
    )
    if story is None:
        timeline = '<p class="empty">Not projected yet.</p><ol id="timeline"></ol>'
        summary = ""
    else:
        entries = "".join(_entry(n, line) for n, line in enumerate(story.lines))
        findings = "".join(f"<li>{_e(f)}</li>" for f in story.findings)
        summary = f'<p class="headline">{_e(story.headline)}</p>' + (
            f'<ul class="findings">{findings}</ul>' if findings else ""
        )
        timeline = (
            "<h3>Timeline</h3><p>Journal, intents, effect ledger, the gateway's audit and dead "
            f'letters on one clock.</p><ol id="timeline">{entries}</ol>'
        )
    calls = "" if story is None else _calls(story, argument_hashes)
    return f"{status}{cancel}{summary}{approvals}{calls}{timeline}"


def run_page(head: RunHead, live: str, *, notice: str | None, who: str, csrf: str) -> str:
    note = f'<p class="notice" role="status">{_e(notice)}</p>' if notice else ""
    stream = "" if head.finished else f' data-live="/console/runs/{quote(head.run_id)}/live"'
    return layout(
        head.run_id,
        f"<h2>Run <code>{_e(head.run_id)}</code></h2>"
        f"<p>tenant {_e(head.tenant)} · thread {_e(head.thread_id)} · accepted "
        f"{_e(_at(head.accepted_at))}</p>{note}"
        f'<section id="live"{stream} data-fragment="/console/runs/{quote(head.run_id)}/fragment">'
        f"{live}</section>",
        who=who,
        csrf=csrf,
    )


def reports_page(names: list[str] | None, *, who: str, csrf: str) -> str:
    if names is None:
        body = '<p class="empty">Replay reports are for operator keys.</p>'
    elif names:
        items = "".join(
            f'<li><a href="/console/reports/{quote(n)}">{_e(n)}</a></li>' for n in names
        )
        body = f'<ul class="reports">{items}</ul>'
    else:
        body = '<p class="empty">No replay reports under the state directory yet.</p>'
    return layout("Reports", f"<h2>Replay reports</h2>{body}", who=who, csrf=csrf)
