"""A log of every REST call the bot makes, with queries and deterministic waiting."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RecordedFile:
    """One file part of a multipart request (``files[n]`` field)."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedCall:
    """One HTTP request as the emulator received it and how it answered."""

    index: int
    method: str
    path: str  # decoded, without the /api/v10 prefix, e.g. "/channels/1/messages/2/reactions/1️⃣/@me"
    query: dict[str, str]
    json: Any = None  # body of an application/json request
    payload_json: Any = None  # the payload_json part of a multipart request
    files: list[RecordedFile] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0
    response: Any = None

    @property
    def body(self) -> Any:
        """The JSON the bot sent, whichever way it was encoded."""
        return self.payload_json if self.payload_json is not None else self.json

    def match(self, method: str | None, path: str | None) -> bool:
        if method not in (None, "*") and self.method != method.upper():
            return False
        return path is None or re.fullmatch(path, self.path) is not None


Predicate = Callable[[RecordedCall], bool]


class CallRecorder:
    def __init__(self) -> None:
        self.all: list[RecordedCall] = []
        self._changed = asyncio.Condition()

    async def add(self, call: RecordedCall) -> None:
        call.index = len(self.all)
        self.all.append(call)
        async with self._changed:
            self._changed.notify_all()

    def mark(self) -> int:
        """A position in the log; pass it as ``since`` to ignore earlier calls."""
        return len(self.all)

    def calls(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        where: Predicate | None = None,
        since: int = 0,
    ) -> list[RecordedCall]:
        """Recorded calls matching an HTTP method and a regex that must match the whole path."""
        return [
            c for c in self.all[since:] if c.match(method, path) and (where is None or where(c))
        ]

    async def wait_for_call(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        where: Predicate | None = None,
        since: int = 0,
        count: int = 1,
        timeout: float = 5.0,
    ) -> RecordedCall:
        """Wait until ``count`` matching calls exist (at or after ``since``); return the last one.

        Already recorded calls count, so there is no race between triggering and waiting.
        """

        def ready() -> bool:
            return len(self.calls(method, path, where=where, since=since)) >= count

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(ready)
        except TimeoutError:
            seen = "\n  ".join(f"{c.method} {c.path} -> {c.status}" for c in self.all[since:])
            raise AssertionError(
                f"no {count} call(s) {method} {path} within {timeout}s; saw:\n  {seen or '(none)'}"
            ) from None
        return self.calls(method, path, where=where, since=since)[count - 1]
