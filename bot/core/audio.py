"""Writing generated audio to files through pydub and the system's ffmpeg."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydub import AudioSegment

from model.files import atomic_path

FORMATS = {"ogg": ("ogg", "libopus", "96k"), "mp3": ("mp3", "libmp3lame", "160k")}


def to_segment(audio: np.ndarray, sample_rate: int) -> AudioSegment:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    return AudioSegment(pcm.tobytes(), frame_rate=sample_rate, sample_width=2, channels=1)


def encode(audio: np.ndarray, sample_rate: int, path: Path, fmt: str) -> Path:
    """Encode a mono waveform to `path` (format "ogg" = Opus, "mp3" or "wav").

    Written to a temporary name and renamed, so a half-encoded file never appears.
    """
    segment = to_segment(audio, sample_rate)
    with atomic_path(path, fsync=False) as tmp:
        if fmt == "wav":
            segment.export(tmp, format="wav")
        else:
            container, codec, bitrate = FORMATS[fmt]
            # Opus runs at 48 kHz; resampling here keeps ffmpeg from picking a lower rate.
            if fmt == "ogg":
                segment = segment.set_frame_rate(48000)
            segment.export(tmp, format=container, codec=codec, bitrate=bitrate)
    return path
