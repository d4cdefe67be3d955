"""The radio's real audio path, short of the network: `VoicePlayer` hands a track file to
discord.py's FFmpegOpusAudio (real ffmpeg/ffprobe) and AudioPlayer thread, and the Opus packets
that would go to Discord's voice server decode (real libopus) back to the track's audio.

The emulator has no voice server (UDP, encryption), so the voice client is a stand-in that
keeps the packets; everything before `send_audio_packet` is discord.py's own code.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import discord
import numpy as np
import pytest
from discord.player import AudioPlayer

from bot.adapter.radio import VoicePlayer
from bot.core.audio import encode

SECONDS = 1.5
TONE_HZ = 440.0


class PacketSink:
    """What `VoicePlayer` needs of a `discord.VoiceClient`, keeping the packets sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.packets: list[bytes] = []
        self.client = SimpleNamespace(loop=loop)  # AudioPlayer sends "speaking" through it
        self.ws = SimpleNamespace(speak=self._speak)
        self.timeout = 1.0
        self._player: AudioPlayer | None = None

    async def _speak(self, state: object) -> None:
        return None

    def is_connected(self) -> bool:
        return True

    def send_audio_packet(self, data: bytes, *, encode: bool = True) -> None:
        assert not encode, "an Opus source must be sent as it is"
        self.packets.append(data)

    def play(self, source: discord.AudioSource, *, after) -> None:
        self._player = AudioPlayer(source, self, after=after)  # type: ignore[arg-type]
        self._player.start()

    def is_playing(self) -> bool:
        return self._player is not None and self._player.is_playing()

    def stop(self) -> None:
        if self._player is not None:
            self._player.stop()


def _audio_packets(packets: list[bytes]) -> list[bytes]:
    """Without the silence frames that end a play and the Ogg stream's two header packets
    (discord.py passes them on too; Discord ignores them)."""
    return [p for p in packets if p != discord.player.OPUS_SILENCE
            and not p.startswith((b"OpusHead", b"OpusTags"))]


def _decode(packets: list[bytes]) -> np.ndarray:
    if not discord.opus.is_loaded():
        discord.opus._load_default()
    decoder = discord.opus.Decoder()
    pcm = b"".join(decoder.decode(p) for p in packets)
    stereo = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768
    return stereo.mean(axis=1)


async def _start(path: Path) -> tuple[VoicePlayer, PacketSink, asyncio.Future[Exception | None]]:
    """`VoicePlayer.play(path)` into a `PacketSink`; the future resolves when `after` runs."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[Exception | None] = loop.create_future()
    player = VoicePlayer(SimpleNamespace())  # type: ignore[arg-type]
    player.voice = sink = PacketSink(loop)  # type: ignore[assignment]
    await player.play(str(path), lambda err: loop.call_soon_threadsafe(ended.set_result, err))
    return player, sink, ended


@pytest.mark.parametrize("fmt", ["ogg", "mp3"])
async def test_a_track_file_plays_as_opus_packets_of_its_audio(tmp_path: Path, fmt: str) -> None:
    sr = 16000
    t = np.arange(int(SECONDS * sr)) / sr
    path = encode(0.3 * np.sin(2 * np.pi * TONE_HZ * t), sr, tmp_path / f"track.{fmt}", fmt)
    player, sink, ended = await _start(path)
    assert await asyncio.wait_for(ended, 30) is None

    packets = _audio_packets(sink.packets)
    assert abs(len(packets) * 0.02 - SECONDS) < 0.1  # 20 ms a packet
    audio = _decode(packets)
    assert abs(len(audio) / 48000 - SECONDS) < 0.1
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * 48000 / len(audio)
    assert abs(peak_hz - TONE_HZ) < 5
    assert 0.1 < np.sqrt(np.mean(audio**2)) < 0.3  # the tone's level (0.3 / sqrt 2), not silence


async def test_stop_ends_the_play_early_and_still_calls_after(tmp_path: Path) -> None:
    sr = 16000
    path = encode(np.zeros(sr * 10, dtype=np.float32), sr, tmp_path / "long.ogg", "ogg")
    player, sink, ended = await _start(path)
    await asyncio.sleep(0.3)
    player.stop()
    assert await asyncio.wait_for(ended, 5) is None
    assert 0 < len(sink.packets) < 100  # well short of the 10-s file's 500 packets
