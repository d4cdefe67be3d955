"""Backups of the data folder: a consistent snapshot while the bot runs, and verified restores.

A backup folder holds the database, copied through SQLite's online backup API (a consistent
snapshot even while the bot writes), every other file of the data folder except derived data
(`cache/`, `work/`) and files still being written (`.part`), and `manifest.json` with the
sha256 and size of each file. The manifest is written last, into a hidden folder beside the
destination that is renamed into place at the very end: a backup killed at any point leaves
only that hidden folder, without a manifest, and nothing that passes verification.

A restore verifies every hash first, then copies into a hidden folder beside the data folder,
points the database's stored file paths at their new place, checks the database's integrity
and renames the folder into place: an empty (or missing) data folder is either left as it was
or becomes the complete copy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bot.core.errors import UserFacingError
from model.files import sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
DB_NAME = "crowdtune.sqlite3"
DERIVED = frozenset({"cache", "work"})  # rebuilt on demand; never backed up
SCHEDULED = re.compile(r"crowdtune-\d{8}-\d{6}")  # the daily backups' folder names


class BackupError(UserFacingError):
    """A backup or restore that cannot be done; one line saying why."""


@dataclass(frozen=True)
class BackupReport:
    path: Path
    files: int
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "files": self.files, "bytes": self.bytes,
                "seconds": self.seconds}


def _is_empty(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def _data_files(data_dir: Path) -> Iterator[Path]:
    """Files to copy besides the database, relative to `data_dir`."""
    for path in sorted(data_dir.rglob("*")):
        rel = path.relative_to(data_dir)
        if rel.parts[0] in DERIVED or rel.parts[0].startswith(DB_NAME):
            continue
        if path.is_symlink() or not path.is_file() or path.name.endswith(".part"):
            continue
        yield rel


def _fsync_tree(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        if path.is_dir() or path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _put_in_place(tmp: Path, target: Path) -> None:
    """Flush the finished hidden folder and rename it onto `target` (missing or empty)."""
    _fsync_tree(tmp)
    if target.exists():
        target.rmdir()
    os.rename(tmp, target)


def _report(path: Path, files: dict, start: float) -> BackupReport:
    return BackupReport(path, len(files), sum(f["bytes"] for f in files.values()),
                        round(time.perf_counter() - start, 2))


def snapshot_database(db_path: Path, dest: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup API)."""
    src = sqlite3.connect(db_path)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def backup(data_dir: Path, dest: Path) -> BackupReport:
    """Snapshot `data_dir` into the new folder `dest` (it must not exist, or be empty)."""
    start = time.perf_counter()
    data_dir, dest = data_dir.absolute(), dest.absolute()
    db = data_dir / DB_NAME
    if not db.is_file():
        raise BackupError(f"nothing to back up: {db} does not exist")
    if not _is_empty(dest):
        raise BackupError(f"{dest} is not empty; back up into a new folder")
    if dest == data_dir or data_dir in dest.parents:
        raise BackupError("back up to a folder outside the data folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        snapshot_database(db, tmp / DB_NAME)  # first: files added later are only extra
        for rel in _data_files(data_dir):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(data_dir / rel, tmp / rel)
            except FileNotFoundError:  # deleted meanwhile (an upload removed)
                log.info("backup: %s was deleted meanwhile", rel)
        files = {str(p.relative_to(tmp)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": FORMAT, "created_at": time.time(), "data_dir": str(data_dir),
                    "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _put_in_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = _report(dest, files, start)
    log.info("backup of %s: %d files, %d bytes in %.1f s to %s", data_dir, report.files,
             report.bytes, report.seconds, dest)
    return report


def verify(folder: Path) -> dict:
    """The backup's manifest, after checking every file against it; `BackupError` naming
    the first problem (a missing manifest: an incomplete backup)."""
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        raise BackupError(f"{folder} is not a folder")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
    except FileNotFoundError as exc:
        raise BackupError(f"{folder} has no {MANIFEST}: not a backup, or an incomplete "
                          "one") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{manifest_path} is damaged ({exc})") from exc
    if DB_NAME not in files:
        raise BackupError(f"damaged backup: the manifest lists no {DB_NAME}")
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    extra = sorted(present - set(files) - {MANIFEST})
    if extra:
        raise BackupError(f"damaged backup: {extra[0]} is not in the manifest")
    for rel, meta in files.items():
        path = folder / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise BackupError(f"damaged backup: bad path {rel!r} in the manifest")
        if not path.is_file():
            raise BackupError(f"damaged backup: {rel} is missing")
        if path.stat().st_size != meta.get("bytes") or sha256_file(path) != meta.get("sha256"):
            raise BackupError(f"damaged backup: {rel} does not match its sha256")
    return manifest


def restore(folder: Path, data_dir: Path) -> BackupReport:
    """Restore the backup `folder` into `data_dir`, which must be empty or missing."""
    start = time.perf_counter()
    folder, data_dir = folder.absolute(), data_dir.absolute()
    if not _is_empty(data_dir):
        raise BackupError(f"{data_dir} is not empty; restore into an empty data folder")
    manifest = verify(folder)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = data_dir.parent / f".{data_dir.name}.restoring-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for rel in manifest["files"]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / rel, tmp / rel)
        _move_paths(tmp / DB_NAME, Path(manifest["data_dir"]), data_dir)
        _put_in_place(tmp, data_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = _report(data_dir, manifest["files"], start)
    log.info("restored %s into %s (%d files)", folder, data_dir, report.files)
    return report


def _move_paths(db: Path, old: Path, new: Path) -> None:
    """Point stored file paths under the old data folder at the new one; check integrity."""
    con = sqlite3.connect(db)
    try:
        if con.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise BackupError("damaged backup: the database fails its integrity check")
        if old != new:
            prefix = f"{old}{os.sep}"
            for table in ("uploads", "tracks"):
                con.execute(f"UPDATE {table} SET file = ? || substr(file, ?) "  # noqa: S608
                            "WHERE substr(file, 1, ?) = ?",
                            (f"{new}{os.sep}", len(prefix) + 1, len(prefix), prefix))
            con.commit()
    finally:
        con.close()


def scheduled_backup(data_dir: Path, root: Path, keep: int,
                     now: datetime | None = None) -> BackupReport:
    """The daily backup: a new `crowdtune-YYYYmmdd-HHMMSS` folder under `root`, then the
    oldest such folders beyond `keep` deleted (other folders there are left alone)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    report = backup(data_dir, root / f"crowdtune-{stamp}")
    ours = sorted(p for p in root.iterdir() if p.is_dir() and SCHEDULED.fullmatch(p.name))
    for old in ours[:-keep] if keep > 0 else []:
        log.info("backup: removing the old backup %s", old)
        shutil.rmtree(old, ignore_errors=True)
    # Hidden leftovers of backups killed mid-way (never valid; see the module docstring).
    for stale in root.glob(".crowdtune-*.partial-*"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 86400:
                shutil.rmtree(stale, ignore_errors=True)
    return report
