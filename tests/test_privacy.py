"""Members' data: forget, remove an upload, export; the service, the reconciliation that must
not bring forgotten votes back, and the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.cli import main
from bot.core.config import BotSettings
from bot.core.feedback import FeedbackService
from bot.core.privacy import PrivacyService, UnknownUpload
from bot.core.ratings import RatingService
from bot.core.store import ModelVersionRow, Store
from bot.core.uploads import UploadService
from model.registry import ModelRegistry

ALICE, BOB = "111111111111111111", "222222222222222222"


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("songs")
    out = []
    for i, freq in enumerate((330, 440, 550)):
        path = d / f"song{i}.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                        f"sine=frequency={freq}:duration=11", str(path)], check=True)
        out.append(path)
    return out


@pytest.fixture
def settings(tmp_path: Path) -> BotSettings:
    return BotSettings(_env_file=None, data_dir=tmp_path / "data")  # type: ignore[call-arg]


@pytest.fixture
async def store(settings: BotSettings) -> AsyncIterator[Store]:
    s = await Store.open(settings.db_path)
    for g in ("g1", "g2"):
        await s.record_model_version(ModelVersionRow(g, "v0001", None, "x", "base", 0.0))
    yield s
    await s.close()


def privacy_service(settings: BotSettings, store: Store) -> PrivacyService:
    return PrivacyService(store, settings, ModelRegistry(settings.models_dir))


async def populate(settings: BotSettings, store: Store, songs: list[Path]) -> dict[str, int]:
    """Alice and Bob vote, listen and upload in g1; Alice also votes in g2."""
    fb = FeedbackService(store)
    ups = UploadService(settings, store)
    t1 = await store.add_track("g1", "v0001", "generated", 20.0, seed=1)
    t2 = await store.add_track("g2", "v0001", "generated", 20.0, seed=2)
    for member, stars in ((ALICE, 5), (BOB, 2)):
        await fb.record_vote(t1, member, stars)
        await fb.record_listen(t1, member, 0.0, 0.0, 12.0, True)
    await fb.record_vote(t2, ALICE, 4)
    await ups.ingest("g1", ALICE, songs[0])
    await ups.ingest("g1", ALICE, songs[1])
    await ups.ingest("g1", BOB, songs[2])
    return {"t1": t1, "t2": t2}


async def test_forget_deletes_a_members_rows_and_files_in_one_guild(settings, store, songs):
    ids = await populate(settings, store, songs)
    alice_files = [Path(u.file) for u in await store.uploads("g1") if u.member_id == ALICE]
    assert len(alice_files) == 2 and all(f.is_file() for f in alice_files)

    report = await privacy_service(settings, store).forget(ALICE, "g1")
    assert (report.votes, report.listens, report.uploads, report.files_left) == (1, 1, 2, 0)
    assert not any(f.exists() for f in alice_files)
    assert [v.member_id for v in await store.votes(ids["t1"])] == [BOB]
    assert [t.member_id for t in await store.listen_totals([ids["t1"]])] == [BOB]
    (left,) = await store.uploads("g1")
    assert left.member_id == BOB and Path(left.file).is_file()
    # Training reads only what is left: the round's feedback and uploads.
    (fb,) = [f for f in await store.track_feedback("g1") if f.track.id == ids["t1"]]
    assert {v.member_id for v in fb.votes} == {BOB}
    assert {li.member_id for li in fb.listens} == {BOB}
    # Another guild is untouched when one guild is named.
    assert [v.member_id for v in await store.votes(ids["t2"])] == [ALICE]
    # Forgetting again finds nothing and fails nothing.
    again = await privacy_service(settings, store).forget(ALICE, "g1")
    assert (again.votes, again.listens, again.uploads) == (0, 0, 0)


async def test_forget_everywhere_covers_every_guild(settings, store, songs):
    ids = await populate(settings, store, songs)
    report = await privacy_service(settings, store).forget(ALICE)
    assert set(report.guilds) == {"g1", "g2"} and report.votes == 2
    assert await store.votes(ids["t2"]) == []
    assert await store.member_guilds(ALICE) == []
    assert await store.member_guilds(BOB) == ["g1"]


async def test_reconciliation_does_not_bring_forgotten_votes_back(settings, store, songs):
    ids = await populate(settings, store, songs)
    ratings = RatingService(store, FeedbackService(store))
    await privacy_service(settings, store).forget(ALICE, "g1")
    # Her reaction is still on the post; the bot reads it back after a restart.
    await ratings.reconcile(ids["t1"], {5: [int(ALICE)], 2: [int(BOB)]})
    assert [v.member_id for v in await store.votes(ids["t1"])] == [BOB]
    # A track made after her request: her new reaction is a new vote.
    t3 = await store.add_track("g1", "v0001", "generated", 20.0, seed=3)
    done = await ratings.reconcile(t3, {4: [int(ALICE)]})
    assert done.added == 1 and [v.member_id for v in await store.votes(t3)] == [ALICE]


async def test_remove_upload(settings, store, songs):
    await populate(settings, store, songs)
    first, *_ = await store.uploads("g1")
    privacy = privacy_service(settings, store)
    removed = await privacy.remove_upload("g1", first.id)
    assert removed.id == first.id and not Path(first.file).exists()
    assert first.id not in [u.id for u in await store.uploads("g1")]
    with pytest.raises(UnknownUpload, match=f"no upload #{first.id} in this server"):
        await privacy.remove_upload("g1", first.id)
    with pytest.raises(UnknownUpload):  # another guild's upload is not this guild's to remove
        await privacy.remove_upload("g2", first.id + 1)


async def test_export_a_member_and_a_guild(settings, store, songs):
    ids = await populate(settings, store, songs)
    privacy = privacy_service(settings, store)
    mine = [json.loads(line) for line in await privacy.export_lines("g1", ALICE)]
    kinds = [r["kind"] for r in mine]
    assert kinds == ["track", "vote", "listen", "upload", "upload"]
    assert all(r["member_id"] == ALICE for r in mine if r["kind"] != "track")
    assert mine[0]["id"] == ids["t1"] and all(r["guild_id"] == "g1" for r in mine)
    text = json.dumps(mine)
    assert str(settings.data_dir) not in text and "file" not in mine[-1]  # no paths
    everyone = [json.loads(line) for line in await privacy.export_lines("g1")]
    assert {r.get("member_id") for r in everyone if r["kind"] == "vote"} == {ALICE, BOB}
    assert len([r for r in everyone if r["kind"] == "upload"]) == 3
    # /my-data: every guild where the member has something.
    assert {json.loads(line)["guild_id"] for line in await privacy.member_lines(ALICE)} == {
        "g1", "g2"}


# --- the CLI ------------------------------------------------------------------------------


def crowdtune(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


def test_cli_uploads_forget_and_export(capsys, settings, songs, tmp_path, monkeypatch):
    async def prepare() -> None:
        async with await Store.open(settings.db_path) as store:
            for g in ("g1", "g2"):
                await store.record_model_version(
                    ModelVersionRow(g, "v0001", None, "x", "base", 0.0))
            await populate(settings, store, songs)

    asyncio.run(prepare())
    monkeypatch.chdir(tmp_path)
    base = ("--data-dir", str(settings.data_dir))

    code, out, err = crowdtune(capsys, *base, "uploads", "list", "--guild", "g1", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["member_id"] for r in rows] == [ALICE, ALICE, BOB]
    assert [r["tags"] for r in rows] == [None] * 3  # no round has heard them yet
    code, out, err = crowdtune(capsys, *base, "uploads", "remove", "--guild", "g1",
                               str(rows[2]["upload_id"]))
    assert code == 0 and "removed upload #3" in out
    code, out, err = crowdtune(capsys, *base, "uploads", "remove", "--guild", "g1", "3")
    assert code == 2 and err == "crowdtune: error: There is no upload #3 in this server.\n"

    export = tmp_path / "out" / "alice.jsonl"
    code, out, err = crowdtune(capsys, *base, "export", "--guild", "g1", "--member", ALICE,
                               "--out", str(export))
    assert code == 0 and "5 rows" in err
    assert len(export.read_text().splitlines()) == 5

    code, out, err = crowdtune(capsys, *base, "forget", "--guild", "g1", "--member", ALICE,
                               "--json")
    assert code == 0
    assert json.loads(out) == {"member_id": ALICE, "guilds": ["g1"], "votes": 1, "listens": 1,
                               "uploads": 2, "files_left": 0}
    code, out, err = crowdtune(capsys, *base, "export", "--guild", "g1", "--member", ALICE,
                               "--out", str(export))
    assert code == 0 and export.read_text() == ""
    code, out, err = crowdtune(capsys, *base, "forget", "--guild", "g1", "--member", "a b")
    assert code == 2 and "invalid member" in err
    code, out, err = crowdtune(capsys, *base, "compact", "--older-than", "1", "--json")
    assert code == 0 and json.loads(out) == {"older_than_days": 1.0, "rows_merged": 0}
    code, out, err = crowdtune(capsys, *base, "compact", "--older-than", "0")
    assert code == 2 and "more than 0 days" in err


# --- retention: a guild the bot left ------------------------------------------------------


async def test_a_departed_guild_is_kept_then_purged(settings, store, songs):
    await populate(settings, store, songs)
    registry = ModelRegistry(settings.models_dir)
    (registry.guild_dir("g1") / "v0001").mkdir(parents=True)
    (settings.tracks_dir / "g1").mkdir(parents=True)
    privacy = privacy_service(settings, store)
    day = 86400.0
    await store.guild_joined("g1", "Guild One")
    await store.guild_joined("g2", "Guild Two")
    await store.guild_left("g1")
    left = (await store.discord_guilds())["g1"]
    assert left is not None and (await store.discord_guilds())["g2"] is None

    # Within the retention period nothing goes, and a guild that returns keeps everything.
    assert await privacy.purge_departed(now=left + 29 * day) == []
    await store.guild_joined("g1", "Guild One")
    assert await privacy.purge_departed(now=left + 31 * day) == []
    assert len(await store.uploads("g1")) == 3

    await store.guild_left("g1")
    left = (await store.discord_guilds())["g1"]
    assert await privacy.purge_departed(now=left + 31 * day) == ["g1"]
    assert await store.uploads("g1") == [] and await store.tracks("g1") == []
    assert await store.member_guilds(BOB) == []
    assert "g1" not in await store.discord_guilds()
    for folder in (settings.uploads_dir / "g1", settings.tracks_dir / "g1",
                   registry.guild_dir("g1")):
        assert not folder.exists()
    assert await store.member_guilds(ALICE) == ["g2"]  # the other guild is untouched


# --- compaction of old listening ----------------------------------------------------------


async def test_compacting_old_listening_keeps_what_rewards_read(settings, store):
    fb = FeedbackService(store)
    t1 = await store.add_track("g1", "v0001", "generated", 30.0, seed=1)
    # Alice heard it in three plays, overlapping; Bob was only present at a start.
    for play, (start, end) in enumerate(((0, 10), (5, 12), (20, 25))):
        await fb.record_listen(t1, ALICE, 1000.0 + play, start, end, play == 1)
    await fb.record_listen(t1, BOB, 1000.0, 0.0, 0.0, True)
    await fb.record_listen(t1, BOB, 2000.0, 3.0, 3.0, False)
    before = {r.member_id: (r.listened_s, r.present_at_start)
              for r in await store.listen_totals([t1])}
    assert before[ALICE] == (17.0, True)

    assert await fb.compact(older_than_days=1) == 0  # all recorded just now: nothing is old
    store.clock = lambda: datetime.now(UTC) + timedelta(days=2)  # noqa: E731 (two days on)
    assert await fb.compact(older_than_days=1) == 2  # alice 3 -> 2 runs, bob 2 -> 1
    after = {r.member_id: (r.listened_s, r.present_at_start)
             for r in await store.listen_totals([t1])}
    assert after == before
    assert [(r.start_s, r.end_s) for r in await store.listens(t1) if r.member_id == ALICE] == [
        (0.0, 12.0), (20.0, 25.0)]
    # A later play adds exactly what it adds.
    await fb.record_listen(t1, ALICE, 9000.0, 11.0, 22.0, False)
    (alice,) = [r for r in await store.listen_totals([t1]) if r.member_id == ALICE]
    assert alice.listened_s == 25.0
    assert await fb.compact(older_than_days=1) == 0  # alice has a fresh row: left alone
