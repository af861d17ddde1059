"""The outbound webhook URL guard: every refused range, literal or resolved; the operator's
switch for private targets; and the request that connects to the checked address."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from runcoord.api.hooks import Target, UnsafeUrl, check_url, classify

PUBLIC = "93.184.215.14"  # a public-looking address (never connected to here)


class FakeResolver:
    """A resolver that answers ``addresses`` for any host, recording what it was asked."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append((host, port))
        return self.addresses


def refuses(url: str, *addresses: str, allow_private: bool = False) -> str:
    with pytest.raises(UnsafeUrl) as caught:
        check_url(url, allow_private=allow_private, resolve=FakeResolver(*addresses))
    return str(caught.value)


REFUSED = [
    # (address, the reason's words)
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("169.254.10.1", "link-local"),
    ("fe80::1", "link-local"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("100.64.0.1", "not publicly routable"),  # shared address space (CGNAT)
    ("192.0.2.1", "not publicly routable"),  # documentation
    ("240.0.0.1", "not publicly routable"),  # reserved
    ("255.255.255.255", "not publicly routable"),
    # IPv6 forms that reach an IPv4 address are judged by it.
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ("2002:c0a8:101::1", "private"),  # 6to4 of 192.168.1.1
]


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_a_host_resolving_to_a_refused_range_is_refused(address: str, why: str) -> None:
    reason = refuses("https://hooks.example.com/in", address)
    shown = str(ipaddress.ip_address(address))
    assert why in reason and shown in reason and "hooks.example.com" in reason


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_a_literal_address_in_a_refused_range_is_refused(address: str, why: str) -> None:
    host = f"[{address}]" if ":" in address else address
    assert why in refuses(f"http://{host}:8080/in")  # no resolver asked: nothing to resolve


def test_one_refused_address_among_public_ones_refuses_the_host() -> None:
    assert "private" in refuses("https://hooks.example.com/", PUBLIC, "10.1.2.3")


def test_a_public_address_is_allowed_and_requested_by_address_with_the_host_kept() -> None:
    resolve = FakeResolver(PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    target = check_url("https://Hooks.Example.com:8443/in?x=1", resolve=resolve)
    assert resolve.asked == [("hooks.example.com", 8443)]
    assert [str(a) for a in target.addresses] == [
        PUBLIC,
        "2606:2800:21f:cb07:6820:80da:af6b:8b2c",
    ]
    url, headers, extensions = target.request(target.addresses[0])
    assert str(url) == f"https://{PUBLIC}:8443/in?x=1"
    assert headers == {"Host": "hooks.example.com:8443"}
    assert extensions == {"sni_hostname": "hooks.example.com"}  # TLS checks the name
    v6, _, _ = target.request(target.addresses[1])
    assert str(v6) == "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8443/in?x=1"


def test_plain_http_names_no_tls_host_and_defaults_its_port() -> None:
    resolve = FakeResolver(PUBLIC)
    target = check_url("http://hooks.example.com/in", resolve=resolve)
    assert resolve.asked == [("hooks.example.com", 80)]
    assert target.request(target.addresses[0]) == (
        target.url.copy_with(host=PUBLIC),
        {"Host": "hooks.example.com"},
        {},
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("gopher://hooks.example.com/", "only http and https"),
        ("hooks.example.com/in", "only http and https"),
        ("https:///in", "no host"),
        ("https://user:pass@hooks.example.com/", "credentials"),
        ("https://hooks.example.com/" + "x" * 2100, "longer than"),
    ],
)
def test_what_is_not_an_http_url_to_a_host_is_refused(url: str, why: str) -> None:
    assert why in refuses(url, PUBLIC)


def test_a_host_that_does_not_resolve_is_refused() -> None:
    def nowhere(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    with pytest.raises(UnsafeUrl, match="does not resolve: Name or service not known"):
        check_url("https://nowhere.example/", resolve=nowhere)
    with pytest.raises(UnsafeUrl, match="no address"):
        check_url("https://nowhere.example/", resolve=FakeResolver())


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "fd12::1", "169.254.10.1", "100.64.0.1"],
)
def test_the_operator_may_allow_private_targets(address: str) -> None:
    resolve = FakeResolver(address)
    target = check_url("http://receiver.internal/", allow_private=True, resolve=resolve)
    assert isinstance(target, Target)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_metadata_unspecified_and_multicast_are_refused_even_when_private_is_allowed(
    address: str, why: str
) -> None:
    assert why in refuses("http://receiver.internal/", address, allow_private=True)


@pytest.mark.parametrize(
    "url", ["http://localhost:9/", "http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/"]
)
def test_the_system_resolver_sees_through_loopback_spellings(url: str) -> None:
    # Numeric forms inet_aton accepts, and localhost, never leave this machine's resolver;
    # the URL parser refuses the octal dotted form outright.
    with pytest.raises(UnsafeUrl, match=r"loopback|Invalid IPv4 address"):
        check_url(url)


def test_public_addresses_are_not_classified() -> None:
    for address in (PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "2002:5db8:d70e::1"):
        assert classify(ipaddress.ip_address(address)) is None
