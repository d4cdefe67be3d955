"""Recording feedback: the one path for both the bot (reactions, voice listening) and the CLI
(`crowdtune feedback import`), so an imported rating is stored exactly like a Discord one.

Votes are upserts (one per track and member; the last one counts). Listening is stored as
intervals of offsets into a play of the track; an imported `listened_s` becomes the interval
[0, listened_s] of an "imported play" (play_started_at 0) with the member present at its start.
Every write is idempotent: a replayed event or a re-imported file changes nothing. Imported
listening only ever adds to what is known (the union of intervals): a later file with less
listening for the same track and member does not shrink it.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bot.core.domain import MAX_STARS, MIN_STARS
from bot.core.errors import UserFacingError
from bot.core.ids import is_valid_id
from bot.core.listening import ListenInterval, Play
from bot.core.store import Store, Track

log = logging.getLogger(__name__)

# Discord snowflakes or simple names (the CLI's "alice"), like guild ids.
# Listening a little past the end is clock jitter, not a bad record; it is clipped.
LISTEN_TOLERANCE_S = 0.5
IMPORT_COLUMNS = ("track_id", "member_id", "stars", "listened_s")
_CSV_HELP = "a CSV file with the header track_id,member_id,stars,listened_s"


class FeedbackError(UserFacingError, ValueError):
    """Feedback we will not record; the message is one line."""


class FeedbackFileError(FeedbackError):
    """An import file that cannot be used at all (missing, unreadable, not CSV or JSONL)."""


@dataclass(frozen=True)
class RowError:
    line: int  # 1-based line number in the file
    reason: str


@dataclass(frozen=True)
class ImportSummary:
    path: str
    format: str  # "csv" or "jsonl"
    rows: int  # data rows read (blank lines and the CSV header not counted)
    votes: int  # votes recorded from good rows
    votes_changed: int  # of those, new or different from what was stored
    listens: int  # listening records from good rows
    listens_changed: int  # of those, new or longer than what was stored
    errors: tuple[RowError, ...]

    @property
    def rejected(self) -> int:
        return len(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rejected": self.rejected}


@dataclass(frozen=True)
class _Row:
    line: int
    track_id: int
    member_id: str
    stars: int | None
    listened_s: float | None


def member_key(member_id: int | str) -> str:
    """The stored form of a member id: a Discord snowflake (int) or a simple name."""
    if isinstance(member_id, bool):
        raise FeedbackError(f"invalid member id {member_id!r}")
    if isinstance(member_id, int):
        if member_id < 0:
            raise FeedbackError(f"invalid member id {member_id}")
        return str(member_id)
    if not is_valid_id(member_id):
        raise FeedbackError(f"invalid member id {member_id!r}: use a Discord user id or "
                            "letters, digits, - and _")
    return member_id


def check_stars(stars: object) -> int:
    """Stars as an int in 1..5 (an integral float or numeric string is accepted)."""
    value: float | None = None
    if isinstance(stars, int | float) and not isinstance(stars, bool):
        value = float(stars)
    elif isinstance(stars, str):
        try:
            value = float(stars.strip())
        except ValueError:
            value = None
    if value is None or not value.is_integer() or not MIN_STARS <= value <= MAX_STARS:
        raise FeedbackError(f"stars must be a whole number from {MIN_STARS} to {MAX_STARS}, "
                            f"got {stars!r}")
    return int(value)


class FeedbackService:
    def __init__(self, store: Store, listen_tolerance_s: float = LISTEN_TOLERANCE_S) -> None:
        self.store = store
        self.listen_tolerance_s = listen_tolerance_s

    async def _track(self, track_id: int) -> Track:
        track = await self.store.get_track(track_id)
        if track is None:
            raise FeedbackError(f"unknown track {track_id}")
        return track

    # --- what the bot calls ---------------------------------------------------------------

    async def compact(self, older_than_days: float) -> int:
        """Merge listening recorded more than `older_than_days` ago into what rewards read
        (Store.compact_listens); how many rows went."""
        return await self.store.compact_listens(self.store.now() - older_than_days * 86400)

    async def record_vote(self, track_id: int, member_id: int | str, stars: int) -> bool:
        """A member's 1-5 rating of a track (replacing theirs); True if anything changed."""
        member = member_key(member_id)
        value = check_stars(stars)
        await self._track(track_id)
        return await self.store.upsert_vote(track_id, member, value)

    async def remove_vote(self, track_id: int, member_id: int | str) -> bool:
        """A member took their rating back; True if there was one."""
        return await self.store.delete_vote(track_id, member_key(member_id))

    async def record_listen(
        self, track_id: int, member_id: int | str, play_started_at: float, start_s: float,
        end_s: float, present_at_start: bool,
    ) -> bool:
        """One interval of a member listening, as offsets in seconds into the play that began
        at `play_started_at` (wall clock; 0 for imported listening). A zero-length interval
        records presence only. True if anything changed."""
        member = member_key(member_id)
        track = await self._track(track_id)
        if not all(map(math.isfinite, (play_started_at, start_s, end_s))):
            raise FeedbackError("listening times must be finite numbers")
        if play_started_at < 0 or start_s < 0:
            raise FeedbackError(f"negative listening time (start {start_s:g} s)")
        if end_s < start_s:
            raise FeedbackError(f"listening ends ({end_s:g} s) before it starts ({start_s:g} s)")
        if end_s > track.duration_s + self.listen_tolerance_s:
            raise FeedbackError(f"listening to {end_s:g} s is longer than track {track_id} "
                                f"({track.duration_s:g} s)")
        end = min(end_s, track.duration_s)
        return await self.store.add_listen(track_id, member, play_started_at, min(start_s, end),
                                           end, present_at_start)

    async def record_play(self, play: Play, intervals: Iterable[ListenInterval]) -> int:
        """Persist what a `ListenTracker` closed for `play`, plus a presence mark for every
        member present at its start (one who left at once has no interval, yet counts).
        Safe to call again as more intervals close. Returns how many records changed."""
        changed = 0
        for member in sorted(play.present_at_start):
            changed += await self.record_listen(play.track_id, member, play.start, 0.0, 0.0,
                                                True)
        for iv in intervals:
            if iv.track_id != play.track_id:
                continue
            changed += await self.record_listen(
                iv.track_id, iv.member_id, play.start, max(0.0, iv.start - play.start),
                max(0.0, iv.end - play.start), iv.member_id in play.present_at_start)
        return changed

    # --- what the CLI calls ---------------------------------------------------------------

    async def import_file(self, path: str | os.PathLike[str]) -> ImportSummary:
        """Record every good row of a CSV or JSONL feedback file; the bad ones are reported
        with their line numbers. `FeedbackFileError` if the file itself is unusable."""
        path = Path(path)
        fmt, parsed = await asyncio.to_thread(read_feedback_file, path)
        errors: list[RowError] = []
        votes = votes_changed = listens = listens_changed = 0
        async with self.store.batch():  # one transaction: a big import is one fsync
            for item in parsed:
                if isinstance(item, RowError):
                    errors.append(item)
                    continue
                try:
                    track = await self._track(item.track_id)
                    if item.listened_s is not None:
                        self._check_listened(track, item.listened_s)
                    # Validated whole before writing: a bad row records nothing.
                    if item.stars is not None:
                        votes_changed += await self.record_vote(track.id, item.member_id,
                                                                item.stars)
                        votes += 1
                    if item.listened_s is not None:
                        listens_changed += await self.record_listen(
                            track.id, item.member_id, 0.0, 0.0, item.listened_s, True)
                        listens += 1
                except FeedbackError as exc:
                    errors.append(RowError(item.line, str(exc)))
        errors.sort(key=lambda e: e.line)
        summary = ImportSummary(path=str(path), format=fmt, rows=len(parsed), votes=votes,
                                votes_changed=votes_changed, listens=listens,
                                listens_changed=listens_changed, errors=tuple(errors))
        log.info("imported %s: %d votes (%d changed), %d listens (%d changed), %d rejected",
                 path, votes, votes_changed, listens, listens_changed, summary.rejected)
        return summary

    def _check_listened(self, track: Track, listened_s: float) -> None:
        if listened_s > track.duration_s + self.listen_tolerance_s:
            raise FeedbackError(f"listened_s {listened_s:g} is longer than track {track.id} "
                                f"({track.duration_s:g} s)")


# --- reading import files (blocking; runs in a thread) --------------------------------------


def read_feedback_file(path: Path) -> tuple[str, list[_Row | RowError]]:
    """("csv" | "jsonl", the rows in file order, each parsed or rejected)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FeedbackFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")  # a BOM from spreadsheet exports is not data
    except UnicodeDecodeError as exc:
        raise FeedbackFileError(f"{path} is not a text file; expected {_CSV_HELP} or "
                                "JSON Lines") from exc
    if "\0" in text:
        raise FeedbackFileError(f"{path} is not a text file; expected {_CSV_HELP} or JSON Lines")
    first = next((line.strip() for line in text.splitlines() if line.strip()), None)
    if first is None:
        raise FeedbackFileError(f"{path} is empty")
    suffix = path.suffix.lower()
    if first.startswith("[") and suffix != ".csv":
        raise FeedbackFileError(f"{path} is a JSON array; expected JSON Lines (one object "
                                "per line)")
    if suffix in (".jsonl", ".ndjson", ".json") or (suffix != ".csv" and first.startswith("{")):
        return "jsonl", _read_jsonl(text)
    return "csv", _read_csv(path, text)


def _read_csv(path: Path, text: str) -> list[_Row | RowError]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next((row for row in reader if row), [])
    names = [h.strip().lower() for h in header]
    unknown = [n for n in names if n not in IMPORT_COLUMNS]
    if (unknown or len(set(names)) != len(names) or not {"track_id", "member_id"} <= set(names)
            or not {"stars", "listened_s"} & set(names)):
        raise FeedbackFileError(
            f"{path} is neither {_CSV_HELP} (stars or listened_s may be left out) nor JSON "
            f"Lines; its first line is {','.join(header)[:80]!r}")
    rows: list[_Row | RowError] = []
    prev_line = reader.line_num
    while True:
        line = prev_line + 1  # where this record starts (a quoted field may span lines)
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows.append(RowError(line, f"malformed CSV: {exc}"))
            prev_line = reader.line_num
            continue
        prev_line = reader.line_num
        if not record or not any(field.strip() for field in record):
            continue
        if len(record) != len(names):
            rows.append(RowError(line, f"expected {len(names)} fields, got {len(record)}"))
            continue
        rows.append(_parse_row(line, dict(zip(names, record, strict=True))))
    return rows


def _read_jsonl(text: str) -> list[_Row | RowError]:
    rows: list[_Row | RowError] = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            rows.append(RowError(line, f"malformed JSON: {exc}"))
            continue
        if not isinstance(obj, dict):
            rows.append(RowError(line, "expected a JSON object"))
            continue
        unknown = sorted(k for k in obj if k not in IMPORT_COLUMNS)
        if unknown:
            # Strict: a misspelt key ("listened") would otherwise drop data silently.
            rows.append(RowError(line, f"unknown key {unknown[0]!r}; expected "
                                       f"{', '.join(IMPORT_COLUMNS)}"))
            continue
        rows.append(_parse_row(line, obj))
    return rows


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _parse_row(line: int, fields: dict[str, Any]) -> _Row | RowError:
    try:
        row = _Row(line=line, track_id=_track_id(fields.get("track_id")),
                   member_id=_member(fields.get("member_id")),
                   stars=None if _blank(fields.get("stars")) else check_stars(fields["stars"]),
                   listened_s=_listened(fields.get("listened_s")))
    except FeedbackError as exc:
        return RowError(line, str(exc))
    if row.stars is None and row.listened_s is None:
        return RowError(line, "the row has neither stars nor listened_s")
    return row


def _track_id(value: object) -> int:
    if _blank(value):
        raise FeedbackError("missing track_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{1,18}", value.strip()):
        return int(value)
    raise FeedbackError(f"track_id must be a whole number, got {value!r}")


def _member(value: object) -> str:
    if _blank(value):
        raise FeedbackError("missing member_id")
    return member_key(value.strip() if isinstance(value, str) else value)  # type: ignore[arg-type]


def _listened(value: object) -> float | None:
    if _blank(value):
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds):
        raise FeedbackError(f"listened_s must be a number of seconds, got {value!r}")
    if seconds < 0:
        raise FeedbackError(f"listened_s is negative ({seconds:g})")
    return seconds
