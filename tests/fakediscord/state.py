"""The emulator's world: users, one or more guilds, channels, messages, reactions, CDN files.

REST handlers and gateway injections both read and mutate this one model, so what the bot
posts can later be fetched, reacted to and reconciled exactly as on Discord.
"""

from __future__ import annotations

import copy
import mimetypes
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from . import payloads as p
from .payloads import JSON

# Privileged intents that change what GUILD_CREATE carries (discord.Intents bit values).
INTENT_GUILD_PRESENCES = 1 << 8
LARGE_THRESHOLD = 250


@dataclass
class CdnFile:
    """Bytes served under /cdn/attachments/{channel}/{attachment}/{filename}."""

    filename: str
    data: bytes
    content_type: str


@dataclass
class GuildState:
    base: JSON
    roles: list[JSON]
    channel_ids: list[int]
    members: dict[int, JSON] = field(default_factory=dict)
    voice_states: dict[int, JSON] = field(default_factory=dict)


@dataclass
class InteractionState:
    """One injected interaction and what the bot has answered so far."""

    payload: JSON
    created: float = field(default_factory=time.monotonic)
    responded: bool = False
    response_type: int | None = None
    original_id: int | None = None
    original_loading: bool = False
    ephemeral: dict[int, JSON] = field(default_factory=dict)  # never visible in the channel
    followup_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class DefaultIds:
    """Ids of the default world, so tests read ``emu.ids.alice`` rather than magic numbers."""

    app: int
    bot: int
    owner: int
    alice: int
    bob: int
    carol: int
    guild: int
    everyone_role: int
    moderator_role: int
    bot_role: int
    category: int
    text_channel: int
    voice_channel: int
    other_voice_channel: int


class World:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.snowflakes = p.Snowflakes()
        self.users: dict[int, JSON] = {}
        self.guilds: dict[int, GuildState] = {}
        self.channels: dict[int, JSON] = {}
        self.messages: dict[int, JSON] = {}
        # message id -> emoji key -> (emoji object, user ids in reaction order)
        self.reactions: dict[int, dict[str, tuple[JSON, list[int]]]] = {}
        self.cdn: dict[int, CdnFile] = {}
        self.attachments: dict[int, JSON] = {}  # attachment id -> object, to resolve options
        self.interactions: dict[str, InteractionState] = {}
        self.global_commands: list[JSON] = []
        self.guild_commands: dict[int, list[JSON]] = {}
        self.ids = self._build_default()

    # ------------------------------------------------------------------ building the world

    def new_id(self) -> int:
        return self.snowflakes.next()

    def add_user(self, username: str, *, bot: bool = False) -> int:
        user_id = self.new_id()
        self.users[user_id] = p.user(user_id, username, bot=bot)
        return user_id

    def add_guild(self, name: str, *, owner_id: int) -> int:
        guild_id = self.new_id()
        everyone = p.role(guild_id, "@everyone", permissions=p.EVERYONE_PERMISSIONS, position=0)
        base = p.guild_base(guild_id, name, owner_id=owner_id, system_channel_id=None)
        self.guilds[guild_id] = GuildState(base=base, roles=[everyone], channel_ids=[])
        self.add_member(guild_id, owner_id)
        return guild_id

    def add_role(
        self, guild_id: int, name: str, *, permissions: int, bot_id: int | None = None
    ) -> int:
        guild = self.guilds[guild_id]
        role_id = self.new_id()
        guild.roles.append(
            p.role(
                role_id,
                name,
                permissions=permissions,
                position=len(guild.roles),
                managed=bot_id is not None,
                bot_id=bot_id,
            )
        )
        return role_id

    def add_member(self, guild_id: int, user_id: int, *, roles: tuple[int, ...] = ()) -> JSON:
        payload = p.member(self.users[user_id], roles=list(roles), joined_at=p.iso())
        self.guilds[guild_id].members[user_id] = payload
        return payload

    def _add_channel(self, guild_id: int, payload: JSON) -> int:
        channel_id = int(payload["id"])
        self.channels[channel_id] = payload
        self.guilds[guild_id].channel_ids.append(channel_id)
        return channel_id

    def add_category(self, guild_id: int, name: str) -> int:
        position = len(self.guilds[guild_id].channel_ids)
        payload = p.category_channel(self.new_id(), guild_id, name, position=position)
        return self._add_channel(guild_id, payload)

    def add_text_channel(self, guild_id: int, name: str, *, parent_id: int | None = None) -> int:
        position = len(self.guilds[guild_id].channel_ids)
        payload = p.text_channel(
            self.new_id(), guild_id, name, position=position, parent_id=parent_id
        )
        return self._add_channel(guild_id, payload)

    def add_voice_channel(self, guild_id: int, name: str, *, parent_id: int | None = None) -> int:
        position = len(self.guilds[guild_id].channel_ids)
        payload = p.voice_channel(
            self.new_id(), guild_id, name, position=position, parent_id=parent_id
        )
        return self._add_channel(guild_id, payload)

    def open_dm(self, user_id: int) -> JSON:
        for channel in self.channels.values():
            if channel["type"] == p.DM_CHANNEL and channel["recipients"][0]["id"] == str(user_id):
                return channel
        channel = p.dm_channel(self.new_id(), self.users[user_id])
        self.channels[int(channel["id"])] = channel
        return channel

    def _build_default(self) -> DefaultIds:
        """A small community: owner, three members, the bot, a text and two voice channels."""
        bot = self.add_user("crowdtune", bot=True)
        owner = self.add_user("owner")
        alice, bob, carol = (self.add_user(name) for name in ("alice", "bob", "carol"))
        self.app_id = bot  # Discord gives a new application's bot the application's id.
        self.bot_id = bot
        self.owner_id = owner
        guild = self.add_guild("crowdtune test", owner_id=owner)
        moderator = self.add_role(guild, "Moderator", permissions=p.EVERYONE_PERMISSIONS | (1 << 5))
        bot_role = self.add_role(guild, "crowdtune", permissions=p.ALL_PERMISSIONS, bot_id=bot)
        self.add_member(guild, bot, roles=(bot_role,))
        self.add_member(guild, alice, roles=(moderator,))
        self.add_member(guild, bob)
        self.add_member(guild, carol)
        category = self.add_category(guild, "crowdtune")
        text = self.add_text_channel(guild, "general", parent_id=category)
        voice = self.add_voice_channel(guild, "listening-room", parent_id=category)
        other_voice = self.add_voice_channel(guild, "lounge", parent_id=category)
        self.guilds[guild].base["system_channel_id"] = str(text)
        return DefaultIds(
            app=bot,
            bot=bot,
            owner=owner,
            alice=alice,
            bob=bob,
            carol=carol,
            guild=guild,
            everyone_role=guild,
            moderator_role=moderator,
            bot_role=bot_role,
            category=category,
            text_channel=text,
            voice_channel=voice,
            other_voice_channel=other_voice,
        )

    # ------------------------------------------------------------------ views

    @property
    def bot_user(self) -> JSON:
        return self.users[self.bot_id]

    def guild_of_channel(self, channel_id: int) -> int | None:
        guild_id = self.channels.get(channel_id, {}).get("guild_id")
        return int(guild_id) if guild_id else None

    def member(self, guild_id: int, user_id: int) -> JSON | None:
        found = self.guilds[guild_id].members.get(user_id)
        return copy.deepcopy(found) if found else None

    def permissions(self, guild_id: int, user_id: int) -> int:
        """Guild-level permissions (no channel overwrites: the emulator has none)."""
        guild = self.guilds[guild_id]
        if guild.base["owner_id"] == str(user_id):
            return p.ALL_PERMISSIONS
        member_roles = set(guild.members[user_id]["roles"]) | {str(guild_id)}
        value = 0
        for role in guild.roles:
            if role["id"] in member_roles:
                value |= int(role["permissions"])
        return p.ALL_PERMISSIONS if value & (1 << 3) else value

    def guild_rest(self, guild_id: int) -> JSON:
        guild = self.guilds[guild_id]
        return {**copy.deepcopy(guild.base), "roles": copy.deepcopy(guild.roles)}

    def guild_create(self, guild_id: int, *, intents: int) -> JSON:
        """GUILD_CREATE as the gateway sends it to a client with these intents.

        Like Discord, only a client with the presences intent in a small guild gets every
        member; others get themselves plus members in voice and must chunk (op 8).
        """
        guild = self.guilds[guild_id]
        everyone = bool(intents & INTENT_GUILD_PRESENCES) and len(guild.members) < LARGE_THRESHOLD
        wanted = {self.bot_id, *guild.voice_states}
        members = [
            copy.deepcopy(m) for uid, m in guild.members.items() if everyone or uid in wanted
        ]
        voice_states = []
        for state in guild.voice_states.values():
            state = copy.deepcopy(state)
            state.pop("guild_id", None)
            voice_states.append(state)
        bot_member = guild.members[self.bot_id]
        return {
            **self.guild_rest(guild_id),
            "joined_at": bot_member["joined_at"],
            "large": len(guild.members) >= LARGE_THRESHOLD,
            "unavailable": False,
            "member_count": len(guild.members),
            "members": members,
            "voice_states": voice_states,
            "channels": [copy.deepcopy(self.channels[c]) for c in guild.channel_ids],
            "threads": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "embedded_activities": [],
            "activity_instances": [],
            "application_command_counts": {},
            "lazy": True,
        }

    # ------------------------------------------------------------------ messages & reactions

    def create_message(
        self, channel_id: int, author: JSON, *, visible: bool = True, **fields: Any
    ) -> JSON:
        """Build a message; ``visible=False`` (ephemeral) keeps it out of the channel."""
        message_id = self.new_id()
        payload = p.message(message_id, channel_id, author, **fields)
        if not visible:
            return payload
        self.messages[message_id] = payload
        self.reactions[message_id] = {}
        channel = self.channels.get(channel_id)
        if channel is not None and "last_message_id" in channel:
            channel["last_message_id"] = str(message_id)
        return payload

    def mentions(self, content: str) -> list[JSON]:
        """Users mentioned as ``<@id>`` in content, as Discord fills ``message.mentions``."""
        ids = {int(m) for m in re.findall(r"<@!?(\d+)>", content)}
        return [copy.deepcopy(self.users[i]) for i in sorted(ids) if i in self.users]

    def channel_messages(self, channel_id: int) -> list[JSON]:
        """Messages in a channel, newest first (the order GET /messages returns)."""
        found = [m for m in self.messages.values() if m["channel_id"] == str(channel_id)]
        return sorted(found, key=lambda m: int(m["id"]), reverse=True)

    def message_view(self, message_id: int) -> JSON:
        """A stored message with its current reactions, ``me`` from the bot's point of view."""
        payload = copy.deepcopy(self.messages[message_id])
        reactions = [
            p.reaction(emoji, count=len(users), me=self.bot_id in users)
            for emoji, users in self.reactions.get(message_id, {}).values()
            if users
        ]
        if reactions:
            payload["reactions"] = reactions
        return payload

    def gateway_message(self, message_id: int) -> JSON:
        """MESSAGE_CREATE/UPDATE body: the REST view plus guild_id and the author's member."""
        payload = self.message_view(message_id)
        guild_id = self.guild_of_channel(int(payload["channel_id"]))
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
            author_member = self.member(guild_id, int(payload["author"]["id"]))
            if author_member is not None and "webhook_id" not in payload:
                author_member.pop("user")
                payload["member"] = author_member
        return payload

    def add_reaction(self, message_id: int, emoji: JSON, user_id: int) -> bool:
        """Record a reaction; False when the user already reacted with it (Discord's no-op)."""
        key = p.emoji_key(emoji)
        _, users = self.reactions[message_id].setdefault(key, (emoji, []))
        if user_id in users:
            return False
        users.append(user_id)
        return True

    def remove_reaction(self, message_id: int, emoji: JSON, user_id: int) -> bool:
        entry = self.reactions[message_id].get(p.emoji_key(emoji))
        if entry is None or user_id not in entry[1]:
            return False
        entry[1].remove(user_id)
        return True

    def reaction_users(self, message_id: int, key: str) -> list[JSON]:
        """Users who reacted, ordered by id as Discord's reactions endpoint pages them."""
        entry = self.reactions.get(message_id, {}).get(key)
        users = sorted(entry[1]) if entry else []
        return [copy.deepcopy(self.users[u]) for u in users]

    # ------------------------------------------------------------------ voice

    def set_voice_state(
        self, guild_id: int, user_id: int, channel_id: int | None, **flags: bool
    ) -> JSON:
        """Update a member's voice state and return the VOICE_STATE_UPDATE body."""
        guild = self.guilds[guild_id]
        previous = guild.voice_states.get(user_id)
        session_id = previous["session_id"] if previous else secrets.token_hex(16)
        state = p.voice_state(
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
            session_id=session_id,
            member_payload=None,
            **flags,
        )
        if channel_id is None:
            guild.voice_states.pop(user_id, None)
        else:
            guild.voice_states[user_id] = state
        return {**copy.deepcopy(state), "member": self.member(guild_id, user_id)}

    # ------------------------------------------------------------------ CDN

    def store_file(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        *,
        content_type: str | None = None,
        description: str | None = None,
    ) -> JSON:
        """Keep bytes on the CDN and return the attachment object pointing at them."""
        content_type = content_type or mimetypes.guess_type(filename)[0]
        content_type = content_type or "application/octet-stream"
        attachment_id = self.new_id()
        self.cdn[attachment_id] = CdnFile(filename=filename, data=data, content_type=content_type)
        path = f"attachments/{channel_id}/{attachment_id}/{filename}"
        # Discord signs CDN links; the query keeps bot code honest about stripping it.
        query = f"?ex={secrets.token_hex(4)}&is={secrets.token_hex(4)}&hm={secrets.token_hex(16)}&"
        self.attachments[attachment_id] = p.attachment(
            attachment_id,
            filename,
            size=len(data),
            url=f"{self.base_url}/cdn/{path}{query}",
            proxy_url=f"{self.base_url}/media/{path}{query}",
            content_type=content_type,
            description=description,
        )
        return copy.deepcopy(self.attachments[attachment_id])
