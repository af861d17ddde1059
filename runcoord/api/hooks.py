"""Outbound webhooks: tenants' endpoints told that an approval waits or a run finished.

Four things live here, all without I/O of their own but the database and DNS:

* the URL guard: http(s) only, and every address the host resolves to must be public, so a
  tenant cannot make runcoord call its own network (SSRF). The operator may allow private
  targets (``RUNCOORD_WEBHOOKS_ALLOW_PRIVATE=1``); the cloud metadata address, unspecified and
  multicast addresses are refused even then. The sender resolves once per attempt and connects
  to the address it checked (``Target.request``): there is no second lookup to rebind.
* signing, with the Standard Webhooks scheme the openai SDK's ``webhooks.unwrap`` verifies
  (runcoord/api/webhooks.py checks inbound ones with it): ``webhook-signature: v1,<base64
  HMAC-SHA256 of "id.timestamp.body">`` keyed by the base64 after ``whsec_``.
* the events' bodies (``approval.requested``, ``run.finished``), shaped like OpenAI's events.
* the ``api_hooks`` table: a hook's secret is stored as is (it has to sign), shown once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg

from runcoord.domain import events as ev

Conn = psycopg.Connection[tuple[Any, ...]]
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to, as text; raises OSError when it does not.
Resolver = Callable[[str, int], Sequence[str]]

EVENT_TYPES = ("approval.requested", "run.finished")
SECRET_PREFIX = "whsec_"
HOOK_PREFIX = "hook_"
MAX_HOOKS_PER_TENANT = 16
MAX_URL_CHARS = 2048
RESOLVE_TIMEOUT_S = 5.0

# --------------------------------------------------------------------------- the URL guard

# Instance metadata endpoints (AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba): credentials
# for the machine we run on, whatever the operator allows.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # 0.0.0.0 reaches this host on Linux
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")  # RFC 1918, ULA
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Refused even when private targets are allowed: never a webhook receiver.
ALWAYS_REFUSED = frozenset({"the cloud metadata address", "unspecified", "multicast"})


class UnsafeUrl(ValueError):
    """The URL may not be called: its scheme, its form, or an address its host resolves to."""


def classify(ip: IP) -> str | None:
    """What kind of non-public address ``ip`` is (the reason it is refused); None: public."""
    embedded = _embedded_v4(ip)
    if embedded is not None:
        kind = classify(embedded)
        return f"{kind} (it carries {embedded})" if kind else None
    if ip in METADATA:
        return "the cloud metadata address"
    if ip.is_unspecified or ip in _THIS_NETWORK:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if any(ip in net for net in _PRIVATE if net.version == ip.version):
        return "private"
    if not ip.is_global:
        return "not publicly routable (reserved, shared or documentation range)"
    return None


def _embedded_v4(ip: IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and reaches (mapped, 6to4, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refused(ip: IP, *, allow_private: bool) -> str | None:
    kind = classify(ip)
    if kind is None:
        return None
    if allow_private and not any(kind.startswith(k) for k in ALWAYS_REFUSED):
        return None
    return kind


_RESOLVERS = ThreadPoolExecutor(4, thread_name_prefix="hooks-resolve")


def resolve_system(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (getaddrinfo), within RESOLVE_TIMEOUT_S.

    getaddrinfo has no timeout of its own; a lookup still running at the deadline is left to
    finish on its thread."""
    future = _RESOLVERS.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(RESOLVE_TIMEOUT_S)
    except FutureTimeout:
        raise OSError(f"no answer from the resolver in {RESOLVE_TIMEOUT_S:g} s") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """A checked URL and the addresses its host resolved to (all of them allowed)."""

    url: httpx.URL
    addresses: tuple[IP, ...]

    def request(self, address: IP) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        """(URL naming the address, headers, request extensions) for a request to ``address``
        that still says the URL's host: the Host header, and TLS's SNI and certificate check
        (httpcore's ``sni_hostname``)."""
        host = self.url.netloc.decode("ascii")
        extensions: dict[str, Any] = {}
        if self.url.scheme == "https":
            extensions["sni_hostname"] = self.url.host
        return self.url.copy_with(host=str(address)), {"Host": host}, extensions


def check_url(
    url: str, *, allow_private: bool = False, resolve: Resolver = resolve_system
) -> Target:
    """The URL as a Target, or UnsafeUrl with the reason it may not be called."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeUrl(f"URL longer than {MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise UnsafeUrl(f"not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeUrl(f"scheme {parsed.scheme or '(none)'!r}: only http and https")
    if not parsed.host:
        raise UnsafeUrl("no host")
    if parsed.userinfo:
        raise UnsafeUrl("credentials in the URL; authenticate with the signature instead")
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = _ip(host)
    if literal is not None:
        addresses: list[IP] = [literal]
    else:
        try:
            found = resolve(host.rstrip("."), port)
        except (OSError, UnicodeError) as exc:
            raise UnsafeUrl(f"host {host} does not resolve: {exc}") from None
        addresses = [a for a in (_ip(f) for f in found) if a is not None]
        if not addresses:
            raise UnsafeUrl(f"host {host} resolves to no address")
    for address in addresses:
        reason = refused(address, allow_private=allow_private)
        if reason is not None:
            where = f"{host} is" if literal is not None else f"{host} resolves to {address}:"
            raise UnsafeUrl(f"{where} {reason}")
    return Target(parsed, tuple(addresses))


def _ip(text: str) -> IP | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


# --------------------------------------------------------------------------- signing


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``id.timestamp.body``, keyed by the secret's bytes."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


# --------------------------------------------------------------------------- event bodies


@dataclass(frozen=True)
class Notice:
    """One journal event as tenants are told it: its id (``run_id:seq``, also the
    ``webhook-id`` of every attempt), its type, and the exact bytes sent."""

    event_id: str
    event_type: str
    run_id: str
    at_ms: int
    body: bytes


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def notice(event: ev.JournalEvent) -> Notice | None:
    """The notice for an event tenants can subscribe to; None for every other event."""
    data: dict[str, Any]
    if isinstance(event, ev.ApprovalRequested):
        kind = "approval.requested"
        a = event.approval
        data = {
            "run_id": event.run_id,
            "approval_id": a.approval_id,
            "tool": a.tool,
            "tool_call_id": a.tool_call_id,
            "deadline": _iso(a.deadline_ms),
        }
    elif isinstance(event, ev.RunFinished):
        kind = "run.finished"
        data = {"run_id": event.run_id, "status": event.status, "reason": event.reason}
    else:
        return None
    event_id = f"{event.run_id}:{event.seq}"
    body = {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created_at": event.at_ms // 1000,
        "data": data,
    }
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Notice(event_id, kind, event.run_id, event.at_ms, raw)


# --------------------------------------------------------------------------- the hooks table


class TooManyHooks(Exception):
    pass


@dataclass(frozen=True)
class Hook:
    id: str
    url: str
    events: list[str]
    description: str | None
    created_at: str
    disabled_at: str | None
    disabled_reason: str | None
    secret: str | None = None  # only when just created


_COLUMNS = "hook_id, url, events, description, created_at, disabled_at, disabled_reason"


def _hook(row: Sequence[Any], secret: str | None = None) -> Hook:
    return Hook(
        id=row[0],
        url=row[1],
        events=list(row[2]),
        description=row[3],
        created_at=row[4].isoformat(),
        disabled_at=row[5].isoformat() if row[5] else None,
        disabled_reason=row[6],
        secret=secret,
    )


def create(
    conn: Conn, tenant: str, url: str, events: Sequence[str], description: str | None
) -> Hook:
    """Store a hook (its URL already checked) with a new secret, returned only now."""
    secret = new_secret()
    with conn.transaction():
        # One tenant's registrations in turn, so two at once cannot both pass the count.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('api_hooks:' || %s))", (tenant,))
        row = conn.execute(
            "SELECT count(*) FROM api_hooks WHERE tenant = %s AND deleted_at IS NULL", (tenant,)
        ).fetchone()
        if row is not None and int(row[0]) >= MAX_HOOKS_PER_TENANT:
            raise TooManyHooks(f"at most {MAX_HOOKS_PER_TENANT} webhooks per tenant")
        created = conn.execute(
            f"INSERT INTO api_hooks (hook_id, tenant, url, events, description, secret) "
            f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (f"{HOOK_PREFIX}{secrets.token_hex(12)}", tenant, url, list(events), description,
             secret),
        ).fetchone()  # fmt: skip
    assert created is not None
    return _hook(created, secret)


def list_for(conn: Conn, tenant: str) -> list[Hook]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM api_hooks WHERE tenant = %s AND deleted_at IS NULL "
        "ORDER BY created_at, hook_id",
        (tenant,),
    ).fetchall()
    return [_hook(r) for r in rows]


def delete(conn: Conn, tenant: str, hook_id: str) -> bool:
    """Delete the tenant's hook (its deliveries are kept; pending ones are never sent)."""
    cur = conn.execute(
        "UPDATE api_hooks SET deleted_at = now() "
        "WHERE hook_id = %s AND tenant = %s AND deleted_at IS NULL",
        (hook_id, tenant),
    )
    return cur.rowcount == 1
