"""Run a real discord.py client against the emulator and wait on its events without sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import discord

from .emulator import FakeDiscord

ClientT = TypeVar("ClientT", bound=discord.Client)

# Pass as ``guild_ready_timeout`` when building a client: discord.py waits this long after the
# last GUILD_CREATE before on_ready (default 2 s). The emulator sends them back to back.
FAST_GUILD_READY_TIMEOUT = 0.2


@asynccontextmanager
async def running(
    client: ClientT, emu: FakeDiscord, *, timeout: float = 10.0, token: str | None = None
) -> AsyncIterator[ClientT]:
    """Start ``client`` against ``emu``, yield once it is ready with every guild available,
    then close it and wait for its task, so nothing is left running after the block."""
    start = client.start(token if token is not None else emu.token)
    task = asyncio.create_task(start, name="fakediscord-client")
    try:
        ready = asyncio.ensure_future(client.wait_until_ready())
        done, _ = await asyncio.wait(
            {task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if task.done():
                task.result()  # re-raise the login/connect failure
            raise TimeoutError(f"client not ready within {timeout}s")
        await _guilds_available(client, emu, timeout)
        yield client
    finally:
        await client.close()
        # Awaiting the task also surfaces an exception the client died with mid-test.
        await asyncio.wait_for(task, timeout)


async def _guilds_available(client: discord.Client, emu: FakeDiscord, timeout: float) -> None:
    """Guard against a GUILD_CREATE that lost the race with guild_ready_timeout."""
    for guild_id in emu.world.guilds:
        guild = client.get_guild(guild_id)
        needs_chunk = client.intents.members and getattr(client._connection, "_chunk_guilds", False)
        if guild is None or guild.unavailable or (needs_chunk and not guild.chunked):
            await client.wait_for(
                "guild_available", check=lambda g, gid=guild_id: g.id == gid, timeout=timeout
            )


async def expect_event(
    client: discord.Client,
    event: str,
    *,
    check: Callable[..., bool] | None = None,
    timeout: float = 5.0,
) -> asyncio.Task[Any]:
    """Start waiting for a client event *before* triggering it; await the returned task.

    ``client.wait_for`` registers its listener on its first step, which the ``sleep(0)``
    lets run, so an event dispatched right after this call cannot be missed.
    """
    task = asyncio.ensure_future(client.wait_for(event, check=check, timeout=timeout))
    await asyncio.sleep(0)
    return task
