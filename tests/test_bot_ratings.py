"""Ratings end to end: 1️⃣-5️⃣ reactions through the gateway into votes, reconciliation."""

from __future__ import annotations

from tests.bot_support import bot_env, react, votes
from tests.fakediscord import FakeDiscord, expect_event
from tests.fakediscord import payloads as p


async def post(env) -> tuple[int, int]:
    """A scheduled track post: (message id, track id)."""
    message = await env.bot.post_scheduled(str(env.emu.ids.guild))
    await env.emu.wait_for_call("PUT", rf"/channels/\d+/messages/{message.id}/reactions/5️⃣/@me")
    track = await env.services.store.track_by_message(str(message.id))
    return message.id, track.id


async def test_votes_are_added_changed_removed_and_replays_change_nothing(
        fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    ids = emu.ids
    async with bot_env(emu, tmp_path) as env:
        message_id, track_id = await post(env)
        await env.drain_votes()
        assert await votes(env, track_id) == {}  # the bot's own five reactions never count

        await react(env, message_id, "3️⃣", ids.alice)
        assert await votes(env, track_id) == {ids.alice: 3}

        # A new emoji replaces the vote, and the bot takes the old emoji off the post; the
        # removal event that causes does not cancel the new vote.
        removed = await expect_event(env.bot, "raw_reaction_remove",
                                     check=lambda e: e.user_id == ids.alice)
        await react(env, message_id, "5️⃣", ids.alice)
        await removed
        await emu.wait_for_call("DELETE", rf"/channels/\d+/messages/{message_id}/reactions/"
                                rf"3️⃣/{ids.alice}")
        await env.drain_votes()
        assert await votes(env, track_id) == {ids.alice: 5}
        assert emu.reaction_user_ids(message_id, "3️⃣") == [ids.bot]

        # Replayed twice: one vote, its time untouched (it is not fresh feedback).
        await react(env, message_id, "2️⃣", ids.bob)
        first = await env.services.store.get_vote(track_id, str(ids.bob))
        for _ in range(2):
            await react(env, message_id, "2️⃣", ids.bob)
        assert await env.services.store.get_vote(track_id, str(ids.bob)) == first
        assert await votes(env, track_id) == {ids.alice: 5, ids.bob: 2}

        # Removing the emoji removes the vote; a replayed removal changes nothing.
        for _ in range(2):
            await react(env, message_id, "2️⃣", ids.bob, remove=True)
        assert await votes(env, track_id) == {ids.alice: 5}

        # Other emoji, and reactions on messages that are not tracks, are not votes.
        await react(env, message_id, "🎵", ids.carol)
        other = await env.bot.get_channel(ids.text_channel).send("not a track")
        await react(env, other.id, "4️⃣", ids.carol)
        assert await votes(env, track_id) == {ids.alice: 5}
        assert len(await env.services.store.votes(track_id)) == 1

        # A moderator clearing the post's reactions clears its votes.
        cleared = await expect_event(env.bot, "raw_reaction_clear")
        await env.bot.get_channel(ids.text_channel).get_partial_message(
            message_id).clear_reactions()
        await cleared
        await env.drain_votes()
        assert await votes(env, track_id) == {}


async def test_offline_votes_are_reconciled_and_a_restart_keeps_every_vote(
        fake_discord: FakeDiscord, tmp_path) -> None:
    emu = fake_discord
    ids = emu.ids
    async with bot_env(emu, tmp_path) as env:
        first, t1 = await post(env)
        second, t2 = await post(env)
        await react(env, first, "4️⃣", ids.alice)
        await react(env, first, "2️⃣", ids.bob)
        await react(env, second, "5️⃣", ids.bob)

    # While the bot is away: carol votes, bob takes his vote on the first track back,
    # alice votes on the second (Discord keeps reactions; nobody tells the bot).
    emu.world.add_reaction(first, p.parse_emoji("3️⃣"), ids.carol)
    emu.world.remove_reaction(first, p.parse_emoji("2️⃣"), ids.bob)
    emu.world.add_reaction(second, p.parse_emoji("1️⃣"), ids.alice)

    async with bot_env(emu, tmp_path) as env:  # a fresh process's services, same database
        assert await votes(env, t1) == {ids.alice: 4, ids.carol: 3}
        assert await votes(env, t2) == {ids.bob: 5, ids.alice: 1}
        # Old posts keep counting live after the restart.
        await react(env, first, "1️⃣", ids.bob)
        assert await votes(env, t1) == {ids.alice: 4, ids.carol: 3, ids.bob: 1}
        # Reconciliation read each post's reactions once (the bot's own were skipped).
        fetched = emu.calls("GET", rf"/channels/{ids.text_channel}/messages/\d+")
        assert sorted(int(c.path.rsplit("/", 1)[1]) for c in fetched) == sorted([first, second])
