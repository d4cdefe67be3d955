"""`crowdtune upload` and UploadService on a real song that ffmpeg makes at test time."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import pytest

from bot.cli import main
from bot.core import uploads as upload_service
from bot.core.config import load_settings
from bot.core.ingest import UploadLimits, UploadRejected
from bot.core.store import Store
from bot.core.uploads import UploadService

NOT_AUDIO = "That file isn't audio I can read (it looks like a text file)."


def crowdtune(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "song.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=12", "-ac", "1", "-b:a", "32k", str(path)],
                   check=True)
    return path


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env or ./data from the developer's checkout
    return tmp_path / "data"


def uploads_in_db(data_dir: Path) -> list[tuple]:
    db = data_dir / "crowdtune.sqlite3"
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        return con.execute("SELECT id, guild_id, member_id, original_name, format, file "
                           "FROM uploads ORDER BY id").fetchall()


def files_on_disk(data_dir: Path) -> list[Path]:
    root = data_dir / "uploads"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_upload_new_then_already_known(capsys, data_dir, song, tmp_path):
    code, out, err = crowdtune(capsys, "upload", "--guild", "g1", "--member", "alice",
                               str(song))
    assert code == 0, err
    assert out == f"{song}: new upload #1 (12.0 s, mp3)\n" and err == ""
    (stored,) = files_on_disk(data_dir)
    assert stored.parent == (data_dir / "uploads" / "g1").absolute()
    assert uploads_in_db(data_dir) == [(1, "g1", "alice", "song.mp3", "mp3", str(stored))]

    # The same bytes under another name, by another member: the same song, one upload.
    copy = tmp_path / "renamed.mp3"
    shutil.copy(song, copy)
    code, out, err = crowdtune(capsys, "upload", "--guild", "g1", "--member", "123456789",
                               str(copy), "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["accepted"] is True and row["new"] is False and row["upload_id"] == 1
    assert (row["format"], row["duration_s"], row["stored"]) == ("mp3", 12.0, str(stored))
    assert row["original_name"] == "song.mp3"  # the first upload's record
    assert len(uploads_in_db(data_dir)) == 1 and files_on_disk(data_dir) == [stored]


def test_bad_file_gives_its_reason_exit_2_and_stores_nothing(capsys, data_dir, song, tmp_path):
    bad = tmp_path / "notes.mp3"
    bad.write_text("not a song, just notes\n")
    code, out, err = crowdtune(capsys, "upload", "--guild", "g1", "--member", "alice", str(bad))
    assert code == 2 and out == ""
    assert err == f"crowdtune: error: {bad}: {NOT_AUDIO}\n"
    assert uploads_in_db(data_dir) == [] and files_on_disk(data_dir) == []

    # Several files: the good one is kept, each bad one is one line, and the exit says so.
    code, out, err = crowdtune(capsys, "upload", "--guild", "g1", "--member", "alice",
                               str(bad), str(song), str(tmp_path / "missing.ogg"))
    assert code == 2
    assert out == f"{song}: new upload #1 (12.0 s, mp3)\n"
    assert err.splitlines() == [
        f"crowdtune: error: {bad}: {NOT_AUDIO}",
        f"crowdtune: error: {tmp_path / 'missing.ogg'}: That file could not be read.",
    ]
    assert [r[0] for r in uploads_in_db(data_dir)] == [1]
    assert len(files_on_disk(data_dir)) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["upload", "--guild", "g1", "--member", "../x", "f.mp3"], "invalid member"),
    (["upload", "--guild", "g 1", "--member", "alice", "f.mp3"], "invalid guild"),
    (["upload", "--guild", "g1", "f.mp3"], "required: --member"),
    (["upload", "--guild", "g1", "--member", "alice"], "required: FILE"),
])
def test_bad_arguments_are_one_line(capsys, data_dir, args, message):
    code, out, err = crowdtune(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and message in err


async def test_service_restores_a_missing_file_and_never_keeps_a_second_copy(
        data_dir, song, tmp_path, monkeypatch):
    settings = load_settings(data_dir=data_dir)
    async with await Store.open(settings.db_path) as store:
        service = UploadService(settings, store)
        first, new = await service.ingest("g1", 42, song, "My Song.mp3")
        assert new and first.member_id == "42" and first.original_name == "My Song.mp3"
        stored = Path(first.file)

        # The stored file was lost: the re-upload puts it back, still one upload.
        stored.unlink()
        again, new = await service.ingest("g1", 43, song)
        assert not new and again.id == first.id and stored.is_file()

        # The known file lives elsewhere (the data folder moved) and the hash pre-check is
        # bypassed (a race): the fresh conversion must not stay as a second copy.
        elsewhere = tmp_path / "moved" / stored.name
        elsewhere.parent.mkdir()
        shutil.move(stored, elsewhere)
        await store.set_upload_file(first.id, str(elsewhere))
        monkeypatch.setattr(upload_service, "_known_sha256", lambda *_: None)
        again, new = await service.ingest("g1", 43, song)
        assert not new and again.file == str(elsewhere)
        assert not stored.exists() and elsewhere.is_file()

        # Two members sending the same song at once: one upload, one file.
        a, b = await asyncio.gather(service.ingest("g2", 1, song), service.ingest("g2", 2, song))
        assert sorted([a[1], b[1]]) == [False, True] and a[0].id == b[0].id
        assert [p.name for p in (data_dir / "uploads" / "g2").iterdir()] == [stored.name]

        with pytest.raises(UploadRejected, match="could not be read"):
            await service.ingest("g1", 1, tmp_path / "nope.mp3")
        with pytest.raises(ValueError):
            await service.ingest("../g", 1, song)
        assert len(await store.uploads("g1")) == 1


async def test_service_ingests_an_attachments_bytes_like_a_file(data_dir, song, tmp_path,
                                                                monkeypatch):
    spools = tmp_path / "spools"
    spools.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spools))  # where the bytes are spooled
    settings = load_settings(data_dir=data_dir)
    async with await Store.open(settings.db_path) as store:
        service = UploadService(settings, store)
        row, new = await service.ingest_bytes(
            "g1", 42, song.read_bytes(), "../../My Song.mp3")
        assert new and (row.member_id, row.original_name, row.format) == (
            "42", "My Song.mp3", "mp3")
        assert Path(row.file).parent == data_dir / "uploads" / "g1"
        again, new = await service.ingest("g1", 43, song)  # the same song from the CLI
        assert not new and again.id == row.id

        service.check_size(len(song.read_bytes()))
        service.limits = UploadLimits(max_bytes=1024)
        with pytest.raises(UploadRejected, match=r"the limit is 1 KB\.$"):
            service.check_size(len(song.read_bytes()))
        with pytest.raises(UploadRejected, match=r"the limit is 1 KB\.$"):
            await service.ingest_bytes("g1", 42, song.read_bytes(), "song.mp3")
        with pytest.raises(UploadRejected, match="isn't audio"):
            service.limits = UploadLimits()
            await service.ingest_bytes("g1", 42, b"not really an mp3\n" * 20, "notes.mp3")
        assert len(await store.uploads("g1")) == 1
    assert list(spools.iterdir()) == []  # every spooled file is gone
