"""Builders for complete Discord API v10 payload dicts.

discord.py indexes many keys directly (``data['position']``, ``data['flags']``...), so every
builder here emits the full object as Discord documents it, not just what one test needs.
The functions are pure: state lives in :mod:`tests.fakediscord.state`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import threading
import time
from typing import Any

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000

# Channel and interaction constants used by the builders and the emulator.
TEXT_CHANNEL = 0
DM_CHANNEL = 1
VOICE_CHANNEL = 2
CATEGORY_CHANNEL = 4

APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
COMPONENT_BUTTON = 2
OPTION_SUB_COMMAND = 1
OPTION_SUB_COMMAND_GROUP = 2
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_BOOLEAN = 5
OPTION_USER = 6
OPTION_CHANNEL = 7
OPTION_ROLE = 8
OPTION_NUMBER = 10
OPTION_ATTACHMENT = 11

MESSAGE_DEFAULT = 0
MESSAGE_CHAT_INPUT_COMMAND = 20
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

# GATEWAY_MESSAGE_CONTENT_LIMITED | GATEWAY_GUILD_MEMBERS_LIMITED: an unverified bot's flags.
APPLICATION_FLAGS = (1 << 19) | (1 << 15)

# Every permission bit up to 1 << 50: what Discord reports for an administrator.
ALL_PERMISSIONS = (1 << 51) - 1
# @everyone in a fresh server: view, send, read history, add reactions, connect, speak,
# use application commands, attach files, embed links.
EVERYONE_PERMISSIONS = (
    (1 << 10)
    | (1 << 11)
    | (1 << 16)
    | (1 << 6)
    | (1 << 20)
    | (1 << 21)
    | (1 << 31)
    | (1 << 15)
    | (1 << 14)
)


class Snowflakes:
    """Monotonic snowflake generator whose ids encode the current time.

    Real timestamps keep ``created_at`` meaningful for code that ages messages; the counter keeps
    ids unique and increasing even within one millisecond.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        self._counter = itertools.count()

    def next(self) -> int:
        with self._lock:
            ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
            candidate = (ms << 22) | (1 << 17) | (next(self._counter) & 0xFFF)
            self._last = max(candidate, self._last + 1)
            return self._last


def iso(moment: dt.datetime | None = None) -> str:
    """ISO 8601 timestamp in Discord's format (microseconds, explicit UTC offset)."""
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def snowflake_time(snowflake: int) -> str:
    ms = (snowflake >> 22) + DISCORD_EPOCH_MS
    return iso(dt.datetime.fromtimestamp(ms / 1000, dt.UTC))


def error(code: int, message: str) -> JSON:
    """Discord's JSON error body; discord.py reads ``code`` and ``message`` from it."""
    return {"code": code, "message": message}


# --------------------------------------------------------------------------- users & members


def user(user_id: int, username: str, *, bot: bool = False, global_name: str | None = None) -> JSON:
    """A public user object (what appears in members, messages and reactions)."""
    return {
        "id": str(user_id),
        "username": username,
        "discriminator": "0",
        "global_name": global_name if global_name is not None else (None if bot else username),
        "avatar": None,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
        "collectibles": None,
        "primary_guild": None,
        "public_flags": 0,
        "flags": 0,
        "bot": bot,
        "system": False,
    }


def self_user(public: JSON) -> JSON:
    """The private view of the bot's own user returned by GET /users/@me and READY."""
    return {
        **public,
        "mfa_enabled": True,
        "locale": "en-US",
        "verified": True,
        "email": None,
        "premium_type": 0,
    }


def member(
    user_payload: JSON, *, roles: list[int], joined_at: str, nick: str | None = None
) -> JSON:
    """A guild member with its nested user (the GUILD_CREATE / REST shape)."""
    return {
        "user": user_payload,
        "nick": nick,
        "avatar": None,
        "banner": None,
        "roles": [str(r) for r in roles],
        "joined_at": joined_at,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
        "avatar_decoration_data": None,
        "unusual_dm_activity_until": None,
    }


# --------------------------------------------------------------------------- guild structure


def role(
    role_id: int,
    name: str,
    *,
    permissions: int,
    position: int,
    managed: bool = False,
    bot_id: int | None = None,
) -> JSON:
    payload: JSON = {
        "id": str(role_id),
        "name": name,
        "description": None,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": str(permissions),
        "managed": managed,
        "mentionable": False,
        "flags": 0,
    }
    if bot_id is not None:
        payload["tags"] = {"bot_id": str(bot_id)}
    return payload


def _guild_channel(channel_id: int, guild_id: int, name: str, kind: int, position: int) -> JSON:
    return {
        "id": str(channel_id),
        "type": kind,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "permission_overwrites": [],
        "flags": 0,
    }


def category_channel(channel_id: int, guild_id: int, name: str, *, position: int) -> JSON:
    return {
        **_guild_channel(channel_id, guild_id, name, CATEGORY_CHANNEL, position),
        "parent_id": None,
        "nsfw": False,
    }


def text_channel(
    channel_id: int, guild_id: int, name: str, *, position: int, parent_id: int | None
) -> JSON:
    return {
        **_guild_channel(channel_id, guild_id, name, TEXT_CHANNEL, position),
        "parent_id": str(parent_id) if parent_id else None,
        "topic": None,
        "nsfw": False,
        "last_message_id": None,
        "last_pin_timestamp": None,
        "rate_limit_per_user": 0,
        "default_auto_archive_duration": 1440,
        "default_thread_rate_limit_per_user": 0,
    }


def voice_channel(
    channel_id: int, guild_id: int, name: str, *, position: int, parent_id: int | None
) -> JSON:
    return {
        **_guild_channel(channel_id, guild_id, name, VOICE_CHANNEL, position),
        "parent_id": str(parent_id) if parent_id else None,
        "nsfw": False,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "bitrate": 64000,
        "user_limit": 0,
        "rtc_region": None,
        "video_quality_mode": 1,
        "status": None,
    }


def dm_channel(channel_id: int, recipient: JSON) -> JSON:
    return {
        "id": str(channel_id),
        "type": DM_CHANNEL,
        "last_message_id": None,
        "recipients": [recipient],
        "flags": 0,
    }


def guild_base(guild_id: int, name: str, *, owner_id: int, system_channel_id: int | None) -> JSON:
    """Static guild fields shared by GUILD_CREATE and GET /guilds/{id}."""
    return {
        "id": str(guild_id),
        "name": name,
        "icon": None,
        "icon_hash": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(owner_id),
        "region": None,
        "afk_channel_id": None,
        "afk_timeout": 300,
        "widget_enabled": False,
        "widget_channel_id": None,
        "verification_level": 0,
        "default_message_notifications": 1,
        "explicit_content_filter": 0,
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": str(system_channel_id) if system_channel_id else None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "max_presences": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
        "vanity_url_code": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "nsfw_level": 0,
        "nsfw": False,
        "premium_progress_bar_enabled": False,
        "incidents_data": None,
        "hub_type": None,
    }


def voice_state(
    *,
    guild_id: int | None,
    channel_id: int | None,
    user_id: int,
    session_id: str,
    member_payload: JSON | None,
    self_mute: bool = False,
    self_deaf: bool = False,
    mute: bool = False,
    deaf: bool = False,
    self_video: bool = False,
    self_stream: bool = False,
) -> JSON:
    """A voice state; GUILD_CREATE omits guild_id and member, VOICE_STATE_UPDATE has both."""
    payload: JSON = {
        "channel_id": str(channel_id) if channel_id else None,
        "user_id": str(user_id),
        "session_id": session_id,
        "deaf": deaf,
        "mute": mute,
        "self_deaf": self_deaf,
        "self_mute": self_mute,
        "self_stream": self_stream,
        "self_video": self_video,
        "suppress": False,
        "request_to_speak_timestamp": None,
    }
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
    if member_payload is not None:
        payload["member"] = member_payload
    return payload


# --------------------------------------------------------------------------- messages


def attachment(
    attachment_id: int,
    filename: str,
    *,
    size: int,
    url: str,
    proxy_url: str,
    content_type: str | None,
    description: str | None = None,
) -> JSON:
    payload: JSON = {
        "id": str(attachment_id),
        "filename": filename,
        "title": filename.rsplit(".", 1)[0],
        "size": size,
        "url": url,
        "proxy_url": proxy_url,
        "content_type": content_type,
        "flags": 0,
    }
    if description is not None:
        payload["description"] = description
    return payload


def parse_emoji(text: str) -> JSON:
    """Emoji object from a unicode emoji, ``name:id`` (the URL form) or ``<:name:id>``."""
    match = re.fullmatch(r"<?(a?):?([\w-]+):(\d+)>?", text)
    if match:
        return {"id": match.group(3), "name": match.group(2), "animated": bool(match.group(1))}
    return {"id": None, "name": text}


def emoji_key(emoji: JSON) -> str:
    """The reaction key the URL uses: the unicode itself, or ``name:id`` for custom emoji."""
    return f"{emoji['name']}:{emoji['id']}" if emoji.get("id") else str(emoji["name"])


def reaction(emoji: JSON, *, count: int, me: bool) -> JSON:
    return {
        "emoji": emoji,
        "count": count,
        "count_details": {"burst": 0, "normal": count},
        "me": me,
        "me_burst": False,
        "burst_colors": [],
    }


def message(
    message_id: int,
    channel_id: int,
    author: JSON,
    *,
    content: str = "",
    attachments: list[JSON] | None = None,
    embeds: list[JSON] | None = None,
    components: list[JSON] | None = None,
    flags: int = 0,
    kind: int = MESSAGE_DEFAULT,
    tts: bool = False,
    mentions: list[JSON] | None = None,
    nonce: str | int | None = None,
) -> JSON:
    """A message as REST returns it (no guild_id/member; the gateway adds those)."""
    payload: JSON = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": author,
        "content": content,
        "timestamp": snowflake_time(message_id),
        "edited_timestamp": None,
        "tts": tts,
        "mention_everyone": False,
        "mentions": mentions or [],
        "mention_roles": [],
        "attachments": attachments or [],
        "embeds": embeds or [],
        "components": components or [],
        "pinned": False,
        "type": kind,
        "flags": flags,
    }
    if nonce is not None:
        payload["nonce"] = nonce
    return payload


# --------------------------------------------------------------------------- application


def application(app_id: int, bot_user: JSON, owner: JSON, *, name: str) -> JSON:
    """GET /oauth2/applications/@me; READY carries only ``{id, flags}`` of this."""
    return {
        "id": str(app_id),
        "name": name,
        "icon": None,
        "description": "crowdtune test application",
        "summary": "",
        "type": None,
        "hook": True,
        "bot": bot_user,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "owner": owner,
        "team": None,
        "flags": APPLICATION_FLAGS,
        "rpc_origins": [],
        "redirect_uris": [],
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "tags": [],
        "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
        "integration_types_config": {"0": {}},
        "approximate_guild_count": 1,
        "approximate_user_install_count": 0,
        "is_monetized": False,
    }


def app_command(command: JSON, *, command_id: int, app_id: int, guild_id: int | None) -> JSON:
    """An ApplicationCommand as Discord echoes it after a bulk overwrite."""
    payload: JSON = {
        "type": 1,
        "description": "",
        "options": [],
        "default_member_permissions": None,
        "nsfw": False,
        "contexts": None,
        "integration_types": [0],
        "name_localizations": None,
        "description_localizations": None,
        **command,
        "id": str(command_id),
        "application_id": str(app_id),
        "version": str(command_id),
    }
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
    return payload


# --------------------------------------------------------------------------- interactions


def option(name: str, value: Any, *, kind: int | None = None) -> JSON:
    """A slash-command option; the type is inferred from the Python value unless given."""
    if kind is None:
        if isinstance(value, bool):
            kind = OPTION_BOOLEAN
        elif isinstance(value, int):
            kind = OPTION_INTEGER
        elif isinstance(value, float):
            kind = OPTION_NUMBER
        else:
            kind = OPTION_STRING
    return {"name": name, "type": kind, "value": value}


def attachment_option(name: str, attachment_payload: JSON) -> JSON:
    """An attachment option; the emulator fills ``resolved.attachments`` from its CDN."""
    return {"name": name, "type": OPTION_ATTACHMENT, "value": attachment_payload["id"]}


def user_option(name: str, user_id: int) -> JSON:
    return {"name": name, "type": OPTION_USER, "value": str(user_id)}


def channel_option(name: str, channel_id: int) -> JSON:
    return {"name": name, "type": OPTION_CHANNEL, "value": str(channel_id)}


def role_option(name: str, role_id: int) -> JSON:
    return {"name": name, "type": OPTION_ROLE, "value": str(role_id)}


def subcommand(name: str, options: list[JSON] | None = None) -> JSON:
    return {"name": name, "type": OPTION_SUB_COMMAND, "options": options or []}


def subcommand_group(name: str, subcommands: list[JSON]) -> JSON:
    return {"name": name, "type": OPTION_SUB_COMMAND_GROUP, "options": subcommands}


def walk_options(options: list[JSON]) -> list[JSON]:
    """Every leaf option, descending into subcommands and groups."""
    leaves: list[JSON] = []
    for opt in options:
        if opt["type"] in (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP):
            leaves.extend(walk_options(opt.get("options", [])))
        else:
            leaves.append(opt)
    return leaves
