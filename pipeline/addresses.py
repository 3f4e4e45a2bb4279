"""Where litminer may send a request of its own: http(s) URLs whose host has public addresses only.

Full-text downloads and webhook deliveries go to URLs that users or third parties chose; without this
check such a URL could reach the machines behind litminer (``http://127.0.0.1:6379``, a cloud's metadata
service at ``169.254.169.254``, a neighbour on the private network). A host is refused when any address it
resolves to is loopback, private, link-local, multicast, reserved or otherwise not public, unless the
operator allowed the host by name (``LITMINER_FULL_TEXT_HOSTS``, ``LITMINER_WEBHOOK_HOSTS``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection, Iterable
from urllib.parse import urlsplit


class AddressRefused(Exception):
    """A URL or host litminer will not send requests to; the message says why in a few words."""


class PrivateAddress(AddressRefused):
    """The host resolves to an address that is not public (loopback, private, link-local, multicast…)."""


def http_target(url: str) -> tuple[str, int]:
    """The host (lower case) and port of an http or https URL; raises ``AddressRefused`` for any other URL."""
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed IPv6 address ("http://[::1/")
        raise AddressRefused("not a valid URL") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise AddressRefused(f"not an http(s) URL ({parts.scheme or 'none'})")
    try:
        port = parts.port
    except ValueError:  # a port that is not a number, or past 65535
        raise AddressRefused(f"not a valid port in {parts.netloc}") from None
    return host, port or (443 if parts.scheme == "https" else 80)


def is_public(address: str) -> bool:
    """Whether an IP address is one of the public internet's (``is_global`` counts multicast in, this does not)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0") is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_public(host: str, addresses: Iterable[str]) -> None:
    """Raise ``AddressRefused`` when any of ``host``'s addresses is not public."""
    for address in addresses:
        if not is_public(address):
            raise PrivateAddress(f"a private address ({host})")


def resolve(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` resolves to (blocking); an unknown host is ``AddressRefused``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise AddressRefused(f"unknown host {host}") from None
    return [str(info[4][0]) for info in infos]


async def resolve_async(host: str, port: int) -> list[str]:
    """``resolve`` without blocking the event loop."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise AddressRefused(f"unknown host {host}") from None
    return [str(info[4][0]) for info in infos]


def check_url(url: str, allowed_hosts: Collection[str]) -> str:
    """The URL's host, once it is known to be public or is allowed (blocking); raises ``AddressRefused``."""
    host, port = http_target(url)
    if host not in allowed_hosts:
        check_public(host, resolve(host, port))
    return host


async def check_url_async(url: str, allowed_hosts: Collection[str]) -> str:
    """``check_url`` without blocking the event loop."""
    host, port = http_target(url)
    if host not in allowed_hosts:
        check_public(host, await resolve_async(host, port))
    return host


async def public_addresses(host: str, port: int, allowed_hosts: Collection[str]) -> list[str]:
    """The addresses to connect to for ``host``, once they are known to be public or the host is allowed."""
    addresses = await resolve_async(host, port)
    if host.lower() not in allowed_hosts:
        check_public(host, addresses)
    return addresses
