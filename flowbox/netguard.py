"""The outbound URL guard, for callbacks, webhooks and other calls flowbox makes to URLs it was given.

http and https only. Cloud-metadata, link-local and other never-routable addresses are always
refused; loopback and private (LAN) ranges only when ``allow_private_outbound`` is true.
``check_url`` is the cheap static check for request time. At delivery time the connection itself
is guarded: ``client()`` is a connection pool whose network backend resolves the host, checks every
address and connects to the checked one, so a DNS answer that changes between a check and the
connection (rebinding) cannot reach a refused address.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import httpcore

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 2048
# Metadata services answer on these whatever the provider's address plan; names resolve to them.
METADATA_ADDRESSES = {ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192", "fd00:ec2::254")}
METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
CGNAT = ipaddress.ip_network("100.64.0.0/10")
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # Linux connects 0.0.0.0 to the local host


class URLRefused(ValueError):
    """The URL may not be called; the message says why (safe to show to the caller)."""


def _embedded_v4(ip: IP) -> IP:
    """The IPv4 address inside an IPv4-mapped, -compatible or NAT64 IPv6 address, else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):  # 64:ff9b::a.b.c.d, ::a.b.c.d
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def classify(ip: IP) -> str:
    """'metadata', 'link-local', 'reserved' (never allowed), 'loopback', 'private' (allowed on a
    LAN appliance when configured) or 'public'."""
    ip = _embedded_v4(ip)
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_link_local:
        return "link-local"
    if ip.is_loopback:  # before "reserved": Python counts ::1 as reserved (::/8)
        return "loopback"
    v4 = isinstance(ip, ipaddress.IPv4Address)
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved or (v4 and (ip in THIS_NETWORK or ip == ipaddress.IPv4Address("255.255.255.255"))):
        return "reserved"
    if ip.is_private or (v4 and ip in CGNAT) or (not v4 and ip.is_site_local):
        return "private"
    if not ip.is_global:
        return "reserved"  # documentation, benchmarking and other special-purpose ranges
    return "public"


def check_address(ip: IP, allow_private: bool) -> None:
    kind = classify(ip)
    if kind in ("metadata", "link-local", "reserved"):
        raise URLRefused(f"{kind} address {ip} is not allowed")
    if kind in ("loopback", "private") and not allow_private:
        raise URLRefused(f"{kind} address {ip} is not allowed (set allow_private_outbound to allow it)")


def literal_ip(host: str) -> IP | None:
    """The address a host names literally, in any form the resolver would accept (``127.1``,
    ``2130706433``, ``0x7f.0.0.1``), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_url(url: str, *, allow_private: bool) -> tuple[str, str, int]:
    """The static checks (no DNS): scheme, host, literal addresses, well-known names.
    Returns (scheme, host, port); raises URLRefused."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise URLRefused(f"must be a string of at most {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise URLRefused(f"is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise URLRefused("must be an http:// or https:// URL")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise URLRefused("has no host")
    port = port or (443 if scheme == "https" else 80)
    if host in METADATA_HOSTS:
        raise URLRefused(f"cloud-metadata host {host} is not allowed")
    ip = literal_ip(host)
    if ip is not None:
        check_address(ip, allow_private)
    elif (host == "localhost" or host.endswith(".localhost")) and not allow_private:
        raise URLRefused(f"loopback host {host} is not allowed (set allow_private_outbound to allow it)")
    return scheme, host, port


async def resolve_host(host: str, port: int, *, allow_private: bool, timeout: float = 10.0) -> str:
    """Resolves ``host`` and checks every address it resolves to (one refused address refuses
    the host: a mixed answer is how rebinding is done). Returns the address to connect to.
    Raises URLRefused, or OSError when the name does not resolve (worth retrying later)."""
    host = host.strip("[]")
    ip = literal_ip(host)
    if ip is not None:
        addresses = [ip]
    else:
        if host.rstrip(".").lower() in METADATA_HOSTS:
            raise URLRefused(f"cloud-metadata host {host} is not allowed")
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        except asyncio.TimeoutError:
            raise OSError(f"resolving {host} timed out") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        if not addresses:
            raise OSError(f"{host} did not resolve")
    for address in addresses:
        check_address(address, allow_private)
    return str(addresses[0])


# -- an HTTP client that connects only to checked addresses ---------------------------------------

class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving and checking every new connection's host and then
    connecting to the checked address. TLS still uses the host name (SNI, certificate check), and
    pooled connections stay keyed by it."""

    def __init__(self, allow_private: bool):
        self.allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        address = await resolve_host(host, port, allow_private=self.allow_private, timeout=timeout or 10.0)
        return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address, socket_options=socket_options)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise URLRefused("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def client(allow_private: bool, max_connections: int = 32) -> httpcore.AsyncConnectionPool:
    """A connection pool for outbound calls: guarded connections, no proxies from the
    environment, no redirects (a redirect could lead anywhere)."""
    return httpcore.AsyncConnectionPool(
        ssl_context=ssl.create_default_context(), max_connections=max_connections,
        max_keepalive_connections=max_connections, keepalive_expiry=30, network_backend=GuardedBackend(allow_private),
    )


async def post(pool: httpcore.AsyncConnectionPool, url: str, body: bytes, headers: dict[str, str], *,
               allow_private: bool, timeout: float, max_bytes: int = 65536) -> Reply:
    """POSTs ``body`` to ``url`` through ``pool``; the whole exchange is bounded by ``timeout``
    (a receiver that trickles bytes cannot hold a slot) and at most ``max_bytes`` of the reply
    are read. Raises URLRefused, OSError, httpcore errors or TimeoutError."""
    check_url(url, allow_private=allow_private)
    parts = urlsplit(url.strip())
    wire_headers = dict(headers)
    if parts.username is not None:  # credentials in the URL become Basic auth
        userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        wire_headers.setdefault("Authorization", "Basic " + base64.b64encode(userinfo.encode()).decode())
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    limits = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    async with asyncio.timeout(timeout):
        async with pool.stream("POST", urlunsplit(parts), headers=list(wire_headers.items()), content=body,
                               extensions={"timeout": limits}) as response:
            data = bytearray()
            async for chunk in response.aiter_stream():
                data += chunk
                if len(data) >= max_bytes:
                    break
            reply_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
            return Reply(response.status, reply_headers, bytes(data[:max_bytes]))
