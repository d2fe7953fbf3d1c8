"""The outbound URL guard: what is always refused, what only a LAN appliance may call, and the
resolved-address check at connection time."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket

import pytest

from flowbox import netguard
from tests.helpers import Receiver

ALWAYS_REFUSED = [
    "http://169.254.169.254/latest/meta-data/",      # AWS/GCP/Azure metadata
    "http://[fd00:ec2::254]/latest/meta-data/",      # AWS IPv6 metadata
    "http://100.100.100.200/latest/meta-data/",      # Alibaba metadata
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://169.254.10.20:8080/",                     # link-local
    "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/",               # metadata behind an IPv4-mapped IPv6 address
    "http://0.0.0.0:8000/",
    "http://0.1.2.3/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://2852039166/",                             # 169.254.169.254 as one decimal number
    "http://0xA9FEA9FE/",                             # ... and in hex
]
PRIVATE = [
    "http://127.0.0.1:8000/hook",
    "http://127.1/",
    "http://2130706433/",
    "http://[::1]:9000/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost/",
    "http://api.localhost/",
    "http://10.1.2.3/",
    "http://172.16.0.9/",
    "https://192.168.1.20/hook",
    "http://100.64.0.1/",
    "http://[fd12:3456::1]/",
]
NOT_URLS = ["ftp://example.com/x", "file:///etc/passwd", "gopher://x/", "javascript:alert(1)", "http:///nohost", "http://exa mple.com:99999/",
            "x" * 3000]


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
def test_metadata_link_local_and_reserved_are_always_refused(url):
    for allow_private in (False, True):
        with pytest.raises(netguard.URLRefused):
            netguard.check_url(url, allow_private=allow_private)


@pytest.mark.parametrize("url", PRIVATE)
def test_loopback_and_private_need_the_setting(url):
    with pytest.raises(netguard.URLRefused, match="allow_private_outbound"):
        netguard.check_url(url, allow_private=False)
    netguard.check_url(url, allow_private=True)


@pytest.mark.parametrize("url", NOT_URLS)
def test_only_http_and_https(url):
    with pytest.raises(netguard.URLRefused):
        netguard.check_url(url, allow_private=True)


def test_public_addresses_and_names_pass_the_static_check():
    assert netguard.check_url("https://hooks.example.com/cb?x=1", allow_private=False) == ("https", "hooks.example.com", 443)
    assert netguard.check_url("http://93.184.216.34:8080/", allow_private=False) == ("http", "93.184.216.34", 8080)
    assert netguard.check_url("HTTPS://[2606:4700::1111]/", allow_private=False)[0] == "https"


def test_classify():
    cases = {"169.254.169.254": "metadata", "169.254.1.1": "link-local", "127.0.0.1": "loopback", "::1": "loopback",
             "10.0.0.1": "private", "8.8.8.8": "public", "2606:4700::1111": "public", "::ffff:10.0.0.1": "private",
             "64:ff9b::a9fe:a9fe": "metadata", "240.0.0.1": "reserved"}
    assert {a: netguard.classify(ipaddress.ip_address(a)) for a in cases} == cases


def test_names_are_checked_by_what_they_resolve_to():
    """A name that passes the static check but resolves to a refused address (what DNS rebinding
    does) is refused when resolved, which happens for every new connection."""
    name = socket.gethostname()
    address = ipaddress.ip_address(socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)[0][4][0])
    if netguard.classify(address) == "public":
        pytest.skip(f"{name} resolves to a public address here")
    netguard.check_url(f"http://{name}/", allow_private=False)  # nothing to see without DNS
    with pytest.raises(netguard.URLRefused):
        asyncio.run(netguard.resolve_host(name, 80, allow_private=False))
    assert asyncio.run(netguard.resolve_host(name, 80, allow_private=True)) == str(address)
    with pytest.raises(OSError):
        asyncio.run(netguard.resolve_host("no-such-host.invalid", 80, allow_private=True))


def test_the_guarded_client_connects_only_to_checked_addresses():
    receiver = Receiver(lambda record: (201, {"ok": True}))
    name = socket.gethostname()
    url = f"http://{name}:{receiver.port}/x"

    async def post(allow_private: bool):
        async with netguard.client(allow_private) as pool:
            return await netguard.post(pool, url, b"{}", {"Content-Type": "application/json"}, allow_private=allow_private, timeout=5)

    try:
        if netguard.classify(ipaddress.ip_address(socket.getaddrinfo(name, 80)[0][4][0])) == "public":
            pytest.skip(f"{name} resolves to a public address here")
        reply = asyncio.run(post(True))
        assert reply.status == 201 and reply.body == b'{"ok": true}'
        assert receiver.requests[0]["headers"]["host"] == f"{name}:{receiver.port}"  # the name, not the pinned address
        with pytest.raises(netguard.URLRefused):
            asyncio.run(post(False))
        assert len(receiver.requests) == 1
    finally:
        receiver.stop()


def test_credentials_in_the_url_become_basic_auth():
    receiver = Receiver()
    try:
        async def post():
            async with netguard.client(True) as pool:
                return await netguard.post(pool, f"http://us%40er:p%3Ass@127.0.0.1:{receiver.port}/", b"{}", {}, allow_private=True, timeout=5)

        assert asyncio.run(post()).status == 200
        assert receiver.requests[0]["headers"]["authorization"] == "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    finally:
        receiver.stop()
