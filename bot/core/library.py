"""The operator's library: a folder of audio every guild's fine-tuning may rehearse.

`CROWDTUNE_LIBRARY_DIR` names a folder (searched recursively) of songs an operator owns or
may use: the music a server is about. Each file goes through the uploads' pipeline
(bot/core/ingest.py: size, ffprobe, duration/channel/rate limits, decode, loudness) and is
stored once as `<data_dir>/library/<sha256>.wav`. An index (`index.json` there) remembers
each source file by path, size and modification time, with what became of it (stored, or
the one-line reason it was rejected), so a round re-reads only new or changed files.

Fine-tuning's replay draws from the guild's uploads, then this library, then the built-in
corpus (model/finetune.py); the reward model picks the library songs the guild would like.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.core.ingest import DEFAULT_LIMITS, UploadLimits, UploadRejected, ingest_upload
from model.files import atomic_path

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".ogg", ".opus", ".flac", ".m4a", ".aac", ".aif",
                            ".aiff", ".wma", ".webm", ".mka"})


@dataclass(frozen=True)
class LibrarySong:
    source: str  # the file in the operator's folder
    size: int
    mtime: float
    stored: str | None = None  # the converted WAV; None when rejected
    duration_s: float = 0.0
    rejected: str | None = None  # the one-line reason


@dataclass(frozen=True)
class LibraryScan:
    songs: list[LibrarySong]  # every audio file found, stored or rejected

    @property
    def stored(self) -> list[LibrarySong]:
        return [s for s in self.songs if s.stored]

    @property
    def rejected(self) -> list[LibrarySong]:
        return [s for s in self.songs if s.rejected]


def _load_index(path: Path) -> dict[str, LibrarySong]:
    try:
        return {d["source"]: LibrarySong(**d) for d in json.loads(path.read_text())}
    except (OSError, ValueError, TypeError, KeyError):
        return {}  # missing or torn: every file is read again


def scan_library(folder: Path, store_dir: Path, limits: UploadLimits = DEFAULT_LIMITS,
                 max_files: int = 2000) -> LibraryScan:
    """Ingest the new or changed audio files under `folder` into `store_dir` (blocking: run
    it in a thread). A missing folder is an empty library; at most `max_files` files (in
    path order) are considered."""
    if not folder.is_dir():
        log.warning("library folder %s does not exist: no library", folder)
        return LibraryScan([])
    store_dir.mkdir(parents=True, exist_ok=True)
    index_path = store_dir / "index.json"
    known = _load_index(index_path)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES
                   and p.is_file())[:max_files]
    songs = []
    for path in files:
        st = path.stat()
        old = known.get(str(path))
        if (old and old.size == st.st_size and old.mtime == st.st_mtime
                and (old.rejected or (old.stored and Path(old.stored).is_file()))):
            songs.append(old)
            continue
        try:
            got = ingest_upload(path, store_dir, limits=limits)
            songs.append(LibrarySong(str(path), st.st_size, st.st_mtime, str(got.path),
                                     round(got.duration_s, 2)))
        except UploadRejected as exc:
            log.info("library file %s skipped: %s", path, exc.reason)
            songs.append(LibrarySong(str(path), st.st_size, st.st_mtime, rejected=exc.reason))
    with atomic_path(index_path) as tmp:
        tmp.write_text(json.dumps([asdict(s) for s in songs], indent=1))
    return LibraryScan(songs)
