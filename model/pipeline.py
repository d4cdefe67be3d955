"""The music pipeline: unconditional diffusion on mel-spectrogram images, in one file.

On disk it uses the layout of diffusers' AudioDiffusionPipeline (`unet/`, `scheduler/`,
`mel/mel_config.json`, optional `vqvae/`, `model_index.json`), so a real audio-diffusion
checkpoint loads here, and our own versions are plain diffusers folders.

The built-in model folds the mel image into patches (`patch_size`, e.g. 8x4: a 128x160 mel
becomes 32 channels at 16x40) before the UNet: measured on 2 CPU cores that cuts a forward
pass from ~66 ms to ~20 ms with no visible loss, because the UNet then spends its
convolutions on a small grid. A real checkpoint has patch size 1x1 and may have a VAE.

Tracks longer than one window are consecutive windows whose starting noises are spherical
interpolations between a few anchors (as Riffusion does), crossfaded. The paper's
"something like these songs" mode replaces the random anchors by DDIM inversions of songs.

The built-in base is conditioned on tags (model/tags.py): the UNet's class embedding holds a
block of rows per field, a tag set picks one row per field (the field's "any" row when left
out) and their sum joins the time embedding. Trained with tag dropout, so no tags is plain
unconditional generation, and asked tags use classifier-free guidance. The vocabulary the
embedding was trained with is saved in `model_index.json`; a model without one takes no tags.
The built-in base also sees the asked key laid out over pitch (model/key_prior.py).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMInverseScheduler,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    UNet2DModel,
)

from model import key_prior
from model import tags as tagvocab
from model.codec import MelCodec, MelConfig
from model.lora import full_model_dir, is_adapter, merge_into
from model.registry import CheckpointError
from model.tags import GUIDANCE

log = logging.getLogger(__name__)

CROSSFADE_S = 0.5
WINDOWS_PER_ANCHOR = 3
# Upload-seeded generation inverts songs only this far toward noise (a share of the
# sampler's steps) and denoises back from there. Measured with the shipped base on 8 uploads
# (simulated community, mean stars): full inversion 1.54 (the last, near-pure-noise steps
# lose the song: register +16, drums gone), 0.7 -> 3.48, 0.5 -> 3.67; the uploads themselves
# 3.90 after the codec. Slerp toward a second song: mix 0.25 -> 3.03, 0.5 -> 2.48 (two songs
# superimposed), hence a small mix.
SEED_STRENGTH = 0.7
SEED_MIX = (0.0, 0.3)
# DPM-Solver++ steps a track takes by default (the bot's CROWDTUNE_SAMPLER_STEPS). Measured
# on the shipped base, 2 cores, against 20: a guided 5-s clip 0.47 s instead of ~0.9 s;
# feature Frechet distance to held-out corpus clips 26.6 against 23.9 (two halves of the
# corpus: 30.5); tag adherence within a clip or two of 20's (bench_tags -n 8); an upload's
# seed round trip 0.094 mean mel error against 0.065.
STEPS = 12
# The share of sampling steps (the noisiest first) that use classifier-free guidance; the
# rest take one conditional pass instead of two (guidance matters most while the noise is
# high: Kynkäänniemi et al. 2024). Measured (bench_tags -n 8, 20 steps): half the steps
# let drums=no clips grow drums (adherence 100% -> 75%), so all steps keep it.
GUIDANCE_SHARE = 1.0


def best_device() -> torch.device:
    """Where models run: the GPU when there is one, else the CPU. Noise stays drawn from
    CPU generators either way (then moved), so a seed means the same starting noise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TrackAudio:
    audios: list[np.ndarray]  # mono float32 waveforms in [-1, 1]
    sample_rate: int
    # Per track, the generated mel windows (n_windows, 1, y_res, x_res): what fine-tuning
    # learns from, since re-encoding the decoded audio would add the codec's artifacts.
    mels: list[np.ndarray] | None = None


def _strength_steps(steps: int, strength: float) -> int:
    """How many of `steps` sampler steps a partial inversion or denoising runs."""
    return max(1, min(steps, round(steps * strength)))


def patchify(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * ph * pw, h // ph, w // pw)


def unpatchify(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    b, cpp, h, w = x.shape
    c = cpp // (ph * pw)
    x = x.reshape(b, c, ph, pw, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c, h * ph, w * pw)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation; keeps the norm of Gaussian noise that linear mixing loses."""
    af, bf = a.flatten().double(), b.flatten().double()
    cos = torch.dot(af / af.norm(), bf / bf.norm()).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-4:
        return (1 - t) * a + t * b
    s = torch.sin(omega)
    return ((torch.sin((1 - t) * omega) / s) * a + (torch.sin(t * omega) / s) * b).to(a.dtype)


def crossfade(windows: list[np.ndarray], overlap: int) -> np.ndarray:
    """Join windows with equal-power crossfades of `overlap` samples."""
    out = windows[0]
    if overlap <= 0:
        return np.concatenate(windows)
    ramp = np.linspace(0, np.pi / 2, overlap, dtype=np.float32)
    fade_in, fade_out = np.sin(ramp), np.cos(ramp)
    for w in windows[1:]:
        mixed = out[-overlap:] * fade_out + w[:overlap] * fade_in
        out = np.concatenate([out[:-overlap], mixed, w[overlap:]])
    return out


class TagEmbedding(torch.nn.Embedding):
    """The UNet's class embedding for tag sets: labels (n, fields) -> the sum of the fields'
    rows (diffusers' own embedding takes one label per example)."""

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        out = super().forward(labels)
        return out.sum(dim=-2) if labels.dim() == 2 else out


def use_tag_embedding(unet: UNet2DModel) -> None:
    """Swap the UNet's class embedding for a TagEmbedding with the same weights (and state
    dict keys, so the folder stays a plain diffusers UNet)."""
    old = unet.class_embedding
    if isinstance(old, torch.nn.Embedding) and not isinstance(old, TagEmbedding):
        new = TagEmbedding(old.num_embeddings, old.embedding_dim)
        new.weight = old.weight
        unet.class_embedding = new


class CrowdtunePipeline(DiffusionPipeline):
    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: DDPMScheduler,
        mel: MelCodec,
        vqvae: AutoencoderKL | None = None,
        patch_size: tuple[int, int] = (1, 1),
        tag_vocab: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, mel=mel, vqvae=vqvae)
        self.register_to_config(patch_size=list(patch_size))
        if tag_vocab is not None:
            use_tag_embedding(unet)
        self.tag_vocab = ({f: tuple(v) for f, v in tag_vocab.items()}
                          if tag_vocab is not None else None)
        if key_prior.has_key_prior(unet, self.tag_vocab):
            key_prior.attach(unet, self.tag_vocab, mel.config, self.patch)

    def add_key_prior(self, generator: torch.Generator | None = None) -> None:
        """Give this tag-conditioned pipeline the key prior (model/key_prior.py); its new
        weights then need training."""
        if self.tag_vocab is None or key_prior.has_key_prior(self.unet, self.tag_vocab):
            return
        self.tag_vocab = key_prior.widen(self.unet, self.tag_vocab, generator)
        key_prior.attach(self.unet, self.tag_vocab, self.mel.config, self.patch)

    @property
    def keyed(self) -> bool:
        return key_prior.has_key_prior(self.unet, self.tag_vocab)

    # --- tags -----------------------------------------------------------------------------

    @property
    def accepts_tags(self) -> bool:
        return self.tag_vocab is not None

    def known_tags(self, tags: Mapping[str, str] | None) -> tagvocab.Tags:
        """The part of `tags` this model was trained with (what a track made with them may
        claim): all of it for the built-in base, nothing for a model without tags."""
        vocab = self.tag_vocab or {}
        return {f: v for f, v in (tags or {}).items() if v in vocab.get(f, ())}

    def tag_labels(self, tags: Mapping[str, str] | None, n: int) -> torch.Tensor | None:
        """(n, fields) embedding rows for one tag set (None: every field's "any" row), or
        None for a model that takes no tags."""
        if self.tag_vocab is None:
            return None
        row = torch.tensor(tagvocab.indices(self.known_tags(tags), self.tag_vocab),
                           dtype=torch.long)
        return row.expand(n, -1).to(self.device)

    def _predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None,
                 guidance: float | torch.Tensor) -> torch.Tensor:
        """The UNet's output; with tag labels, classifier-free guided toward them (one
        scale, or one per latent)."""
        if labels is None:
            return self.unet(x, t).sample
        null = self.tag_labels(None, len(x))
        if bool((torch.as_tensor(guidance) == 1.0).all()) or bool((labels == null).all()):
            return self.unet(x, t, class_labels=labels).sample
        both = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([null, labels])).sample
        uncond, cond = both.chunk(2)
        if isinstance(guidance, torch.Tensor):
            guidance = guidance.to(cond.device, cond.dtype).view(-1, *[1] * (cond.dim() - 1))
        return uncond + guidance * (cond - uncond)

    # --- latent <-> mel image -------------------------------------------------------------

    @property
    def patch(self) -> tuple[int, int]:
        ph, pw = self.config.patch_size
        return int(ph), int(pw)

    def latent_shape(self) -> tuple[int, int, int]:
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else size
        return self.unet.config.out_channels, int(h), int(w)

    def images_to_latents(self, images: torch.Tensor) -> torch.Tensor:
        if self.vqvae is not None:
            images = images.repeat(1, self.vqvae.config.in_channels, 1, 1)
            dist = self.vqvae.encode(images).latent_dist
            return dist.mean * self.vqvae.config.scaling_factor
        return patchify(images, *self.patch)

    def latents_to_images(self, latents: torch.Tensor) -> torch.Tensor:
        if self.vqvae is not None:
            decoded = self.vqvae.decode(latents / self.vqvae.config.scaling_factor).sample
            return decoded.mean(dim=1, keepdim=True).clamp(-1, 1)
        return unpatchify(latents, *self.patch).clamp(-1, 1)

    # --- sampling -------------------------------------------------------------------------

    def _sampler_config(self) -> dict:
        # Explicit, so a freshly built and a reloaded scheduler sample alike (diffusers keeps
        # a hidden list of defaulted keys that from_config would otherwise treat differently),
        # and "trailing" spacing, which reaches t=T and suits few-step sampling.
        config = {k: v for k, v in self.scheduler.config.items() if not k.startswith("_")}
        config["timestep_spacing"] = "trailing"
        if self.vqvae is None:
            # Mel images live in [-1, 1]: clipping the predicted clean image keeps a poor
            # noise estimate near t=T (where it is divided by a tiny alpha) from exploding.
            config.update(clip_sample=True, clip_sample_range=1.0, thresholding=True,
                          sample_max_value=1.0)
        return config

    def _sampler(self, deterministic: bool, steps: int):
        cls = DDIMScheduler if deterministic else DPMSolverMultistepScheduler
        sampler = cls.from_config(self._sampler_config())
        sampler.set_timesteps(steps)
        return sampler

    @torch.no_grad()
    def denoise(self, latents: torch.Tensor, steps: int, deterministic: bool = False,
                batch: int = 16, strength: float = 1.0, labels: torch.Tensor | None = None,
                guidance: float | torch.Tensor = GUIDANCE,
                guidance_share: float = GUIDANCE_SHARE) -> torch.Tensor:
        """Run the sampler to clean latents from noise latents at t=T, or (strength < 1)
        from latents partway, after the first (1 - strength) of the steps. `labels`: one tag
        label row per latent (see `tag_labels`; none: unconditional); `guidance`: one scale,
        or one per latent."""
        if labels is None:
            labels = self.tag_labels(None, len(latents))
        outs = []
        for i, chunk in enumerate(latents.split(batch)):
            lab = None if labels is None else labels[i * batch:i * batch + len(chunk)]
            scale = (guidance[i * batch:i * batch + len(chunk)]
                     if isinstance(guidance, torch.Tensor) else guidance)
            sampler = self._sampler(deterministic, steps)
            x = chunk * sampler.init_noise_sigma if strength >= 1.0 else chunk
            first, guided = steps - _strength_steps(steps, strength), round(guidance_share * steps)
            for k in range(first, steps):
                t = sampler.timesteps[k]
                eps = self._predict(sampler.scale_model_input(x, t), t, lab,
                                    scale if k < guided else 1.0)
                x = sampler.step(eps, t, x).prev_sample
            outs.append(x)
        return torch.cat(outs)

    @torch.no_grad()
    def invert(self, audio: np.ndarray, steps: int = 20, max_windows: int = 4,
               strength: float = 1.0) -> torch.Tensor:
        """DDIM inversion: an audio clip's windows -> the latents that denoise to them, all
        the way to noise (strength 1) or a share of the steps (`denoise(strength=...)`)."""
        wav = torch.from_numpy(np.asarray(audio, dtype=np.float32))
        images = self.mel.encode_windows(wav)[:max_windows].to(self.device, self.unet.dtype)
        x = self.images_to_latents(images)
        accepted = inspect.signature(DDIMInverseScheduler.__init__).parameters
        config = {k: v for k, v in self._sampler_config().items() if k in accepted}
        inverse = DDIMInverseScheduler.from_config(config)
        inverse.set_timesteps(steps)
        untagged = self.tag_labels(None, len(x))  # songs are inverted unconditionally
        for t in inverse.timesteps[:_strength_steps(steps, strength)]:
            eps = self._predict(x, t, untagged, 1.0)
            x = inverse.step(eps, t, x).prev_sample
        return x

    def _window_noises(self, n_windows: int, anchors: torch.Tensor) -> torch.Tensor:
        noises = []
        for i in range(n_windows):
            k, frac = divmod(i, WINDOWS_PER_ANCHOR)
            noises.append(slerp(anchors[k], anchors[k + 1], frac / WINDOWS_PER_ANCHOR))
        return torch.stack(noises)

    @property
    def crossfade_s(self) -> float:
        return min(CROSSFADE_S, self.mel.config.window_seconds / 4)

    def n_windows(self, seconds: float | None) -> int:
        win, xf = self.mel.config.window_seconds, self.crossfade_s
        if not seconds or seconds <= win:
            return 1
        return math.ceil((seconds - xf) / (win - xf))

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = STEPS,
        generator: torch.Generator | None = None,
        seconds: float | None = None,
        seed_latents: torch.Tensor | None = None,
        seed_strength: float = SEED_STRENGTH,
        tags: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
        guidance: float | Sequence[float] = GUIDANCE,
        guidance_share: float = GUIDANCE_SHARE,
    ) -> TrackAudio:
        """Generate `batch_size` tracks of `seconds` (default: one window).

        With `seed_latents` (songs' windows inverted with `invert(strength=seed_strength)`,
        consecutive windows of a song next to each other), a track follows one song's
        windows from a random start, each slerped a little toward another random seed
        window, and sampling is deterministic DDIM from that strength, so it round-trips.
        `tags` (one set for every track, or one per track; fields left out mean "any") steer
        a tag-conditioned model with classifier-free guidance of scale `guidance` (one for
        every track, or one per track); a model without tags ignores them.
        """
        per_track = [tags] * batch_size if tags is None or isinstance(tags, Mapping) else tags
        if len(per_track) != batch_size:
            raise ValueError(f"{len(per_track)} tag sets for {batch_size} tracks")
        gen = generator or torch.Generator().manual_seed(0)
        if self.keyed:  # a track that asks for a mode is played in a key: draw its tonic
            per_track = [{key_prior.KEY_FIELD: key_prior.draw_tonic(gen), **t}
                         if t and "mode" in t and key_prior.KEY_FIELD not in t else t
                         for t in per_track]
        scales = [float(guidance)] * batch_size if isinstance(guidance, int | float) \
            else [float(g) for g in guidance]
        if len(scales) != batch_size:
            raise ValueError(f"{len(scales)} guidance scales for {batch_size} tracks")
        n_win = self.n_windows(seconds)
        n_anchor = (n_win - 1) // WINDOWS_PER_ANCHOR + 2
        shape = self.latent_shape()
        all_noise = []
        for _ in range(batch_size):
            if seed_latents is None:
                anchors = torch.randn((n_anchor, *shape), generator=gen)
                all_noise.append(self._window_noises(n_win, anchors))
                continue
            n_seed = len(seed_latents)
            start = int(torch.randint(n_seed, (1,), generator=gen))
            other = torch.randint(n_seed, (n_win,), generator=gen).tolist()
            lo, hi = SEED_MIX
            mix = (torch.rand(n_win, generator=gen) * (hi - lo) + lo).tolist()
            all_noise.append(torch.stack([
                slerp(seed_latents[(start + k) % n_seed].cpu(), seed_latents[j].cpu(), m)
                for k, (j, m) in enumerate(zip(other, mix, strict=True))]))
        latents = torch.cat(all_noise).to(self.device, self.unet.dtype)
        seeded = seed_latents is not None
        labels = None
        if self.accepts_tags:
            labels = torch.cat([self.tag_labels(t, n_win) for t in per_track])
        clean = self.denoise(latents, num_inference_steps, deterministic=seeded,
                             strength=seed_strength if seeded else 1.0, labels=labels,
                             guidance=torch.tensor(scales).repeat_interleave(n_win),
                             guidance_share=guidance_share)
        images = self.latents_to_images(clean).float().cpu()
        waves = self.mel.decode(images).numpy()
        sr = self.mel.config.sample_rate
        overlap = int(self.crossfade_s * sr) if n_win > 1 else 0
        audios = []
        for b in range(batch_size):
            track = crossfade(list(waves[b * n_win:(b + 1) * n_win]), overlap)
            if seconds:
                track = track[: int(seconds * sr)]
            audios.append(track.astype(np.float32))
        mels = [images[b * n_win:(b + 1) * n_win].numpy() for b in range(batch_size)]
        return TrackAudio(audios=audios, sample_rate=sr, mels=mels)

    def for_generation(self) -> CrowdtunePipeline:
        """This pipeline, ready to sample: on the best device, the UNet's weights
        channels-last, where oneDNN's convolutions run faster (measured on 2 CPU cores: a
        guided 5-s clip's batch of 2 ~5%, a 20-s track's batch of 10 ~18%). Not for training
        or saving: safetensors writes only contiguous weights."""
        self.to(best_device())
        self.unet.to(memory_format=torch.channels_last)
        return self

    # --- persistence ----------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path, **_: object) -> None:
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(out / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(out / "scheduler")
        self.mel.config.save(out / "mel")
        if self.vqvae is not None:
            self.vqvae.save_pretrained(out / "vqvae", safe_serialization=True)
        index = {
            "_class_name": type(self).__name__,
            "unet": ["diffusers", "UNet2DModel"],
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "mel": ["model.codec", "MelCodec"],
            "vqvae": ["diffusers", "AutoencoderKL"] if self.vqvae is not None else [None, None],
            "patch_size": list(self.patch),
        }
        if self.tag_vocab is not None:
            index["tags"] = {f: list(v) for f, v in self.tag_vocab.items()}
        (out / "model_index.json").write_text(json.dumps(index, indent=2))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path,
                        **_: object) -> CrowdtunePipeline:
        """Load our folders or an AudioDiffusionPipeline-format checkpoint (folder or hub id).
        A LoRA adapter version (model/lora.py) loads its base version and merges into it."""
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            folder = _download(str(pretrained_model_name_or_path))
        if is_adapter(folder):
            base = full_model_dir(folder)
            if is_adapter(base) or not base.is_dir():
                raise CheckpointError(f"{folder}: its base {base.name} is missing or not a "
                                      "full model")
            pipe = cls.from_pretrained(base)
            merge_into(pipe.unet, folder)
            return pipe
        index_path = folder / "model_index.json"
        if not index_path.is_file():
            raise CheckpointError(f"{folder} is not a model folder (no model_index.json)")
        try:
            index = json.loads(index_path.read_text())
            unet = UNet2DModel.from_pretrained(folder / "unet")
            scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
            mel = MelCodec(MelConfig.load(folder / "mel"))
            vqvae = None
            if (folder / "vqvae").is_dir() and (index.get("vqvae") or [None])[0]:
                vqvae = AutoencoderKL.from_pretrained(folder / "vqvae")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot load the model at {folder}: {exc}") from exc
        vocab = index.get("tags")
        if vocab is not None and unet.config.num_class_embeds != tagvocab.n_embeddings(vocab):
            raise CheckpointError(f"{folder}: the tag vocabulary does not match the UNet's "
                                  "class embedding")
        pipe = cls(unet=unet, scheduler=scheduler, mel=mel, vqvae=vqvae,
                   patch_size=tuple(index.get("patch_size", (1, 1))), tag_vocab=vocab)
        pipe.unet.eval()
        return pipe


def _download(repo_id: str) -> Path:
    """A hub id -> local snapshot (needs internet; here it fails with a clear reason)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    except Exception as exc:  # noqa: BLE001 - any hub failure is one line for the user
        raise CheckpointError(f"cannot find or download model {repo_id!r}: "
                              f"{type(exc).__name__}") from exc
