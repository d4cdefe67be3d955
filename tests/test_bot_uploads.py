"""Uploads end to end: /upload and posts in the uploads channel, good files and bad ones."""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import discord
import pytest

from bot.core.ingest import UploadLimits
from tests.bot_support import bot_env, configure, content, ephemeral
from tests.fakediscord import FakeDiscord, attachment_option

LIMITS = UploadLimits(max_bytes=150 * 1024, max_duration_s=20)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bot-media")
    mp3 = ["-ac", "1", "-ar", "22050", "-c:a", "libmp3lame", "-b:a", "32k"]
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=12", *mp3, str(d / "song.mp3"))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:duration=11", *mp3, str(d / "other.mp3"))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:duration=25", *mp3, str(d / "long.mp3"))
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=12", "-c:a", "pcm_s16le",
           str(d / "song.wav"))
    (d / "corrupt.wav").write_bytes((d / "song.wav").read_bytes()[:30])
    (d / "notes.mp3").write_text("not really an mp3\n" * 20)
    (d / "big.mp3").write_bytes(random.Random(0).randbytes(200 * 1024))
    return d


async def test_upload_command_good_and_every_kind_of_bad(fake_discord: FakeDiscord, tmp_path,
                                                         media: Path, monkeypatch) -> None:
    emu = fake_discord
    downloaded: list[str] = []
    read = discord.Attachment.read

    async def counting_read(self: discord.Attachment, **kwargs: object) -> bytes:
        downloaded.append(self.filename)
        return await read(self, **kwargs)

    monkeypatch.setattr(discord.Attachment, "read", counting_read)
    async with bot_env(emu, tmp_path, base=False) as env:
        env.services.uploads.limits = LIMITS

        async def upload(name: str) -> tuple[dict, str]:
            song = emu.add_attachment((media / name).read_bytes(), name)
            payload = await env.command("upload", [attachment_option("song", song)],
                                        user_id=emu.ids.carol)
            first = await env.reply(payload)
            assert ephemeral(first)
            if first.json["type"] == 4:  # refused before deferring
                return payload, content(first)
            assert first.json["type"] == 5
            answer = await env.reply(payload, count=2)
            assert ephemeral(answer)
            return payload, content(answer)

        _, text = await upload("song.mp3")
        assert text == ("Got it: song.mp3 (0:12, mp3). It will seed new tracks and guide this "
                        "week's training.")
        [row] = await env.services.store.uploads(str(emu.ids.guild))
        assert (row.member_id, row.format, row.original_name) == (str(emu.ids.carol), "mp3",
                                                                 "song.mp3")
        assert Path(row.file).is_file()
        _, text = await upload("song.mp3")
        assert text == "I already have song.mp3 (0:12, mp3); thanks, it still counts once."

        _, text = await upload("big.mp3")
        assert text == "That file is 200.0 KB; the limit is 150 KB."
        assert "big.mp3" not in downloaded  # refused from its declared size
        _, text = await upload("notes.mp3")
        assert text == "That file isn't audio I can read (it looks like a text file)."
        _, text = await upload("corrupt.wav")
        assert text == "That file looks corrupt: ffprobe could not read it."
        _, text = await upload("long.mp3")
        # (mp3 encoder padding makes 25 s a little longer, and lengths round up)
        assert re.fullmatch(r"That song is 0:2[56] long; songs must be between 0:10 and "
                            r"0:20\.", text)

        # Nothing of the bad ones was stored, and nothing was said in the channel.
        assert len(await env.services.store.uploads(str(emu.ids.guild))) == 1
        assert [p.name for p in (env.services.settings.uploads_dir / str(emu.ids.guild))
                .iterdir()] == [Path(row.file).name]
        assert emu.channel_messages() == []


async def test_posts_in_the_uploads_channel(fake_discord: FakeDiscord, tmp_path,
                                            media: Path) -> None:
    emu = fake_discord
    async with bot_env(emu, tmp_path, base=False) as env:
        env.services.uploads.limits = LIMITS
        await configure(env, uploads_channel_id=emu.ids.text_channel)
        # Without the Message Content intent Discord hides a post's attachments unless it
        # mentions the bot: the first post is not seen, the next two are.
        hidden = emu.add_attachment((media / "song.mp3").read_bytes(), "song.mp3")
        await emu.user_message("my song", author_id=emu.ids.bob, attachments=[hidden])
        good = emu.add_attachment((media / "other.mp3").read_bytes(), "other.mp3")
        posted = await emu.user_message(f"<@{emu.ids.bot}> for you", author_id=emu.ids.bob,
                                        attachments=[good])
        reply = await emu.wait_for_call("POST", rf"/channels/{emu.ids.text_channel}/messages",
                                        timeout=15)
        assert str(reply.json["message_reference"]["message_id"]) == posted["id"]
        assert reply.json["content"].startswith("Got it: other.mp3 (0:11, mp3).")
        bad = emu.add_attachment((media / "notes.mp3").read_bytes(), "notes.mp3")
        await emu.user_message(f"<@{emu.ids.bot}>", author_id=emu.ids.bob, attachments=[bad])
        reply = await emu.wait_for_call("POST", rf"/channels/{emu.ids.text_channel}/messages",
                                        count=2, timeout=15)
        assert reply.json["content"] == ("notes.mp3: That file isn't audio I can read (it "
                                         "looks like a text file).")
        names = [u.original_name for u in await env.services.store.uploads(str(emu.ids.guild))]
        assert names == ["other.mp3"]
        assert len(emu.calls("POST", rf"/channels/{emu.ids.text_channel}/messages")) == 2
