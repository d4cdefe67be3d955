"""File primitives shared by every layer: atomic writes, content hashes, plain WAVs.

A reader never sees half a file or half a folder: everything is written under a temporary
name beside its destination and renamed into place (a rename within one file system is
atomic), and a failure leaves nothing behind. No torch here: the CLI imports it cheaply.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; whatever was written there replaces `path` when
    the block ends without an error (and is removed when it raises)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; it becomes `path` (replacing what was
    there) when the block ends without an error, and is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex), read in 1 MiB chunks; OSError when it cannot be read."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_wav(path: Path, audio, sample_rate: int) -> Path:
    """Mono float audio in [-1, 1] as a 16-bit PCM WAV (no ffmpeg: the stdlib's wave)."""
    import numpy as np

    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return Path(path)
