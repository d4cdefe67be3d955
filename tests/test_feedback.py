"""FeedbackService: the bot's path (votes, listening) and `crowdtune feedback import`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.core.feedback import FeedbackError, FeedbackFileError, FeedbackService
from bot.core.listening import ListenTracker
from bot.core.store import ModelVersionRow, Store

CSV_HEADER = "track_id,member_id,stars,listened_s\n"


async def make_tracks(db: Path) -> Store:
    """Track 1 (20 s) and track 2 (30 s) in guild g."""
    s = await Store.open(db)
    await s.record_model_version(ModelVersionRow("g", "v0001", None, "x", "base", 0.0))
    assert await s.add_track("g", "v0001", "generated", 20.0, seed=1) == 1
    assert await s.add_track("g", "v0001", "baseline", 30.0, seed=2) == 2
    return s


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await make_tracks(tmp_path / "db.sqlite3") as s:
        yield s


def snapshot(tmp_path: Path) -> tuple[list, list]:
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        return (db.execute("SELECT * FROM votes ORDER BY 1, 2").fetchall(),
                db.execute("SELECT * FROM listens ORDER BY 1, 2, 3, 4").fetchall())


async def test_record_vote_validates_and_upserts(store):
    fb = FeedbackService(store)
    assert await fb.record_vote(1, 1234567890123, 4)  # a snowflake is stored as text
    assert not await fb.record_vote(1, "1234567890123", 4)  # the same vote again
    assert await fb.record_vote(1, 1234567890123, 2)
    assert [(v.member_id, v.stars) for v in await store.votes(1)] == [("1234567890123", 2)]
    for bad, match in [((99, "a", 3), "unknown track 99"), ((1, "a", 0), "from 1 to 5"),
                       ((1, "a", 3.5), "from 1 to 5"), ((1, "a", True), "from 1 to 5"),
                       ((1, "../x", 3), "invalid member id")]:
        with pytest.raises(FeedbackError, match=match):
            await fb.record_vote(*bad)
    assert await fb.remove_vote(1, 1234567890123)
    assert not await fb.remove_vote(1, 1234567890123)


async def test_record_listen_validates_and_clips(store):
    fb = FeedbackService(store)
    for args, match in [((99, "a", 1.0, 0, 5, True), "unknown track"),
                        ((1, "a", 1.0, -1, 5, True), "negative"),
                        ((1, "a", 1.0, 6, 5, True), "before it starts"),
                        ((1, "a", 1.0, 0, 21, True), "longer than track 1"),
                        ((1, "a", 1.0, 0, float("nan"), True), "finite")]:
        with pytest.raises(FeedbackError, match=match):
            await fb.record_listen(*args)
    assert await fb.record_listen(1, "a", 1.0, 10.0, 20.4, True)  # within 0.5 s: clipped
    (row,) = await store.listens(1)
    assert (row.start_s, row.end_s) == (10.0, 20.0)


async def test_record_play_persists_a_listen_tracker(store):
    fb = FeedbackService(store)
    tracker = ListenTracker()
    tracker.track_started(7, 1, 20.0, at=100.0, listeners_present=[1, 2])
    closed = tracker.member_update(7, 2, False, at=100.0)  # left at once: no interval
    closed += tracker.member_update(7, 1, False, at=105.0)
    tracker.member_update(7, 1, True, at=107.0)
    tracker.member_update(7, 3, True, at=110.0)  # joined late
    play = tracker.current(7)
    assert play is not None
    await fb.record_play(play, closed)
    closed += tracker.track_ended(7, at=125.0)  # ends at 120: the track's own end
    await fb.record_play(play, closed)  # again with everything: replays change nothing
    assert await fb.record_play(play, closed) == 0
    totals = {x.member_id: (x.listened_s, x.present_at_start)
              for x in await store.listen_totals([1])}
    assert totals == {"1": (18.0, True), "2": (0.0, True), "3": (10.0, False)}


async def test_import_csv_keeps_good_rows_and_reports_bad_ones(store, tmp_path):
    path = tmp_path / "feedback.csv"
    path.write_text(
        CSV_HEADER
        + "1,alice,5,18\n"        # 2: good, vote + listen
        + "2,bob,3,\n"            # 3: good, vote only
        + "\n"                    # 4: blank, skipped
        + "2,carl,,29.7\n"        # 5: good, listen only (tolerance: clipped)
        + "99,alice,4,\n"         # 6: unknown track
        + "1,dan,0,\n"            # 7: stars 0
        + "1,dan,6,\n"            # 8: stars 6
        + "1,dan,3.5,\n"          # 9: stars 3.5
        + "1,dan,x,\n"            # 10: stars "x"
        + "1,dan,,-2\n"           # 11: negative listening
        + "1,dan,4,25\n"          # 12: longer than the track (20 s): nothing of the row kept
        + "1, ,4,\n"              # 13: blank member
        + "1,erin,,\n"            # 14: neither
        + "1,erin,4\n"            # 15: too few fields
        + '"1",frank,"2",\n'      # 16: quoted, good
        + "1,gus,4.0,0\n")        # 17: integral stars, present for 0 s: good
    fb = FeedbackService(store)
    summary = await fb.import_file(path)
    assert summary.format == "csv" and summary.rows == 15
    assert (summary.votes, summary.votes_changed, summary.listens, summary.listens_changed) == (
        4, 4, 3, 3)
    assert [(e.line, e.reason) for e in summary.errors] == [
        (6, "unknown track 99"),
        (7, "stars must be a whole number from 1 to 5, got '0'"),
        (8, "stars must be a whole number from 1 to 5, got '6'"),
        (9, "stars must be a whole number from 1 to 5, got '3.5'"),
        (10, "stars must be a whole number from 1 to 5, got 'x'"),
        (11, "listened_s is negative (-2)"),
        (12, "listened_s 25 is longer than track 1 (20 s)"),
        (13, "missing member_id"),
        (14, "the row has neither stars nor listened_s"),
        (15, "expected 4 fields, got 3"),
    ]
    assert summary.rejected == 10
    votes = {(v.track_id, v.member_id): v.stars for t in (1, 2) for v in await store.votes(t)}
    assert votes == {(1, "alice"): 5, (2, "bob"): 3, (1, "frank"): 2, (1, "gus"): 4}
    totals = {(x.track_id, x.member_id): (x.listened_s, x.present_at_start)
              for x in await store.listen_totals([1, 2])}
    assert totals == {(1, "alice"): (18.0, True), (2, "carl"): (29.7, True),
                      (1, "gus"): (0.0, True)}

    before = snapshot(tmp_path)
    again = await fb.import_file(path)  # the same file again changes nothing
    assert (again.votes, again.votes_changed, again.listens, again.listens_changed) == (
        4, 0, 3, 0)
    assert again.errors == summary.errors
    assert snapshot(tmp_path) == before


async def test_import_jsonl_with_good_and_bad_lines(store, tmp_path):
    path = tmp_path / "feedback.jsonl"
    lines = [
        {"track_id": 1, "member_id": "alice", "stars": 4, "listened_s": 12.5},   # 1
        {"track_id": 2, "member_id": 987654321098765432, "stars": 2},            # 2
        '{"track_id": 1, "member_id": "bob", "stars": 5',                         # 3 malformed
        {"track_id": 1, "member_id": "", "stars": 3},                             # 4
        {"track_id": 1, "member_id": "carl", "stars": 6},                         # 5
        {"track_id": 1, "member_id": "carl", "stars": 3.5},                       # 6
        {"track_id": 1, "member_id": "carl", "stars": "x"},                       # 7
        {"track_id": 1, "member_id": "carl", "listened_s": -1},                   # 8
        {"track_id": 1, "member_id": "carl", "listened_s": 21},                   # 9
        {"track_id": 42, "member_id": "carl", "stars": 3},                        # 10
        {"track_id": 1, "member_id": "carl", "listened": 3},                      # 11
        "[1, 2]",                                                                 # 12
        "",                                                                       # 13 blank
        {"track_id": 1, "member_id": "dan", "stars": None, "listened_s": 20.2},  # 14 good
    ]
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))
    fb = FeedbackService(store)
    summary = await fb.import_file(path)
    assert summary.format == "jsonl" and summary.rows == 13
    got = {e.line: e.reason for e in summary.errors}
    assert sorted(got) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert got[3].startswith("malformed JSON")
    assert got[4] == "missing member_id"
    assert got[5] == "stars must be a whole number from 1 to 5, got 6"
    assert got[6] == "stars must be a whole number from 1 to 5, got 3.5"
    assert got[7] == "stars must be a whole number from 1 to 5, got 'x'"
    assert got[8] == "listened_s is negative (-1)"
    assert got[9] == "listened_s 21 is longer than track 1 (20 s)"
    assert got[10] == "unknown track 42"
    assert got[11].startswith("unknown key 'listened'")
    assert got[12] == "expected a JSON object"
    assert (summary.votes, summary.listens) == (2, 2)
    assert [(v.member_id, v.stars) for v in await store.votes(2)] == [
        ("987654321098765432", 2)]
    totals = {x.member_id: x.listened_s for x in await store.listen_totals([1])}
    assert totals == {"alice": 12.5, "dan": 20.0}
    before = snapshot(tmp_path)
    again = await fb.import_file(path)
    assert (again.votes_changed, again.listens_changed) == (0, 0)
    assert snapshot(tmp_path) == before


async def test_imported_feedback_is_stored_like_the_bots(store, tmp_path):
    fb = FeedbackService(store)
    await fb.record_vote(1, "alice", 2)
    await fb.record_listen(1, "alice", 0.0, 0.0, 15.0, True)
    path = tmp_path / "f.csv"
    path.write_text(CSV_HEADER + "1,alice,2,15\n")
    summary = await fb.import_file(path)
    assert (summary.votes_changed, summary.listens_changed) == (0, 0)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.csv", None, "cannot read"),
    ("empty.csv", b"", "is empty"),
    ("blank.jsonl", b"\n  \n", "is empty"),
    ("song.mp3", b"ID3\x04\x00\xff\xfe\x00\x00", "not a text file"),
    ("notes.txt", b"remember to rate track 3\n", "neither"),
    ("typo.csv", b"track_id,member_id,listen_s\n1,a,3\n", "neither"),
    ("array.json", b'[{"track_id": 1}]\n', "JSON array"),
])
async def test_unusable_files_are_one_error(store, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(FeedbackFileError, match=message) as exc:
        await FeedbackService(store).import_file(path)
    assert "\n" not in str(exc.value)
    with pytest.raises(FeedbackFileError, match="cannot read"):
        await FeedbackService(store).import_file(tmp_path)  # a folder


async def test_csv_line_numbers_follow_multiline_quoted_fields(store, tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("member_id,track_id,stars\n"
                    '"al\nice",1,4\n'       # lines 2-3: an invalid member
                    "bob,1,9\n")           # line 4
    summary = await FeedbackService(store).import_file(path)
    assert [e.line for e in summary.errors] == [2, 4]


# --- the command line -----------------------------------------------------------------------

def crowdtune(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


def test_cli_feedback_import(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env or ./data from the developer's checkout
    asyncio.run(_close(make_tracks(tmp_path / "data" / "crowdtune.sqlite3")))
    path = tmp_path / "f.csv"
    path.write_text(CSV_HEADER + "1,alice,5,10\n1,bob,7,\n")
    code, out, err = crowdtune(capsys, "feedback", "import", str(path))
    assert code == 0
    assert err == f"{path}:3: stars must be a whole number from 1 to 5, got '7'\n"
    assert out == (f"{path} (csv): 2 rows; 1 votes recorded (1 new or changed), 1 listens "
                   "recorded (1 new or longer), 1 rows rejected\n")
    code, out, err = crowdtune(capsys, "feedback", "import", str(path), "--json")
    assert code == 0
    result = json.loads(out)
    assert (result["votes"], result["votes_changed"], result["rejected"]) == (1, 0, 1)
    assert result["errors"] == [{"line": 3, "reason": "stars must be a whole number from 1 "
                                 "to 5, got '7'"}]
    code, out, err = crowdtune(capsys, "feedback", "import", "nope.csv")
    assert code == 2 and out == ""
    assert err == "crowdtune: error: cannot read nope.csv: No such file or directory\n"
    code, out, err = crowdtune(capsys, "feedback", "import")
    assert code == 2 and len(err.splitlines()) == 1 and "FILE" in err


async def _close(opening) -> None:
    await (await opening).close()
