"""Where model work runs: one interface, two backends.

- `LocalCompute` (the default, nothing to start): generation in one spawned worker process
  that keeps its pipeline loaded (bot/core/worker.py), a round's fine-tuning and evaluation
  in child processes (`python -m model.finetune SPEC`).
- `RayCompute` (`CROWDTUNE_COMPUTE=ray`, bot/core/ray_compute.py): the same work on a Ray
  cluster: generation on actors that keep models loaded, a round's steps as tasks with
  resource requests.

Both read a child's progress the same way: one JSON event a line (model/contracts.py), the
last one `done` (a TrainResult or Verdict) or `error`. The bot's event loop only awaits.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generic, TypeVar

from bot.core.config import Settings
from bot.core.errors import UserFacingError
from bot.core.worker import GenerationJob, GenerationResult, init_worker, run_job
from model.contracts import (
    ErrorEvent,
    OnEvent,
    StartedEvent,
    TrainResult,
    Verdict,
    parse_event,
)

Done = TypeVar("Done", TrainResult, Verdict)


class ChildFailed(Exception):
    """The training or evaluation step failed (one-line reason)."""


class ComputeUnavailable(UserFacingError):
    """The configured compute backend cannot be used (one line saying why)."""


class ComputeFailed(UserFacingError):
    """A generation job failed where it ran (the cluster was lost, an actor died)."""


@dataclass(frozen=True)
class ComputeInfo:
    """Where a piece of work ran: the round's JSON carries it as `compute`."""

    backend: str  # "local" or "ray"
    node: str  # host name (local) or the Ray node's address

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def child_env() -> dict[str, str]:
    """The environment of model processes. Passive OpenMP waiting: on 2 cores shared with the
    generation worker, spinning threads slowed training more than tenfold (measured)."""
    return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


class EventReader(Generic[Done]):
    """A child's stdout, line by line, into typed events; `outcome` gives its `done` event or
    raises ChildFailed with the child's own error line."""

    def __init__(self, module: str, done: type[Done], on_event: OnEvent | None) -> None:
        self.module, self.done, self.on_event = module, done, on_event
        self.result: Done | None = None
        self.error = ""

    def feed(self, raw: str | bytes) -> None:
        try:
            event = parse_event(raw, self.done)
        except ValueError as exc:  # an event with the wrong fields
            self.error = f"unreadable event: {exc}"
            return
        if event is None:  # not an event (a stray print)
            return
        if isinstance(event, self.done):
            self.result = event
        elif isinstance(event, ErrorEvent):
            self.error = event.error
        if self.on_event:
            self.on_event(event)

    def outcome(self, code: int | None, how: str | None = None) -> Done:
        if code == 0 and self.result is not None:
            return self.result
        if how is None:
            how = (f"was killed by signal {-code}" if code is not None and code < 0
                   else f"exited with status {code}")
        raise ChildFailed(f"{self.module} {how}" + (f": {self.error}" if self.error else ""))


async def run_child(module: str, spec_path: Path, log_path: Path, timeout: float,
                    on_event: OnEvent | None = None, *, done: type[Done],
                    runner: Sequence[str] = ()) -> Done:
    """Run `python -m module spec` here (or `python -m *runner module spec`: a runner that
    places the work elsewhere and relays its events) and return its 'done' event, read as
    `done` (TrainResult or Verdict). Its other JSON lines are progress events (a runner's
    PlacedEvent says where the work runs), passed to `on_event` as they come, after a
    StartedEvent."""
    reader = EventReader(module, done, on_event)
    argv = [*runner, module, str(spec_path)] if runner else [module, str(spec_path)]
    with log_path.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", *argv,
            stdout=asyncio.subprocess.PIPE, stderr=err, env=child_env(),
        )
        if on_event:
            on_event(StartedEvent(module=module, pid=proc.pid))
        try:
            async with asyncio.timeout(timeout):
                assert proc.stdout is not None
                async for raw in proc.stdout:
                    reader.feed(raw)
                code = await proc.wait()
        except TimeoutError:
            await _stop(proc)
            raise ChildFailed(f"{module} took longer than {timeout:.0f} s and was stopped"
                              ) from None
        except asyncio.CancelledError:
            await _stop(proc)
            raise
    return reader.outcome(code)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM first (a runner then cancels its task on the cluster), SIGKILL after 10 s."""
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


class Compute:
    """The interface: generation jobs (in one spawned gateway process that keeps what it
    loaded between jobs), and a round's model steps (`run_model`, a child process each)."""

    backend = "local"

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None
        self._where = ComputeInfo(self.backend, socket.gethostname())

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Spawned children read the environment at start: passive OpenMP waiting keeps
            # generation and a round's training from spinning against each other on 2 cores.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            init, args = self._gateway()
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=init, initargs=args)
        return self._pool

    def _gateway(self) -> tuple[Callable[..., None], tuple]:
        """The generation process's initializer and its arguments."""
        return init_worker, (self.threads,)

    def _job(self) -> Callable[[GenerationJob], GenerationResult]:
        """What the generation process runs per job."""
        return run_job

    def _runner(self) -> Sequence[str]:
        """The module that runs a round step elsewhere (none: here)."""
        return ()

    async def generate(self, job: GenerationJob) -> GenerationResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor(), self._job(), job)

    async def run_model(self, module: str, spec_path: Path, log_path: Path, timeout: float,
                        on_event: OnEvent | None = None, *, done: type[Done]) -> Done:
        return await run_child(module, spec_path, log_path, timeout, on_event, done=done,
                               runner=self._runner())

    def check(self) -> ComputeInfo:
        """Whether the backend can take work (blocking; ComputeUnavailable, one line, if
        not). Here: always."""
        return self._where

    def where(self) -> ComputeInfo:
        """Where work goes (a round's steps say where they ran in a PlacedEvent)."""
        return self._where

    def close(self) -> None:
        """Stop the generation process (waits for a job in flight)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class LocalCompute(Compute):
    """This machine: one spawned generation worker, round steps as child processes."""


def open_compute(settings: Settings) -> Compute:
    """The backend the settings ask for; ComputeUnavailable (one line) when Ray is asked
    for and cannot be reached or cannot see the data dir."""
    if settings.compute == "ray":
        from bot.core.ray_compute import RayCompute

        return RayCompute.connect(settings)
    return LocalCompute(settings.torch_threads)
