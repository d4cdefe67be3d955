"""Model work on a real local Ray cluster (CROWDTUNE_COMPUTE=ray): generation on actors, a
round's steps as tasks, a worker killed mid-round, and a cluster that is not there."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bot.core.compute import ComputeUnavailable, open_compute
from bot.core.config import Settings
from bot.core.ray_compute import RayCompute
from bot.core.rounds import RoundService
from bot.core.store import Store
from bot.core.tracks import TrackService
from model.contracts import PlacedEvent
from model.registry import ModelRegistry
from tests.helpers import make_base
from tests.test_rounds import GUILD, rate

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(temp: str) -> str:
    port = free_port()
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                    "--num-cpus=2", f"--temp-dir={temp}", "--include-dashboard=false",
                    "--object-store-memory=100000000", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=120,
                   env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    return f"127.0.0.1:{port}"


def kill_cluster(temp: str) -> None:
    """Every process of the cluster whose files are under `temp` (a lost machine)."""
    for entry in Path("/proc").iterdir():
        try:
            if temp.encode() in (entry / "cmdline").read_bytes():
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


@pytest.fixture(scope="module")
def cluster():
    """A head node on 127.0.0.1 with 2 CPUs, its files in a temp dir (short: Ray's socket
    paths must fit 107 characters); its processes killed at the end."""
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    try:
        yield start_cluster(temp)
    finally:
        kill_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def ray_settings(tmp_path: Path, address: str, **kw) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", compute="ray",  # type: ignore[call-arg]
                    ray_address=address, track_seconds=1.0, sampler_steps=3,
                    finetune_steps=4, finetune_batch_size=4, eval_clips=4, torch_threads=1,
                    round_min_votes=20, round_min_rated_tracks=8, **kw)


def test_a_cluster_that_is_not_there_is_one_clear_line(tmp_path):
    compute = open_compute(ray_settings(tmp_path, f"127.0.0.1:{free_port()}"))
    assert isinstance(compute, RayCompute)
    with pytest.raises(ComputeUnavailable, match=r"cannot reach the Ray cluster at 127\.0\.0\.1"):
        compute.check()


def the_node_process_of(spec: Path, timeout: float = 30.0) -> int:
    """The pid of the Ray worker whose task runs `python -m model.finetune SPEC` (SPEC under
    this test's data dir: another fine-tune on the machine is left alone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
                if cmd[1:4] == [b"-m", b"model.finetune", str(spec).encode()]:  # not the runner
                    status = (entry / "status").read_text()
                    return int(next(ln.split()[1] for ln in status.splitlines()
                                    if ln.startswith("PPid:")))
            except (OSError, ValueError):
                continue
        time.sleep(0.1)
    raise AssertionError("the fine-tune never started on the cluster")


async def test_generation_and_rounds_run_on_the_cluster(cluster, tmp_path):
    settings = ray_settings(tmp_path, cluster)
    make_base(settings.models_dir)
    registry = ModelRegistry(settings.models_dir)
    compute = open_compute(settings)
    assert compute.check().backend == "ray"
    try:
        async with await Store.open(settings.db_path) as store:
            tracks = TrackService(settings, store, registry, compute)
            rounds = RoundService(settings, store, registry, compute=compute)
            # Generation on an actor (the tracks are real files, as locally).
            await rate(store, tracks, 10, 3)
            assert len(await store.track_feedback(GUILD)) == 10

            # A worker killed mid-round: the round fails with one line, the champion stays.
            def kill_the_worker(event) -> None:
                if isinstance(event, PlacedEvent):
                    spec = settings.work_dir / "round-1" / "finetune.json"
                    threading.Thread(target=lambda: os.kill(
                        the_node_process_of(spec), signal.SIGKILL)).start()

            failed = await rounds.run_round(GUILD, kill_the_worker)
            assert failed.status == "failed", failed.reason
            # One line naming the step. Usually Ray's lost-worker error; once in a loaded full
            # run the step's own failure status came back first (not understood yet).
            assert "model.finetune" in failed.reason
            assert registry.active_name(GUILD) == "v0001"
            assert [v.version for v in registry.versions(GUILD)] == ["v0001"]

            # The next round works, and says where it ran.
            events = []
            done = await rounds.run_round(GUILD, events.append)
            assert done.status == "succeeded", done.reason
            assert done.compute["backend"] == "ray" and done.compute["node"]
            assert any(isinstance(e, PlacedEvent) for e in events)
            assert registry.info(GUILD, done.candidate_version).parent == "v0001"
    finally:
        compute.close()


def test_the_cli_generates_on_the_cluster(cluster, tmp_path):
    data = tmp_path / "data"
    make_base(data / "models")
    env = {**os.environ, "CROWDTUNE_COMPUTE": "ray", "CROWDTUNE_RAY_ADDRESS": cluster,
           "CROWDTUNE_SAMPLER_STEPS": "3", "CROWDTUNE_TRACK_SECONDS": "1",
           "CROWDTUNE_TORCH_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "bot", "--data-dir", str(data), "generate",
                          "--guild", "g", "-n", "2", "--out", str(tmp_path / "out"), "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "generating on the ray cluster" in out.stderr
    assert len(out.stdout.strip().splitlines()) == 2
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_workers_that_cannot_read_the_data_dir_are_one_clear_line(cluster, tmp_path):
    """The probe's marker is named through /proc/self/cwd: the bot's side finds it in its own
    working directory, a Ray worker looks in its own (as a node without the shared mount
    would look in a folder that is not there)."""
    (tmp_path / "marker").write_text("token")
    out = subprocess.run([sys.executable, "-m", "bot.core.ray_compute", "--address", cluster,
                          "--probe", "/proc/self/cwd/marker"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "its workers cannot read the data dir" in out.stdout.strip().splitlines()[-1]


async def test_a_cluster_lost_mid_round_fails_the_round_and_generation_clearly(
        tmp_path, monkeypatch):
    import asyncio

    from bot.core.compute import ComputeFailed
    from bot.core.worker import GenerationJob

    # Drivers give up on a lost cluster after 5 s here (Ray's default is a minute).
    monkeypatch.setenv("RAY_gcs_rpc_server_reconnect_timeout_s", "5")
    temp = tempfile.mkdtemp(prefix="rl", dir="/tmp")
    try:
        settings = ray_settings(tmp_path, start_cluster(temp))
        make_base(settings.models_dir)
        registry = ModelRegistry(settings.models_dir)
        compute = open_compute(settings)
        try:
            async with await Store.open(settings.db_path) as store:
                tracks = TrackService(settings, store, registry, compute)
                rounds = RoundService(settings, store, registry, compute=compute)
                await rate(store, tracks, 10, 3)

                def lose_the_cluster(event) -> None:
                    if isinstance(event, PlacedEvent):
                        threading.Thread(target=kill_cluster, args=(temp,)).start()

                async with asyncio.timeout(180):  # never hangs
                    failed = await rounds.run_round(GUILD, lose_the_cluster)
                assert failed.status == "failed" and "model.finetune" in failed.reason
                assert registry.active_name(GUILD) == "v0001"
                job = GenerationJob(str(registry.version_dir(GUILD, "v0001")), (1,), 1.0, 3)
                async with asyncio.timeout(180):
                    with pytest.raises(ComputeFailed, match="generation failed"):
                        await compute.generate(job)
        finally:
            compute.close()
    finally:
        kill_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)
