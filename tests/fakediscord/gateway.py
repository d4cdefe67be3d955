"""The gateway websocket: HELLO, heartbeats, IDENTIFY -> READY + GUILD_CREATE, RESUME, chunking.

Frames are sent as uncompressed text: discord.py only decompresses binary frames, so the
``compress=zstd-stream`` query it sends can be ignored. Dispatches are filtered by the
client's intents, and message content is withheld without the MESSAGE_CONTENT intent,
as Discord does, so a bot missing an intent fails here as it would in production.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from . import payloads as p
from .payloads import JSON
from .state import World

OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE = 3
OP_VOICE_STATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11

HEARTBEAT_INTERVAL_MS = 41_250
CLOSE_AUTHENTICATION_FAILED = 4004

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_VOICE_STATES = 1 << 7
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS = 1 << 10
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_DIRECT_MESSAGE_REACTIONS = 1 << 13
INTENT_MESSAGE_CONTENT = 1 << 15

# Events that need an intent; (guild intent, DM intent). Unlisted events are always sent.
EVENT_INTENTS: dict[str, tuple[int, int]] = {
    **{
        e: (INTENT_GUILDS, 0)
        for e in (
            "GUILD_CREATE",
            "GUILD_UPDATE",
            "GUILD_DELETE",
            "CHANNEL_CREATE",
            "CHANNEL_UPDATE",
            "CHANNEL_DELETE",
            "GUILD_ROLE_CREATE",
            "GUILD_ROLE_UPDATE",
            "GUILD_ROLE_DELETE",
        )
    },
    **{
        e: (INTENT_GUILD_MEMBERS, 0)
        for e in ("GUILD_MEMBER_ADD", "GUILD_MEMBER_UPDATE", "GUILD_MEMBER_REMOVE")
    },
    "VOICE_STATE_UPDATE": (INTENT_GUILD_VOICE_STATES, 0),
    **{
        e: (INTENT_GUILD_MESSAGES, INTENT_DIRECT_MESSAGES)
        for e in ("MESSAGE_CREATE", "MESSAGE_UPDATE", "MESSAGE_DELETE")
    },
    **{
        e: (INTENT_GUILD_MESSAGE_REACTIONS, INTENT_DIRECT_MESSAGE_REACTIONS)
        for e in (
            "MESSAGE_REACTION_ADD",
            "MESSAGE_REACTION_REMOVE",
            "MESSAGE_REACTION_REMOVE_ALL",
            "MESSAGE_REACTION_REMOVE_EMOJI",
        )
    },
}
CONTENT_FIELDS = ("content", "embeds", "attachments", "components", "poll")


def wants(intents: int, event: str, data: JSON) -> bool:
    guild_intent, dm_intent = EVENT_INTENTS.get(event, (0, 0))
    needed = guild_intent if "guild_id" in data else dm_intent
    return needed == 0 or bool(intents & needed)


def owns(shard: list[int], event: str, data: JSON) -> bool:
    """Whether a session of `shard` [id, count] gets the event, as Discord routes them: a
    guild's events to shard (guild_id >> 22) % count, direct messages to shard 0."""
    guild = data.get("guild_id") or (data.get("id") if event.startswith("GUILD_") else None)
    return (int(guild) >> 22) % shard[1] == shard[0] if guild else shard[0] == 0


def visible(intents: int, bot_id: int, event: str, data: JSON) -> JSON:
    """Strip message content the client may not see without the MESSAGE_CONTENT intent."""
    if event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE") or intents & INTENT_MESSAGE_CONTENT:
        return data
    mentioned = any(u.get("id") == str(bot_id) for u in data.get("mentions", []))
    if data.get("author", {}).get("id") == str(bot_id) or mentioned or "guild_id" not in data:
        return data
    stripped = copy.deepcopy(data)
    for key in CONTENT_FIELDS:
        if key in stripped:
            stripped[key] = "" if key == "content" else []
    return stripped


@dataclass
class GatewaySession:
    """A gateway session; it outlives its socket so RESUME can replay what was missed."""

    session_id: str
    intents: int
    shard: list[int]
    ws: web.WebSocketResponse | None = None
    seq: int = 0
    backlog: list[JSON] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, frame: JSON) -> None:
        if self.ws is None or self.ws.closed:
            return
        try:
            await self.ws.send_str(json.dumps(frame))
        except ConnectionError:
            pass  # the socket closed mid-send; the frame stays in the backlog for RESUME

    async def dispatch(self, event: str, data: JSON) -> None:
        # The lock keeps sequence numbers in send order when tests and handlers interleave.
        async with self.lock:
            self.seq += 1
            frame = {"op": OP_DISPATCH, "t": event, "s": self.seq, "d": data}
            self.backlog.append(frame)
            await self.send(frame)


class Gateway:
    def __init__(self, world: World, *, token: str, ws_url: str) -> None:
        self.world = world
        self.token = token
        self.ws_url = ws_url
        self.sessions: dict[str, GatewaySession] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        # Every frame the client sent (heartbeats excluded): identify, presence, op 4, op 8...
        self.received: list[JSON] = []

    @property
    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if s.ws is not None and not s.ws.closed]

    async def dispatch(self, event: str, data: JSON, *, require_client: bool = True) -> int:
        """Send an event to every session whose intents allow it; returns how many.

        Sessions between a dropped socket and their RESUME still get it in their backlog,
        as on Discord, so nothing is lost across a reconnect.
        """
        if require_client and not self.sessions:
            raise RuntimeError(f"cannot dispatch {event}: no client is connected to the gateway")
        sent = 0
        for session in list(self.sessions.values()):
            if wants(session.intents, event, data) and owns(session.shard, event, data):
                body = visible(session.intents, self.world.bot_id, event, data)
                await session.dispatch(event, copy.deepcopy(body))
                sent += 1
        return sent

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT; discord.py reconnects and RESUMEs."""
        for session in self.live_sessions:
            await session.send({"op": OP_RECONNECT, "d": None, "s": None, "t": None})

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001)

    # ------------------------------------------------------------------ socket handling

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.sockets.add(ws)
        session: GatewaySession | None = None
        try:
            hello = {"heartbeat_interval": HEARTBEAT_INTERVAL_MS, "_trace": ["fakediscord"]}
            await ws.send_str(json.dumps({"op": OP_HELLO, "d": hello, "s": None, "t": None}))
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                session = await self._on_frame(ws, frame, session)
        finally:
            self.sockets.discard(ws)
            # A clean close (1000/1001) ends the session; other codes leave it resumable.
            if session is not None and session.ws is ws and ws.close_code in (1000, 1001):
                self.sessions.pop(session.session_id, None)
        return ws

    async def _on_frame(
        self, ws: web.WebSocketResponse, frame: JSON, session: GatewaySession | None
    ) -> GatewaySession | None:
        op, data = frame.get("op"), frame.get("d")
        if op == OP_HEARTBEAT:
            await ws.send_str(json.dumps({"op": OP_HEARTBEAT_ACK, "d": None, "s": None, "t": None}))
            return session
        self.received.append(frame)
        if op == OP_IDENTIFY:
            return await self._identify(ws, data)
        if op == OP_RESUME:
            return await self._resume(ws, data)
        if op == OP_REQUEST_MEMBERS and session is not None:
            await self._send_member_chunk(session, data)
        if op == OP_VOICE_STATE and session is not None:
            await self._bot_voice_state(data)
        # Presence updates (op 3) are only recorded.
        return session

    async def _identify(self, ws: web.WebSocketResponse, data: JSON) -> GatewaySession | None:
        if data.get("token") != self.token:
            await ws.close(code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed.")
            return None
        session = GatewaySession(
            session_id=secrets.token_hex(16),
            intents=int(data.get("intents", 0)),
            shard=list(data.get("shard", [0, 1])),
            ws=ws,
        )
        self.sessions[session.session_id] = session
        world = self.world
        mine = [g for g in world.guilds if owns(session.shard, "GUILD_CREATE", {"id": str(g)})]
        ready = {
            "v": 10,
            "user": p.self_user(world.bot_user),
            "user_settings": {},
            "guilds": [{"id": str(g), "unavailable": True} for g in mine],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.ws_url,
            "shard": session.shard,
            "application": {"id": str(world.app_id), "flags": p.APPLICATION_FLAGS},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": ["fake"],
            "guild_join_requests": [],
            "auth_session_id_hash": secrets.token_hex(8),
            "_trace": ["fakediscord"],
        }
        await session.dispatch("READY", ready)
        for guild_id in mine:
            if session.intents & INTENT_GUILDS:
                await session.dispatch(
                    "GUILD_CREATE", world.guild_create(guild_id, intents=session.intents)
                )
        return session

    async def _resume(self, ws: web.WebSocketResponse, data: JSON) -> GatewaySession | None:
        session = self.sessions.get(str(data.get("session_id")))
        if session is None or data.get("token") != self.token:
            frame = {"op": OP_INVALID_SESSION, "d": False, "s": None, "t": None}
            await ws.send_str(json.dumps(frame))
            return None
        async with session.lock:
            session.ws = ws
            last_seen = int(data.get("seq") or 0)
            for frame in session.backlog:
                if frame["s"] > last_seen:
                    await session.send(frame)
        await session.dispatch("RESUMED", {"_trace": ["fakediscord"]})
        return session

    async def _send_member_chunk(self, session: GatewaySession, data: JSON) -> None:
        guild_id = int(data["guild_id"])
        guild = self.world.guilds.get(guild_id)
        if guild is None:
            return
        query = data.get("query")
        user_ids: Any = data.get("user_ids")
        wanted = (
            {int(u) for u in (user_ids if isinstance(user_ids, list) else [user_ids])}
            if user_ids is not None
            else None
        )
        members = [
            copy.deepcopy(m)
            for uid, m in guild.members.items()
            if (wanted is None or uid in wanted)
            and (not query or m["user"]["username"].lower().startswith(query.lower()))
        ]
        limit = int(data.get("limit") or 0)
        if limit:
            members = members[:limit]
        found = {int(m["user"]["id"]) for m in members}
        chunk: JSON = {
            "guild_id": str(guild_id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [str(u) for u in sorted(wanted - found)] if wanted else [],
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        if data.get("presences"):
            chunk["presences"] = []
        await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def _bot_voice_state(self, data: JSON) -> None:
        """Move the bot's own voice state as asked. No VOICE_SERVER_UPDATE follows (there is
        no voice server), so ``VoiceChannel.connect()`` cannot complete against the emulator."""
        guild_id = int(data["guild_id"])
        if guild_id not in self.world.guilds:
            return
        channel = data.get("channel_id")
        event = self.world.set_voice_state(
            guild_id,
            self.world.bot_id,
            int(channel) if channel else None,
            self_mute=bool(data.get("self_mute")),
            self_deaf=bool(data.get("self_deaf")),
        )
        await self.dispatch("VOICE_STATE_UPDATE", event)
