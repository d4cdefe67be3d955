"""What the bot posts: a track (audio attachment, embed, 1-5 reactions) and a round report.

Shared by the tracks cog (/generate), the scheduler's posts and its round reports.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import discord

from bot.core.domain import Origin
from bot.core.prompt import describe
from bot.core.ratings import STAR_EMOJIS
from bot.core.rounds import RoundSummary
from bot.core.tracks import GeneratedTrack

log = logging.getLogger(__name__)

ORIGIN_LABELS = {Origin.GENERATED: "current model", Origin.BASELINE: "baseline model",
                 Origin.UPLOAD_SEEDED: "seeded from your uploads"}
EMBED_COLOUR = discord.Colour(0x0072B2)
MAX_CONTENT = 2000


def track_embed(track: GeneratedTrack, requested_by: discord.abc.User | None = None
                ) -> discord.Embed:
    embed = discord.Embed(title=f"Track #{track.track_id}", colour=EMBED_COLOUR,
                          description="Rate it: react 1️⃣ (meh) to 5️⃣ (love it).")
    embed.add_field(name="Model", value=track.model_version)
    embed.add_field(name="Origin", value=ORIGIN_LABELS.get(track.origin, track.origin))
    embed.add_field(name="Duration", value=f"{track.duration_s:.1f} s")
    if track.tags:  # what it was made with (none: a model that takes no tags)
        embed.add_field(name="Tags", value=describe(track.tags))
    embed.set_footer(text=f"track {track.track_id} · seed {track.seed}")
    if requested_by is not None:
        embed.set_author(name=f"made for {requested_by.display_name}")
    return embed


def track_file(track: GeneratedTrack) -> discord.File:
    path = Path(track.path)
    return discord.File(path, filename=f"crowdtune-{track.track_id}{path.suffix}")


async def add_vote_reactions(message: discord.Message,
                             emojis: Sequence[str] = STAR_EMOJIS) -> None:
    """The bot's own 1-5 reactions, so members vote with one click. Best effort: a
    missing permission loses the shortcut, not the post."""
    for emoji in emojis:
        try:
            await message.add_reaction(emoji)
        except discord.Forbidden:
            log.warning("channel %s: no permission to add reactions", message.channel.id)
            return
        except discord.HTTPException as exc:
            log.warning("message %s: could not add %s: %s", message.id, emoji, exc)


def uploads_howto(bot_mention: str, message_content: bool) -> str:
    """The line pinned in the uploads channel. Without the Message Content intent Discord
    shows the bot a post's attachments only when the post mentions it."""
    if message_content:
        return ("📥 Share a song for this server's model to learn from: post it here with the "
                "audio file attached, or use /upload.")
    return (f"📥 Share a song for this server's model to learn from: mention {bot_mention} "
            "in a post with the audio file attached, or use /upload.")


def report_content(summary: RoundSummary) -> str:
    text = summary.text or f"Round {summary.round_id}: {summary.status}. {summary.reason}"
    return text if len(text) <= MAX_CONTENT else text[: MAX_CONTENT - 1] + "…"


def report_files(summary: RoundSummary) -> list[discord.File]:
    if summary.chart and Path(summary.chart).is_file():
        return [discord.File(summary.chart, filename=f"round-{summary.round_id}.png")]
    return []
