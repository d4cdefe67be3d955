"""Song uploads: validate, convert and store a member's audio file.

Both the CLI (`crowdtune upload`) and the bot (attachments, first written to a temporary
file by `spool_bytes`) reach `ingest_upload` through `bot.core.uploads.UploadService`, from a
worker thread: everything here blocks. Recording the upload in the database is the service's
job; this module only checks the file, converts it and stores it.

Pipeline, cheapest check first so a bad file costs as little as possible:

1. size, from the file system, before anything reads the file (`check_size`, which the bot
   can also call on an attachment's declared size before downloading it);
2. sha256 of the original bytes, returned so callers can recognise a song uploaded twice;
3. ffprobe (with a timeout, protocols restricted to local files) reads only the headers:
   there must be a real audio stream in a container we accept, within the duration,
   channel and sample-rate limits; nothing is decoded yet;
4. ffmpeg decodes its first audio stream to 32-bit float PCM (video streams are dropped);
   numpy mixes it down to mono, scipy resamples it (polyphase, anti-aliased) to the target
   rate;
5. loudness: gain to a target RMS level, capped so the peak stays under a ceiling;
6. a 16-bit mono WAV is written under a temporary name in the destination directory,
   fsynced, and renamed atomically to `<sha256>.wav`. The uploader's file name is never
   part of a path; it is only kept, sanitised, for display.

Every rejection raises `UploadRejected` whose message is one line a Discord member can act
on, and leaves nothing behind on disk.

Loudness: members upload anything from quiet phone recordings to brick-walled masters, and
the model learns from these files, so they are brought to one level. We use RMS rather than
LUFS (no K-weighting or gating: simple, dependency-free and close enough for training data):
the gain takes the whole song's RMS to `target_rms_dbfs` (-20 dBFS by default, which leaves
room for peaks in ordinary music), unless that would push the highest sample above
`peak_ceiling_dbfs` (-1 dBFS); then the gain is capped there. So a song never clips and is
never distorted by a limiter; a very spiky song (crest factor above 19 dB) ends up a little
quieter than the target instead. Near-silent files are rejected: there is nothing to learn.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from bot.core.errors import UserFacingError
from model.files import atomic_path, sha256_file

log = logging.getLogger(__name__)

FFPROBE = "ffprobe"
FFMPEG = "ffmpeg"
MIB = 1024 * 1024

# Demuxers (ffprobe format_name parts) we decode. An allow-list, not a deny-list, because
# some of ffmpeg's demuxers open other files or the network (hls, concat, sdp, ...), which an
# uploaded "song" must never be able to make us do.
ALLOWED_CONTAINERS = frozenset(
    {
        "aac", "ac3", "aiff", "amr", "ape", "asf", "au", "avi", "caf", "dsf", "dts", "eac3",
        "flac", "flv", "m4a", "matroska", "mov", "mp3", "mp4", "mpeg", "mpegts", "ogg",
        "tta", "voc", "w64", "wav", "webm", "wv",
    }
)  # fmt: skip

# Friendlier names for ffprobe's multi-name demuxers.
_CONTAINER_NAMES = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "matroska"}


class UploadRejected(UserFacingError):
    """An upload we will not take; `reason` (also `str(exc)`) is one line for the member."""


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be, and what it is converted to."""

    # Discord's "25 MB" is 25 MiB; sizes are shown in MiB labelled "MB", as Discord does.
    max_bytes: int = 25 * MIB
    min_duration_s: float = 10.0
    max_duration_s: float = 600.0
    max_channels: int = 8
    min_sample_rate: int = 8_000
    max_sample_rate: int = 192_000
    # The whole decoded song (at its own rate and channel count, 4 bytes a sample) is held in
    # memory, about three copies at once: a 10-minute stereo Opus song peaks near 800 MB.
    # This bounds the estimate (duration x rate x channels x 4), since a tiny FLAC of
    # silence can declare 8 channels at 192 kHz for 10 minutes (3.7 GB decoded). 256 MiB
    # admits any stereo song up to 48 kHz and 10 minutes.
    max_decoded_bytes: int = 256 * MIB
    probe_timeout_s: float = 30.0
    decode_timeout_s: float = 120.0
    # Conversion targets (see the module docstring for the loudness choice).
    target_sample_rate: int = 16_000
    target_rms_dbfs: float = -20.0
    peak_ceiling_dbfs: float = -1.0
    # Below this the file is silence (or noise floor) and is rejected.
    min_rms_dbfs: float = -60.0

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if not 0 <= self.min_duration_s < self.max_duration_s:
            raise ValueError("need 0 <= min_duration_s < max_duration_s")
        if self.max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        if not 0 < self.min_sample_rate <= self.max_sample_rate:
            raise ValueError("need 0 < min_sample_rate <= max_sample_rate")
        if self.target_sample_rate <= 0:
            raise ValueError("target_sample_rate must be positive")
        if self.peak_ceiling_dbfs > 0 or self.target_rms_dbfs > self.peak_ceiling_dbfs:
            raise ValueError("need target_rms_dbfs <= peak_ceiling_dbfs <= 0")
        if self.probe_timeout_s <= 0 or self.decode_timeout_s <= 0:
            raise ValueError("probe_timeout_s and decode_timeout_s must be positive")


DEFAULT_LIMITS = UploadLimits()


@dataclass(frozen=True)
class IngestedUpload:
    """A stored upload: a mono WAV at the target rate, and what the original was."""

    path: Path  # the stored WAV, `<dest_dir>/<sha256>.wav`
    original_name: str  # the uploader's file name, sanitised, for display only
    container: str  # e.g. "mp3", "ogg", "wav", "flac", "mp4", "matroska"
    codec: str  # the audio codec, e.g. "mp3", "opus", "pcm_s16le", "flac", "aac"
    duration_s: float  # of the decoded audio
    sample_rate: int  # of the original audio stream
    channels: int  # of the original audio stream
    sha256: str  # of the original file's bytes (hex); the same song twice gives the same
    size_bytes: int  # of the original file

    @property
    def format(self) -> str:
        """Container and codec in one label: "mp3", "flac", "ogg/opus", "mp4/aac"."""
        return self.container if self.container == self.codec else f"{self.container}/{self.codec}"


# ---------------------------------------------------------------------------- public helpers


def check_size(size_bytes: int, limits: UploadLimits = DEFAULT_LIMITS) -> None:
    """Raise `UploadRejected` if a file of this size may not be uploaded.

    Cheap, so the bot can call it with an attachment's declared size before downloading.
    """
    if size_bytes <= 0:
        raise UploadRejected("That file is empty.")
    if size_bytes > limits.max_bytes:
        size, limit = _format_sizes(size_bytes, limits.max_bytes)
        raise UploadRejected(f"That file is {size}; the limit is {limit}.")


def display_name(name: str, max_len: int = 100) -> str:
    """The uploader's file name made safe to show: last path component, no control or
    invisible formatting characters (e.g. right-to-left overrides), bounded length.

    For display only, never for a path. Discord markdown and mentions are the caller's to
    escape when it posts the name.
    """
    base = re.split(r"[\\/]", name)[-1]
    base = "".join(
        " " if unicodedata.category(ch) in ("Zl", "Zp") else ch
        for ch in base
        if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn") or ch in "\t\n"
    )
    base = " ".join(base.split())
    if base.strip(".") == "":
        return "upload"
    if len(base) > max_len:
        stem, dot, ext = base.rpartition(".")
        if dot and 0 < len(ext) <= 8 and len(stem) > 0:
            base = stem[: max_len - len(ext) - 2] + "…." + ext
        else:
            base = base[: max_len - 1] + "…"
    return base


def ingest_upload(
    source: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    original_name: str | None = None,
    limits: UploadLimits = DEFAULT_LIMITS,
) -> IngestedUpload:
    """Validate the audio file `source`, convert it and store it under `dest_dir`.

    `original_name` is the name the member gave it (an attachment's filename); it defaults
    to `source`'s name and is only used for display. Returns what was stored; raises
    `UploadRejected` (and leaves nothing in `dest_dir`) if the file is not acceptable.
    The caller deduplicates by the returned `sha256`.
    """
    source = Path(source).absolute()
    name = display_name(original_name if original_name is not None else source.name)
    try:
        upload = _ingest(source, Path(dest_dir), name, limits)
    except UploadRejected as exc:
        log.info("rejected upload %r: %s", name, exc.reason)
        raise
    log.info(
        "stored upload %r (%s, %.1f s, %d Hz, %d ch, %d bytes) as %s",
        name, upload.format, upload.duration_s, upload.sample_rate, upload.channels,
        upload.size_bytes, upload.path,
    )  # fmt: skip
    return upload


def spool_bytes(data: bytes, filename: str) -> Path:
    """Write a file held in memory (a Discord attachment's bytes) into a new private
    temporary folder, for `ingest_upload`; the caller removes the folder (`path.parent`).

    The member's file name never becomes a path: the file is `upload<suffix>`, keeping the
    suffix only when it is plain (ffprobe uses it as a hint, e.g. for a tagless MP3).
    """
    suffix = Path(display_name(filename)).suffix
    if not re.fullmatch(r"\.[A-Za-z0-9]{1,5}", suffix):
        suffix = ""
    folder = Path(tempfile.mkdtemp(prefix="crowdtune-upload-"))
    path = folder / f"upload{suffix}"
    try:
        path.write_bytes(data)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return path


# ------------------------------------------------------------------------------ the pipeline


@dataclass(frozen=True)
class _Probe:
    container: str  # friendly name
    demuxer: str  # a name ffmpeg's -f accepts for this container
    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None  # None when the headers do not say


def _ingest(source: Path, dest_dir: Path, name: str, limits: UploadLimits) -> IngestedUpload:
    try:
        if not source.is_file():
            raise UploadRejected("That file could not be read.")
        size = source.stat().st_size
    except OSError as exc:
        log.debug("stat %s failed: %s", source, exc)
        raise UploadRejected("That file could not be read.") from exc
    check_size(size, limits)
    try:
        sha256 = sha256_file(source)
    except OSError as exc:
        raise UploadRejected("That file could not be read.") from exc
    probe = _probe(source, limits)
    samples, orig_rate, orig_channels = _decode(source, probe, limits)
    duration_s = len(samples) / limits.target_sample_rate
    _check_duration(duration_s, limits)  # the headers can lie; the decoded length can't
    pcm = _normalise(samples, limits)
    path = _store(pcm, dest_dir, sha256, limits.target_sample_rate)
    return IngestedUpload(
        path=path,
        original_name=name,
        container=probe.container,
        codec=probe.codec,
        duration_s=duration_s,
        sample_rate=orig_rate,
        channels=orig_channels,
        sha256=sha256,
        size_bytes=size,
    )


def _run_ffprobe(path: Path, timeout_s: float) -> dict[str, Any]:
    cmd = [
        FFPROBE, "-v", "error",
        # Only the local file itself: an upload must not make us open URLs or sockets.
        "-protocol_whitelist", "file",
        "-print_format", "json", "-show_format", "-show_streams",
        # "file:" so a name such as "http:x" or "-x" is never read as a protocol or option.
        f"file:{path}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise UploadRejected(
            "That file took too long to inspect; it looks corrupt or is not audio."
        ) from exc
    except OSError as exc:  # ffprobe missing: the operator's problem, not the member's
        log.error("cannot run %s: %s", FFPROBE, exc)
        raise UploadRejected("I can't process uploads right now; please tell a moderator.") from exc
    stderr = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0:
        log.debug("ffprobe failed on %s (rc=%d): %s", path, proc.returncode, stderr)
        if _looks_like_text(path):
            raise UploadRejected("That file isn't audio I can read (it looks like a text file).")
        raise UploadRejected("That file looks corrupt: ffprobe could not read it.")
    try:
        info = json.loads(proc.stdout)
    except ValueError as exc:
        raise UploadRejected("That file looks corrupt: ffprobe could not read it.") from exc
    return info if isinstance(info, dict) else {}


def _probe(path: Path, limits: UploadLimits) -> _Probe:
    info = _run_ffprobe(path, limits.probe_timeout_s)
    fmt = info.get("format") or {}
    streams = [s for s in info.get("streams") or [] if isinstance(s, dict)]
    format_name = str(fmt.get("format_name") or "")

    # A "real" audio stream: one ffmpeg has a decoder for, with a rate and channels.
    audio = [
        s
        for s in streams
        if s.get("codec_type") == "audio"
        and s.get("codec_name") not in (None, "", "none", "unknown")
        and _as_int(s.get("sample_rate")) > 0
        and _as_int(s.get("channels")) > 0
    ]
    if not audio:
        raise UploadRejected("That file isn't audio I can read (no audio stream found).")
    demuxers = [part for part in format_name.split(",") if part]
    allowed = [part for part in demuxers if part in ALLOWED_CONTAINERS]
    if not allowed:
        raise UploadRejected(
            f"That file type ({demuxers[0] if demuxers else 'unknown'}) isn't supported; "
            "please upload mp3, ogg/opus, wav, flac or m4a."
        )

    # ffmpeg picks the stream it decodes itself, so every audio stream must be within limits.
    channels = max(_as_int(s.get("channels")) for s in audio)
    if channels > limits.max_channels:
        raise UploadRejected(
            f"That file has {channels} audio channels; the limit is {limits.max_channels}."
        )
    rates = [_as_int(s.get("sample_rate")) for s in audio]
    if min(rates) < limits.min_sample_rate or max(rates) > limits.max_sample_rate:
        bad = min(rates) if min(rates) < limits.min_sample_rate else max(rates)
        raise UploadRejected(
            f"That file's sample rate is {_khz(bad)}; it must be between "
            f"{_khz(limits.min_sample_rate)} and {_khz(limits.max_sample_rate)}."
        )

    durations = [_as_float(fmt.get("duration"))] + [_as_float(s.get("duration")) for s in audio]
    known = [d for d in durations if d is not None and d > 0]
    duration_s = known[0] if known else None
    if duration_s is not None:
        _check_duration(duration_s, limits)

    decoded = (duration_s or limits.max_duration_s) * max(rates) * channels * 4
    if decoded > limits.max_decoded_bytes:
        raise UploadRejected(
            f"That file has too much audio to process ({channels} channels at "
            f"{_khz(max(rates))}); please upload it as stereo at 48 kHz or less."
        )

    first = audio[0]
    return _Probe(
        container=_CONTAINER_NAMES.get(format_name, demuxers[0]),
        demuxer=allowed[0],
        codec=str(first.get("codec_name")),
        sample_rate=_as_int(first.get("sample_rate")),
        channels=_as_int(first.get("channels")),
        duration_s=duration_s,
    )


def _decode(path: Path, probe: _Probe, limits: UploadLimits) -> tuple[np.ndarray, int, int]:
    """Decode the probed stream with ffmpeg; return float32 mono samples at the target rate
    in [-1, 1], and the stream's original rate and channel count.

    ffmpeg is told the PCM it must output (32-bit float, the probed rate and channels), so
    any codec it decodes works the same: ADPCM, 8- to 32-bit integer and float WAVs alike.
    (Taking the output format from the container's bit depth, as pydub does, fails on
    4-bit ADPCM.)
    """
    rate, channels = probe.sample_rate, probe.channels
    cmd = [
        FFMPEG, "-nostdin", "-v", "error", "-protocol_whitelist", "file",
        # The demuxer ffprobe found and we allowed; the stream ffprobe described.
        "-f", probe.demuxer, "-i", f"file:{path}", "-map", "0:a:0", "-vn",
        # Stop shortly past the limit if the headers understate the length.
        "-t", f"{limits.max_duration_s + 1:g}",
        "-ac", str(channels), "-ar", str(rate), "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=limits.decode_timeout_s,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise UploadRejected("That file took too long to decode; it looks corrupt.") from exc
    except MemoryError as exc:
        raise UploadRejected("That file is too large to process.") from exc
    except OSError as exc:  # ffmpeg missing: the operator's problem, not the member's
        log.error("cannot run %s: %s", FFMPEG, exc)
        raise UploadRejected("I can't process uploads right now; please tell a moderator.") from exc
    if proc.returncode != 0:
        log.debug("ffmpeg failed on %s (rc=%d): %s", path, proc.returncode,
                  proc.stderr.decode(errors="replace").strip())
        raise UploadRejected("That file looks corrupt: it could not be decoded.")
    raw = np.frombuffer(proc.stdout, dtype="<f4")
    del proc
    frames = len(raw) // channels
    if frames == 0:
        raise UploadRejected("That file looks corrupt: it has no audio in it.")
    mono = raw[: frames * channels].reshape(frames, channels).mean(axis=1, dtype=np.float32)
    del raw
    mono = np.nan_to_num(np.clip(mono, -1.0, 1.0), nan=0.0)  # float WAVs may hold anything
    if rate != limits.target_sample_rate:
        ratio = Fraction(limits.target_sample_rate, rate)
        mono = resample_poly(mono, ratio.numerator, ratio.denominator).astype(np.float32)
    return mono, rate, channels


def _normalise(samples: np.ndarray, limits: UploadLimits) -> np.ndarray:
    """Gain to the target RMS, capped so the peak stays under the ceiling; int16 PCM."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    peak = float(np.max(np.abs(samples)))
    rms_dbfs = 20 * math.log10(rms) if rms > 0 else -math.inf
    if rms_dbfs < limits.min_rms_dbfs:
        raise UploadRejected("That song is silent (or too quiet to use).")
    gain_db = min(
        limits.target_rms_dbfs - rms_dbfs, limits.peak_ceiling_dbfs - 20 * math.log10(peak)
    )
    log.debug("loudness: rms %.1f dBFS, peak %.1f dBFS, gain %+.1f dB",
              rms_dbfs, 20 * math.log10(peak), gain_db)  # fmt: skip
    scaled = samples * np.float32(10 ** (gain_db / 20) * 32767)
    # The cap keeps |scaled| <= 32767 already; clip only guards float rounding.
    return np.clip(np.rint(scaled), -32768, 32767).astype("<i2")


def _store(pcm: np.ndarray, dest_dir: Path, sha256: str, rate: int) -> Path:
    """Write the WAV under a temporary name in `dest_dir`, then rename it into place, so
    readers never see half a file and a failure leaves nothing behind."""
    final = dest_dir / f"{sha256}.wav"
    try:
        # Same sha256, same content: a concurrent or repeated upload replaces it harmlessly.
        with atomic_path(final) as tmp, wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())
    except OSError as exc:
        log.error("could not store upload in %s: %s", dest_dir, exc)
        raise UploadRejected("I couldn't save that file; please try again later.") from exc
    return final


# ------------------------------------------------------------------------------- formatting


def _check_duration(duration_s: float, limits: UploadLimits) -> None:
    # Round towards the violated bound so "10:00" is never shown as too long.
    if duration_s > limits.max_duration_s:
        shown = _clock(math.ceil(duration_s))
    elif duration_s < limits.min_duration_s:
        shown = _clock(math.floor(duration_s))
    else:
        return
    raise UploadRejected(
        f"That song is {shown} long; songs must be between "
        f"{_clock(limits.min_duration_s)} and {_clock(limits.max_duration_s)}."
    )


def _clock(seconds: float) -> str:
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _format_sizes(size: int, limit: int) -> tuple[str, str]:
    """("31.2 MB", "25 MB"), with enough decimals that a too-big size never reads as the
    limit ("25.0 MB; the limit is 25 MB")."""
    unit, scale = ("MB", MIB) if limit >= MIB else ("KB", 1024)
    limit_text = f"{limit / scale:.2f}".rstrip("0").rstrip(".")
    for decimals in (1, 2, 3):
        size_text = f"{size / scale:.{decimals}f}"
        if float(size_text) > float(limit_text):
            return f"{size_text} {unit}", f"{limit_text} {unit}"
    return f"{size:,} bytes", f"{limit:,} bytes"


def _khz(rate: int) -> str:
    return f"{rate / 1000:g} kHz"


def _as_int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def _as_float(value: object) -> float | None:
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _looks_like_text(path: Path) -> bool:
    """A readable text file (notes, a playlist) rather than a damaged audio file."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if not head or b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a character cut in half by the read
            return False
        text = head[: exc.start].decode("utf-8")
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * len(text)
