"""The fetch-time half of the SSRF rule for feeds added by chat command.

:func:`bot.commands.ssrf.check_feed_url` vets a URL when a user adds it; that is not enough on its
own, because the feed's server may later redirect to ``http://169.254.169.254/`` or its host
name may start resolving to a private address. So every request the fetcher makes for such a
feed, first hop and every redirect hop alike, goes through :class:`PublicOnlyGuard`, an httpx
``request`` event hook (httpx calls it once per hop): it resolves the host and refuses the
request unless every address is public.

Feeds from the configuration file are the operator's own choice and may point anywhere (a local
RSS bridge, an intranet feed): the guard only acts on requests marked with
:data:`PUBLIC_ONLY`. What remains: the check and the connection resolve the name separately, so
a DNS server that answers differently within milliseconds (rebinding) could still slip through;
an egress firewall is the complete answer.
"""

from __future__ import annotations

import asyncio

import httpx

from bot.commands.ssrf import Resolver, UnsafeUrlError, check_feed_url, resolve_host

# Request extension that marks a request (and, as httpx copies extensions onto redirects, its
# every hop) as one that may only reach public addresses.
PUBLIC_ONLY = "counterparty.public_only"


class BlockedAddressError(httpx.RequestError):
    """A command-added feed's request would reach a non-public address; the message says why."""


class PublicOnlyGuard:
    """httpx request hook; ``resolve`` is the DNS lookup (blocking, so run in a thread)."""

    def __init__(self, resolve: Resolver = resolve_host) -> None:
        self._resolve = resolve

    async def __call__(self, request: httpx.Request) -> None:
        if not request.extensions.get(PUBLIC_ONLY):
            return
        url = str(request.url)
        try:
            await asyncio.to_thread(check_feed_url, url, resolve=self._resolve)
        except UnsafeUrlError as exc:
            raise BlockedAddressError(f"refused {url}: {exc}", request=request) from None
