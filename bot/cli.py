"""The `crowdtune` command line (a contract: see DESIGN.md). Bad input: one line, exit 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bot.config import Settings, load_settings
from model.pipeline import CheckpointError
from model.registry import ModelRegistry, RegistryError

log = logging.getLogger("crowdtune")
console = Console(stderr=True)
GUILD_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class UserError(Exception):
    """A one-line reason shown to the user; exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise UserError(f"{self.prog}: {message}")


def guild_arg(value: str) -> str:
    if not GUILD_RE.match(value):
        raise argparse.ArgumentTypeError(
            f"invalid guild {value!r}: use a Discord guild id or letters, digits, - and _")
    return value


def positive_int(limit: int):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if not 1 <= n <= limit:
            raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {limit}, "
                                             f"got {value!r}")
        return n
    return parse


def build_parser() -> Parser:
    p = Parser(prog="crowdtune", description="A Discord bot that makes music for a "
               "community and learns its taste.")
    p.add_argument("--data-dir", type=Path, help="data folder (default ./data, env "
                   "CROWDTUNE_DATA_DIR)")
    p.add_argument("--config", type=Path, help="an env-style settings file (like .env)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    pre = sub.add_parser("pretrain", help="train the built-in base model on the starter corpus")
    pre.add_argument("--steps", type=positive_int(10**6), help="training steps")
    pre.add_argument("--clips", type=positive_int(10**6), help="corpus clips to synthesise")
    pre.add_argument("--force", action="store_true", help="retrain even if a base exists")

    gen = sub.add_parser("generate", help="generate and record tracks with a guild's model")
    gen.add_argument("--guild", required=True, type=guild_arg)
    gen.add_argument("-n", type=positive_int(100), default=1, help="number of tracks")
    gen.add_argument("--out", type=Path, required=True, help="folder for the audio files")
    gen.add_argument("--seed", type=int, help="first seed (track i uses seed + i)")
    gen.add_argument("--seconds", type=float, help="track length (default 20)")
    gen.add_argument("--wav", action="store_true", help="also write WAV files")
    gen.add_argument("--json", action="store_true", help="one JSON line per track")

    model = sub.add_parser("model", help="a guild's model versions")
    msub = model.add_subparsers(dest="model_command", required=True, parser_class=Parser)
    ml = msub.add_parser("list", help="versions, newest last")
    ml.add_argument("--guild", required=True, type=guild_arg)
    ml.add_argument("--json", action="store_true")
    mr = msub.add_parser("rollback", help="make the previous (or a named) version active")
    mr.add_argument("--guild", required=True, type=guild_arg)
    mr.add_argument("--to", help="version to activate, e.g. v0002 (default: the parent)")
    return p


def progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console)


# --- commands -----------------------------------------------------------------------------

def cmd_pretrain(settings: Settings, args: argparse.Namespace) -> int:
    from model.pipeline import CrowdtunePipeline
    from model.train import PretrainConfig, TrainConfig, pretrain

    registry = ModelRegistry(settings.models_dir)
    if registry.has_base() and not args.force:
        console.print(f"base model already at {registry.base_dir} (use --force to retrain)")
        return 0
    registry.root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=registry.root, prefix=".base."))
    try:
        if settings.base_model != "builtin":
            console.print(f"importing base model {settings.base_model}")
            CrowdtunePipeline.from_pretrained(settings.base_model).save_pretrained(tmp)
        else:
            cfg = PretrainConfig(
                clips=args.clips or settings.pretrain_clips,
                train=TrainConfig(steps=args.steps or settings.pretrain_steps,
                                  seed=settings.pretrain_seed),
            )
            with progress_bar() as bar:
                task = bar.add_task("pretraining", total=cfg.train.steps, info="")
                report = pretrain(tmp, cfg, progress=lambda s, _t, loss: bar.update(
                    task, completed=s, info=f"loss {loss:.3f}"))
            console.print(f"pretrained in {report['seconds']} s, final loss "
                          f"{report['final_loss']:.4f}")
        if registry.base_dir.exists():
            shutil.rmtree(registry.base_dir)
        tmp.rename(registry.base_dir)  # atomic: a crash above leaves no half-written base
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"base model saved to {registry.base_dir}")
    return 0


async def _generate(settings: Settings, args: argparse.Namespace) -> int:
    from bot.store import Store
    from bot.tracks import TrackService
    from bot.worker import GenerationWorker

    if args.seconds is not None and not 1 <= args.seconds <= 300:
        raise UserError(f"--seconds must be between 1 and 300, got {args.seconds}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    if args.wav:
        settings = settings.model_copy(update={"keep_wav": True})
    worker = GenerationWorker(settings.torch_threads)
    async with await Store.open(settings.db_path) as store:
        service = TrackService(settings, store, ModelRegistry(settings.models_dir), worker)
        try:
            await service.active_version(args.guild)  # fail before drawing a progress bar
            with progress_bar() as bar:
                task = bar.add_task(f"generating {args.n} track(s)", total=args.n, info="")
                for i in range(args.n):
                    seed = None if args.seed is None else args.seed + i
                    (track,) = await service.generate(args.guild, 1, args.out, seed=seed,
                                                      seconds=args.seconds)
                    bar.update(task, completed=i + 1, info=f"#{track.track_id}")
                    if args.json:
                        print(json.dumps(track.to_dict()), flush=True)
                    else:
                        bar.console.print(f"track {track.track_id}: {track.path} "
                                          f"({track.duration_s:.1f} s, model "
                                          f"{track.model_version}, seed {track.seed})")
        finally:
            worker.close()
    return 0


def cmd_model(settings: Settings, args: argparse.Namespace) -> int:
    registry = ModelRegistry(settings.models_dir)
    if args.model_command == "rollback":
        info = registry.rollback(args.guild, args.to)
        console.print(f"guild {args.guild}: {info.version} is active again")
        return 0
    versions = registry.versions(args.guild)
    if not versions:
        raise UserError(f"guild {args.guild} has no model versions yet")
    active = registry.active_name(args.guild)
    if args.json:
        for v in versions:
            print(json.dumps({"version": v.version, "parent": v.parent, "active": v.version ==
                              active, "created_at": v.created_at, "source": v.source,
                              "note": v.note}))
        return 0
    table = Table(title=f"guild {args.guild} models")
    for col in ("version", "parent", "source", "created", "active", "note"):
        table.add_column(col)
    import datetime as dt

    for v in versions:
        created = dt.datetime.fromtimestamp(v.created_at).strftime("%Y-%m-%d %H:%M")
        table.add_row(v.version, v.parent or "-", v.source, created,
                      "*" if v.version == active else "", v.note)
    Console().print(table)
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(args.config, data_dir=args.data_dir)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"bad setting {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
    if args.command == "pretrain":
        return cmd_pretrain(settings, args)
    if args.command == "generate":
        return asyncio.run(_generate(settings, args))
    return cmd_model(settings, args)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = run(argv)
    except (UserError, RegistryError, CheckpointError) as exc:
        print(f"crowdtune: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("crowdtune: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
