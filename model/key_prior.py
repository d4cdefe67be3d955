"""The key prior: the asked key laid out over the mel rows, as extra input channels of the UNet.

Why: tags reach the UNet as one embedding added to its time embedding, a per-channel shift
that cannot say which pitch rows to fill, and the base played the asked mode at chance (49%
by key finding on its audio; neither relabelling, more training nor smaller patches changed
that, docs/results/README.md). An image that holds, in every mel row, the asked key's
Krumhansl-Kessler weight for the semitones that row covers gives the convolutions the key
where the notes go: on the shipped base, key finding on the audio hears the asked mode on
63.5% / 75.0% of clips at guidance 3 / 6, the tagger on 72.9% / 80.2%
(bench/bench_key_prior.py).

The key is the `mode` tag plus a `tonic` (a pitch class). The tonic is a field of the model's
own vocabulary (`model_index.json`), not of the words members use (model/tags.py): the
pipeline draws one for a track that asks for a mode. Its embedding rows start at zero, so it
acts through the prior. The image is zero when the mode or the tonic is "any", so tag dropout
teaches the unkeyed case and classifier-free guidance pushes toward the key.

Layout: the image is patchified like the latents and concatenated to them, so conv_in takes
twice the latent channels and the UNet stays a plain diffusers UNet2DModel on disk. A forward
pre-hook on the UNet appends the channels from the call's tag labels, so every caller
(sampling, training, Diffusion-DPO's frozen copy) passes latents and labels as before.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from diffusers import UNet2DModel

from model import tags as tagvocab
from model.codec import MelConfig, mel_band_edges
from model.features import KEY_PROFILES

KEY_FIELD = "tonic"
TONICS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES = tuple(KEY_PROFILES)
INIT_SCALE = 0.1  # the new input weights start small: the base's features stay as they were


def key_table(cfg: MelConfig) -> torch.Tensor:
    """(24 keys, mel rows), key = mode index * 12 + tonic: each row's mean profile weight over
    the semitones its filter covers, standardised over rows."""
    edges = mel_band_edges(cfg).numpy()
    table = np.zeros((2 * 12, cfg.y_res), np.float32)
    for r in range(cfg.y_res):
        lo, hi = (edges[r] + edges[r + 1]) / 2, (edges[r + 1] + edges[r + 2]) / 2
        pcs = np.rint(69 + 12 * np.log2(np.linspace(max(lo, 20.0), hi, 16) / 440)).astype(int)
        for m, mode in enumerate(MODES):
            for k in range(12):
                table[m * 12 + k, r] = KEY_PROFILES[mode][(pcs - k) % 12].mean()
    table = (table - table.mean(1, keepdims=True)) / (table.std(1, keepdims=True) + 1e-6)
    return torch.from_numpy(table)


def has_key_prior(unet: UNet2DModel, vocab: Mapping[str, object] | None) -> bool:
    return (vocab is not None and KEY_FIELD in vocab and "mode" in vocab
            and unet.config.in_channels == 2 * unet.config.out_channels)


class KeyPriorHook:
    """The UNet's forward pre-hook: (latents, t, class_labels=...) -> latents with the
    patchified key image appended as channels."""

    def __init__(self, vocab: Mapping[str, tuple[str, ...]], mel: MelConfig,
                 patch: tuple[int, int]) -> None:
        fields, offsets = list(vocab), tagvocab.offsets(vocab)
        self.cols = (fields.index("mode"), fields.index(KEY_FIELD))
        self.offsets = (offsets["mode"], offsets[KEY_FIELD])
        self.table = key_table(mel)
        self.patch = patch

    def image(self, labels: torch.Tensor | None, latents: torch.Tensor) -> torch.Tensor:
        n, _, h, w = latents.shape
        ph, pw = self.patch
        if labels is None or labels.dim() != 2:
            return latents.new_zeros(n, ph * pw, h, w)
        mode = labels[:, self.cols[0]] - self.offsets[0]
        tonic = labels[:, self.cols[1]] - self.offsets[1]
        known = ((mode < len(MODES)) & (tonic < len(TONICS))).to(latents.dtype)  # "any": 0
        key = (mode.clamp(max=len(MODES) - 1) * 12 + tonic.clamp(max=11)).long().cpu()
        rows = self.table[key].to(latents.device, latents.dtype) * known[:, None]
        # patchified like the latents (pipeline.patchify): channel i * pw + j of patch row y
        # holds mel row y * ph + i
        rows = rows.view(n, h, ph).transpose(1, 2)
        return rows[:, :, None, :, None].expand(n, ph, pw, h, w).reshape(n, ph * pw, h, w)

    def __call__(self, _unet, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        sample = args[0] if args else kwargs.pop("sample")
        labels = kwargs.get("class_labels", args[2] if len(args) > 2 else None)
        keyed = torch.cat([sample, self.image(labels, sample)], 1)
        return (keyed, *args[1:]), kwargs


def attach(unet: UNet2DModel, vocab: Mapping[str, tuple[str, ...]], mel: MelConfig,
           patch: tuple[int, int]) -> None:
    """Hook the key prior onto a UNet whose conv_in takes it (once)."""
    if not any(isinstance(h, KeyPriorHook) for h in unet._forward_pre_hooks.values()):
        unet.register_forward_pre_hook(KeyPriorHook(vocab, mel, patch), with_kwargs=True)


def widen(unet: UNet2DModel, vocab: Mapping[str, tuple[str, ...]],
          generator: torch.Generator | None = None) -> dict[str, tuple[str, ...]]:
    """Give a tag-conditioned UNet the key prior: conv_in takes the key image beside the
    latents (new weights small, the old ones kept) and the class embedding gains the tonic's
    rows (zero). Returns the model's vocabulary with the tonic; `attach` hooks it."""
    old_conv = unet.conv_in
    conv = torch.nn.Conv2d(2 * old_conv.in_channels, old_conv.out_channels,
                           old_conv.kernel_size, padding=old_conv.padding)
    fresh = torch.empty_like(old_conv.weight)
    bound = 1 / (old_conv.in_channels * old_conv.kernel_size[0] * old_conv.kernel_size[1]) ** 0.5
    fresh.uniform_(-bound, bound, generator=generator)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([old_conv.weight, INIT_SCALE * fresh], 1))
        conv.bias.copy_(old_conv.bias)
    unet.conv_in = conv
    unet.register_to_config(in_channels=conv.in_channels)

    keyed = {**{f: tuple(v) for f, v in vocab.items()}, KEY_FIELD: TONICS}
    old = unet.class_embedding
    emb = type(old)(tagvocab.n_embeddings(keyed), old.embedding_dim)
    with torch.no_grad():  # the tonic's rows come last: every other row keeps its index
        emb.weight.zero_()
        emb.weight[: old.num_embeddings] = old.weight
    unet.class_embedding = emb
    unet.register_to_config(num_class_embeds=emb.num_embeddings)
    return keyed


def key_tags(key: tuple[int, str] | None) -> dict[str, str]:
    """A clip's key (tonic pitch class, mode) as model tags; {} when unknown."""
    return {} if key is None else {"mode": key[1], KEY_FIELD: TONICS[key[0] % 12]}


def draw_tonic(generator: torch.Generator) -> str:
    return TONICS[int(torch.randint(len(TONICS), (1,), generator=generator))]
