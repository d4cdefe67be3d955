"""Shared pieces for the bot's end-to-end tests: the bot on a tiny model against FakeDiscord,
a controllable clock, a fake voice player and an in-process generation worker."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import discord

from bot.adapter.client import CrowdtuneBot, create_bot
from bot.adapter.radio import After
from bot.core.compute import LocalCompute
from bot.core.config import BotSettings
from bot.core.services import Services
from bot.core.store import ListenTotal
from bot.core.worker import GenerationJob, GenerationResult, run_job
from tests.fakediscord import (
    FAST_GUILD_READY_TIMEOUT,
    FakeDiscord,
    RecordedCall,
    expect_event,
    running,
)
from tests.helpers import make_base

STARS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")


class FakeClock:
    """The bot's clock, moved by the test (starts at the real time: snowflakes and the
    database's own timestamps stay plausible)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class InlineWorker(LocalCompute):
    """Generation in a thread of the test process: off the event loop like the real worker,
    without a spawned process's start-up (seconds) in every test."""

    async def generate(self, job: GenerationJob) -> GenerationResult:
        return await asyncio.to_thread(run_job, job)


@dataclass
class FakePlayer:
    """The radio's player without audio: joining moves the bot's voice state through the
    gateway (as the real voice client does); a track plays until the test ends it."""

    guild: discord.Guild
    played: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    playing: str | None = None
    _after: After | None = None

    async def connect(self, channel: discord.VoiceChannel) -> None:
        await self.guild.change_voice_state(channel=channel, self_deaf=True)

    async def play(self, path: str, after: After) -> None:
        self.playing, self._after = path, after
        self.played.put_nowait(path)

    def stop(self) -> None:
        self.finish()

    def finish(self, error: Exception | None = None) -> None:
        after, self._after, self.playing = self._after, None, None
        if after is not None:
            after(error)

    async def disconnect(self) -> None:
        await self.guild.change_voice_state(channel=None)


class Players:
    """A player factory that remembers the players it made, by guild id."""

    def __init__(self) -> None:
        self.by_guild: dict[int, FakePlayer] = {}

    def __call__(self, guild: discord.Guild) -> FakePlayer:
        self.by_guild[guild.id] = FakePlayer(guild)
        return self.by_guild[guild.id]


def tiny_settings(data_dir: Path, emu: FakeDiscord, **overrides: Any) -> BotSettings:
    values: dict[str, Any] = {
        "data_dir": data_dir, "track_seconds": 1.0, "sampler_steps": 2, "torch_threads": 1,
        "sync_guilds": str(emu.ids.guild), "finetune_steps": 4, "finetune_batch_size": 4,
        "eval_clips": 4, "round_min_votes": 6, "round_min_rated_tracks": 3, **overrides}
    return BotSettings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class BotEnv:
    emu: FakeDiscord
    bot: CrowdtuneBot
    services: Services
    clock: FakeClock
    players: Players

    @property
    def guild(self) -> discord.Guild:
        guild = self.bot.get_guild(self.emu.ids.guild)
        assert guild is not None
        return guild

    async def drain_votes(self) -> None:
        await self.bot.get_cog("Ratings").drain()  # type: ignore[union-attr]

    async def command(self, name: str, options: list[dict] | None = None, *,
                      user_id: int | None = None, channel_id: int | None = None) -> dict:
        return await self.emu.slash_command(name, options, user_id=user_id,
                                            channel_id=channel_id)

    async def reply(self, payload: dict, *, count: int = 1, timeout: float = 10.0
                    ) -> RecordedCall:
        """The bot's answer to an interaction: its callback or a follow-up, the
        `count`-th one (a defer's follow-up is the second)."""
        token = re.escape(payload["token"])
        return await self.emu.wait_for_call(
            "POST", rf"(/interactions/{payload['id']}/{token}/callback|/webhooks/\d+/{token})",
            count=count, timeout=timeout)


async def generated(env: BotEnv, payload: dict, timeout: float = 30.0) -> int:
    """Wait for /generate's track post and the bot's five reactions; the message id."""
    await env.reply(payload, count=2, timeout=timeout)
    message_id = env.emu.interaction(payload["token"]).original_id
    assert message_id is not None
    await env.emu.wait_for_call("PUT", rf"/channels/\d+/messages/{message_id}/reactions/5️⃣/@me")
    return message_id


async def react(env: BotEnv, message_id: int, emoji: str, user_id: int, *,
                remove: bool = False) -> None:
    """A member adds (or removes) a reaction through the gateway; returns once the vote
    it makes (or unmakes) is in the database."""
    def match(e: discord.RawReactionActionEvent) -> bool:
        return (e.user_id, e.message_id, str(e.emoji)) == (user_id, message_id, emoji)

    waiter = await expect_event(env.bot, "raw_reaction_remove" if remove else
                                "raw_reaction_add", check=match)
    if remove:
        await env.emu.reaction_remove(message_id, emoji, user_id=user_id)
    else:
        await env.emu.reaction_add(message_id, emoji, user_id=user_id)
    await waiter
    await asyncio.sleep(0)  # the cog's listener task queues the change
    await env.drain_votes()


async def votes(env: BotEnv, track_id: int) -> dict[int, int]:
    return {int(v.member_id): v.stars for v in await env.services.store.votes(track_id)}


async def voice(env: BotEnv, user_id: int, channel_id: int | None, **flags: bool) -> None:
    """A member's voice state changes; returns once the listening it closed is stored."""
    waiter = await expect_event(env.bot, "voice_state_update",
                                check=lambda m, b, a: m.id == user_id)
    await env.emu.voice_update(user_id, channel_id, **flags)
    await waiter
    await asyncio.sleep(0)
    await env.bot.radio.flush()


async def totals(env: BotEnv, track_id: int) -> dict[int, tuple[float, bool]]:
    rows: list[ListenTotal] = await env.services.store.listen_totals([track_id])
    return {int(r.member_id): (round(r.listened_s, 3), r.present_at_start) for r in rows}


async def configure(env: BotEnv, **changes: Any) -> None:
    await env.services.configs.update(env.emu.ids.guild, **changes)


@asynccontextmanager
async def bot_env(emu: FakeDiscord, data_dir: Path, *, clock: FakeClock | None = None,
                  players: Players | None = None, base: bool = True,
                  worker: LocalCompute | None = None, **overrides: Any
                  ) -> AsyncIterator[BotEnv]:
    """A started bot over `data_dir` (a tiny base model saved there unless one is), its
    commands synced to the emulator's guild, the music channel set to #general."""
    settings = tiny_settings(data_dir, emu, **overrides)
    if base and not (settings.models_dir / "base" / "model_index.json").is_file():
        make_base(settings.models_dir)
    clock = clock or FakeClock()
    players = players or Players()
    services = await Services.open(settings, compute=worker or InlineWorker(threads=1),
                                   clock=clock)
    await services.configs.update(emu.ids.guild, music_channel_id=emu.ids.text_channel)
    try:
        bot = create_bot(settings, services, player_factory=players,
                         sync_commands=True, guild_ready_timeout=FAST_GUILD_READY_TIMEOUT)
        async with running(bot, emu):
            env = BotEnv(emu, bot, services, clock, players)
            await asyncio.wait_for(bot.guilds_ready.wait(), 10)
            await asyncio.wait_for(bot.get_cog("Ratings").reconciled.wait(), 10)  # type: ignore[union-attr]
            yield env
            await env.drain_votes()
    finally:
        await services.close()


def ephemeral(call: RecordedCall) -> bool:
    body = call.body or {}
    data = body.get("data", body) if "type" in body and "data" in body else body
    return bool(int(data.get("flags") or 0) & 64)


def content(call: RecordedCall) -> str:
    body = call.body or {}
    if "type" in body and "data" in body:
        body = body["data"]
    return str(body.get("content") or "")
