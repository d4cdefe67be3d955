"""Upload ingestion against real files that ffmpeg makes at test time (about 12 s each)."""

from __future__ import annotations

import random
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from pydub import AudioSegment

from bot.core import ingest as uploads
from bot.core.ingest import (
    DEFAULT_LIMITS,
    MIB,
    IngestedUpload,
    UploadLimits,
    UploadRejected,
    check_size,
    display_name,
    ingest_upload,
    spool_bytes,
)

SINE = "sine=frequency=440:duration=12"
# name -> (ffmpeg output args, expected container, codec, original rate, channels)
GOOD = {
    "song.mp3": (["-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "64k"],
                 "mp3", "mp3", 44100, 2),
    "song.ogg": (["-ac", "2", "-ar", "48000", "-c:a", "libopus", "-b:a", "48k"],
                 "ogg", "opus", 48000, 2),
    "song.wav": (["-ac", "1", "-ar", "22050", "-c:a", "pcm_s16le"], "wav", "pcm_s16le", 22050, 1),
    "song.flac": (["-ac", "2", "-ar", "48000", "-c:a", "flac", "-sample_fmt", "s32"],
                  "flac", "flac", 48000, 2),
    "song.m4a": (["-ac", "2", "-ar", "44100", "-c:a", "aac", "-b:a", "64k"],
                 "mp4", "aac", 44100, 2),
}  # fmt: skip

BAD_CORRUPT = "That file looks corrupt: ffprobe could not read it."
NO_AUDIO = "That file isn't audio I can read (no audio stream found)."


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2").tobytes())


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every fixture file, made once per session."""
    d = tmp_path_factory.mktemp("media")
    for name, (args, *_rest) in GOOD.items():
        # Different levels per format, so normalisation has real work to do.
        volume = {"song.wav": "0.2", "song.flac": "4"}.get(name, "1")
        ffmpeg("-f", "lavfi", "-i", SINE, "-af", f"volume={volume}", *args, str(d / name))
    video = "-f lavfi -i testsrc=size=64x64:rate=5:duration=12 -c:v mpeg4".split()
    ffmpeg(*video, "-f", "lavfi", "-i", SINE, "-c:a", "aac", str(d / "video_sound.mp4"))
    ffmpeg(*video, "-t", "2", str(d / "video_silent.mp4"))
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32", "-frames:v", "1", str(d / "image.png"))
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "12", str(d / "silence.wav"))
    (d / "notes.txt").write_text("my favourite songs:\n1. something\n" * 20)
    (d / "notes.mp3").write_text("not really an mp3\n" * 20)
    (d / "random.mp3").write_bytes(random.Random(0).randbytes(64_000))
    m4a = (d / "song.m4a").read_bytes()
    (d / "truncated.m4a").write_bytes(m4a[:2000])  # header cut: no moov atom
    (d / "truncated.wav").write_bytes((d / "song.wav").read_bytes()[:30])
    # The frame headers promise 12 s, but only the first quarter of the data is there.
    mp3 = (d / "song.mp3").read_bytes()
    (d / "cut.mp3").write_bytes(mp3[: len(mp3) // 4])
    # Quiet music with a few full-scale spikes: the RMS gain would clip them.
    t = np.arange(12 * 16000) / 16000
    spiky = 0.01 * np.sin(2 * np.pi * 440 * t)
    spiky[::16000] = 0.99
    write_wav(d / "spiky.wav", spiky)
    return d


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "guild" / "uploads"


def assert_no_files(dest: Path) -> None:
    assert not dest.exists() or list(dest.iterdir()) == []


def ingest_bytes(data: bytes, filename: str, dest: Path,
                 limits: UploadLimits = DEFAULT_LIMITS) -> IngestedUpload:
    """What `UploadService.ingest_bytes` does with an attachment, without the database."""
    path = spool_bytes(data, filename)
    try:
        return ingest_upload(path, dest, original_name=filename, limits=limits)
    finally:
        shutil.rmtree(path.parent)


def reject(source: Path, dest: Path, limits: UploadLimits = DEFAULT_LIMITS, **kw: str) -> str:
    with pytest.raises(UploadRejected) as info:
        ingest_upload(source, dest, limits=limits, **kw)
    assert_no_files(dest)
    reason = str(info.value)
    assert reason == info.value.reason and "\n" not in reason
    return reason


# ------------------------------------------------------------------------------ good files


# Every WAV flavour: codec x layout x rate, each a real file ffmpeg writes (ADPCM is what
# many recorders and old games write; pydub once refused it as corrupt).
WAV_FLAVOURS = [
    ("adpcm_ms", "stereo", 44100), ("adpcm_ima_wav", "stereo", 22050),
    ("pcm_u8", "mono", 8000), ("pcm_s16le", "stereo", 48000), ("pcm_s24le", "stereo", 96000),
    ("pcm_s32le", "5.1", 48000), ("pcm_f32le", "7.1", 44100), ("pcm_f64le", "mono", 192000),
    ("pcm_u8", "7.1", 192000), ("adpcm_ima_wav", "mono", 8000),
]  # fmt: skip


@pytest.mark.parametrize(("codec", "layout", "rate"), WAV_FLAVOURS)
def test_every_wav_flavour_is_decoded(tmp_path: Path, dest: Path, codec: str, layout: str,
                                      rate: int):
    src = tmp_path / "song.wav"
    tone = "sine=frequency=440:duration=11"
    ffmpeg("-f", "lavfi", "-i", tone, "-af", f"volume=0.5,aformat=channel_layouts={layout}",
           "-ar", str(rate), "-c:a", codec, str(src))
    up = ingest_upload(src, dest)

    channels = {"mono": 1, "stereo": 2, "5.1": 6, "7.1": 8}[layout]
    assert (up.container, up.codec, up.sample_rate, up.channels) == ("wav", codec, rate, channels)
    # ADPCM pads its last block (up to a quarter second at 8 kHz).
    assert up.duration_s == pytest.approx(11.0, abs=0.3)
    out = AudioSegment.from_wav(up.path)
    assert out.dBFS == pytest.approx(DEFAULT_LIMITS.target_rms_dbfs, abs=0.5)
    samples = np.array(out.get_array_of_samples(), dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.fft.rfftfreq(len(samples), 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=2)



@pytest.mark.parametrize("name", sorted(GOOD))
def test_each_format_is_stored_as_normalised_mono_16k_wav(media: Path, dest: Path, name: str):
    _args, container, codec, rate, channels = GOOD[name]
    up = ingest_upload(media / name, dest)

    assert isinstance(up, IngestedUpload)
    assert (up.container, up.codec, up.sample_rate, up.channels) == (
        container, codec, rate, channels,
    )  # fmt: skip
    assert up.format == (container if container == codec else f"{container}/{codec}")
    assert up.original_name == name
    assert up.size_bytes == (media / name).stat().st_size
    assert up.duration_s == pytest.approx(12.0, abs=0.1)
    assert up.path == dest / f"{up.sha256}.wav"
    assert list(dest.iterdir()) == [up.path]  # no temporary left beside it

    out = AudioSegment.from_wav(up.path)
    assert (out.channels, out.frame_rate, out.sample_width) == (1, 16000, 2)
    assert len(out) / 1000 == pytest.approx(up.duration_s, abs=0.01)
    assert out.dBFS == pytest.approx(DEFAULT_LIMITS.target_rms_dbfs, abs=0.3)
    assert out.max_dBFS <= DEFAULT_LIMITS.peak_ceiling_dbfs + 0.01
    # Still a 440 Hz tone after decoding, mixing down and resampling.
    samples = np.array(out.get_array_of_samples(), dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.fft.rfftfreq(len(samples), 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_peaks_are_capped_below_the_ceiling_instead_of_clipping(media: Path, dest: Path):
    up = ingest_upload(media / "spiky.wav", dest)
    out = AudioSegment.from_wav(up.path)
    assert out.max_dBFS == pytest.approx(DEFAULT_LIMITS.peak_ceiling_dbfs, abs=0.1)
    assert out.dBFS < DEFAULT_LIMITS.target_rms_dbfs - 3  # quieter than target, not clipped


def test_video_with_sound_gives_its_audio(media: Path, dest: Path):
    up = ingest_upload(media / "video_sound.mp4", dest)
    assert (up.container, up.codec) == ("mp4", "aac")
    assert up.duration_s == pytest.approx(12.0, abs=0.1)
    assert AudioSegment.from_wav(up.path).dBFS == pytest.approx(-20.0, abs=0.3)


def test_same_file_twice_gives_same_sha256(media: Path, dest: Path, tmp_path: Path):
    first = ingest_upload(media / "song.mp3", dest)
    copy = tmp_path / "renamed copy.mp3"
    shutil.copy(media / "song.mp3", copy)
    second = ingest_upload(copy, dest)
    other = ingest_upload(media / "song.flac", dest)

    assert first.sha256 == second.sha256 and first.path == second.path
    assert second.original_name == "renamed copy.mp3"
    assert other.sha256 != first.sha256
    assert sorted(dest.iterdir()) == sorted({first.path, other.path})


def test_spooled_bytes_ingest_like_the_file(media: Path, dest: Path):
    data = (media / "song.ogg").read_bytes()
    up = ingest_bytes(data, "My Song.ogg", dest)
    assert up.original_name == "My Song.ogg"
    assert up.sha256 == ingest_upload(media / "song.ogg", dest).sha256
    assert up.codec == "opus"


# ------------------------------------------------------------------------------ path safety


@pytest.mark.parametrize("evil", ["../../evil.mp3", "..\\..\\evil.mp3", "/etc/evil.mp3", ".."])
def test_uploader_name_never_becomes_a_path(media: Path, tmp_path: Path, evil: str):
    dest = tmp_path / "a" / "b" / "uploads"
    up = ingest_bytes((media / "song.mp3").read_bytes(), evil, dest)
    assert up.path.parent == dest and up.path.name == f"{up.sha256}.wav"
    assert up.original_name == ("upload" if evil == ".." else "evil.mp3")
    up2 = ingest_upload(media / "song.mp3", dest, original_name=evil)
    assert up2.path == up.path
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [up.path]


@pytest.mark.parametrize(("name", "spooled"), [
    ("song.mp3", "upload.mp3"), ("../../evil.MP3", "upload.MP3"), ("/etc/x.ogg", "upload.ogg"),
    ("..", "upload"), ("a.mp3;rm -rf", "upload"), ("x.mp3/../../y", "upload"),
    ("clip.toolongext", "upload")])
def test_spooled_file_name_is_never_the_members(tmp_path: Path, name: str, spooled: str):
    path = spool_bytes(b"data", name)
    try:
        assert path.name == spooled and path.read_bytes() == b"data"
        assert path.parent.name.startswith("crowdtune-upload-")
        assert list(path.parent.iterdir()) == [path]
    finally:
        shutil.rmtree(path.parent)


@pytest.mark.parametrize("name", ["-v.mp3", "http:evil.mp3", "concat:x.mp3"])
def test_source_names_that_look_like_options_or_urls(media: Path, tmp_path: Path, name: str):
    source = tmp_path / name
    shutil.copy(media / "song.mp3", source)
    up = ingest_upload(source, tmp_path / "out")
    assert up.original_name == name and up.codec == "mp3"


def test_display_name_strips_control_and_invisible_characters():
    assert display_name("a\u202egnp.mp3") == "agnp.mp3"  # right-to-left override dropped
    assert display_name("  two\n lines\x00.ogg ") == "two lines.ogg"
    long = display_name("x" * 300 + ".flac")
    assert len(long) == 100 and long.endswith("….flac")


# ------------------------------------------------------------------------------ rejections


def test_check_size_messages():
    check_size(25 * MIB)
    with pytest.raises(UploadRejected, match=r"^That file is 31\.2 MB; the limit is 25 MB\.$"):
        check_size(int(31.2 * MIB))
    with pytest.raises(UploadRejected, match=r"^That file is 25\.01 MB; the limit is 25 MB\.$"):
        check_size(int(25.01 * MIB))
    with pytest.raises(UploadRejected, match=r"^That file is empty\.$"):
        check_size(0)


def test_too_big_is_rejected_before_probing(media: Path, dest: Path, monkeypatch):
    monkeypatch.setattr(uploads, "_run_ffprobe", lambda *a: pytest.fail("probed a big file"))
    reason = reject(media / "song.wav", dest, UploadLimits(max_bytes=64 * 1024))
    assert reason.startswith("That file is ") and reason.endswith("; the limit is 64 KB.")
    with pytest.raises(UploadRejected, match="the limit is 64 KB"):
        ingest_bytes((media / "song.wav").read_bytes(), "x.wav", dest,
                     limits=UploadLimits(max_bytes=64 * 1024))  # fmt: skip
    assert_no_files(dest)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("notes.txt", NO_AUDIO),
        ("notes.mp3", "That file isn't audio I can read (it looks like a text file)."),
        ("image.png", NO_AUDIO),
        ("video_silent.mp4", NO_AUDIO),
        ("random.mp3", BAD_CORRUPT),
        ("truncated.m4a", BAD_CORRUPT),
        ("truncated.wav", BAD_CORRUPT),
        ("silence.wav", "That song is silent (or too quiet to use)."),
    ],
)
def test_bad_files_are_rejected_with_a_clear_reason(media: Path, dest: Path, name, reason):
    assert reject(media / name, dest) == reason


def test_too_long_and_too_short(media: Path, dest: Path):
    assert reject(media / "song.flac", dest, UploadLimits(max_duration_s=11)) == (
        "That song is 0:12 long; songs must be between 0:10 and 0:11."
    )
    assert reject(media / "song.m4a", dest, UploadLimits(min_duration_s=13)) == (
        "That song is 0:12 long; songs must be between 0:13 and 10:00."
    )
    with pytest.raises(UploadRejected, match=r"^That song is 14:02 long; .* 0:10 and 10:00\.$"):
        uploads._check_duration(841.2, DEFAULT_LIMITS)  # rounded up: never shows "10:00"


def test_headers_that_overstate_the_length_are_caught_after_decoding(media: Path, dest: Path):
    reason = reject(media / "cut.mp3", dest)
    assert reason.startswith("That song is 0:0") and "between 0:10 and 10:00" in reason


def test_channel_rate_and_memory_limits(media: Path, dest: Path):
    assert reject(media / "song.mp3", dest, UploadLimits(max_channels=1)) == (
        "That file has 2 audio channels; the limit is 1."
    )
    assert reject(media / "song.flac", dest, UploadLimits(max_sample_rate=44_100)) == (
        "That file's sample rate is 48 kHz; it must be between 8 kHz and 44.1 kHz."
    )
    assert reject(media / "song.flac", dest, UploadLimits(max_decoded_bytes=MIB)) == (
        "That file has too much audio to process (2 channels at 48 kHz); "
        "please upload it as stereo at 48 kHz or less."
    )


def test_missing_file(dest: Path, tmp_path: Path):
    assert reject(tmp_path / "nope.mp3", dest) == "That file could not be read."
    assert reject(tmp_path, dest) == "That file could not be read."


def test_decoder_failure_becomes_rejection(media: Path, dest: Path, monkeypatch):
    monkeypatch.setattr(uploads, "FFMPEG", "false")  # runs, exits 1 like a failed decode
    assert reject(media / "song.mp3", dest) == "That file looks corrupt: it could not be decoded."
    monkeypatch.setattr(uploads, "FFMPEG", "/nonexistent/ffmpeg")
    assert reject(media / "song.mp3", dest) == (
        "I can't process uploads right now; please tell a moderator."
    )


def test_failed_store_leaves_no_temporary_file(media: Path, dest: Path, monkeypatch):
    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(uploads.os, "replace", no_rename)
    assert reject(media / "song.mp3", dest) == (
        "I couldn't save that file; please try again later."
    )


def test_limits_are_validated():
    with pytest.raises(ValueError):
        UploadLimits(min_duration_s=20, max_duration_s=10)
    with pytest.raises(ValueError):
        UploadLimits(target_rms_dbfs=0.0)
