"""FakeDiscord: REST + gateway + CDN on 127.0.0.1, plus helpers to inject user activity."""

from __future__ import annotations

import copy
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from . import payloads as p
from .gateway import Gateway
from .patching import redirect_discord
from .payloads import JSON
from .recorder import CallRecorder, Predicate, RecordedCall
from .server import API_PREFIX, Override, RestApi
from .state import DefaultIds, InteractionState, World

DEFAULT_TOKEN = "fakediscord.bot.token"
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024


class FakeDiscord:
    """A local Discord for end-to-end tests.

    Start it with ``async with FakeDiscord() as emu`` (or take the ``fake_discord`` fixture),
    point discord.py at it with ``with emu.redirect():``, drive the bot with the inject helpers
    and assert on :meth:`calls`. The port is bound at construction so URLs (attachments,
    gateway) are known before the server starts.
    """

    def __init__(self, *, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_base = self.base_url + API_PREFIX
        self.gateway_url = f"ws://127.0.0.1:{self.port}/gateway-ws"
        self.world = World(self.base_url)
        self.recorder = CallRecorder()
        self.gateway = Gateway(self.world, token=token, ws_url=self.gateway_url)
        self.rest = RestApi(
            self.world, self.gateway, self.recorder, token=token, ws_url=self.gateway_url
        )
        self._runner: web.AppRunner | None = None

    @property
    def ids(self) -> DefaultIds:
        return self.world.ids

    @property
    def interaction_deadline(self) -> float | None:
        """Seconds a bot has to answer or defer an interaction (Discord: 3); None: no limit."""
        return self.rest.interaction_deadline

    @interaction_deadline.setter
    def interaction_deadline(self, seconds: float | None) -> None:
        self.rest.interaction_deadline = seconds

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application()
        self.rest.add_routes(app)
        app.router.add_get("/gateway-ws", self.gateway.handle)
        # A short shutdown timeout: nothing long-running should be in flight at close.
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    async def close(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._sock.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @contextmanager
    def redirect(self) -> Iterator[Self]:
        """Patch discord.py's base URLs to this emulator for the duration of the block."""
        with redirect_discord(self.api_base, self.gateway_url, cdn_base=self.base_url + "/cdn"):
            yield self

    # ------------------------------------------------------------------ recorded REST calls

    @property
    def all_calls(self) -> list[RecordedCall]:
        return self.recorder.all

    def mark(self) -> int:
        """Position in the call log, for ``since=`` in :meth:`calls` / :meth:`wait_for_call`."""
        return self.recorder.mark()

    def calls(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        where: Predicate | None = None,
        since: int = 0,
    ) -> list[RecordedCall]:
        """Recorded REST calls; ``path`` is a regex matched against the whole API path."""
        return self.recorder.calls(method, path, where=where, since=since)

    async def wait_for_call(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        where: Predicate | None = None,
        since: int = 0,
        count: int = 1,
        timeout: float = 5.0,
    ) -> RecordedCall:
        """Wait for the ``count``-th matching call (already-made calls count); AssertionError
        listing what was seen if it does not come within ``timeout``."""
        return await self.recorder.wait_for_call(
            method, path, where=where, since=since, count=count, timeout=timeout
        )

    def respond(
        self, method: str, path: str, *, status: int, body: Any = None, times: int | None = 1
    ) -> None:
        """Answer the next ``times`` matching calls with a canned response (None: forever).

        Avoid 5xx: discord.py retries those with multi-second sleeps.
        """
        self.rest.overrides.append(Override(method.upper(), path, status, body, times))

    # ------------------------------------------------------------------ world access

    def message(self, message_id: int) -> JSON:
        """A message the emulator holds, with its current reactions."""
        return self.world.message_view(message_id)

    def channel_messages(self, channel_id: int | None = None) -> list[JSON]:
        channel_id = channel_id or self.ids.text_channel
        return [
            self.world.message_view(int(m["id"])) for m in self.world.channel_messages(channel_id)
        ]

    def reaction_user_ids(self, message_id: int, emoji: str) -> list[int]:
        key = p.emoji_key(p.parse_emoji(emoji))
        return [int(u["id"]) for u in self.world.reaction_users(message_id, key)]

    def interaction(self, token: str) -> InteractionState:
        return self.world.interactions[token]

    def add_attachment(
        self,
        data: bytes,
        filename: str,
        *,
        content_type: str | None = None,
        channel_id: int | None = None,
    ) -> JSON:
        """Serve bytes from the CDN route and return the attachment object to inject."""
        return self.world.store_file(
            channel_id or self.ids.text_channel, filename, data, content_type=content_type
        )

    # ------------------------------------------------------------------ gateway injection

    async def dispatch(self, event: str, data: JSON) -> None:
        """Send any dispatch to connected clients; raises if no client is connected."""
        await self.gateway.dispatch(event, data)

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT; the client reconnects and RESUMEs (on_resumed fires)."""
        await self.gateway.request_reconnect()

    def _guild_id(self, guild_id: int | None) -> int:
        return guild_id or self.ids.guild

    async def reaction_add(
        self,
        message_id: int,
        emoji: str,
        *,
        user_id: int,
        channel_id: int | None = None,
    ) -> JSON:
        """A member reacts. Always dispatched, even if repeated, so idempotency can be tested."""
        stored = self.world.messages.get(message_id)
        channel_id = channel_id or (int(stored["channel_id"]) if stored else self.ids.text_channel)
        emoji_obj = p.parse_emoji(emoji)
        if stored is not None:
            self.world.add_reaction(message_id, emoji_obj, user_id)
        event: JSON = {
            "user_id": str(user_id),
            "channel_id": str(channel_id),
            "message_id": str(message_id),
            "emoji": emoji_obj,
            "burst": False,
            "burst_colors": [],
            "type": 0,
        }
        if stored is not None:
            event["message_author_id"] = stored["author"]["id"]
        guild_id = self.world.guild_of_channel(channel_id)
        if guild_id is not None:
            event["guild_id"] = str(guild_id)
            event["member"] = self.world.member(guild_id, user_id)
        await self.gateway.dispatch("MESSAGE_REACTION_ADD", event)
        return event

    async def reaction_remove(
        self,
        message_id: int,
        emoji: str,
        *,
        user_id: int,
        channel_id: int | None = None,
    ) -> JSON:
        stored = self.world.messages.get(message_id)
        channel_id = channel_id or (int(stored["channel_id"]) if stored else self.ids.text_channel)
        emoji_obj = p.parse_emoji(emoji)
        if stored is not None:
            self.world.remove_reaction(message_id, emoji_obj, user_id)
        event: JSON = {
            "user_id": str(user_id),
            "channel_id": str(channel_id),
            "message_id": str(message_id),
            "emoji": emoji_obj,
            "burst": False,
            "type": 0,
        }
        guild_id = self.world.guild_of_channel(channel_id)
        if guild_id is not None:
            event["guild_id"] = str(guild_id)
        await self.gateway.dispatch("MESSAGE_REACTION_REMOVE", event)
        return event

    async def voice_update(
        self,
        user_id: int,
        channel_id: int | None,
        *,
        guild_id: int | None = None,
        self_deaf: bool = False,
        self_mute: bool = False,
        deaf: bool = False,
        mute: bool = False,
        self_video: bool = False,
        self_stream: bool = False,
    ) -> JSON:
        """Join (channel), move (another channel), (self-)deafen/mute, or leave (None)."""
        event = self.world.set_voice_state(
            self._guild_id(guild_id),
            user_id,
            channel_id,
            self_deaf=self_deaf,
            self_mute=self_mute,
            deaf=deaf,
            mute=mute,
            self_video=self_video,
            self_stream=self_stream,
        )
        await self.gateway.dispatch("VOICE_STATE_UPDATE", event)
        return event

    async def user_message(
        self,
        content: str = "",
        *,
        author_id: int,
        channel_id: int | None = None,
        attachments: list[JSON] | None = None,
    ) -> JSON:
        """A member posts a message (attachments from :meth:`add_attachment`)."""
        channel_id = channel_id or self.ids.text_channel
        message = self.world.create_message(
            channel_id,
            copy.deepcopy(self.world.users[author_id]),
            content=content,
            attachments=copy.deepcopy(attachments or []),
            mentions=self.world.mentions(content),
        )
        event = self.world.gateway_message(int(message["id"]))
        await self.gateway.dispatch("MESSAGE_CREATE", event)
        return event

    async def slash_command(
        self,
        name: str,
        options: list[JSON] | None = None,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        locale: str = "en-US",
    ) -> JSON:
        """A member runs ``/name``; returns the INTERACTION_CREATE body (its ``token`` keys
        :meth:`interaction`). Options come from the ``payloads`` option builders; resolved
        users, roles, channels and attachments are filled in from the world."""
        user_id = user_id or self.ids.alice
        channel_id = channel_id or self.ids.text_channel
        guild_id = self.world.guild_of_channel(channel_id)
        if guild_id is None:
            raise ValueError("slash_command needs a guild channel")
        world = self.world
        data: JSON = {"id": str(self._command_id(name, guild_id)), "name": name, "type": 1}
        if any(c["name"] == name for c in world.guild_commands.get(guild_id, [])):
            data["guild_id"] = str(guild_id)
        if options:
            data["options"] = copy.deepcopy(options)
            resolved = self._resolve(guild_id, options)
            if resolved:
                data["resolved"] = resolved
        interaction = self._interaction(guild_id, channel_id, user_id, locale,
                                        p.APPLICATION_COMMAND, data)
        world.interactions[interaction["token"]] = InteractionState(payload=interaction)
        await self.gateway.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    async def click(self, message_id: int, custom_id: str, *, user_id: int | None = None
                    ) -> JSON:
        """A member presses the button `custom_id` on a message the bot sent (in a channel,
        or ephemeral to them); returns the INTERACTION_CREATE body, like :meth:`slash_command`."""
        user_id = user_id or self.ids.alice
        world = self.world
        owner = next((st for st in world.interactions.values() if message_id in st.ephemeral),
                     None)
        if owner is not None:
            message = copy.deepcopy(owner.ephemeral[message_id])
            ephemeral = {message_id: owner.ephemeral[message_id]}  # edits reach the original
        elif message_id in world.messages:
            message, ephemeral = world.message_view(message_id), {}
        else:
            raise ValueError(f"no message {message_id}")
        channel_id = int(message["channel_id"])
        guild_id = world.guild_of_channel(channel_id)
        if guild_id is None:
            raise ValueError("click needs a guild channel")
        data: JSON = {"custom_id": custom_id, "component_type": p.COMPONENT_BUTTON}
        interaction = self._interaction(guild_id, channel_id, user_id, "en-US",
                                        p.MESSAGE_COMPONENT, data)
        interaction["message"] = message
        world.interactions[interaction["token"]] = InteractionState(payload=interaction,
                                                                    ephemeral=ephemeral)
        await self.gateway.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    def _interaction(self, guild_id: int, channel_id: int, user_id: int, locale: str,
                     kind: int, data: JSON) -> JSON:
        """An INTERACTION_CREATE body as Discord sends it for a member in a guild channel."""
        world = self.world
        member = world.member(guild_id, user_id)
        if member is None:
            raise ValueError(f"user {user_id} is not a member of guild {guild_id}")
        member["permissions"] = str(world.permissions(guild_id, user_id))
        channel = {
            **copy.deepcopy(world.channels[channel_id]),
            "permissions": member["permissions"],
        }
        return {
            "id": str(world.new_id()),
            "application_id": str(world.app_id),
            "type": kind,
            "data": data,
            "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
            "guild_id": str(guild_id),
            "channel": channel,
            "channel_id": str(channel_id),
            "member": member,
            "token": "itok." + secrets.token_urlsafe(48),
            "version": 1,
            "app_permissions": str(world.permissions(guild_id, world.bot_id)),
            "locale": locale,
            "guild_locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
            "context": 0,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }

    def _command_id(self, name: str, guild_id: int) -> int:
        registered = self.world.guild_commands.get(guild_id, []) + self.world.global_commands
        for command in registered:
            if command["name"] == name:
                return int(command["id"])
        # Discord can only invoke what the bot registered: catch a missing tree.sync().
        raise ValueError(f"/{name} is not registered; sync the command tree first")

    def _resolve(self, guild_id: int, options: list[JSON]) -> JSON:
        """``data.resolved`` for snowflake options, as Discord sends it alongside them."""
        world = self.world
        resolved: dict[str, dict[str, JSON]] = {}
        snowflake_kinds = (p.OPTION_USER, p.OPTION_CHANNEL, p.OPTION_ROLE, p.OPTION_ATTACHMENT)
        for opt in p.walk_options(options):
            if opt["type"] not in snowflake_kinds:
                continue
            value = int(opt["value"])
            key = str(value)
            if opt["type"] == p.OPTION_ATTACHMENT:
                attachment = copy.deepcopy(world.attachments[value])
                resolved.setdefault("attachments", {})[key] = attachment
            elif opt["type"] == p.OPTION_USER and value in world.users:
                resolved.setdefault("users", {})[key] = copy.deepcopy(world.users[value])
                member = world.member(guild_id, value)
                if member is not None:
                    member.pop("user")
                    member["permissions"] = str(world.permissions(guild_id, value))
                    resolved.setdefault("members", {})[key] = member
            elif opt["type"] == p.OPTION_CHANNEL and value in world.channels:
                channel = world.channels[value]
                fields = ("id", "name", "type", "parent_id", "guild_id")
                partial = {f: channel[f] for f in fields if f in channel}
                partial["permissions"] = str(p.ALL_PERMISSIONS)
                resolved.setdefault("channels", {})[key] = partial
            elif opt["type"] == p.OPTION_ROLE:
                for role in world.guilds[guild_id].roles:
                    if role["id"] == key:
                        resolved.setdefault("roles", {})[key] = copy.deepcopy(role)
        return resolved
