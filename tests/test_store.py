"""The database: migrations, votes, listens, uploads, rounds and feedback windows."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from bot.core.store import MIGRATIONS, ModelVersionRow, RoundConflict, Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(tmp_path / "db.sqlite3") as s:
        yield s


async def add_track(store: Store, guild: str = "g", duration_s: float = 20.0) -> int:
    await store.record_model_version(ModelVersionRow(guild, "v0001", None, "x", "base", 0.0))
    return await store.add_track(guild, "v0001", "generated", duration_s, seed=1)


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


async def test_migrates_an_empty_database_and_reopens_idempotently(tmp_path):
    path = tmp_path / "db.sqlite3"
    async with await Store.open(path) as s:
        assert await s.schema_version() == len(MIGRATIONS) == 6
    assert {"votes", "listens", "uploads", "rounds", "tracks", "forgotten"} <= tables(path)
    async with await Store.open(path) as s:  # nothing left to run
        assert await s.schema_version() == 6


async def test_migrates_a_version_1_database_keeping_its_rows(tmp_path):
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
        db.execute("INSERT INTO guilds (id, created_at) VALUES ('g', 1)")
        db.execute("INSERT INTO model_versions VALUES ('g', 'v0001', NULL, 'x', 'base', 1)")
        db.execute("INSERT INTO tracks (guild_id, model_version, origin, duration_s, seed, "
                   "created_at) VALUES ('g', 'v0001', 'generated', 20, 7, 1)")
    assert "votes" not in tables(path)
    async with await Store.open(path) as s:
        assert await s.schema_version() == len(MIGRATIONS)
        track = await s.get_track(1)
        assert track is not None and track.seed == 7 and track.tags is None
        assert await s.upsert_vote(1, "alice", 4)
        assert [v.stars for v in await s.votes(1)] == [4]


async def test_tracks_keep_the_tags_they_were_made_with(tmp_path):
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as db:  # a version-2 database with a track
        db.executescript("\n".join(MIGRATIONS[:2]) + "\nPRAGMA user_version = 2;")
        db.execute("INSERT INTO guilds (id, created_at) VALUES ('g', 1)")
        db.execute("INSERT INTO model_versions VALUES ('g', 'v0001', NULL, 'x', 'base', 1)")
        db.execute("INSERT INTO tracks (guild_id, model_version, origin, duration_s, seed, "
                   "created_at) VALUES ('g', 'v0001', 'generated', 20, 7, 1)")
    async with await Store.open(path) as s:
        asked = {"instrument": "piano", "mode": "minor"}
        tagged = await s.add_track("g", "v0001", "generated", 20.0, seed=8, tags=asked,
                                   guidance=4.5)
        bare = await s.add_track("g", "v0001", "baseline", 20.0, seed=9, tags={}, guidance=3.0)
        # {}: made unconditioned, stored NULL, and so is the guidance it did not follow.
        assert [(t.id, t.tags, t.guidance) for t in await s.tracks("g")] == [
            (bare, None, None), (tagged, asked, 4.5), (1, None, None)]
        [feedback] = [f for f in await s.track_feedback("g") if f.track.id == tagged]
        assert feedback.track.tags == asked
    with sqlite3.connect(path) as db:  # a JSON object in the column
        assert db.execute("SELECT tags FROM tracks WHERE id = ?", (tagged,)).fetchone() == (
            '{"instrument": "piano", "mode": "minor"}',)


async def test_vote_upsert_replace_remove_and_replay(store):
    t = await add_track(store)
    assert await store.upsert_vote(t, "alice", 3, at=100.0) is True
    assert await store.upsert_vote(t, "alice", 3, at=200.0) is False  # replay: no-op
    vote = await store.get_vote(t, "alice")
    assert vote is not None and (vote.stars, vote.updated_at) == (3, 100.0)
    assert await store.upsert_vote(t, "alice", 5, at=300.0) is True  # a new vote replaces
    assert await store.upsert_vote(t, "bob", 1, at=300.0) is True
    assert [(v.member_id, v.stars, v.updated_at) for v in await store.votes(t)] == [
        ("alice", 5, 300.0), ("bob", 1, 300.0)]
    assert await store.delete_vote(t, "alice") is True
    assert await store.delete_vote(t, "alice") is False  # replayed removal
    assert await store.get_vote(t, "alice") is None
    assert [v.member_id for v in await store.votes(t)] == ["bob"]


async def test_votes_are_checked_by_the_schema(store):
    t = await add_track(store)
    for stars in (0, 6):
        with pytest.raises(aiosqlite.IntegrityError):
            await store.upsert_vote(t, "alice", stars)
        await store.db.rollback()
    with pytest.raises(aiosqlite.IntegrityError):  # unknown track
        await store.upsert_vote(t + 1, "alice", 3)
    await store.db.rollback()
    assert await store.votes(t) == []


async def test_listen_union_over_overlapping_replayed_and_clipped_intervals(store):
    t = await add_track(store, duration_s=20.0)
    play1, play2 = 1000.0, 2000.0
    assert await store.add_listen(t, "alice", play1, 0.0, 5.0, True)
    assert await store.add_listen(t, "alice", play1, 3.0, 8.0, True)  # overlaps: +3 s
    assert not await store.add_listen(t, "alice", play1, 0.0, 5.0, True)  # replay: no-op
    assert await store.add_listen(t, "alice", play2, 6.0, 11.0, False)  # another play: +3 s
    assert await store.add_listen(t, "alice", play2, 18.0, 25.0, False)  # clipped to 20: +2
    # A member who left at once: a zero-length mark, present but 0 s.
    assert await store.add_listen(t, "bob", play1, 0.0, 0.0, True)
    # Joined late in a play: not present at the start.
    assert await store.add_listen(t, "carl", play2, 4.0, 9.0, False)
    totals = {x.member_id: x for x in await store.listen_totals([t])}
    assert totals["alice"].listened_s == pytest.approx(13.0)
    assert totals["alice"].present_at_start and totals["alice"].duration_s == 20.0
    assert (totals["bob"].listened_s, totals["bob"].present_at_start) == (0.0, True)
    assert (totals["carl"].listened_s, totals["carl"].present_at_start) == (5.0, False)
    # The same interval closed later (after a crash closed it early) extends it.
    assert await store.add_listen(t, "carl", play2, 4.0, 12.0, False)
    assert not await store.add_listen(t, "carl", play2, 4.0, 10.0, False)  # never shrinks
    (carl,) = [x for x in await store.listen_totals([t]) if x.member_id == "carl"]
    assert carl.listened_s == 8.0
    assert len(await store.listens(t)) == 6
    assert await store.listen_totals([]) == []


async def test_deleting_a_track_deletes_its_feedback(store):
    t = await add_track(store)
    await store.upsert_vote(t, "alice", 4)
    await store.add_listen(t, "alice", 1.0, 0.0, 5.0, True)
    await store.delete_track(t)
    assert await store.votes(t) == [] and await store.listens(t) == []


async def test_upload_dedupe_by_guild_and_sha(store):
    first, new = await store.add_upload("g", "alice", "abc", "/u/g/abc.wav", "song.mp3", "mp3",
                                        12.0)
    assert new and first.id == 1 and first.member_id == "alice"
    again, new = await store.add_upload("g", "bob", "abc", "/u/g/abc.wav", "copy.mp3", "mp3",
                                        12.0)
    assert not new and again == first  # the first upload's row, untouched
    other, new = await store.add_upload("h", "bob", "abc", "/u/h/abc.wav", "copy.mp3", "mp3",
                                        12.0)
    assert new and other.id != first.id
    assert [u.id for u in await store.uploads("g")] == [first.id]
    assert await store.upload_by_sha("g", "nope") is None
    await store.set_upload_file(first.id, "/elsewhere/abc.wav")
    assert (await store.upload_by_sha("g", "abc")).file == "/elsewhere/abc.wav"
    assert await store.uploads("g", since=first.created_at + 3600) == []
    # What the tagger heard in it: none until a round hears it, then kept as a JSON object.
    assert first.tags is None
    heard = {"instrument": "strings", "mode": "minor"}
    await store.set_upload_tags(first.id, heard)
    assert [u.tags for u in await store.uploads("g")] == [heard]
    assert (await store.get_upload("g", first.id)).tags == heard


async def test_round_lifecycle(store):
    r = await store.start_round("g", parent_version="v0001", at=100.0)
    assert (r.status, r.parent_version, r.ended_at, r.promoted) == ("running", "v0001", None,
                                                                    False)
    assert await store.running_round("g") == r
    with pytest.raises(RoundConflict, match="already has round"):
        await store.start_round("g")
    other = await store.start_round("h")  # guilds are independent
    done = await store.finish_round(r.id, "succeeded", candidate_version="v0002",
                                    promoted=True, counts={"votes": 12}, metrics={"p": 0.03},
                                    at=160.0)
    assert (done.status, done.candidate_version, done.promoted, done.ended_at) == (
        "succeeded", "v0002", True, 160.0)
    assert done.parent_version == "v0001"  # kept: finish did not name one
    assert (done.counts, done.metrics) == ({"votes": 12}, {"p": 0.03})
    assert await store.get_round(r.id) == done
    assert await store.running_round("g") is None
    with pytest.raises(RoundConflict, match="not running"):  # history is never rewritten
        await store.finish_round(r.id, "failed")
    with pytest.raises(KeyError):
        await store.finish_round(999, "failed")
    with pytest.raises(ValueError):
        await store.finish_round(other.id, "running")
    r2 = await store.start_round("g", at=200.0)
    skipped = await store.finish_round(r2.id, "skipped", reason="only 2 votes")
    assert (skipped.reason, skipped.promoted, skipped.counts) == ("only 2 votes", False, {})
    assert [x.id for x in await store.rounds("g")] == [r2.id, r.id]  # newest first
    assert [x.id for x in await store.rounds("g", limit=1)] == [r2.id]
    assert [x.status for x in await store.rounds("h")] == ["running"]


async def test_track_feedback_window(store):
    old = await add_track(store)
    rated_late = await add_track(store)
    await store.db.execute("UPDATE tracks SET created_at = 10 WHERE id IN (?, ?)",
                           (old, rated_late))
    await store.db.commit()
    new = await add_track(store)
    other_guild = await add_track(store, guild="h")
    await store.upsert_vote(old, "alice", 2, at=20.0)
    await store.add_listen(old, "alice", 15.0, 0.0, 4.0, True, at=20.0)
    await store.upsert_vote(rated_late, "alice", 5, at=20.0)
    await store.upsert_vote(rated_late, "bob", 4, at=500.0)  # feedback inside the window
    await store.add_listen(rated_late, "bob", 400.0, 0.0, 10.0, True, at=500.0)
    await store.upsert_vote(other_guild, "alice", 1)

    everything = await store.track_feedback("g")
    assert [f.track.id for f in everything] == [old, rated_late, new]
    window = {f.track.id: f for f in await store.track_feedback("g", since=100.0)}
    assert set(window) == {rated_late, new}  # `old` had nothing since; `new` was created
    late = window[rated_late]
    assert [(v.member_id, v.stars) for v in late.votes] == [("alice", 5), ("bob", 4)]
    assert [(x.member_id, x.listened_s, x.present_at_start) for x in late.listens] == [
        ("bob", 10.0, True)]
    assert window[new].votes == () and window[new].listens == ()


async def test_batch_commits_once_and_rolls_back_on_error(store):
    t = await add_track(store)
    async with store.batch():
        await store.upsert_vote(t, "alice", 4)
        await store.upsert_vote(t, "bob", 2)
    with pytest.raises(RuntimeError):
        async with store.batch():
            await store.upsert_vote(t, "carl", 5)
            raise RuntimeError("boom")
    assert [v.member_id for v in await store.votes(t)] == ["alice", "bob"]
