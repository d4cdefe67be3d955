"""The bot's pure parts: schedule arithmetic, missed rounds, the posting mix, limits, config."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from bot.core.config import DAYS, BotSettings
from bot.core.guild_config import (
    ConfigError,
    GuildConfig,
    GuildConfigs,
    spread_round_time,
    validate,
)
from bot.core.ratelimit import RateLimited, SlidingWindowLimiter
from bot.core.scheduler import GuildScheduler, last_fire_time, round_trigger
from bot.core.store import Store
from bot.core.tracks import plan_origins
from tests.bot_support import FakeClock


@pytest.fixture
async def configs(tmp_path):
    async with await Store.open(tmp_path / "db.sqlite3") as store:
        yield GuildConfigs(store, BotSettings(_env_file=None, data_dir=tmp_path))


def test_last_fire_time_in_the_guild_time_zone() -> None:
    cfg = GuildConfig("g", timezone="Europe/Berlin", round_day="sun", round_hour=18)
    trigger = round_trigger(cfg)
    monday = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
    assert last_fire_time(trigger, monday) == datetime(2031, 3, 2, 17, 0, tzinfo=UTC)
    just_before = datetime(2031, 3, 2, 16, 59, tzinfo=UTC)
    assert last_fire_time(trigger, just_before) == datetime(2031, 2, 23, 17, 0, tzinfo=UTC)
    # Summer time: 18:00 in Berlin is 16:00 UTC.
    july = datetime(2031, 7, 7, 0, 0, tzinfo=UTC)
    assert last_fire_time(trigger, july) == datetime(2031, 7, 6, 16, 0, tzinfo=UTC)


async def test_missed_rounds_run_once_and_new_schedules_miss_nothing(configs) -> None:
    clock = FakeClock(datetime(2031, 3, 5, 12, 0, tzinfo=UTC))  # a Wednesday
    ran: list[str] = []

    async def run_round(guild: str) -> None:
        ran.append(guild)

    async def post(guild: str) -> None:
        raise AssertionError("no post expected")

    scheduler = GuildScheduler(configs, run_round, post, clock)
    scheduler.start()
    try:
        await scheduler.add_guild("g")  # first seen now: last Sunday was not "missed"
        assert await scheduler.run_due_round("g") is False
        clock.advance(days=20)  # down for almost three weeks: three Sundays passed
        await scheduler.add_guild("g")  # the bot comes back
        assert await scheduler.run_due_round("g") is True
        assert await scheduler.run_due_round("g") is False  # never twice
        assert ran == ["g"]
        # The handled mark is in the database: a second restart does not run it again.
        restarted = GuildScheduler(GuildConfigs(configs.store, configs.defaults), run_round,
                                   post, clock)
        assert await restarted.run_due_round("g") is False
        # Moving the schedule to a day that just passed is not a missed round.
        await configs.update("g", round_day="mon")
        await scheduler.add_guild("g", schedule_changed=True)
        assert await scheduler.run_due_round("g") is False
        clock.advance(days=7)
        assert await scheduler.run_due_round("g") is True
        assert ran == ["g", "g"]
        job = scheduler.aps.get_job("round:g")
        assert job is not None and job.next_run_time is not None
        assert scheduler.next_run("post:g") is not None
        await configs.update("g", posts_per_day=0)
        await scheduler.add_guild("g")
        assert scheduler.next_run("post:g") is None
    finally:
        scheduler.shutdown()


def pick_one(recent: list[str], has_uploads: bool = True) -> str:
    (origin,) = plan_origins(recent, 1, 0.25, 0.25, has_uploads=has_uploads)
    return origin


def test_posting_mix_follows_the_shares_one_track_at_a_time() -> None:
    recent: list[str] = []
    for _ in range(20):
        recent.insert(0, pick_one(recent[:20]))
    assert Counter(recent) == {"generated": 10, "baseline": 5, "upload_seeded": 5}
    assert recent[-1] == "generated"  # the first post is the current model's
    without_uploads: list[str] = []
    for _ in range(8):
        without_uploads.insert(0, pick_one(without_uploads, has_uploads=False))
    assert Counter(without_uploads) == {"generated": 6, "baseline": 2}
    assert plan_origins([], 1, 0.0, 0.0, has_uploads=False) == ["generated"]


def test_a_batch_and_one_post_at_a_time_follow_the_same_policy() -> None:
    """The simulation's batches and the bot's scheduled posts are one policy."""
    one_at_a_time: list[str] = []
    for _ in range(40):
        one_at_a_time += plan_origins(one_at_a_time, 1, 0.25, 0.25, has_uploads=True)
    batch = plan_origins([], 40, 0.25, 0.25, has_uploads=True)
    assert batch == one_at_a_time
    assert Counter(batch) == {"generated": 20, "baseline": 10, "upload_seeded": 10}
    # After a run of baseline posts the next ones make up for the current model.
    assert plan_origins(["baseline"] * 3, 2, 0.25, 0.25, has_uploads=False) == [
        "generated", "generated"]


def test_sliding_window_limit() -> None:
    now = [1000.0]
    limiter = SlidingWindowLimiter(3600.0, lambda: now[0])
    uses = [limiter.acquire("m", 3) for _ in range(3)]
    now[0] += 600
    with pytest.raises(RateLimited) as caught:
        limiter.acquire("m", 3)
    assert caught.value.retry_after == pytest.approx(3000.0)
    limiter.acquire("other", 3)  # per key
    limiter.refund(uses[-1])
    limiter.acquire("m", 3)  # the refunded use is free again
    now[0] += 3000.5  # the first two have left the window
    limiter.acquire("m", 3)
    with pytest.raises(RateLimited) as off:
        limiter.acquire("x", 0)
    assert off.value.limit == 0


def test_guild_config_validation_and_post_hours() -> None:
    assert validate({"round_day": "Monday", "timezone": " Asia/Tokyo "}) == {
        "round_day": "mon", "timezone": "Asia/Tokyo"}
    for bad, message in [({"timezone": "Nowhere/Land"}, "Unknown time zone 'Nowhere/Land'"),
                         ({"round_day": "someday"}, "Unknown day 'someday'"),
                         ({"round_hour": 24}, "round hour must be from 0 to 23."),
                         ({"posts_per_day": 13}, "posts per day must be from 0 to 12."),
                         ({"colour": "red"}, "unknown setting 'colour'")]:
        with pytest.raises(ConfigError, match=message):
            validate(bad)
    assert GuildConfig("g", posts_per_day=3).post_hours == [9, 14, 18]
    assert GuildConfig("g", posts_per_day=1).post_hours == [9]
    assert len(set(GuildConfig("g", posts_per_day=12).post_hours)) == 12
    assert GuildConfig("g", posts_per_day=0).posts_when() == "no scheduled posts"


async def test_guild_configs_store_only_changes_and_reset(configs) -> None:
    cfg = await configs.update("g", music_channel_id=5, posts_per_day=4)
    assert (cfg.music_channel_id, cfg.posts_per_day, cfg.round_hour) == (5, 4, 18)
    assert await configs.store.guild_settings("g") == {"music_channel_id": 5,
                                                       "posts_per_day": 4}
    cfg = await configs.update("g", posts_per_day=None)  # back to the default
    assert cfg.posts_per_day == 3 and cfg.music_channel_id == 5
    fresh = GuildConfigs(configs.store, configs.defaults)
    assert await fresh.get("g") == cfg


async def test_default_rounds_spread_over_the_week_by_guild(tmp_path) -> None:
    settings = BotSettings(_env_file=None, data_dir=tmp_path, round_spread_hours=168)
    guilds = [str(g) for g in range(10**17, 10**17 + 700)]
    async with await Store.open(tmp_path / "db.sqlite3") as store:
        configs = GuildConfigs(store, settings)
        times = [((c := await configs.get(g)).round_day, c.round_hour) for g in guilds]
        per_day = Counter(day for day, _ in times)
        assert set(per_day) == set(DAYS) and max(per_day.values()) < 2 * min(per_day.values())
        assert len(set(times)) > 140  # most of the week's 168 hours have a round
        # Fixed per guild (another process computes the same), and a moderator's time wins.
        assert spread_round_time(guilds[0], "sun", 18, 168) == times[0]
        cfg = await configs.update(guilds[0], round_day="tue", round_hour=7)
        assert (cfg.round_day, cfg.round_hour) == ("tue", 7)
    assert spread_round_time(guilds[0], "sun", 18, 0) == ("sun", 18)  # the default: no spread
