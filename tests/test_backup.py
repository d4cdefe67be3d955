"""Backup and restore of a data folder: consistent while the store is open, every hash checked,
damaged and interrupted backups refused, paths moved to the new folder, daily rotation."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.cli import main
from bot.core.backup import BackupError, backup, restore, scheduled_backup, verify
from bot.core.config import BotSettings
from bot.core.feedback import FeedbackService
from bot.core.store import ModelVersionRow, Store
from bot.core.uploads import UploadService


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("song") / "song.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=11", str(path)], check=True)
    return path


async def fill(data_dir: Path, song: Path) -> Store:
    """A data folder in use: votes, an upload, a track file, a model folder, a cache; the
    store is left open (WAL not checkpointed), as the running bot holds it."""
    settings = BotSettings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    store = await Store.open(settings.db_path)
    await store.record_model_version(ModelVersionRow("g", "v0001", None, "x", "base", 0.0))
    track_file = settings.tracks_dir / "g" / "track-1.ogg"
    track_file.parent.mkdir(parents=True)
    track_file.write_bytes(b"OggS" + bytes(1000))
    t = await store.add_track("g", "v0001", "generated", 20.0, seed=1)
    await store.set_track_file(t, str(track_file.absolute()))
    await FeedbackService(store).record_vote(t, "123456789", 4)
    await UploadService(settings, store).ingest("g", "123456789", song)
    base = settings.models_dir / "base"
    base.mkdir(parents=True)
    (base / "model_index.json").write_text("{}")
    (data_dir / "cache").mkdir()
    (data_dir / "cache" / "pool.npz").write_bytes(bytes(100))  # derived: not backed up
    return store


async def test_backup_while_open_then_restore_elsewhere(tmp_path, song):
    store = await fill(tmp_path / "data", song)
    try:
        report = backup(tmp_path / "data", tmp_path / "bk")
    finally:
        await store.close()
    manifest = verify(tmp_path / "bk")
    assert report.files == len(manifest["files"]) == 4  # db, track, upload, model index
    assert not any(name.startswith("cache") for name in manifest["files"])

    restore(tmp_path / "bk", tmp_path / "new")
    restored = await Store.open(tmp_path / "new" / "crowdtune.sqlite3")
    try:
        (upload,) = await restored.uploads("g")
        (track,) = await restored.tracks("g")
        assert [v.stars for v in await restored.votes(track.id)] == [4]
    finally:
        await restored.close()
    new = (tmp_path / "new").absolute()
    assert Path(upload.file).parent == new / "uploads" / "g" and Path(upload.file).is_file()
    assert track.file == str(new / "tracks" / "g" / "track-1.ogg")
    assert Path(track.file).read_bytes() == (tmp_path / "data" / "tracks" / "g" /
                                             "track-1.ogg").read_bytes()
    assert not list(tmp_path.glob(".*"))  # no hidden leftovers


async def test_damaged_backups_and_busy_targets_are_refused(tmp_path, song):
    store = await fill(tmp_path / "data", song)
    await store.close()
    bk = tmp_path / "bk"
    backup(tmp_path / "data", bk)
    with pytest.raises(BackupError, match="is not empty; back up into a new folder"):
        backup(tmp_path / "data", bk)
    with pytest.raises(BackupError, match="is not empty; restore into an empty data folder"):
        restore(bk, tmp_path / "data")

    upload = next((bk / "uploads" / "g").iterdir())
    good = upload.read_bytes()
    upload.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    with pytest.raises(BackupError, match=r"uploads/g/.*\.wav does not match its sha256"):
        restore(bk, tmp_path / "new")
    upload.write_bytes(good)
    (bk / "models" / "base" / "model_index.json").unlink()
    with pytest.raises(BackupError, match="models/base/model_index.json is missing"):
        restore(bk, tmp_path / "new")
    (bk / "manifest.json").unlink()
    with pytest.raises(BackupError, match="no manifest.json: not a backup, or an incomplete"):
        restore(bk, tmp_path / "new")
    assert not (tmp_path / "new").exists()


KILLER = """
import os, shutil, signal, sys
from pathlib import Path
import bot.core.backup as b
copies = []
real = shutil.copy2
def copy_then_die(src, dst):
    real(src, dst)
    copies.append(dst)
    if len(copies) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
b.shutil.copy2 = copy_then_die
b.backup(Path(sys.argv[1]), Path(sys.argv[2]))
"""


@pytest.mark.parametrize("after", [1, 3])
async def test_a_killed_backup_leaves_nothing_that_verifies(tmp_path, song, after):
    store = await fill(tmp_path / "data", song)
    await store.close()
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path / "data"),
                           str(tmp_path / "bk"), str(after)], cwd=Path(__file__).parent.parent)
    assert proc.returncode == -9
    assert not (tmp_path / "bk").exists()
    (partial,) = tmp_path.glob(".bk.partial-*")
    with pytest.raises(BackupError, match="no manifest.json"):
        restore(partial, tmp_path / "new")


async def test_daily_backups_keep_the_newest(tmp_path, song):
    store = await fill(tmp_path / "data", song)
    await store.close()
    root = tmp_path / "backups"
    (root / "mine").mkdir(parents=True)  # not ours: left alone
    for day in range(1, 5):
        scheduled_backup(tmp_path / "data", root, keep=2,
                         now=datetime(2026, 12, day, 4, tzinfo=UTC))
    assert sorted(p.name for p in root.iterdir()) == [
        "crowdtune-20261203-040000", "crowdtune-20261204-040000", "mine"]


def test_cli_backup_and_restore(capsys, tmp_path, song, monkeypatch):
    async def prepare() -> None:
        await (await fill(tmp_path / "data", song)).close()

    asyncio.run(prepare())
    monkeypatch.chdir(tmp_path)

    def crowdtune(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out, err = capsys.readouterr()
        return int(exc.value.code), out, err

    code, out, _ = crowdtune("--data-dir", "data", "backup", "bk", "--json")
    assert code == 0 and json.loads(out)["files"] == 4
    code, out, _ = crowdtune("--data-dir", "restored", "restore", "bk")
    assert code == 0 and out.startswith("restored bk into ")
    code, _, err = crowdtune("--data-dir", "restored", "restore", "bk")
    assert code == 2 and err.startswith("crowdtune: error: ") and "is not empty" in err
    code, _, err = crowdtune("--data-dir", "nowhere", "backup", "bk2")
    assert code == 2 and "nothing to back up" in err


async def test_a_backup_taken_while_votes_are_written_has_every_committed_vote(tmp_path, song):
    store = await fill(tmp_path / "data", song)
    (track,) = await store.tracks("g")
    feedback = FeedbackService(store)
    committed: list[int] = []
    stop = asyncio.Event()

    async def vote_all_the_time() -> None:
        i = 0
        while not stop.is_set():
            await feedback.record_vote(track.id, str(10_000 + i), 1 + i % 5)
            committed.append(i)
            i += 1

    writer = asyncio.create_task(vote_all_the_time())
    while len(committed) < 50:
        await asyncio.sleep(0.01)
    before = len(committed)
    await asyncio.to_thread(backup, tmp_path / "data", tmp_path / "bk")
    during = len(committed)
    stop.set()
    await writer
    await store.close()
    assert during > before  # votes were written while the backup ran

    restore(tmp_path / "bk", tmp_path / "new")
    restored = await Store.open(tmp_path / "new" / "crowdtune.sqlite3")
    try:
        voters = {v.member_id for v in await restored.votes(track.id)} - {"123456789"}
    finally:
        await restored.close()
    # A consistent snapshot: every vote committed before it began, and a prefix of the rest.
    assert len(voters) >= before
    assert voters == {str(10_000 + i) for i in range(len(voters))}
