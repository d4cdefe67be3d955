"""VoteQueue without Discord: arrival order per member and post, whole-post events after the
votes before them, the old emoji taken off, and reconciliation from a post's reactions."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Collection
from pathlib import Path

import pytest

from bot.core.feedback import FeedbackService
from bot.core.ratings import STAR_EMOJIS, PostUnavailable, RatingService, VoteQueue
from bot.core.store import ModelVersionRow, Store

GUILD, CHANNEL = 1, 10
POSTS = {100: 0, 200: 0, 300: 0}  # message id -> track id (filled in by the fixture)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "db.sqlite3") as s:
        await s.record_model_version(ModelVersionRow(str(GUILD), "v0001", None, "x", "base",
                                                     0.0))
        for message_id in POSTS:
            track_id = await s.add_track(str(GUILD), "v0001", "generated", 20.0, seed=1)
            await s.set_track_message(track_id, str(CHANNEL), str(message_id))
            POSTS[message_id] = track_id
        yield s


class Removed:
    """The Discord side of "take the old emoji off": just remembered."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int, str, int]] = []

    async def __call__(self, guild_id: int, channel_id: int, message_id: int, emoji: str,
                      member_id: int) -> None:
        self.calls.append((guild_id, channel_id, message_id, emoji, member_id))


@pytest.fixture
async def queue(store: Store) -> AsyncIterator[tuple[VoteQueue, Removed]]:
    removed = Removed()
    q = VoteQueue(RatingService(store, FeedbackService(store)), removed)
    q.start()
    yield q, removed
    await q.stop()


async def votes(store: Store, message_id: int) -> dict[int, int]:
    return {int(v.member_id): v.stars for v in await store.votes(POSTS[message_id])}


async def test_each_members_events_end_where_they_left_them(store, queue) -> None:
    q, removed = queue
    rng = random.Random(7)
    expected: dict[tuple[int, int], int | None] = {}
    for _ in range(600):  # interleaved, queued at once: the workers race each other
        message_id, member = rng.choice(list(POSTS)), rng.randrange(1, 40)
        stars = rng.randrange(1, 6)
        key = (message_id, member)
        if rng.random() < 0.7:
            assert q.added(GUILD, CHANNEL, message_id, member, STAR_EMOJIS[stars - 1])
            expected[key] = stars
        else:
            assert q.removed(GUILD, CHANNEL, message_id, member, STAR_EMOJIS[stars - 1])
            if expected.get(key) == stars:  # only taking back the current vote removes it
                expected[key] = None
    await q.drain()
    for message_id in POSTS:
        want = {m: s for (msg, m), s in expected.items() if msg == message_id and s}
        assert await votes(store, message_id) == want


async def test_a_changed_vote_takes_the_old_emoji_off(store, queue) -> None:
    q, removed = queue
    q.added(GUILD, CHANNEL, 100, 7, "3️⃣")
    q.added(GUILD, CHANNEL, 100, 7, "5️⃣")
    q.removed(GUILD, CHANNEL, 100, 7, "3️⃣")  # the bot's own removal of the old emoji
    q.added(GUILD, CHANNEL, 100, 8, "2️⃣")
    q.added(GUILD, CHANNEL, 100, 8, "2️⃣")  # a replay: not a change
    await q.drain()
    assert await votes(store, 100) == {7: 5, 8: 2}
    assert removed.calls == [(GUILD, CHANNEL, 100, "3️⃣", 7)]
    # Not votes: other emoji, and messages that are not track posts.
    assert not q.added(GUILD, CHANNEL, 100, 9, "🎵")
    assert not q.removed(GUILD, CHANNEL, 100, 7, "🎵")
    assert not q.cleared(GUILD, CHANNEL, 100, "🎵")
    q.added(GUILD, CHANNEL, 999, 9, "4️⃣")
    await q.drain()
    assert await votes(store, 100) == {7: 5, 8: 2}


async def test_clearing_a_post_waits_for_the_votes_before_it(store, queue) -> None:
    q, _ = queue
    for member in range(1, 30):
        q.added(GUILD, CHANNEL, 100, member, STAR_EMOJIS[member % 5])
        q.added(GUILD, CHANNEL, 200, member, "4️⃣")
    q.cleared(GUILD, CHANNEL, 200, "4️⃣")  # one emoji on one post
    q.cleared(GUILD, CHANNEL, 100)  # everything on another
    q.added(GUILD, CHANNEL, 100, 1, "1️⃣")  # after the clear: counts
    await q.drain()
    assert await votes(store, 100) == {1: 1}
    assert await votes(store, 200) == {}


async def test_reconciliation_reads_each_post_and_skips_what_it_cannot(store, queue) -> None:
    q, _ = queue
    q.added(GUILD, CHANNEL, 100, 1, "4️⃣")
    q.added(GUILD, CHANNEL, 100, 2, "2️⃣")
    q.added(GUILD, CHANNEL, 200, 1, "5️⃣")
    q.added(GUILD, CHANNEL, 300, 3, "3️⃣")
    await q.drain()
    asked: list[tuple[int, int, int]] = []

    async def fetch(guild_id: int, channel_id: int, message_id: int, emojis: Collection[str]):
        asked.append((guild_id, channel_id, message_id))
        assert set(emojis) == set(STAR_EMOJIS)
        if message_id == 100:  # 2 took their vote back, 3 voted, 🎵 is no vote; 5's live
            return {"4️⃣": [1], "3️⃣": [3], "1️⃣": [5], "🎵": [4]}  # vote is there too
        if message_id == 200:
            return None  # the post is gone: its votes stay
        raise PostUnavailable("403 Forbidden")  # skipped with a warning

    q.reconcile_soon([GUILD], since=0.0, fetch=fetch)
    q.added(GUILD, CHANNEL, 100, 5, "1️⃣")  # a live event meanwhile
    await q.reconciled.wait()
    await q.drain()
    assert sorted(asked) == [(GUILD, CHANNEL, m) for m in (100, 200, 300)]
    assert await votes(store, 100) == {1: 4, 3: 3, 5: 1}
    assert await votes(store, 200) == {1: 5}
    assert await votes(store, 300) == {3: 3}
