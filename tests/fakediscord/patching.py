"""Point an unmodified discord.py at the emulator instead of discord.com."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import discord.asset
import discord.gateway
import discord.http
import yarl


@contextmanager
def redirect_discord(
    api_base: str, gateway_url: str, cdn_base: str | None = None
) -> Iterator[None]:
    """Patch the class attributes discord.py builds every URL from; restore them on exit.

    ``Route.BASE`` is read when each Route is created (REST and interaction webhooks alike),
    ``DEFAULT_GATEWAY`` when a websocket is opened, ``Asset.BASE`` for avatar/icon URLs.
    """
    route, ws, asset = discord.http.Route, discord.gateway.DiscordWebSocket, discord.asset.Asset
    saved = (route.BASE, ws.DEFAULT_GATEWAY, asset.BASE)
    route.BASE = api_base
    ws.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    if cdn_base is not None:
        asset.BASE = cdn_base
    try:
        yield
    finally:
        route.BASE, ws.DEFAULT_GATEWAY, asset.BASE = saved
