"""Reaction votes through the gateway into the database: sustained rate, and none lost.

    python bench/bench_gateway.py [--rate 1000] [--seconds 60] [--tracks 60]

The Discord emulator (tests/fakediscord) runs in its own process and injects
MESSAGE_REACTION_ADD events at a fixed rate, each a distinct (member, track post) pair, so
every event must become one vote row. The real bot (discord.py client, the ratings cog,
SQLite) runs here. Printed: the injection rate reached, the votes stored per second
(min/median over the run), how long after the last event the last vote landed, and the row
count against the events sent.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fakediscord

STARS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")


async def recv(conn: Connection) -> object:
    """A message from the other process, without blocking the event loop."""
    while not conn.poll():
        await asyncio.sleep(0.01)
    return conn.recv()


# --- the emulator's process -----------------------------------------------------------------

def emulator_main(conn: Connection, members: int) -> None:
    asyncio.run(_emulator(conn, members))


async def _emulator(conn: Connection, members: int) -> None:
    from tests.fakediscord import FakeDiscord

    loop = asyncio.get_running_loop()
    async with FakeDiscord() as emu:
        world = emu.world
        users = [world.add_user(f"member{i}") for i in range(members)]
        for user in users:
            world.add_member(emu.ids.guild, user)
        conn.send({"api": emu.api_base, "gateway": emu.gateway_url, "cdn": emu.base_url + "/cdn",
                   "token": emu.token, "guild": emu.ids.guild, "channel": emu.ids.text_channel})
        order = await recv(conn)  # the bot has posted its tracks
        messages, rate, total = order["messages"], order["rate"], order["total"]
        pairs = [(m, u) for u in users for m in messages][:total]
        sent = 0
        start, started_at = loop.time(), time.time()
        while sent < total:
            due = min(total, int((loop.time() - start) * rate) + 1)
            while sent < due:
                message, user = pairs[sent]
                await emu.reaction_add(message, STARS[(message + user) % 5], user_id=user)
                sent += 1
            await asyncio.sleep(0.002)
        elapsed = loop.time() - start
        conn.send({"sent": sent, "seconds": elapsed, "started_at": started_at,
                   "ended_at": time.time()})
        await recv(conn)  # stay up until the bot is done


# --- the bot's process ----------------------------------------------------------------------

async def run(args: argparse.Namespace) -> None:
    total = int(args.rate * args.seconds)
    members = -(-total // args.tracks)  # enough distinct members for distinct pairs
    ctx = mp.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    child = ctx.Process(target=emulator_main, args=(child_conn, members), daemon=True)
    child.start()
    try:
        await measure(args, conn, total, members)
    finally:
        child.join(10)
        if child.is_alive():
            child.terminate()


async def measure(args: argparse.Namespace, conn: Connection, total: int, members: int
                  ) -> None:
    from bot.adapter.client import create_bot
    from bot.core.config import BotSettings
    from bot.core.services import Services
    from bot.core.store import ModelVersionRow
    from bot.core.tracks import GeneratedTrack
    from tests.fakediscord import FAST_GUILD_READY_TIMEOUT, redirect_discord

    info = await recv(conn)
    assert isinstance(info, dict)
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    settings = BotSettings(_env_file=None, data_dir=tmp, sync_guilds=str(info["guild"]))
    services = await Services.open(settings)
    store = services.store
    guild = str(info["guild"])
    await store.record_model_version(ModelVersionRow(guild, "v0001", None, "-", "base", 0.0))
    audio = tmp / "track.ogg"
    audio.write_bytes(b"OggS" + bytes(60))
    with redirect_discord(info["api"], info["gateway"], cdn_base=info["cdn"]):
        bot = create_bot(settings, services, guild_ready_timeout=FAST_GUILD_READY_TIMEOUT)
        await bot.login(info["token"])
        task = asyncio.create_task(bot.connect())
        await bot.wait_until_ready()
        await asyncio.wait_for(bot.guilds_ready.wait(), 30)
        channel = bot.get_channel(info["channel"])
        messages, track_ids = [], []
        for _ in range(args.tracks):
            track_id = await store.add_track(guild, "v0001", "generated", 20.0, 0, str(audio))
            track = GeneratedTrack(track_id, str(audio), "v0001", 20.0, 0, "generated")
            message = await bot.post_track(channel, track)
            messages.append(message.id)
            track_ids.append(track_id)
        ratings = bot.get_cog("Ratings")
        await ratings.drain()
        print(f"{args.tracks} track posts, {members} members; injecting {total} reactions at "
              f"{args.rate:g}/s for {args.seconds:g} s (emulator in its own process)")

        async def count() -> int:
            async with store.db.execute("SELECT COUNT(*) FROM votes") as cur:
                return (await cur.fetchone())[0]

        conn.send({"messages": messages, "rate": args.rate, "total": total})
        done = asyncio.ensure_future(recv(conn))
        samples: list[tuple[float, int]] = [(time.time(), await count())]
        while not done.done():
            await asyncio.wait({done}, timeout=1.0)
            if not done.done():
                samples.append((time.time(), await count()))
        report = done.result()
        during = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[1:],
                                                               strict=False)
                  if a[0] >= report["started_at"] and b[0] <= report["ended_at"]]
        tail = [(time.time(), await count())]
        while tail[-1][1] < total and time.time() - report["ended_at"] < 60:
            await asyncio.sleep(0.02)  # finer, to time the last row
            tail.append((time.time(), await count()))
        samples += tail
        rows = samples[-1][1]
        last_row_at = next(t for t, n in samples if n == rows)
        # Events sent by each sample's time (the injector keeps its pace) minus rows stored.
        backlog = max(min(sent_by, total) - n for t, n in samples
                      if (sent_by := int((t - report["started_at"]) * args.rate)) > 0)
        conn.send("stop")
        await bot.close()
        await task
    await services.close()
    sent = report["sent"]
    print(f"{'events sent':>24}: {sent}")
    print(f"{'injection rate':>24}: {sent / report['seconds']:.0f}/s over "
          f"{report['seconds']:.1f} s")
    print(f"{'votes stored/s, min':>24}: {min(during):.0f}  (1-s windows while injecting)")
    print(f"{'votes stored/s, median':>24}: {statistics.median(during):.0f}")
    print(f"{'overall':>24}: {rows / (last_row_at - report['started_at']):.0f}/s from first "
          f"event to last row")
    print(f"{'largest backlog':>24}: {max(0, backlog)} events not yet stored (1-s sampling)")
    print(f"{'last row after last event':>24}: <= "
          f"{1000 * max(0.0, last_row_at - report['ended_at']):.0f} ms (20-ms sampling)")
    print(f"{'vote rows':>24}: {rows}  ({'none lost' if rows == sent else f'{sent - rows} LOST'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="reactions per second")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--tracks", type=int, default=60, help="track posts reacted to")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
