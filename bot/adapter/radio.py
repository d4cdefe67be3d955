"""The radio: the bot plays the guild's tracks in a voice channel and measures listening.

Audio goes through a `Player` (the real one is discord.py's voice client with
FFmpegOpusAudio; the bot tests use a fake, since the emulator has no voice server, and
tests/test_voice_playback.py plays real files through it up to the packets). Listening comes
from voice state updates, fed by the radio cog into a `ListenTracker`: a member in the bot's
channel and not deafened is listening. Closed intervals are written at once through
`FeedbackService.record_play`; the ones still open close when the track ends, when the bot
leaves (`/radio stop`, being disconnected) and at shutdown, and are saved as they stand every
`checkpoint_s` while a track plays, so a hard crash loses at most that much listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import discord

from bot.core.errors import UserFacingError
from bot.core.listening import ListenInterval, ListenTracker, Play
from bot.core.services import Services
from bot.core.store import Track

log = logging.getLogger(__name__)

After = Callable[[Exception | None], None]
RECENT_TRACKS = 50  # the radio cycles through the guild's latest tracks
CHECKPOINT_S = 15.0  # open listening is saved this often (real seconds)


class RadioError(UserFacingError):
    """A one-line reason the radio cannot do what was asked."""


class Player(Protocol):
    """Plays files in one guild's voice channel."""

    async def connect(self, channel: discord.VoiceChannel) -> None: ...

    async def play(self, path: str, after: After) -> None:
        """Start playing and return; `after` is called (from any thread) when it ends."""

    def stop(self) -> None:
        """End the current track now (its `after` still runs)."""

    async def disconnect(self) -> None: ...


PlayerFactory = Callable[[discord.Guild], Player]


class VoicePlayer:
    """discord.py's voice client: Opus files are sent as they are, others via ffmpeg."""

    def __init__(self, guild: discord.Guild) -> None:
        self.guild = guild
        self.voice: discord.VoiceClient | None = None

    async def connect(self, channel: discord.VoiceChannel) -> None:
        current = self.guild.voice_client
        if isinstance(current, discord.VoiceClient) and current.is_connected():
            if current.channel.id != channel.id:
                await current.move_to(channel)
            self.voice = current
        else:
            self.voice = await channel.connect(self_deaf=True, timeout=30.0)

    async def play(self, path: str, after: After) -> None:
        if self.voice is None or not self.voice.is_connected():
            raise RadioError("the bot is not connected to a voice channel")
        source = await discord.FFmpegOpusAudio.from_probe(path)
        self.voice.play(source, after=after)

    def stop(self) -> None:
        if self.voice is not None and self.voice.is_playing():
            self.voice.stop()

    async def disconnect(self) -> None:
        if self.voice is not None:
            await self.voice.disconnect(force=True)
            self.voice = None


@dataclass
class NowPlaying:
    track: Track
    started_at: float
    channel_id: int
    listeners: int


@dataclass
class _Session:
    guild_id: int
    channel_id: int
    player: Player
    task: asyncio.Task[None] | None = None
    current: Track | None = None
    started_at: float = 0.0
    played: set[int] = field(default_factory=set)


def _listens(state: discord.VoiceState) -> bool:
    return not (state.self_deaf or state.deaf)


class Radio:
    def __init__(self, services: Services, player_factory: PlayerFactory,
                 clock: Callable[[], float], checkpoint_s: float = CHECKPOINT_S) -> None:
        self.services = services
        self.checkpoint_s = checkpoint_s
        self.player_factory = player_factory
        self.clock = clock
        self.tracker = ListenTracker()
        self.sessions: dict[int, _Session] = {}
        self._writes: set[asyncio.Task[Any]] = set()

    # --- commands -------------------------------------------------------------------------

    async def start(self, guild: discord.Guild, channel: discord.VoiceChannel) -> None:
        if guild.id in self.sessions:
            raise RadioError(f"The radio is already on in <#{self.sessions[guild.id].channel_id}>"
                             "; use /radio stop first.")
        player = self.player_factory(guild)
        session = _Session(guild.id, channel.id, player)
        self.sessions[guild.id] = session  # before connecting: the bot's own join is ours
        try:
            await player.connect(channel)
        except Exception as exc:
            self.sessions.pop(guild.id, None)
            log.warning("guild %s: could not join voice channel %s: %s", guild.id, channel.id,
                        exc)
            raise RadioError(f"I could not join {channel.mention}: check that I may connect "
                             "and speak there.") from exc
        session.task = asyncio.create_task(self._run(session, guild),
                                           name=f"radio-{guild.id}")

    async def stop(self, guild_id: int) -> bool:
        """Leave the voice channel; open listening closes now. False if it was off."""
        session = self.sessions.pop(guild_id, None)
        if session is None:
            return False
        play = self.tracker.current(guild_id)
        self._persist(play, self.tracker.bot_left(guild_id, self.clock()))
        if session.task is not None:
            session.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await session.task
        session.player.stop()
        with contextlib.suppress(Exception):
            await session.player.disconnect()
        await self.flush()
        return True

    def skip(self, guild_id: int) -> bool:
        session = self.sessions.get(guild_id)
        if session is None or session.current is None:
            return False
        session.player.stop()
        return True

    def now(self, guild_id: int) -> NowPlaying | None:
        session = self.sessions.get(guild_id)
        if session is None or session.current is None:
            return None
        return NowPlaying(session.current, session.started_at, session.channel_id,
                          len(self.tracker.listening(guild_id)))

    def channel_of(self, guild_id: int) -> int | None:
        session = self.sessions.get(guild_id)
        return session.channel_id if session else None

    async def shutdown(self) -> None:
        """The bot is closing: every session stops, every open interval is written."""
        for guild_id in list(self.sessions):
            await self.stop(guild_id)
        await self.flush()

    async def flush(self) -> None:
        """Wait for listening writes in flight (not for the caller itself: `stop` may run
        as one of them)."""
        me = asyncio.current_task()
        while pending := [t for t in self._writes if t is not me]:
            await asyncio.gather(*pending, return_exceptions=True)

    # --- voice state updates (synchronous: the cog reads before/after before any await) ---

    def voice_update(self, member: discord.Member, after: discord.VoiceState,
                     me: bool) -> None:
        guild = member.guild
        session = self.sessions.get(guild.id)
        if session is None:
            return
        at = self.clock()
        play = self.tracker.current(guild.id)
        if me:
            if after.channel is None:  # disconnected by someone else
                log.info("guild %s: the bot was disconnected from voice", guild.id)
                self._spawn(self.stop(guild.id))
            elif after.channel.id != session.channel_id:  # moved by a moderator
                closed = [iv for m in sorted(self.tracker.listening(guild.id))
                          for iv in self.tracker.member_update(guild.id, m, False, at)]
                session.channel_id = after.channel.id
                for m in self._listeners(guild, session.channel_id):
                    self.tracker.member_update(guild.id, m, True, at)
                self._persist(play, closed)
            return
        if member.bot:
            return
        listening = (after.channel is not None and after.channel.id == session.channel_id
                     and _listens(after))
        self._persist(play, self.tracker.member_update(guild.id, member.id, listening, at))

    # --- internals ------------------------------------------------------------------------

    def _listeners(self, guild: discord.Guild, channel_id: int) -> list[int]:
        channel = guild.get_channel(channel_id)
        if not isinstance(channel, discord.VoiceChannel | discord.StageChannel):
            return []
        me = guild.me.id if guild.me else None
        out = []
        for user_id, state in channel.voice_states.items():
            member = guild.get_member(user_id)
            if user_id != me and not (member and member.bot) and _listens(state):
                out.append(user_id)
        return sorted(out)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _persist(self, play: Play | None, intervals: Iterable[ListenInterval]) -> None:
        intervals = list(intervals)
        if play is not None and intervals:
            self._spawn(self._record(play, intervals))

    async def _record(self, play: Play, intervals: list[ListenInterval]) -> None:
        try:
            await self.services.feedback.record_play(play, intervals)
        except Exception:
            log.exception("guild %s: listening on track %d not recorded", play.guild_id,
                          play.track_id)

    async def _next_track(self, session: _Session) -> Track:
        guild = str(session.guild_id)
        recent = [t for t in await self.services.store.tracks(guild, RECENT_TRACKS)
                  if t.file and Path(t.file).is_file()]
        fresh = [t for t in recent if t.id not in session.played]
        if not fresh and recent:  # played them all: go round again
            session.played.clear()
            fresh = recent
        if fresh:
            return fresh[0]
        (made,) = await self.services.tracks.generate(guild, 1)
        track = await self.services.store.get_track(made.track_id)
        assert track is not None
        return track

    async def _run(self, session: _Session, guild: discord.Guild) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                track = await self._next_track(session)
                assert track.file is not None
                ended = asyncio.Event()

                def after(error: Exception | None, ended: asyncio.Event = ended) -> None:
                    if error is not None:
                        log.warning("guild %s: playback error: %s", session.guild_id, error)
                    loop.call_soon_threadsafe(ended.set)

                at = self.clock()
                self.tracker.track_started(guild.id, track.id, track.duration_s, at,
                                           self._listeners(guild, session.channel_id))
                play = self.tracker.current(guild.id)
                assert play is not None
                session.current, session.started_at = track, at
                # Presence at the start is a signal even for a member who leaves at once.
                await self.services.feedback.record_play(play, [])
                await session.player.play(track.file, after)
                while not ended.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ended.wait(), self.checkpoint_s)
                    if not ended.is_set():
                        self._persist(play, self.tracker.open_so_far(guild.id, self.clock()))
                self._persist(play, self.tracker.track_ended(guild.id, self.clock(), track.id))
                session.played.add(track.id)
                session.current = None
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("guild %s: the radio stopped", session.guild_id)
            if self.sessions.get(session.guild_id) is session:
                self._spawn(self.stop(session.guild_id))
