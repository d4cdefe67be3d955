"""The bot token never reaches a log line, an error message, stdout/stderr or a file under the
data folder: the bot (against the emulator) and the CLI run with it set, at debug level."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.cli import main
from tests.bot_support import bot_env, generated
from tests.fakediscord import FakeDiscord
from tests.fakediscord.payloads import option, subcommand

SECRET = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gsecret.t0ken-value-never-shown_x9"


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    return int(exc.value.code)


async def test_the_token_is_never_logged_shown_or_stored(tmp_path: Path, caplog, capfd,
                                                         monkeypatch) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeDiscord(token=SECRET) as emu:
        with emu.redirect():
            async with bot_env(emu, tmp_path / "bot", discord_token=SECRET) as env:
                await generated(env, await env.command("generate"))
                # An error reply and a generic failure, both logged.
                await env.reply(await env.command(
                    "uploads", [subcommand("remove", [option("upload", 999)])],
                    user_id=emu.ids.alice))
                monkeypatch.setattr(env.services.uploads, "list", None)  # a crash in /uploads
                await env.reply(await env.command("uploads", [subcommand("list")],
                                                  user_id=emu.ids.alice))
            monkeypatch.chdir(tmp_path)
            # `crowdtune run` with a token Discord rejects (a secret as well).
            monkeypatch.setenv("DISCORD_TOKEN", SECRET + "-rejected")
            assert await asyncio.to_thread(cli, "-v", "--data-dir", "cli", "run") == 2
            monkeypatch.setenv("DISCORD_TOKEN", SECRET)
            assert await asyncio.to_thread(cli, "-v", "--data-dir", "cli", "model", "list",
                                           "--guild", "g") == 2
            assert await asyncio.to_thread(cli, "-v", "--data-dir", "cli", "export", "--guild",
                                           "g", "--out", "cli/export.jsonl") == 0

    out, err = capfd.readouterr()
    assert "Discord rejected DISCORD_TOKEN" in err  # the run did reach the emulator
    assert any(r.exc_info for r in caplog.records)  # and the crash was logged with its trace
    logged = "\n".join([caplog.text] + [r.getMessage() for r in caplog.records]
                       + [logging.Formatter().formatException(r.exc_info)
                          for r in caplog.records if r.exc_info])
    assert SECRET not in logged and SECRET not in out + err
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 5
    assert not [p for p in files if SECRET.encode() in p.read_bytes()]
