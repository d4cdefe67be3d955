"""REST API v10 and CDN routes.

Every request under /api/v10 is recorded, answered from :class:`World`, and echoed on the
gateway where Discord would (MESSAGE_CREATE for the bot's own posts, reaction events for its
own reactions), so bot code that must ignore its own events is exercised too.
Unknown routes answer Discord's 404 JSON so a missing emulation shows up in the call log.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from . import payloads as p
from .gateway import Gateway
from .payloads import JSON
from .recorder import CallRecorder, RecordedCall, RecordedFile
from .state import InteractionState, World

API_PREFIX = "/api/v10"
MAX_CONTENT = 2000
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # Discord's default upload limit per file
INTERACTION_DEADLINE_S = 3.0  # time Discord allows for the initial interaction response

# Discord error codes the emulator answers with.
UNKNOWN_CHANNEL = 10003
UNKNOWN_GUILD = 10004
UNKNOWN_MEMBER = 10007
UNKNOWN_MESSAGE = 10008
UNKNOWN_USER = 10013
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
ALREADY_ACKNOWLEDGED = 40060
EMPTY_MESSAGE = 50006
INVALID_FORM_BODY = 50035
UNKNOWN_EMOJI = 10014

# Interaction callback types (Discord's InteractionResponseType).
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7

Result = tuple[int, Any]
Handler = Callable[[RecordedCall, "re.Match[str]"], Awaitable[Result]]


def json_response(body: Any, status: int = 200) -> web.Response:
    """discord.py parses JSON only when Content-Type is exactly ``application/json``."""
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = p.error(code, message)


@dataclass
class Override:
    """A canned answer installed by a test, e.g. a 403 to exercise error handling."""

    method: str
    path: str
    status: int
    body: Any
    times: int | None


class RestApi:
    def __init__(
        self, world: World, gateway: Gateway, recorder: CallRecorder, *, token: str, ws_url: str
    ) -> None:
        self.world = world
        self.gateway = gateway
        self.recorder = recorder
        self.token = token
        self.ws_url = ws_url
        self.overrides: list[Override] = []
        self.interaction_deadline: float | None = INTERACTION_DEADLINE_S
        self.errors: list[Exception] = []  # emulator bugs hit while answering; tests assert empty
        self.routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []
        self._register()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self.handle)
        app.router.add_get("/cdn/{tail:.*}", self.cdn)
        app.router.add_get("/media/{tail:.*}", self.cdn)

    def route(self, method: str, pattern: str, handler: Handler, *, auth: bool = True) -> None:
        self.routes.append((method, re.compile(pattern), handler, auth))

    # ------------------------------------------------------------------ plumbing

    async def handle(self, request: web.Request) -> web.StreamResponse:
        call = RecordedCall(
            index=-1,
            method=request.method,
            path="/" + request.match_info["tail"],
            query=dict(request.query),
            headers={
                k: v
                for k, v in request.headers.items()
                if k.lower() in ("authorization", "x-audit-log-reason", "content-type")
            },
        )
        try:
            await self._read_body(request, call)
            status, body = await self._answer(call)
        except Exception as exc:  # an emulator bug: fail fast (a 5xx would make discord.py retry)
            self.errors.append(exc)
            status, body = 400, p.error(0, f"fakediscord internal error: {exc!r}")
        call.status, call.response = status, body
        await self.recorder.add(call)
        if body is None:
            return web.Response(status=status)
        return json_response(body, status)

    async def _read_body(self, request: web.Request, call: RecordedCall) -> None:
        if request.content_type == "application/json":
            call.json = await request.json()
        elif request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):  # nested multipart: Discord has none
                    continue
                data = await part.read()
                if part.name == "payload_json":
                    call.payload_json = json.loads(data)
                else:
                    call.files.append(
                        RecordedFile(
                            field=part.name or "",
                            filename=part.filename or "",
                            content_type=part.headers.get(
                                "Content-Type", "application/octet-stream"
                            ),
                            data=bytes(data),
                        )
                    )

    async def _answer(self, call: RecordedCall) -> Result:
        for override in self.overrides:
            if call.match(override.method, override.path):
                if override.times is not None:
                    override.times -= 1
                    if override.times <= 0:
                        self.overrides.remove(override)
                return override.status, copy.deepcopy(override.body)
        for method, pattern, handler, auth in self.routes:
            match = pattern.fullmatch(call.path)
            if match is None or method != call.method:
                continue
            if auth and call.headers.get("Authorization") != f"Bot {self.token}":
                return 401, p.error(0, "401: Unauthorized")
            try:
                return await handler(call, match)
            except ApiError as exc:
                return exc.status, exc.body
        return 404, p.error(0, "404: Not Found")

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        # /cdn/attachments/{channel}/{attachment}/{filename}; the signed query is ignored.
        match = re.fullmatch(r"attachments/\d+/(\d+)/(.+)", request.match_info["tail"])
        stored = self.world.cdn.get(int(match.group(1))) if match else None
        if stored is None or match is None or stored.filename != match.group(2):
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})

    async def echo(self, event: str, data: JSON) -> None:
        """Tell connected clients what Discord would, without requiring one to be connected."""
        await self.gateway.dispatch(event, data, require_client=False)

    # ------------------------------------------------------------------ lookups

    def _channel(self, match: re.Match[str]) -> tuple[int, JSON]:
        channel_id = int(match.group("channel"))
        channel = self.world.channels.get(channel_id)
        if channel is None:
            raise ApiError(404, UNKNOWN_CHANNEL, "Unknown Channel")
        return channel_id, channel

    def _message(self, match: re.Match[str]) -> tuple[int, int]:
        channel_id, _ = self._channel(match)
        message_id = int(match.group("message"))
        stored = self.world.messages.get(message_id)
        if stored is None or stored["channel_id"] != str(channel_id):
            raise ApiError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return channel_id, message_id

    def _guild(self, match: re.Match[str]) -> int:
        guild_id = int(match.group("guild"))
        if guild_id not in self.world.guilds:
            raise ApiError(404, UNKNOWN_GUILD, "Unknown Guild")
        return guild_id

    # ------------------------------------------------------------------ message bodies

    def _attachments(self, channel_id: int, body: JSON, call: RecordedCall) -> list[JSON]:
        """Attachment objects for uploaded ``files[n]`` parts, described by body.attachments."""
        described = {str(a.get("id")): a for a in body.get("attachments", []) or []}
        uploaded: list[JSON] = []
        for f in call.files:
            if len(f.data) > MAX_UPLOAD_BYTES:
                raise ApiError(413, 40005, "Request entity too large")
            index = re.fullmatch(r"files\[(\d+)\]", f.field)
            meta = described.get(index.group(1) if index else "", {})
            uploaded.append(
                self.world.store_file(
                    channel_id,
                    meta.get("filename") or f.filename,
                    f.data,
                    content_type=None
                    if f.content_type == "application/octet-stream"
                    else f.content_type,
                    description=meta.get("description"),
                )
            )
        return uploaded

    def _validate(self, body: JSON, attachments: list[JSON]) -> None:
        content = body.get("content") or ""
        if len(content) > MAX_CONTENT:
            raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body")
        if not (
            content
            or body.get("embeds")
            or attachments
            or body.get("components")
            or body.get("sticker_ids")
            or body.get("poll")
        ):
            raise ApiError(400, EMPTY_MESSAGE, "Cannot send an empty message")

    def _new_message(self, channel_id: int, body: JSON, call: RecordedCall, **extra: Any) -> JSON:
        attachments = self._attachments(channel_id, body, call)
        self._validate(body, attachments)
        content = body.get("content") or ""
        message = self.world.create_message(
            channel_id,
            copy.deepcopy(self.world.bot_user),
            content=content,
            attachments=attachments,
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            flags=int(body.get("flags") or 0) | int(extra.pop("flags", 0)),
            tts=bool(body.get("tts")),
            mentions=self.world.mentions(content),
            nonce=body.get("nonce"),
            **extra,
        )
        reference = body.get("message_reference")
        if reference and int(reference["message_id"]) in self.world.messages:
            referenced = int(reference["message_id"])
            message["type"] = 19  # REPLY
            guild_id = self.world.guild_of_channel(channel_id)
            message["message_reference"] = {
                "type": 0,
                "message_id": str(referenced),
                "channel_id": str(channel_id),
                "guild_id": str(guild_id) if guild_id else None,
            }
            message["referenced_message"] = self.world.message_view(referenced)
        return message

    def _apply_edit(self, message: JSON, body: JSON, call: RecordedCall) -> None:
        channel_id = int(message["channel_id"])
        for key in ("content", "embeds", "components"):
            if key in body:
                message[key] = (
                    body[key] if body[key] is not None else ([] if key != "content" else "")
                )
        if "flags" in body and body["flags"] is not None:
            message["flags"] = int(body["flags"])
        if "attachments" in body or call.files:
            keep = {str(a.get("id")) for a in body.get("attachments") or []}
            kept = [a for a in message["attachments"] if a["id"] in keep]
            message["attachments"] = kept + self._attachments(channel_id, body, call)
        if "content" in body:
            message["mentions"] = self.world.mentions(message["content"])
        message["edited_timestamp"] = p.iso()

    # ------------------------------------------------------------------ routes

    def _register(self) -> None:
        r = self.route
        ch = r"/channels/(?P<channel>\d+)"
        msg = ch + r"/messages/(?P<message>\d+)"
        hook = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        r("GET", r"/gateway", self.get_gateway, auth=False)
        r("GET", r"/gateway/bot", self.get_gateway_bot)
        r("GET", r"/users/@me", self.get_me)
        r("GET", r"/users/(?P<user>\d+)", self.get_user)
        r("POST", r"/users/@me/channels", self.create_dm)
        r("GET", r"/(?:oauth2/)?applications/@me", self.get_application)
        r("GET", ch, self.get_channel)
        r("GET", ch + r"/messages", self.list_messages)
        r("POST", ch + r"/messages", self.create_message)
        r("POST", ch + r"/typing", self.typing)
        r("GET", msg, self.get_message)
        r("PATCH", msg, self.edit_message)
        r("DELETE", msg, self.delete_message)
        r("PUT", msg + r"/reactions/(?P<emoji>[^/]+)/@me", self.add_own_reaction)
        r("DELETE", msg + r"/reactions/(?P<emoji>[^/]+)/(?P<user>@me|\d+)", self.delete_reaction)
        r("GET", msg + r"/reactions/(?P<emoji>[^/]+)", self.get_reactions)
        r("DELETE", msg + r"/reactions/(?P<emoji>[^/]+)", self.clear_emoji)
        r("DELETE", msg + r"/reactions", self.clear_reactions)
        pin = ch + r"/messages/pins/(?P<message>\d+)"
        r("PUT", pin, self.pin_message)
        r("DELETE", pin, self.unpin_message)
        r("POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", self.callback, auth=False)
        r("POST", hook, self.execute_webhook, auth=False)
        r("GET", hook + r"/messages/(?P<message>@original|\d+)", self.get_webhook_msg, auth=False)
        r(
            "PATCH",
            hook + r"/messages/(?P<message>@original|\d+)",
            self.edit_webhook_msg,
            auth=False,
        )
        r(
            "DELETE",
            hook + r"/messages/(?P<message>@original|\d+)",
            self.delete_webhook_msg,
            auth=False,
        )
        commands = r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands"
        r("GET", commands, self.get_commands)
        r("PUT", commands, self.put_commands)
        r("GET", r"/guilds/(?P<guild>\d+)", self.get_guild)
        r("GET", r"/guilds/(?P<guild>\d+)/channels", self.get_guild_channels)
        r("GET", r"/guilds/(?P<guild>\d+)/roles", self.get_roles)
        r("GET", r"/guilds/(?P<guild>\d+)/members", self.list_members)
        r("GET", r"/guilds/(?P<guild>\d+)/members/(?P<user>\d+)", self.get_member)

    async def get_gateway(self, call: RecordedCall, m: re.Match[str]) -> Result:
        return 200, {"url": self.ws_url}

    async def get_gateway_bot(self, call: RecordedCall, m: re.Match[str]) -> Result:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return 200, {"url": self.ws_url, "shards": 1, "session_start_limit": limit}

    async def get_me(self, call: RecordedCall, m: re.Match[str]) -> Result:
        return 200, p.self_user(self.world.bot_user)

    async def get_user(self, call: RecordedCall, m: re.Match[str]) -> Result:
        found = self.world.users.get(int(m.group("user")))
        if found is None:
            raise ApiError(404, UNKNOWN_USER, "Unknown User")
        return 200, found

    async def create_dm(self, call: RecordedCall, m: re.Match[str]) -> Result:
        recipient = int((call.json or {}).get("recipient_id", 0))
        if recipient not in self.world.users:
            raise ApiError(400, INVALID_FORM_BODY, "Invalid Form Body")
        return 200, self.world.open_dm(recipient)

    async def get_application(self, call: RecordedCall, m: re.Match[str]) -> Result:
        world = self.world
        owner = world.users[world.owner_id]
        return 200, p.application(world.app_id, world.bot_user, owner, name="crowdtune")

    async def get_channel(self, call: RecordedCall, m: re.Match[str]) -> Result:
        return 200, self._channel(m)[1]

    async def list_messages(self, call: RecordedCall, m: re.Match[str]) -> Result:
        channel_id, _ = self._channel(m)
        found = self.world.channel_messages(channel_id)
        if "before" in call.query:
            found = [x for x in found if int(x["id"]) < int(call.query["before"])]
        if "after" in call.query:
            found = [x for x in found if int(x["id"]) > int(call.query["after"])]
        limit = int(call.query.get("limit", 50))
        return 200, [self.world.message_view(int(x["id"])) for x in found[:limit]]

    async def create_message(self, call: RecordedCall, m: re.Match[str]) -> Result:
        channel_id, _ = self._channel(m)
        body = call.body or {}
        if body.get("enforce_nonce") and body.get("nonce") is not None:
            # Discord dedupes a retried send carrying the same nonce.
            for existing in self.world.channel_messages(channel_id):
                if existing.get("nonce") == body["nonce"]:
                    return 200, self.world.message_view(int(existing["id"]))
        message = self._new_message(channel_id, body, call)
        await self.echo("MESSAGE_CREATE", self.world.gateway_message(int(message["id"])))
        return 200, self.world.message_view(int(message["id"]))

    async def typing(self, call: RecordedCall, m: re.Match[str]) -> Result:
        self._channel(m)
        return 204, None

    async def get_message(self, call: RecordedCall, m: re.Match[str]) -> Result:
        _, message_id = self._message(m)
        return 200, self.world.message_view(message_id)

    async def edit_message(self, call: RecordedCall, m: re.Match[str]) -> Result:
        _, message_id = self._message(m)
        self._apply_edit(self.world.messages[message_id], call.body or {}, call)
        await self.echo("MESSAGE_UPDATE", self.world.gateway_message(message_id))
        return 200, self.world.message_view(message_id)

    async def delete_message(self, call: RecordedCall, m: re.Match[str]) -> Result:
        channel_id, message_id = self._message(m)
        del self.world.messages[message_id]
        self.world.reactions.pop(message_id, None)
        event: JSON = {"id": str(message_id), "channel_id": str(channel_id)}
        guild_id = self.world.guild_of_channel(channel_id)
        if guild_id is not None:
            event["guild_id"] = str(guild_id)
        await self.echo("MESSAGE_DELETE", event)
        return 204, None

    def _reaction_event(self, channel_id: int, message_id: int, emoji: JSON, user_id: int) -> JSON:
        event: JSON = {
            "user_id": str(user_id),
            "channel_id": str(channel_id),
            "message_id": str(message_id),
            "emoji": emoji,
            "burst": False,
            "type": 0,
        }
        guild_id = self.world.guild_of_channel(channel_id)
        if guild_id is not None:
            event["guild_id"] = str(guild_id)
        return event

    async def add_own_reaction(self, call: RecordedCall, m: re.Match[str]) -> Result:
        channel_id, message_id = self._message(m)
        emoji = p.parse_emoji(m.group("emoji"))
        if emoji["id"] is None and re.fullmatch(r"[\w:]+", emoji["name"]):
            raise ApiError(400, UNKNOWN_EMOJI, "Unknown Emoji")  # e.g. ":star:" instead of "⭐"
        if self.world.add_reaction(message_id, emoji, self.world.bot_id):
            event = self._reaction_event(channel_id, message_id, emoji, self.world.bot_id)
            event["message_author_id"] = self.world.messages[message_id]["author"]["id"]
            event["burst_colors"] = []
            if "guild_id" in event:
                event["member"] = self.world.member(int(event["guild_id"]), self.world.bot_id)
            await self.echo("MESSAGE_REACTION_ADD", event)
        return 204, None

    async def delete_reaction(self, call: RecordedCall, m: re.Match[str]) -> Result:
        channel_id, message_id = self._message(m)
        emoji = p.parse_emoji(m.group("emoji"))
        raw_user = m.group("user")
        user_id = self.world.bot_id if raw_user == "@me" else int(raw_user)
        if self.world.remove_reaction(message_id, emoji, user_id):
            event = self._reaction_event(channel_id, message_id, emoji, user_id)
            await self.echo("MESSAGE_REACTION_REMOVE", event)
        return 204, None

    async def get_reactions(self, call: RecordedCall, m: re.Match[str]) -> Result:
        _, message_id = self._message(m)
        users = self.world.reaction_users(message_id, p.emoji_key(p.parse_emoji(m.group("emoji"))))
        if "after" in call.query:
            users = [u for u in users if int(u["id"]) > int(call.query["after"])]
        return 200, users[: int(call.query.get("limit", 25))]

    async def clear_emoji(self, call: RecordedCall, m: re.Match[str]) -> Result:
        channel_id, message_id = self._message(m)
        emoji = p.parse_emoji(m.group("emoji"))
        self.world.reactions[message_id].pop(p.emoji_key(emoji), None)
        event = self._reaction_event(channel_id, message_id, emoji, 0)
        for key in ("user_id", "burst", "type"):
            event.pop(key)
        await self.echo("MESSAGE_REACTION_REMOVE_EMOJI", event)
        return 204, None

    async def clear_reactions(self, call: RecordedCall, m: re.Match[str]) -> Result:
        channel_id, message_id = self._message(m)
        self.world.reactions[message_id] = {}
        event: JSON = {"channel_id": str(channel_id), "message_id": str(message_id)}
        guild_id = self.world.guild_of_channel(channel_id)
        if guild_id is not None:
            event["guild_id"] = str(guild_id)
        await self.echo("MESSAGE_REACTION_REMOVE_ALL", event)
        return 204, None

    async def _set_pinned(self, m: re.Match[str], pinned: bool) -> Result:
        channel_id, message_id = self._message(m)
        self.world.messages[message_id]["pinned"] = pinned
        pins = [x for x in self.world.channel_messages(channel_id) if x.get("pinned")]
        event: JSON = {"channel_id": str(channel_id),
                       "last_pin_timestamp": p.iso() if pins else None}
        guild_id = self.world.guild_of_channel(channel_id)
        if guild_id is not None:
            event["guild_id"] = str(guild_id)
        await self.echo("CHANNEL_PINS_UPDATE", event)
        return 204, None

    async def pin_message(self, call: RecordedCall, m: re.Match[str]) -> Result:
        return await self._set_pinned(m, True)

    async def unpin_message(self, call: RecordedCall, m: re.Match[str]) -> Result:
        return await self._set_pinned(m, False)

    # ------------------------------------------------------------------ interactions

    def _interaction(
        self, token: str, *, interaction_id: int | None = None, app_id: int | None = None
    ) -> InteractionState:
        state = self.world.interactions.get(token)
        if state is None or (
            interaction_id is not None and state.payload["id"] != str(interaction_id)
        ):
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        if app_id is not None and app_id != self.world.app_id:
            raise ApiError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        return state

    def _interaction_message(
        self, state: InteractionState, body: JSON, call: RecordedCall, *, kind: int, flags: int = 0
    ) -> JSON:
        """A message posted through an interaction: authored by the bot, sent via its webhook."""
        payload = state.payload
        channel_id = int(payload["channel_id"])
        user_payload = (payload.get("member") or {}).get("user") or payload.get("user")
        extra = {
            "webhook_id": str(self.world.app_id),
            "application_id": str(self.world.app_id),
            "interaction_metadata": {
                "id": payload["id"],
                "type": payload["type"],
                "name": payload.get("data", {}).get("name"),
                "command_type": payload.get("data", {}).get("type", 1),
                "user": user_payload,
                "authorizing_integration_owners": payload["authorizing_integration_owners"],
            },
        }
        ephemeral = bool(flags & p.FLAG_EPHEMERAL)
        if flags & p.FLAG_LOADING:  # a "thinking" placeholder: nothing to validate yet
            message = self.world.create_message(
                channel_id,
                copy.deepcopy(self.world.bot_user),
                kind=kind,
                flags=flags,
                visible=not ephemeral,
            )
        else:
            message = self._new_message(
                channel_id, body, call, kind=kind, flags=flags, visible=not ephemeral
            )
        message.update(extra)
        if ephemeral:
            # Ephemeral messages exist only for the interaction, never in the channel.
            state.ephemeral[int(message["id"])] = message
        return message

    def _lookup(self, state: InteractionState, message_id: int) -> JSON:
        if message_id in state.ephemeral:
            return state.ephemeral[message_id]
        if message_id not in self.world.messages:
            raise ApiError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return self.world.messages[message_id]

    def _view(self, state: InteractionState, message_id: int) -> JSON:
        if message_id in state.ephemeral:
            return copy.deepcopy(state.ephemeral[message_id])
        return self.world.message_view(message_id)

    async def _announce(self, state: InteractionState, message_id: int, event: str) -> None:
        if message_id not in state.ephemeral:
            await self.echo(event, self.world.gateway_message(message_id))

    async def callback(self, call: RecordedCall, m: re.Match[str]) -> Result:
        state = self._interaction(m.group("token"), interaction_id=int(m.group("id")))
        deadline = self.interaction_deadline
        if deadline is not None and time.monotonic() - state.created > deadline:
            # Discord forgets an interaction not answered (or deferred) within 3 seconds.
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        if state.responded:
            raise ApiError(400, ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged.")
        body = call.body or {}
        kind = int(body["type"])
        data = body.get("data") or {}
        state.responded, state.response_type = True, kind
        resource: JSON = {"type": kind}
        info: JSON = {"id": state.payload["id"], "type": state.payload["type"]}
        if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            flags = int(data.get("flags") or 0) & p.FLAG_EPHEMERAL
            if kind == DEFERRED_CHANNEL_MESSAGE:
                flags |= p.FLAG_LOADING
            message = self._interaction_message(
                state, data, call, kind=p.MESSAGE_CHAT_INPUT_COMMAND, flags=flags
            )
            message_id = int(message["id"])
            state.original_id = message_id
            state.original_loading = kind == DEFERRED_CHANNEL_MESSAGE
            await self._announce(state, message_id, "MESSAGE_CREATE")
            resource["message"] = self._view(state, message_id)
            info.update(
                response_message_id=str(message_id),
                response_message_loading=state.original_loading,
                response_message_ephemeral=bool(flags & p.FLAG_EPHEMERAL),
            )
        elif kind == UPDATE_MESSAGE and "message" in state.payload:
            message_id = int(state.payload["message"]["id"])
            self._apply_edit(self._lookup(state, message_id), data, call)
            await self._announce(state, message_id, "MESSAGE_UPDATE")
            resource["message"] = self._view(state, message_id)
        return 200, {"interaction": info, "resource": resource}

    def _webhook_message_id(self, state: InteractionState, raw: str) -> int:
        if raw != "@original":
            return int(raw)
        if state.original_id is None:
            raise ApiError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return state.original_id

    async def execute_webhook(self, call: RecordedCall, m: re.Match[str]) -> Result:
        state = self._interaction(m.group("token"), app_id=int(m.group("app")))
        if not state.responded:
            raise ApiError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        body = call.body or {}
        if state.original_loading and state.original_id is not None:
            # After a "thinking" defer Discord turns the first follow-up into the original.
            message_id = state.original_id
            message = self._lookup(state, message_id)
            self._apply_edit(message, body, call)
            message["flags"] &= ~p.FLAG_LOADING
            state.original_loading = False
            await self._announce(state, message_id, "MESSAGE_UPDATE")
        else:
            flags = int(body.get("flags") or 0) & p.FLAG_EPHEMERAL
            message = self._interaction_message(
                state, body, call, kind=p.MESSAGE_DEFAULT, flags=flags
            )
            message_id = int(message["id"])
            state.followup_ids.append(message_id)
            await self._announce(state, message_id, "MESSAGE_CREATE")
        if call.query.get("wait", "").lower() not in ("true", "1"):
            return 204, None
        return 200, self._view(state, message_id)

    async def get_webhook_msg(self, call: RecordedCall, m: re.Match[str]) -> Result:
        state = self._interaction(m.group("token"), app_id=int(m.group("app")))
        message_id = self._webhook_message_id(state, m.group("message"))
        self._lookup(state, message_id)
        return 200, self._view(state, message_id)

    async def edit_webhook_msg(self, call: RecordedCall, m: re.Match[str]) -> Result:
        state = self._interaction(m.group("token"), app_id=int(m.group("app")))
        message_id = self._webhook_message_id(state, m.group("message"))
        message = self._lookup(state, message_id)
        self._apply_edit(message, call.body or {}, call)
        if message_id == state.original_id:
            message["flags"] &= ~p.FLAG_LOADING
            state.original_loading = False
        await self._announce(state, message_id, "MESSAGE_UPDATE")
        return 200, self._view(state, message_id)

    async def delete_webhook_msg(self, call: RecordedCall, m: re.Match[str]) -> Result:
        state = self._interaction(m.group("token"), app_id=int(m.group("app")))
        message_id = self._webhook_message_id(state, m.group("message"))
        self._lookup(state, message_id)
        if message_id == state.original_id:
            # A deleted "thinking" placeholder is not replaced by the next follow-up.
            state.original_loading = False
        if state.ephemeral.pop(message_id, None) is None:
            channel_id = self.world.messages.pop(message_id)["channel_id"]
            self.world.reactions.pop(message_id, None)
            event: JSON = {"id": str(message_id), "channel_id": channel_id}
            guild_id = self.world.guild_of_channel(int(channel_id))
            if guild_id is not None:
                event["guild_id"] = str(guild_id)
            await self.echo("MESSAGE_DELETE", event)
        return 204, None

    # ------------------------------------------------------------------ commands & guilds

    def _commands(self, m: re.Match[str]) -> tuple[int | None, list[JSON]]:
        if int(m.group("app")) != self.world.app_id:
            raise ApiError(403, 50001, "Missing Access")
        if m.group("guild") is None:
            return None, self.world.global_commands
        guild_id = self._guild(m)
        return guild_id, self.world.guild_commands.setdefault(guild_id, [])

    async def get_commands(self, call: RecordedCall, m: re.Match[str]) -> Result:
        return 200, self._commands(m)[1]

    async def put_commands(self, call: RecordedCall, m: re.Match[str]) -> Result:
        guild_id, current = self._commands(m)
        # Discord keeps a command's id when an overwrite re-registers the same name.
        known = {(c["name"], c["type"]): int(c["id"]) for c in current}
        fresh = []
        for command in call.json or []:
            key = (command["name"], command.get("type", 1))
            fresh.append(
                p.app_command(
                    command,
                    command_id=known.get(key) or self.world.new_id(),
                    app_id=self.world.app_id,
                    guild_id=guild_id,
                )
            )
        current[:] = fresh
        return 200, fresh

    async def get_guild(self, call: RecordedCall, m: re.Match[str]) -> Result:
        guild_id = self._guild(m)
        payload = self.world.guild_rest(guild_id)
        if call.query.get("with_counts", "").lower() in ("true", "1"):
            payload["approximate_member_count"] = len(self.world.guilds[guild_id].members)
            payload["approximate_presence_count"] = 0
        return 200, payload

    async def get_guild_channels(self, call: RecordedCall, m: re.Match[str]) -> Result:
        guild = self.world.guilds[self._guild(m)]
        return 200, [self.world.channels[c] for c in guild.channel_ids]

    async def get_roles(self, call: RecordedCall, m: re.Match[str]) -> Result:
        return 200, self.world.guilds[self._guild(m)].roles

    async def list_members(self, call: RecordedCall, m: re.Match[str]) -> Result:
        members = self.world.guilds[self._guild(m)].members
        after = int(call.query.get("after", 0))
        limit = int(call.query.get("limit", 1))
        return 200, [members[u] for u in sorted(members) if u > after][:limit]

    async def get_member(self, call: RecordedCall, m: re.Match[str]) -> Result:
        found = self.world.member(self._guild(m), int(m.group("user")))
        if found is None:
            raise ApiError(404, UNKNOWN_MEMBER, "Unknown Member")
        return 200, found
