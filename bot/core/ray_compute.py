"""Model work on a Ray cluster (`CROWDTUNE_COMPUTE=ray`).

The bot's process never imports Ray: a Ray driver whose cluster is gone exits after a
minute, and a lost cluster must not take the bot with it. Two kinds of process hold the
connection instead:

- the generation gateway, one spawned process like the local generation worker. It keeps
  a pool of `GenerationActor`s, each with one model loaded, keyed by model folder (guild and
  version); when the pool is full the least recently used actor is given the new model.
- a runner per round step, `python -m bot.core.ray_compute [options] MODULE SPEC`. It submits
  `python -m MODULE SPEC` as a Ray task with the round's CPU/GPU request, relays the events
  the task writes, and exits with the step's status. A worker killed mid-step fails the step
  with one line, and the round with it; the champion stays active, and the next round works.

Artefacts: every node sees the data dir at the same path (shared storage: NFS, a cloud file
system, or one machine). A round reads the parent version, the rated tracks, the uploads,
the library and the corpus pool (tens to hundreds of MB, mostly unchanged between rounds),
and generation reads a guild's version on every load. Shipping those through Ray's object
store on every step would cost more than a mount, and the files must outlive the cluster
anyway. The candidate is written into the round's work folder on that storage; the
registry's promotion (an atomic rename) stays on the bot's side. Before the first job a probe
task checks that the cluster can read a file the bot just wrote in the data dir. If it
cannot, that is one clear line, rather than a failed round later.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from bot.core.compute import (
    Compute,
    ComputeFailed,
    ComputeInfo,
    ComputeUnavailable,
    child_env,
)
from bot.core.config import Settings
from bot.core.worker import GenerationJob, GenerationResult
from model.contracts import ErrorEvent, PlacedEvent, exit_with_parent

PROBE_TIMEOUT_S = 60.0  # connecting and running one task on a healthy cluster takes seconds
NAMESPACE = "crowdtune"


class RayCompute(Compute):
    backend = "ray"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.torch_threads)
        self.settings = settings
        self.address = settings.ray_address
        self._checked: ComputeInfo | None = None

    @classmethod
    def connect(cls, settings: Settings) -> RayCompute:
        """The backend, not yet checked (`check` probes the cluster)."""
        return cls(settings)

    def check(self) -> ComputeInfo:
        """Probe the cluster once: reachable, and able to read the data dir. Blocking
        (seconds); ComputeUnavailable with one line otherwise."""
        if self._checked is None:
            self._checked = probe(self.address, self.settings.data_dir)
            self._where = self._checked
        return self._checked

    def _gateway(self):
        s = self.settings
        return init_gateway, (self.address, s.ray_generation_actors, s.ray_generation_cpus,
                              s.torch_threads, s.generation_timeout_s)

    def _job(self):
        return generate_on_cluster

    def _runner(self) -> Sequence[str]:
        s = self.settings
        return ("bot.core.ray_compute", "--address", self.address,
                "--cpus", str(s.ray_round_cpus), "--gpus", str(s.ray_round_gpus))

    async def generate(self, job: GenerationJob) -> GenerationResult:
        await asyncio.to_thread(self.check)
        try:
            async with asyncio.timeout(self.settings.generation_timeout_s + 30):
                return await super().generate(job)
        except (BrokenProcessPool, TimeoutError) as exc:
            self._reset_gateway()
            what = ("did not answer in time" if isinstance(exc, TimeoutError)
                    else "connection was lost")
            raise ComputeFailed(f"generation failed: the Ray cluster at {self.address} "
                                f"{what}; try again in a minute") from None

    async def run_model(self, module, spec_path, log_path, timeout, on_event=None, *, done):
        await asyncio.to_thread(self.check)
        return await super().run_model(module, spec_path, log_path, timeout, on_event,
                                       done=done)

    def _reset_gateway(self) -> None:
        """Drop a gateway that broke or hangs (a fresh one reconnects on the next job)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)


# --- probing, from the bot's side -----------------------------------------------------------

def probe(address: str, data_dir: Path) -> ComputeInfo:
    """Connect to the cluster in a child process and have a task read a file just written in
    the data dir; its node and the cluster's size, or ComputeUnavailable."""
    if address != "auto":
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
                pass
        except (OSError, ValueError) as exc:
            raise ComputeUnavailable(f"cannot reach the Ray cluster at {address}: "
                                     f"{exc.strerror or exc}") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = data_dir.resolve() / f".ray-probe-{token}"
    marker.write_text(token)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bot.core.ray_compute", "--address", address,
             "--probe", str(marker)],
            capture_output=True, timeout=PROBE_TIMEOUT_S, env=child_env(), check=False)
    except subprocess.TimeoutExpired:
        raise ComputeUnavailable(f"the Ray cluster at {address} did not answer within "
                                 f"{PROBE_TIMEOUT_S:.0f} s") from None
    finally:
        marker.unlink(missing_ok=True)
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        answer = {"error": f"the probe exited with status {proc.returncode}"}
    if "error" in answer:
        raise ComputeUnavailable(f"Ray cluster at {address}: {answer['error']}")
    return ComputeInfo("ray", answer["node"])


# --- inside the cluster's driver processes ----------------------------------------------------

def ray_init(address: str) -> Any:
    import ray

    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
             logging_level="warning")
    return ray


def _probe_main(address: str, marker: str) -> int:
    try:
        ray = ray_init(address)
    except Exception as exc:  # noqa: BLE001 - one line back to the bot
        print(json.dumps({"error": f"cannot connect: {type(exc).__name__}: {exc}"}))
        return 1

    @ray.remote(num_cpus=0)
    def read(path: str) -> tuple[str, str]:
        try:
            text = Path(path).read_text()
        except OSError:
            text = ""
        return text, ray.util.get_node_ip_address()

    text, node = ray.get(read.remote(marker), timeout=PROBE_TIMEOUT_S / 2)
    if text != Path(marker).read_text():
        print(json.dumps({"error": f"its workers cannot read the data dir "
                                   f"{Path(marker).parent} (node {node}); mount it at the "
                                   "same path on every node"}))
        return 1
    print(json.dumps({"node": node, "nodes": len(ray.nodes())}))
    return 0


# The round step as a task: the model's process on the node, its stdout into a file on the
# shared data dir (the runner relays it), its first line saying where it runs.
def _step(module: str, spec: str, events: str, errlog: str) -> int:
    import ray

    with open(events, "wb", buffering=0) as out, open(errlog, "wb") as err:
        out.write(PlacedEvent("ray", ray.util.get_node_ip_address()).to_json().encode() + b"\n")
        return subprocess.run([sys.executable, "-m", module, spec], stdout=out, stderr=err,
                              env=child_env(), check=False).returncode


def _run_main(address: str, cpus: float, gpus: float, module: str, spec: str) -> int:
    try:
        ray = ray_init(address)
    except Exception as exc:  # noqa: BLE001 - one line back to the bot
        print(ErrorEvent(f"cannot connect to the Ray cluster at {address}: {exc}").to_json(),
              flush=True)
        return 1
    events = Path(spec).with_suffix(".events")
    errlog = Path(spec).with_suffix(".node.log")
    ref = ray.remote(_step).options(num_cpus=cpus, num_gpus=gpus, max_retries=0).remote(
        module, spec, str(events), str(errlog))

    def cancel(*_: object) -> None:  # stopped by the bot (timeout) or orphaned: stop the task
        ray.cancel(ref, force=True)
        sys.exit(1)

    signal.signal(signal.SIGTERM, cancel)
    exit_with_parent(before_exit=lambda: ray.cancel(ref, force=True))
    offset, tail = 0, b""

    def relay() -> None:
        nonlocal offset, tail
        if not events.exists():
            return
        with events.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
        offset += len(chunk)
        *lines, tail = (tail + chunk).split(b"\n")
        for line in lines:
            sys.stdout.buffer.write(line + b"\n")
        sys.stdout.flush()

    while not ray.wait([ref], timeout=0.5)[0]:
        relay()
    try:
        code = ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - the worker died, or the cluster went away
        relay()
        print(ErrorEvent(f"the Ray worker running it was lost ({type(exc).__name__})"
                         ).to_json(), flush=True)
        return 1
    relay()
    if errlog.exists():
        sys.stderr.write(errlog.read_text(errors="replace"))
    return code


# The generation gateway (a spawned process): the connection and the actor pool.
_gateway: dict[str, Any] = {}
_actors: OrderedDict[str, Any] = OrderedDict()


class GenerationActor:
    """One loaded model on a node (bot/core/worker.py caches it between jobs)."""

    def __init__(self, threads: int) -> None:
        from bot.core.worker import init_worker

        init_worker(threads)

    def run(self, job: GenerationJob) -> GenerationResult:
        from bot.core.worker import run_job

        return run_job(job)


def init_gateway(address: str, actors: int, cpus: float, threads: int,
                 timeout: float) -> None:
    exit_with_parent()
    ray = ray_init(address)
    _gateway.update(ray=ray, actors=actors, timeout=timeout,
                    actor=ray.remote(GenerationActor).options(num_cpus=cpus),
                    threads=threads)


def generate_on_cluster(job: GenerationJob) -> GenerationResult:
    """Run `job` on the actor that holds its model (or the least recently used one)."""
    ray = _gateway["ray"]
    actor = _actors.pop(job.model_dir, None)
    if actor is None:
        if len(_actors) >= _gateway["actors"]:
            _, actor = _actors.popitem(last=False)  # evicted: it loads the new model
        else:
            actor = _gateway["actor"].remote(_gateway["threads"])
    try:
        result = ray.get(actor.run.remote(job), timeout=_gateway["timeout"])
    except Exception as exc:  # noqa: BLE001 - the actor died or hangs: not kept
        ray.kill(actor)
        raise ComputeFailed(f"generation failed on the Ray cluster "
                            f"({type(exc).__name__}); try again") from None
    _actors[job.model_dir] = actor
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bot.core.ray_compute",
                                 description="Run a round step on a Ray cluster.")
    ap.add_argument("--address", required=True)
    ap.add_argument("--cpus", type=float, default=1.0)
    ap.add_argument("--gpus", type=float, default=0.0)
    ap.add_argument("--probe", metavar="FILE", help="check the cluster can read FILE")
    ap.add_argument("module", nargs="?")
    ap.add_argument("spec", nargs="?")
    a = ap.parse_args(argv)
    if a.probe:
        return _probe_main(a.address, a.probe)
    if not (a.module and a.spec):
        ap.error("MODULE and SPEC are needed")
    started = time.perf_counter()
    code = _run_main(a.address, a.cpus, a.gpus, a.module, a.spec)
    print(f"{a.module} on Ray: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
