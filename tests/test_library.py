"""The operator's library folder: checked like uploads, read once, given to rounds."""

import os

import numpy as np

from bot.core.audio import encode
from bot.core.library import scan_library

SR = 16000


def _song(path, seconds: float, hz: float = 330.0):
    t = np.arange(int(SR * seconds)) / SR
    return encode((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR, path,
                  path.suffix[1:])


def test_scan_stores_songs_and_says_why_it_skips_files(tmp_path):
    lib = tmp_path / "library"
    (lib / "albums").mkdir(parents=True)
    _song(lib / "a.ogg", 12)
    _song(lib / "albums" / "b.mp3", 14, 440)
    _song(lib / "albums" / "short.wav", 3)
    (lib / "albums" / "notes.mp3").write_text("not audio at all")
    (lib / "cover.jpg").write_bytes(b"\xff\xd8")  # not an audio suffix: ignored
    scan = scan_library(lib, tmp_path / "store")
    assert sorted(os.path.basename(s.source) for s in scan.stored) == ["a.ogg", "b.mp3"]
    assert all(s.stored.endswith(".wav") and os.path.isfile(s.stored) for s in scan.stored)
    assert [round(s.duration_s) for s in scan.stored] == [12, 14]
    reasons = {os.path.basename(s.source): s.rejected for s in scan.rejected}
    assert set(reasons) == {"short.wav", "notes.mp3"}
    assert "0:03" in reasons["short.wav"] and "\n" not in reasons["notes.mp3"]


def test_a_second_scan_reads_only_new_or_changed_files(tmp_path, monkeypatch):
    lib = tmp_path / "library"
    lib.mkdir()
    _song(lib / "a.ogg", 12)
    _song(lib / "b.ogg", 12, 440)
    first = scan_library(lib, tmp_path / "store")
    read = []
    import bot.core.library as library

    real = library.ingest_upload
    monkeypatch.setattr(library, "ingest_upload", lambda p, *a, **k: read.append(p.name)
                        or real(p, *a, **k))
    again = scan_library(lib, tmp_path / "store")
    assert read == [] and [s.stored for s in again.songs] == [s.stored for s in first.songs]
    _song(lib / "b.ogg", 13, 550)  # changed
    _song(lib / "c.ogg", 11)  # new
    os.remove(first.stored[0].stored)  # a stored copy lost: read again
    scan_library(lib, tmp_path / "store")
    assert sorted(read) == ["a.ogg", "b.ogg", "c.ogg"]
    (tmp_path / "store" / "index.json").write_text("{torn")  # a torn index: read everything
    read.clear()
    assert len(scan_library(lib, tmp_path / "store").stored) == 3 and len(read) == 3


def test_a_missing_folder_is_an_empty_library(tmp_path):
    assert scan_library(tmp_path / "nowhere", tmp_path / "store").songs == []
