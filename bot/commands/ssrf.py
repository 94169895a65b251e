"""Checking a feed URL that a chat user asked the bot to fetch (server-side request forgery).

A URL added by command is fetched from the bot's own network, so it must not point the bot at
itself, the local network or a cloud metadata service. :func:`check_feed_url` allows http(s)
only, no credentials in the URL, and every address the host name resolves to must be public
(not loopback, private, link-local, carrier-grade NAT, multicast, reserved or unspecified,
IPv4-mapped IPv6 included), unless the operator set
``fetch.allow_private_addresses_from_commands``.

This checks the URL when it is added. Redirects are followed by the fetcher, which must apply
the same rule to each hop for command-added feeds (:func:`address_problem` is the shared test).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from bot.commands.answers import CommandError

Resolver = Callable[[str, int], list[str]]

MAX_URL_LENGTH = 2048


class UnsafeUrlError(CommandError):
    """The URL may not be added by command; the message says why."""


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (blocking DNS; call it off the event loop)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def address_problem(address: str) -> str | None:
    """Why ``address`` must not be fetched from a command, or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    checks = [
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address (cloud metadata lives there)"),
        (ip.is_private, "a private network address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    ]
    return next((reason for failed, reason in checks if failed), None)


def check_feed_url(
    url: str, *, resolve: Resolver = resolve_host, allow_private: bool = False
) -> str:
    """The cleaned URL if a command may add it; raises :class:`UnsafeUrlError` otherwise."""
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrlError(f"That URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrlError("That is not a valid URL.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UnsafeUrlError("Only http:// and https:// feed URLs can be added.")
    host = parts.hostname
    if not host:
        raise UnsafeUrlError("That URL has no host name.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrlError("Feed URLs with a user name or password cannot be added by command.")
    if allow_private:
        return url
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        try:
            addresses = resolve(host, port)
        except (OSError, UnicodeError):
            raise UnsafeUrlError(f"The host name {host} does not resolve.") from None
    if not addresses:
        raise UnsafeUrlError(f"The host name {host} does not resolve.")
    for address in addresses:
        problem = address_problem(address)
        if problem:
            raise UnsafeUrlError(
                f"{host} resolves to {address}, {problem}; feeds added by command must be on "
                "the public internet."
            )
    return url
