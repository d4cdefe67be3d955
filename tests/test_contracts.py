"""The typed contracts between the bot and the model's child processes (model/contracts.py)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import pytest

from bot.core.compute import ChildFailed, run_child
from model.contracts import (
    DataEvent,
    ErrorEvent,
    EvalMetrics,
    EvalSpec,
    FinetuneSpec,
    ItemKind,
    PreferencePair,
    RatedFile,
    StartedEvent,
    StepEvent,
    TrainItem,
    TrainResult,
    Verdict,
    parse_event,
)
from model.evaluate import verdict

METRICS = EvalMetrics(clips=4, diversity_ratio=0.9, flatness_champion=0.1,
                      flatness_candidate=0.1, loudness_champion=-20.0,
                      loudness_candidate=-21.0)


def test_finetune_spec_saves_and_loads_the_same_nested_rows(tmp_path):
    spec = FinetuneSpec(
        parent_dir="/m/v1", out_dir="/w/cand",
        items=[TrainItem("track:1", "/t/1.ogg", 1.5, ItemKind.TRACK, mel="/t/1.npy",
                         tags={"instrument": "piano", "mode": "minor"}),
               TrainItem("upload:2", "/u/2.mp3", 2.0, ItemKind.UPLOAD)],
        pairs=[PreferencePair("track:1", "track:3")],
        rated=[RatedFile("/t/1.ogg", 0.7), RatedFile("/u/2.mp3", 2.0)],
        steps=7, pool_cache=None, dpo_weight=0.5)
    spec.save(tmp_path / "spec.json")
    loaded = FinetuneSpec.load(tmp_path / "spec.json")
    assert loaded == spec
    assert type(loaded.items[1].kind) is ItemKind and loaded.items[1].kind == ItemKind.UPLOAD
    assert isinstance(loaded.pairs[0], PreferencePair) and loaded.items[1].mel is None
    assert loaded.items[0].tags == {"instrument": "piano", "mode": "minor"}
    assert loaded.items[1].tags is None  # an upload: made with no tags
    assert json.loads((tmp_path / "spec.json").read_text())["items"][0]["kind"] == "track"


def test_eval_spec_round_trips_and_rejects_unknown_fields(tmp_path):
    spec = EvalSpec(champion_dir="a", candidate_dir="b", rated=[RatedFile("x.ogg", -0.5)],
                    liked=["y.ogg"], clips=3)
    spec.save(tmp_path / "ev.json")
    assert EvalSpec.load(tmp_path / "ev.json") == spec
    (tmp_path / "bad.json").write_text(json.dumps({**asdict(spec), "clipz": 3}))
    with pytest.raises(ValueError, match="clipz"):
        EvalSpec.load(tmp_path / "bad.json")


def test_events_parse_back_into_their_types():
    error = '{"event": "error", "error": "RuntimeError: CUDA out of memory"}'
    assert parse_event(error, TrainResult) == ErrorEvent("RuntimeError: CUDA out of memory")
    assert parse_event(b"not json\n", TrainResult) is None
    assert parse_event('{"event": "hello"}', TrainResult) is None
    assert parse_event("[1, 2]", TrainResult) is None
    step = StepEvent(step=10, steps=150, loss=0.25)
    assert parse_event(step.to_json(), TrainResult) == step
    assert StepEvent.from_json(step.to_json()) == step
    data = DataEvent(windows=8, pairs=0, replay=512, dpo=False, guided=True,
                     reward_model_corr=0.4)
    assert parse_event(data.to_json(), Verdict) == data
    done = TrainResult(windows=8, pairs=1, replay=512, dpo=False, final_loss=0.2, seconds=3.0)
    assert parse_event(done.to_json(), TrainResult) == done
    v = Verdict(promote=True, reason="predicted reward +0.1", metrics=METRICS)
    back = parse_event(v.to_json(), Verdict)
    assert back == v and isinstance(back.metrics, EvalMetrics)
    with pytest.raises(ValueError):  # a 'done' of the other kind: wrong fields
        parse_event(done.to_json(), Verdict)
    with pytest.raises(ValueError):
        StepEvent.from_json(error)


def test_verdict_guards_then_trusted_reward_then_liked_distance():
    spec = EvalSpec(champion_dir="", candidate_dir="")
    assert verdict(METRICS, spec) == Verdict(False, "nothing to measure the candidate by",
                                             METRICS)
    collapsed = EvalMetrics(**{**asdict(METRICS), "diversity_ratio": 0.3})
    assert not verdict(collapsed, spec).promote
    assert "diversity" in verdict(collapsed, spec).reason
    trusted = EvalMetrics(**{**asdict(METRICS), "reward_model_corr": 0.5,
                             "pred_reward_champion": 0.1, "pred_reward_candidate": 0.3,
                             "liked_dist_champion": 1.0, "liked_dist_candidate": 2.0})
    assert verdict(trusted, spec).promote  # the reward model outranks the distance
    untrusted = EvalMetrics(**{**asdict(trusted), "reward_model_corr": 0.05})
    v = verdict(untrusted, spec)
    assert not v.promote and "reward model not trusted" in v.reason
    assert v.metrics is untrusted


def _fake_child(tmp_path, monkeypatch, body: str) -> None:
    (tmp_path / "fakechild.py").write_text(body)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{':'.join(sys.path)}")


async def test_run_child_reads_typed_events_and_the_error_line(tmp_path, monkeypatch):
    done = TrainResult(windows=1, pairs=0, replay=0, dpo=False, final_loss=0.1, seconds=0.5)
    _fake_child(tmp_path, monkeypatch, "\n".join([
        "print('loading weights...')",  # a stray line is not an event
        f"print({StepEvent(1, 1, 0.3).to_json()!r})",
        f"print({done.to_json()!r})"]))
    events = []
    result = await run_child("fakechild", tmp_path / "spec.json", tmp_path / "log", 30,
                             events.append, done=TrainResult)
    assert result == done
    assert isinstance(events[0], StartedEvent) and events[0].module == "fakechild"
    assert events[1:] == [StepEvent(1, 1, 0.3), done]

    _fake_child(tmp_path, monkeypatch, "\n".join([
        "import sys",
        f"print({ErrorEvent('ValueError: no windows').to_json()!r})",
        "sys.exit(1)"]))
    with pytest.raises(ChildFailed, match="exited with status 1: ValueError: no windows"):
        await run_child("fakechild", tmp_path / "spec.json", tmp_path / "log", 30,
                        done=TrainResult)


def test_a_child_process_ends_when_its_parent_is_killed(tmp_path):
    """A killed bot or simulation leaves no model process behind (exit_with_parent)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pidfile = tmp_path / "child.pid"
    child = ("import os, sys, time; from model.contracts import exit_with_parent; "
             f"exit_with_parent(); open({str(pidfile)!r}, 'w').write(str(os.getpid())); "
             "time.sleep(60)")
    parent = ("import subprocess, sys, time; "
              f"subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", parent])
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.1)
        pid = int(pidfile.read_text())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            # A zombie re-parented to init counts as gone once reaped; check its state.
            try:
                state = open(f"/proc/{pid}/stat").read().split()[2]
            except FileNotFoundError:
                break
            if state == "Z":
                break
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.1)
    finally:
        proc.kill()
