"""Each guild's weekly round and daily posts: APScheduler cron jobs on the bot's event loop.

Jobs live in memory and are rebuilt from the guild configs at every start, so "was a round
missed while the bot was down?" is answered from what the database remembers instead:
`rounds_handled_until`, the latest scheduled round time already handled. At start (and at
every cron firing) the latest scheduled time at or before now is compared with it; if it is
newer, the round runs once and the mark moves first, so however many weeks were missed, and
whether the bot crashes mid-round or not, a scheduled time is never run twice.

The clock is injected (`Clock`): tests move a fake clock past a round time and fire the job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.core.clock import Clock, system_clock
from bot.core.guild_config import GuildConfig, GuildConfigs

log = logging.getLogger(__name__)

GuildJob = Callable[[str], Awaitable[None]]
LOOKBACK = timedelta(days=8)  # longer than the longest period (weekly)


def round_trigger(cfg: GuildConfig) -> CronTrigger:
    return CronTrigger(day_of_week=cfg.round_day, hour=cfg.round_hour, minute=cfg.round_minute,
                       timezone=cfg.zone)


def post_trigger(cfg: GuildConfig) -> CronTrigger | None:
    if not cfg.posts_per_day:
        return None
    return CronTrigger(hour=",".join(map(str, cfg.post_hours)), minute=0, timezone=cfg.zone)


def last_fire_time(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The trigger's latest fire time at or before `now` (within `LOOKBACK`)."""
    last = None
    t = trigger.get_next_fire_time(None, now - LOOKBACK)
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
    return last


class GuildScheduler:
    def __init__(self, configs: GuildConfigs, run_round: GuildJob, post: GuildJob,
                 clock: Clock = system_clock) -> None:
        """`run_round(guild)` should start the round and return (the report follows later);
        `post(guild)` generates and posts the scheduled track(s)."""
        self.configs = configs
        self._run_round = run_round
        self._post = post
        self.clock = clock
        self.aps = AsyncIOScheduler(timezone=UTC)
        self._due_lock = asyncio.Lock()
        self._stopping = False

    def start(self) -> None:
        """Start on the running event loop (the bot's `setup_hook`)."""
        if not self.aps.running:
            self._stopping = False
            self.aps.start()

    def shutdown(self) -> None:
        # AsyncIOScheduler stops on the loop's next turn; a second call before then would
        # fail there, so the flag, not `aps.running`, says whether to ask.
        if self.aps.running and not self._stopping:
            self._stopping = True
            self.aps.shutdown(wait=False)

    async def add_guild(self, guild_id: int | str, *, schedule_changed: bool = False
                        ) -> GuildConfig:
        """(Re)install the guild's jobs. The first time, or after a schedule change, the
        schedule starts now: earlier round times were never missed."""
        gid = str(guild_id)
        cfg = await self.configs.get(gid)
        if schedule_changed or not cfg.schedule_since:
            cfg = await self.configs.update(gid, schedule_since=self.clock().timestamp())
        # Late firings (a busy loop, a suspended laptop) still run once, coalesced.
        opts = {"replace_existing": True, "coalesce": True, "max_instances": 1,
                "misfire_grace_time": None}
        self.aps.add_job(self.run_due_round, round_trigger(cfg), args=[gid], id=f"round:{gid}",
                         name=f"weekly round of guild {gid}", **opts)
        trigger = post_trigger(cfg)
        if trigger is None:
            self.remove_job(f"post:{gid}")
        else:
            self.aps.add_job(self._post_job, trigger, args=[gid], id=f"post:{gid}",
                             name=f"scheduled posts of guild {gid}", **opts)
        return cfg

    def add_daily(self, job_id: str, hour: int, job: Callable[[], Awaitable[None]]) -> None:
        """A job every day at `hour`:00 UTC (the daily backup); a failure is logged."""
        async def run() -> None:
            try:
                await job()
            except Exception:
                log.exception("the daily job %s failed", job_id)

        self.aps.add_job(run, CronTrigger(hour=hour, minute=0, timezone=UTC), id=job_id,
                         name=job_id, replace_existing=True, coalesce=True, max_instances=1,
                         misfire_grace_time=None)

    def remove_guild(self, guild_id: int | str) -> None:
        for kind in ("round", "post"):
            self.remove_job(f"{kind}:{guild_id}")

    def remove_job(self, job_id: str) -> None:
        if self.aps.get_job(job_id) is not None:
            self.aps.remove_job(job_id)

    def next_run(self, job_id: str) -> datetime | None:
        job = self.aps.get_job(job_id)
        return job.next_run_time if job is not None else None

    async def run_due_round(self, guild_id: int | str) -> bool:
        """Run the guild's round if a scheduled time passed that was not handled yet;
        what the cron job calls, and what the bot calls at start (catch-up)."""
        gid = str(guild_id)
        async with self._due_lock:
            cfg = await self.configs.get(gid)
            due = last_fire_time(round_trigger(cfg), self.clock())
            if due is None or due.timestamp() <= max(cfg.schedule_since,
                                                     cfg.rounds_handled_until):
                return False
            await self.configs.update(gid, rounds_handled_until=due.timestamp())
        log.info("guild %s: round scheduled for %s is due", gid, due.isoformat())
        try:
            await self._run_round(gid)
        except Exception:  # one guild's failure must not stop the others' schedules
            log.exception("guild %s: the scheduled round could not start", gid)
        return True

    async def _post_job(self, guild_id: str) -> None:
        try:
            await self._post(guild_id)
        except Exception:
            log.exception("guild %s: the scheduled post failed", guild_id)
