"""Event-loop lag of the running bot while a track is generated and while a round trains.

    python bench/bench_loop_lag.py [--model DIR] [--seconds 20] [--steps 30] [--sampler-steps 10]

The real bot (discord.py client against the local Discord emulator, the generation worker
process, the round's training and evaluation child processes) runs with a 10 ms ticker on
its event loop; a tick's lag is how late it woke. Phases: idle; `/generate` from the
interaction to the posted track (the first call also starts the worker and loads the
model); a weekly round from start to its posted report. Printed per phase: p50/p99/max lag.

Without --model (or when it has no model), an untrained full-size built-in model stands in:
the same network, so the same compute, just noise for audio.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fakediscord

TICK_S = 0.010


class Ticker:
    """Wakes every 10 ms and records how late each wake-up was."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (time, lag in s)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            self.samples.append((now, now - start - TICK_S))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def between(self, t0: float, t1: float) -> list[float]:
        return [lag for t, lag in self.samples if t0 <= t <= t1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> None:
    from bot.adapter.client import create_bot
    from bot.core.config import BotSettings
    from bot.core.services import Services
    from model.train import make_builtin_pipeline
    from tests.fakediscord import FAST_GUILD_READY_TIMEOUT, FakeDiscord, running

    tmp = Path(tempfile.mkdtemp(prefix="bench-lag-"))
    base = tmp / "models" / "base"
    if args.model and (Path(args.model) / "model_index.json").is_file():
        shutil.copytree(args.model, base)
        model = args.model
    else:
        make_builtin_pipeline().save_pretrained(base)
        model = "untrained built-in (full size)"
    ticker = Ticker()
    phases: list[tuple[str, float, float]] = []
    async with FakeDiscord() as emu:
        gid = str(emu.ids.guild)
        settings = BotSettings(
            _env_file=None, data_dir=tmp, sync_guilds=gid, track_seconds=args.seconds,
            sampler_steps=args.sampler_steps, finetune_steps=args.steps,
            finetune_batch_size=8, eval_clips=4,
            round_min_votes=16, round_min_rated_tracks=8)
        services = await Services.open(settings)
        await services.configs.update(gid, music_channel_id=emu.ids.text_channel)
        with emu.redirect():
            bot = create_bot(settings, services, sync_commands=True,
                             guild_ready_timeout=FAST_GUILD_READY_TIMEOUT)
            async with running(bot, emu, timeout=30):
                await bot.guilds_ready.wait()
                ticker.start()
                t0 = time.perf_counter()
                await asyncio.sleep(3)
                phases.append(("idle", t0, time.perf_counter()))

                for label in ("/generate (worker start + load)", "/generate (warm)"):
                    t0 = time.perf_counter()
                    payload = await emu.slash_command("generate", user_id=emu.ids.bob)
                    token = re.escape(payload["token"])
                    await emu.wait_for_call("POST", rf"/webhooks/\d+/{token}", timeout=1200)
                    phases.append((label, t0, time.perf_counter()))

                # Feedback for a round: eight rated tracks (copies of the generated audio:
                # what is measured is the loop while training runs, not what it learns).
                store = services.store
                [first] = await store.tracks(gid, limit=1)
                assert first.file is not None
                for i in range(8):
                    copy = Path(first.file).with_name(f"copy-{i}.ogg")
                    shutil.copy(first.file, copy)
                    track_id = await store.add_track(gid, first.model_version, "generated",
                                                     first.duration_s, i, str(copy))
                    for member in ("m1", "m2"):
                        await services.feedback.record_vote(track_id, member,
                                                            1 + (i + len(member)) % 5)
                t0 = time.perf_counter()
                summary = await bot.start_round(gid)
                phases.append((f"round ({args.steps} training steps + evaluation)", t0,
                               time.perf_counter()))
                assert summary is not None, "the round did not run"
        await services.close()
    shutil.rmtree(tmp, ignore_errors=True)

    print(f"model: {model}; {args.seconds:g}-s tracks, {settings.sampler_steps} sampler steps; "
          f"10 ms ticker on the bot's event loop")
    print(f"round: {summary.status} ({summary.reason[:70]})")
    print(f"{'phase':<44} {'s':>6} {'ticks':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'max at s':>8}")
    for label, t0, t1 in phases:
        lags = ticker.between(t0, t1)
        worst_at, worst = max(((t, lag) for t, lag in ticker.samples if t0 <= t <= t1),
                              key=lambda s: s[1])
        print(f"{label:<44} {t1 - t0:>6.1f} {len(lags):>6} "
              f"{1000 * statistics.median(lags):>7.2f} {1000 * percentile(lags, 99):>7.2f} "
              f"{1000 * worst:>7.2f} {worst_at - t0:>8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="data/models/base", help="a pipeline folder")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of /generate's track")
    ap.add_argument("--steps", type=int, default=30, help="the round's training steps")
    ap.add_argument("--sampler-steps", type=int, default=10,
                    help="sampler steps of /generate and of the round's evaluation")
    ap.add_argument("-v", "--verbose", action="store_true", help="the bot's log")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    # discord.py's heartbeat thread stamps a beat only after sending it; the emulator's
    # instant ACK can arrive first and be taken for a 41-s-late one: not loop lag.
    logging.getLogger("discord.gateway").setLevel(logging.ERROR)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
