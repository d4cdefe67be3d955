"""The `crowdtune` command line (a contract: see DESIGN.md). Bad input: one line, exit 2."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bot.core.config import BotSettings, Settings, load_settings
from bot.core.errors import UserFacingError
from bot.core.ids import is_valid_id
from bot.core.prompt import describe
from model import tags as tagvocab
from model.files import atomic_dir
from model.registry import CheckpointError, ModelRegistry, RegistryError

log = logging.getLogger("crowdtune")
console = Console(stderr=True)


class UserError(UserFacingError):
    """Bad input on the command line; like every `UserFacingError`: one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage dump
        raise UserError(f"{self.prog}: {message}")


def guild_arg(value: str) -> str:
    if not is_valid_id(value):
        raise argparse.ArgumentTypeError(
            f"invalid guild {value!r}: use a Discord guild id or letters, digits, - and _")
    return value


def member_arg(value: str) -> str:
    if not is_valid_id(value):  # same shape as guilds: a snowflake or a simple name
        raise argparse.ArgumentTypeError(
            f"invalid member {value!r}: use a Discord user id or letters, digits, - and _")
    return value


def tags_arg(value: str) -> tagvocab.Tags:
    try:
        return tagvocab.parse(value)
    except tagvocab.TagError as exc:  # one line naming the valid fields or values
        raise argparse.ArgumentTypeError(str(exc)) from exc


def positive_int(limit: int, least: int = 1):
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = least - 1
        if not least <= n <= limit:
            raise argparse.ArgumentTypeError(f"expected a whole number from {least} to "
                                             f"{limit}, got {value!r}")
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
    pre.add_argument("--clips", type=positive_int(10**6), help="corpus clips to render")
    pre.add_argument("--corpus", choices=("scores", "synth"), default=None,
                     help="scores: real tunes on sampled instruments, tagged (the default); "
                     "synth: the older synthesiser-only corpus, untagged")
    pre.add_argument("--force", action="store_true", help="replace an existing base")
    pre.add_argument("--train", action="store_true",
                     help="train from scratch instead of installing the shipped base")

    gen = sub.add_parser("generate", help="generate and record tracks with a guild's model")
    gen.add_argument("--guild", required=True, type=guild_arg)
    gen.add_argument("-n", type=positive_int(100), default=1, help="number of tracks")
    gen.add_argument("--out", type=Path, required=True, help="folder for the audio files")
    gen.add_argument("--seed", type=int, help="first seed (track i uses seed + i)")
    gen.add_argument("--seconds", type=float, help="track length (default 20)")
    gen.add_argument("--wav", action="store_true", help="also write WAV files")
    gen.add_argument("--tags", type=tags_arg, metavar="K=V,...",
                     help="ask every track for these tags, e.g. mode=minor,instrument=piano "
                     "(see `crowdtune tags`; default: the guild's usual mix)")
    gen.add_argument("--json", action="store_true", help="one JSON line per track")

    tags = sub.add_parser("tags", help="the tag vocabulary generate --tags accepts")
    tags.add_argument("--json", action="store_true",
                      help="one JSON object {field: [values]}")

    up = sub.add_parser("upload", help="ingest songs exactly as the bot ingests attachments",
                        description="Check, convert and record songs as a member's uploads. "
                        "Exit status: 0 if every file was accepted (new or already known), 2 if "
                        "any was rejected (each reason on its own line on stderr).")
    up.add_argument("--guild", required=True, type=guild_arg)
    up.add_argument("--member", required=True, type=member_arg,
                    help="the uploader: a Discord user id or a name")
    up.add_argument("files", nargs="+", type=Path, metavar="FILE",
                    help="songs: mp3, ogg/opus, wav, flac or m4a, 10 s to 10 min, up to 25 MB")
    up.add_argument("--json", action="store_true", help="one JSON line per file")

    ups = sub.add_parser("uploads", help="a guild's uploads: list them, remove one")
    usub = ups.add_subparsers(dest="uploads_command", required=True, parser_class=Parser)
    ul = usub.add_parser("list", help="every upload of a guild, oldest first")
    ul.add_argument("--guild", required=True, type=guild_arg)
    ul.add_argument("--json", action="store_true", help="one JSON line per upload")
    ur = usub.add_parser("remove", help="delete one upload (its file too): never used again "
                         "for training or seeding")
    ur.add_argument("--guild", required=True, type=guild_arg)
    ur.add_argument("upload_id", type=positive_int(2**62), metavar="ID",
                    help="the upload's number (uploads list)")

    fg = sub.add_parser("forget", help="delete a member's votes, listens and uploads",
                        description="Delete everything a member gave the bot in a guild "
                        "(votes, listening, uploads and their files); none of it is used again. "
                        "Models already trained on it are not retrained (PRIVACY.md).")
    fg.add_argument("--guild", required=True, type=guild_arg)
    fg.add_argument("--member", required=True, type=member_arg)
    fg.add_argument("--json", action="store_true", help="print what was deleted as JSON")

    ex = sub.add_parser("export", help="a guild's (or one member's) data as JSON Lines",
                        description="Write tracks, votes, listens and uploads' metadata, one "
                        "JSON object per line with its kind; rows about a member carry "
                        "member_id; no file paths.")
    ex.add_argument("--guild", required=True, type=guild_arg)
    ex.add_argument("--member", type=member_arg, help="only this member's data")
    ex.add_argument("--out", required=True, type=Path, metavar="FILE")

    bk = sub.add_parser("backup", help="a consistent snapshot of the data folder",
                        description="Copy the database (SQLite's online backup: safe while the "
                        "bot runs), the models, uploads and tracks into the new folder DIR, with "
                        "a sha256 manifest written last: an interrupted backup leaves nothing "
                        "that restores.")
    bk.add_argument("dir", type=Path, metavar="DIR", help="a new (or empty) folder")
    bk.add_argument("--json", action="store_true", help="print the summary as JSON")
    rs = sub.add_parser("restore", help="restore a backup into an empty data folder",
                        description="Verify every file of the backup DIR against its manifest, "
                        "then restore it into the data folder, which must be empty or missing. "
                        "A damaged backup is refused with one line.")
    rs.add_argument("dir", type=Path, metavar="DIR", help="a folder made by crowdtune backup")
    rs.add_argument("--json", action="store_true", help="print the summary as JSON")

    cp = sub.add_parser("compact", help="merge old listening into what rewards read",
                        description="Merge, per track and member, listening recorded more than "
                        "DAYS ago into the disjoint runs of its union: rewards read the same "
                        "seconds and presence from fewer rows. The bot does this daily.")
    cp.add_argument("--older-than", type=float, metavar="DAYS", default=None,
                    help="default: CROWDTUNE_LISTEN_COMPACT_DAYS (90)")
    cp.add_argument("--json", action="store_true")

    lib = sub.add_parser("library", help="read the operator's library folder",
                         description="Check every audio file under CROWDTUNE_LIBRARY_DIR (or "
                         "DIR) as uploads are checked, store the new or changed ones, and list "
                         "what each round will rehearse and what was skipped, and why.")
    lib.add_argument("dir", type=Path, nargs="?", metavar="DIR",
                     help="default: CROWDTUNE_LIBRARY_DIR")
    lib.add_argument("--json", action="store_true", help="one JSON object per file")

    fb = sub.add_parser("feedback", help="ratings and listening time")
    fsub = fb.add_subparsers(dest="feedback_command", required=True, parser_class=Parser)
    fi = fsub.add_parser(
        "import", help="record ratings/listen times from a CSV or JSONL file",
        description="Record feedback exactly as the bot records Discord feedback. FILE is CSV "
        "with the header track_id,member_id,stars,listened_s or JSON Lines with those keys; "
        "stars (1-5) and listened_s (seconds) may each be left out, not both. Rows that "
        "fail validation are listed as FILE:LINE: reason on stderr and the rest are "
        "recorded; importing a file again changes nothing. Exit status: 0 when the file "
        "was read, even if some rows were rejected (the summary counts them); 2 when the "
        "file itself is unusable (missing, unreadable, neither CSV nor JSONL).")
    fi.add_argument("file", type=Path, metavar="FILE", help="a .csv or .jsonl feedback file")
    fi.add_argument("--json", action="store_true",
                    help="print the summary (with the row errors) as one JSON object")

    rnd = sub.add_parser("round", help="the weekly fine-tuning round")
    rsub = rnd.add_subparsers(dest="round_command", required=True, parser_class=Parser)
    rr = rsub.add_parser("run", help="run a guild's round now (what the scheduler calls)",
                         description="Build the training set from the guild's feedback, "
                         "fine-tune its champion in a child process, evaluate the candidate "
                         "and promote it when it is better. Exit status: 0 when the round "
                         "succeeded or was skipped for too little feedback, 1 when it failed "
                         "(the champion stays active), 2 on bad input or a round already "
                         "running.")
    rr.add_argument("--guild", required=True, type=guild_arg)
    rr.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    sim = sub.add_parser("simulate", help="offline community simulation: the paper's "
                         "experiment, through the real services")
    sim.add_argument("--quick", action="store_true",
                     help="3 rounds, 24 tracks a round, 24 per arm at the end, 10 sampler "
                     "steps (under 10 min on 2 cores; the default is 5 rounds, 96 tracks, 160 "
                     "per arm, ~30-40 min)")
    sim.add_argument("--ablation", action="store_true",
                     help="run and tabulate the variants: feedback sources (no fine-tuning, "
                     "ratings, listening, uploads), the paper's plain reward-weighted method, "
                     "no tag policy, the reward model's inputs, the older community, a library")
    sim.add_argument("--only", metavar="VARIANT,...",
                     help="with --ablation: just these variants (names as in the table)")
    sim.add_argument("--rounds", type=positive_int(50))
    sim.add_argument("--tracks", type=positive_int(10_000), help="tracks rated a round")
    sim.add_argument("--final", type=positive_int(10_000), help="tracks per arm at the end")
    sim.add_argument("--members", type=positive_int(1000))
    sim.add_argument("--steps", type=positive_int(100_000), help="fine-tuning steps a round")
    sim.add_argument("--community", choices=("ear", "features"), default=None,
                     help="ear (default): members like tags and hear through their own "
                     "listener model; features: the older community whose taste is over the "
                     "spectral statistics the reward model reads")
    sim.add_argument("--factions", action="store_true",
                     help="half the members want fast tracks with drums, half slow ones "
                     "without (ear community)")
    sim.add_argument("--outside-style", action="store_true",
                     help="the community sings: it uploads songs for voices, a style the "
                     "corpus lacks, and likes tracks that sound like them; each pass prints "
                     "the feature distance to such songs of the new tracks and of the model "
                     "alone at uniform tags (ear community)")
    sim.add_argument("--library", type=int, metavar="N", default=None,
                     help="an operator's library of N 20-s songs in the community's style "
                     "(songs for voices with --outside-style)")
    sim.add_argument("--judge", type=positive_int(10_000, least=0), metavar="N", default=None,
                     help="clips per round on which the community's own noise-free stars "
                     "judge each candidate against its parent, beside the verdict (default 48, "
                     "0 with --quick; 0: off)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", type=Path, default=Path("out/simulation"),
                     help="folder for the table (markdown), plot (PNG) and JSON")
    sim.add_argument("--json", action="store_true", help="print one JSON object")

    model = sub.add_parser("model", help="a guild's model versions")
    msub = model.add_subparsers(dest="model_command", required=True, parser_class=Parser)
    ml = msub.add_parser("list", help="versions, newest last")
    ml.add_argument("--guild", required=True, type=guild_arg)
    ml.add_argument("--json", action="store_true")
    mp = msub.add_parser("pin", help="keep a version through pruning (or --unpin)")
    mp.add_argument("--guild", required=True, type=guild_arg)
    mp.add_argument("version", help="e.g. v0003")
    mp.add_argument("--unpin", action="store_true", help="no longer keep it for that reason")
    mr = msub.add_parser("rollback", help="make the previous (or a named) version active")
    mr.add_argument("--guild", required=True, type=guild_arg)
    mr.add_argument("--to", help="version to activate, e.g. v0002 (default: the parent)")

    bot_run = sub.add_parser("run", help="start the Discord bot (needs DISCORD_TOKEN)",
                             description="Connect to Discord and serve every guild the bot "
                             "is in until stopped (Ctrl-C). Setup: docs/discord-setup.md.")
    bot_run.add_argument("--sync", action="store_true",
                         help="register the slash commands with Discord at start (to "
                         "CROWDTUNE_SYNC_GUILDS, else globally); needed once, and after an "
                         "update that changes commands")
    return p


def progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console)


# --- commands -----------------------------------------------------------------------------

def cmd_pretrain(settings: Settings, args: argparse.Namespace) -> int:
    from model.pipeline import CrowdtunePipeline
    from model.train import (
        SHIPPED_BASE,
        PretrainConfig,
        TrainConfig,
        install_shipped_base,
        pretrain,
    )

    registry = ModelRegistry(settings.models_dir)
    if registry.has_base() and not args.force:
        console.print(f"base model already at {registry.base_dir} (use --force to retrain)")
        _ensure_pool(settings, registry.base_dir)
        _ensure_tagger(settings, retrain=False)
        return 0
    # Atomic: a crash leaves no half-written base (and the old one, if any, in place).
    with atomic_dir(registry.base_dir) as tmp:
        if settings.base_model != "builtin":
            console.print(f"importing base model {settings.base_model}")
            CrowdtunePipeline.from_pretrained(settings.base_model).save_pretrained(tmp)
        elif SHIPPED_BASE.is_dir() and not (args.train or args.steps or args.clips
                                            or args.corpus):
            recipe = json.loads((SHIPPED_BASE / "pretrain.json").read_text())["recipe"]
            console.print(f"installing the shipped base (what `crowdtune pretrain --train "
                          f"--corpus {recipe.get('corpus', 'synth')} "
                          f"--steps {recipe['train']['steps']} --clips {recipe['clips']}` "
                          "trains)")
            install_shipped_base(tmp)
        else:
            cfg = PretrainConfig(
                clips=args.clips or settings.pretrain_clips,
                corpus=args.corpus or PretrainConfig.corpus,
                train=TrainConfig(steps=args.steps or settings.pretrain_steps,
                                  seed=settings.pretrain_seed),
            )
            with progress_bar() as bar:
                # Rendering the corpus comes first and reports no steps: say so until then.
                task = bar.add_task("rendering the starter corpus", total=cfg.train.steps,
                                    info="")
                report = pretrain(tmp, cfg, progress=lambda s, total, loss: bar.update(
                    task, completed=s, total=total, info=f"loss {loss:.3f}",
                    description="pretraining" if s <= cfg.train.steps else "key stage"),
                    cache_dir=settings.cache_dir)
            console.print(f"pretrained in {report['seconds']} s, final loss "
                          f"{report['final_loss']:.4f}")
    console.print(f"base model saved to {registry.base_dir}")
    _ensure_pool(settings, registry.base_dir)
    _ensure_tagger(settings, retrain=args.train, clips=args.clips, reinstall=args.force)
    return 0


def _ensure_tagger(settings: Settings, retrain: bool, clips: int | None = None,
                   reinstall: bool = False) -> None:
    """The tagger (what a clip sounds like: instrument, mode, tempo, drums, style) beside the
    base: the shipped one (installed when missing, or again with --force, so an upgrade
    gets the tagger shipped with its base), or with --train trained on the starter corpus."""
    from model.tagger import install_shipped_tagger, train_on_corpus

    out = settings.models_dir / "tagger"
    if retrain:
        with console.status("training the tagger on the starter corpus"):
            tagger, report = train_on_corpus(clips or settings.pretrain_clips,
                                             settings.pretrain_seed, settings.cache_dir)
            tagger.save(out)
        console.print(report.table())
    elif reinstall or not (out / "tagger_config.json").is_file():
        install_shipped_tagger(out)
    console.print(f"tagger at {out}")


def _ensure_pool(settings: Settings, base_dir: Path) -> None:
    """Build (once) the corpus pool that fine-tuning rehearses, so no round waits for it."""
    from model.codec import MelConfig
    from model.corpus_pool import load_pool, pool_corpus

    if (base_dir / "vqvae").is_dir() or settings.finetune_replay_clips == 0:
        return  # latent models fine-tune without corpus replay
    with console.status(f"preparing the fine-tuning corpus pool "
                        f"({settings.finetune_replay_clips} clips, once)"):
        load_pool(settings.finetune_replay_clips, mel=MelConfig.load(base_dir / "mel"),
                  cache_dir=settings.cache_dir, corpus=pool_corpus(base_dir))


async def _generate(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.core.services import Services

    if args.seconds is not None and not 1 <= args.seconds <= 300:
        raise UserError(f"--seconds must be between 1 and 300, got {args.seconds}")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    if args.wav:
        settings = settings.model_copy(update={"keep_wav": True})
    async with await Services.open(settings) as services:
        tracks = services.tracks
        await tracks.active_version(args.guild)  # fail before drawing a progress bar
        where = await asyncio.to_thread(services.compute.check)  # ComputeUnavailable: 2
        if where.backend != "local":
            print(f"generating on the {where.backend} cluster (probe ran on {where.node})",
                  file=sys.stderr, flush=True)
        with progress_bar() as bar:
            task = bar.add_task(f"generating {args.n} track(s)", total=args.n, info="")
            for i in range(args.n):
                seed = None if args.seed is None else args.seed + i
                (track,) = await tracks.generate(args.guild, 1, args.out, seed=seed,
                                                 seconds=args.seconds, tags=args.tags)
                bar.update(task, completed=i + 1, info=f"#{track.track_id}")
                if args.json:
                    print(json.dumps(track.to_dict()), flush=True)
                else:
                    made_with = tagvocab.format_tags(track.tags) or "none"
                    bar.console.print(f"track {track.track_id}: {track.path} "
                                      f"({track.duration_s:.1f} s, model "
                                      f"{track.model_version}, seed {track.seed}, "
                                      f"tags {made_with})")
    return 0


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    from bot.core.backup import backup, restore

    if args.command == "backup":
        report = backup(settings.data_dir, args.dir)
        what = f"backed up {settings.data_dir} to {report.path}"
    else:
        report = restore(args.dir, settings.data_dir)
        what = f"restored {args.dir} into {report.path}"
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(f"{what}: {report.files} files, {report.bytes / 1e6:.1f} MB in "
              f"{report.seconds:.1f} s")
    return 0


def cmd_tags(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps({field: list(values) for field, values in tagvocab.VOCAB.items()}))
    else:
        for field, values in tagvocab.VOCAB.items():
            print(f"{field}: {', '.join(values)}")
    return 0


async def _upload(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.core.ingest import UploadRejected
    from bot.core.services import Services

    rejected = 0
    async with await Services.open(settings) as services:
        for path in args.files:
            try:
                row, is_new = await services.uploads.ingest(args.guild, args.member, path)
            except UploadRejected as exc:
                rejected += 1
                print(f"crowdtune: error: {path}: {exc.reason}", file=sys.stderr, flush=True)
                if args.json:
                    print(json.dumps({"file": str(path), "accepted": False,
                                      "reason": exc.reason}), flush=True)
                continue
            if args.json:
                print(json.dumps({"file": str(path), "accepted": True, "new": is_new,
                                  "upload_id": row.id, "duration_s": row.duration_s,
                                  "format": row.format, "sha256": row.sha256,
                                  "original_name": row.original_name, "stored": row.file}),
                      flush=True)
            else:
                known = "new upload" if is_new else "already known as upload"
                print(f"{path}: {known} #{row.id} ({row.duration_s:.1f} s, {row.format})",
                      flush=True)
    return 2 if rejected else 0


async def _uploads(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.core.services import Services

    async with await Services.open(settings) as services:
        if args.uploads_command == "remove":
            row = await services.privacy.remove_upload(args.guild, args.upload_id)
            print(f"removed upload #{row.id} {row.original_name} from guild {args.guild}")
            return 0
        rows = await services.uploads.list(args.guild)
    for r in rows:
        if args.json:
            print(json.dumps({"upload_id": r.id, "member_id": r.member_id,
                              "original_name": r.original_name, "format": r.format,
                              "duration_s": r.duration_s, "sha256": r.sha256,
                              "created_at": r.created_at, "tags": r.tags}))
        else:
            heard = f"; sounds like: {describe(r.tags)}" if r.tags else ""
            print(f"#{r.id} {r.original_name} ({r.duration_s:.1f} s, {r.format}) "
                  f"from {r.member_id}{heard}")
    return 0


async def _forget(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.core.services import Services

    async with await Services.open(settings) as services:
        report = await services.privacy.forget(args.member, args.guild)
    print(json.dumps(report.to_dict()) if args.json
          else f"member {args.member} in guild {args.guild}: {report.summary()}")
    return 0


async def _export(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.core.services import Services

    async with await Services.open(settings) as services:
        n = await services.privacy.export(args.out, args.guild, args.member)
    console.print(f"{n} rows written to {args.out}")
    return 0


async def _compact(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.core.services import Services

    days = args.older_than if args.older_than is not None else settings.listen_compact_days
    if days <= 0:
        raise UserError("nothing to do: --older-than must be more than 0 days")
    async with await Services.open(settings) as services:
        merged = await services.feedback.compact(days)
    print(json.dumps({"older_than_days": days, "rows_merged": merged}) if args.json
          else f"{merged} listening rows older than {days:g} days merged")
    return 0


def cmd_library(settings: BotSettings, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from bot.core.library import scan_library

    folder = args.dir or settings.library_dir
    if folder is None:
        raise UserError("no library: set CROWDTUNE_LIBRARY_DIR or name a folder")
    if not folder.is_dir():
        raise UserError(f"library folder {folder} does not exist")
    with console.status(f"reading {folder}"):
        scan = scan_library(folder, settings.library_store)
    if args.json:
        for song in scan.songs:
            print(json.dumps({k: v for k, v in asdict(song).items() if k != "stored"}))
        return 0
    for song in scan.rejected:
        print(f"skipped {song.source}: {song.rejected}")
    minutes = sum(song.duration_s for song in scan.stored) / 60
    n = len(scan.stored)
    print(f"{n} song{'' if n == 1 else 's'} ({minutes:.1f} min) in the library, "
          f"{len(scan.rejected)} skipped")
    return 0


async def _feedback_import(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.core.services import Services

    async with await Services.open(settings) as services:
        summary = await services.feedback.import_file(args.file)  # FeedbackFileError: exit 2
    for e in summary.errors:
        print(f"{args.file}:{e.line}: {e.reason}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_dict()))
    else:
        print(f"{args.file} ({summary.format}): {summary.rows} rows; {summary.votes} votes "
              f"recorded ({summary.votes_changed} new or changed), {summary.listens} listens "
              f"recorded ({summary.listens_changed} new or longer), {summary.rejected} rows "
              "rejected")
    return 0


async def _round_run(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.core.domain import RoundStatus
    from bot.core.services import Services
    from model.contracts import ChildEvent, StartedEvent, StepEvent

    async with await Services.open(settings) as services:
        await asyncio.to_thread(services.compute.check)  # ComputeUnavailable: exit 2
        with progress_bar() as bar:
            task = bar.add_task("round", total=settings.finetune_steps, info="starting")

            def on_event(ev: ChildEvent) -> None:
                if isinstance(ev, StepEvent):
                    bar.update(task, completed=ev.step, info=f"loss {ev.loss:.3f}")
                elif isinstance(ev, StartedEvent):
                    bar.update(task, info=ev.module.split(".")[-1])

            summary = await services.rounds.run_round(args.guild, on_event)  # RoundBusy: 2
    if args.json:
        print(json.dumps(summary.to_dict()))
    else:
        print(summary.text)
        if summary.chart:
            print(f"chart: {summary.chart}")
        print(f"model work: {summary.compute['backend']} on {summary.compute['node']}")
    return 1 if summary.status == RoundStatus.FAILED else 0


async def _simulate(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.experiment.simulate import ABLATIONS, SimConfig, Simulation, markdown, write_outputs

    variants = ABLATIONS if args.ablation else {"": {}}
    if args.ablation and args.only:
        picked = [n.strip() for n in args.only.split(",")]
        unknown = [n for n in picked if n not in ABLATIONS]
        if unknown:
            raise UserError(f"unknown variant {unknown[0]!r}; one of: {', '.join(ABLATIONS)}")
        variants = {n: ABLATIONS[n] for n in picked}
    registry = ModelRegistry(settings.models_dir)
    if not registry.has_base():
        raise UserError("no base model yet: run `crowdtune pretrain` first")
    flags = {k: v for k, v in {"rounds": args.rounds, "tracks_per_round": args.tracks,
                                "final_per_arm": args.final, "members": args.members,
                                "finetune_steps": args.steps, "seed": args.seed,
                                "community": args.community,
                                "factions": args.factions or None,
                                "outside_style": args.outside_style or None,
                                "library": args.library, "judge_clips": args.judge}.items()
             if v is not None}
    cfg = SimConfig.quick(**flags) if args.quick else SimConfig(**flags)
    results = {}
    for name, change in variants.items():
        variant = SimConfig(**{**cfg.__dict__, **change})
        sim = Simulation(settings, variant, args.out / "work" / (name.replace(" ", "-") or
                                                               "main"),
                         progress=lambda msg, n=name: console.log(f"{n + ': ' if n else ''}"
                                                                  f"{msg}"))
        result = await sim.run(registry.base_dir)
        data = write_outputs(result, args.out / (name.replace(" ", "-").replace("+", "and")
                                                 if name else ""))
        results[name] = (result, data)
    if args.ablation:
        rows = {name: {**data["rounds"][-1], "diversity_vs_base":
                       data["diversity"]["final_vs_base"],
                       "wrong_promotions": len(data["wrong_promotions"]),
                       "missed_promotions": len(data["missed_promotions"])}
                for name, (_, data) in results.items()}
        summary = {"ablation": rows}
        lines = ["| variant | final new mean | baseline mean | gain | p | diversity vs base | "
                 "wrong promotions | missed promotions | flatness | loudness dB |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            lines.append(f"| {name} | {r['new_mean']} | {r['baseline_mean']} | "
                         f"{r['gain_over_baseline']} | {r['p_value']} | "
                         f"{r['diversity_vs_base']:.0%} | {r['wrong_promotions']} | "
                         f"{r['missed_promotions']} | "
                         f"{r['flatness']} | {r['loudness_db']} |")
        (args.out / "ablation.md").write_text("\n".join(lines) + "\n")
        print(json.dumps(summary) if args.json else "\n".join(lines))
        return 0
    result, data = results[""]
    if args.json:
        print(json.dumps({k: data[k] for k in ("rounds", "diversity", "wrong_promotions",
                                               "missed_promotions")}))
    else:
        print(markdown(result))
        console.print(f"table, plot and JSON in {args.out}/")
    return 0


def cmd_model(settings: Settings, args: argparse.Namespace) -> int:
    registry = ModelRegistry(settings.models_dir)
    if args.model_command == "pin":
        registry.pin(args.guild, args.version, pinned=not args.unpin)
        console.print(f"guild {args.guild}: {args.version} "
                      f"{'is no longer pinned' if args.unpin else 'is pinned: always kept'}")
        return 0
    if args.model_command == "rollback":
        info = registry.rollback(args.guild, args.to)
        console.print(f"guild {args.guild}: {info.version} is active again")
        return 0
    versions = registry.versions(args.guild)
    if not versions:
        raise UserError(f"guild {args.guild} has no model versions yet")
    active = registry.active_name(args.guild)
    kept = registry.kept(args.guild, settings.keep_recent_versions)
    if args.json:
        for v in versions:
            print(json.dumps({"version": v.version, "parent": v.parent, "active": v.version ==
                              active, "created_at": v.created_at, "source": v.source,
                              "note": v.note, "kept": kept.get(v.version, [])}))
        return 0
    table = Table(title=f"guild {args.guild} models")
    for col in ("version", "parent", "source", "created", "active", "kept because", "note"):
        table.add_column(col)
    import datetime as dt

    for v in versions:
        created = dt.datetime.fromtimestamp(v.created_at).strftime("%Y-%m-%d %H:%M")
        table.add_row(v.version, v.parent or "-", v.source, created,
                      "*" if v.version == active else "",
                      ", ".join(kept.get(v.version, [])) or "pruned next round", v.note)
    Console().print(table)
    return 0


def cmd_run(settings: BotSettings, args: argparse.Namespace) -> int:
    """`crowdtune run`: the Discord bot, until it is stopped."""
    from bot.adapter.client import run_bot

    if not args.verbose:  # a long-running service: say what it does
        for name in ("crowdtune", "bot", "cogs", "discord"):
            logging.getLogger(name).setLevel(logging.INFO)
    asyncio.run(run_bot(settings, sync=args.sync))
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tags":  # the vocabulary needs no settings, data or model
        return cmd_tags(args)
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")  # its notices are not for our users
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        # The bot's settings for every command: one loader, one set of defaults.
        settings = load_settings(args.config, BotSettings, data_dir=args.data_dir)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UserError(f"bad setting {'.'.join(map(str, err['loc']))}: {err['msg']}") from exc
    if args.command == "pretrain":
        return cmd_pretrain(settings, args)
    if args.command == "generate":
        return asyncio.run(_generate(settings, args))
    if args.command == "upload":
        return asyncio.run(_upload(settings, args))
    if args.command in ("backup", "restore"):
        return cmd_backup(settings, args)
    if args.command == "uploads":
        return asyncio.run(_uploads(settings, args))
    if args.command == "compact":
        return asyncio.run(_compact(settings, args))
    if args.command == "library":
        return cmd_library(settings, args)
    if args.command == "forget":
        return asyncio.run(_forget(settings, args))
    if args.command == "export":
        return asyncio.run(_export(settings, args))
    if args.command == "feedback":
        return asyncio.run(_feedback_import(settings, args))
    if args.command == "round":
        return asyncio.run(_round_run(settings, args))
    if args.command == "simulate":
        return asyncio.run(_simulate(settings, args))
    if args.command == "run":
        return cmd_run(settings, args)
    return cmd_model(settings, args)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = run(argv)
    except (UserFacingError, RegistryError, CheckpointError) as exc:
        print(f"crowdtune: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("crowdtune: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
