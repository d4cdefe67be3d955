import numpy as np
import torch

from model import key_prior
from model.codec import MelConfig, mel_band_edges
from model.features import KEY_PROFILES
from model.pipeline import CrowdtunePipeline, patchify
from model.train import TrainConfig, train_denoiser
from tests.helpers import TINY_MEL, tiny_pipeline


def keyed_pipeline(seed: int = 0) -> CrowdtunePipeline:
    pipe = tiny_pipeline(seed)
    pipe.add_key_prior(torch.Generator().manual_seed(seed))
    return pipe


def conv_in_inputs(pipe: CrowdtunePipeline) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    pipe.unet.conv_in.register_forward_hook(lambda _m, args, _o: seen.append(args[0].detach()))
    return seen


def test_key_table_follows_the_key_profiles():
    cfg = MelConfig()
    table = key_prior.key_table(cfg).numpy()
    assert table.shape == (24, cfg.y_res)
    # Rows narrower than a semitone (above ~500 Hz) hold their pitch class's weight in the key.
    centres = mel_band_edges(cfg)[1:-1].numpy()
    rows = np.flatnonzero((centres > 500) & (centres < 4000))
    pcs = np.rint(69 + 12 * np.log2(centres[rows] / 440)).astype(int) % 12
    for m, mode in enumerate(key_prior.MODES):
        for tonic in (0, 5, 11):
            expected = KEY_PROFILES[mode][(pcs - tonic) % 12]
            assert np.corrcoef(table[m * 12 + tonic, rows], expected)[0, 1] > 0.9


def test_widening_keeps_the_base_until_a_key_is_asked():
    pipe = tiny_pipeline()
    x = torch.randn(3, *pipe.latent_shape(), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 500, 900])
    tags = {"mode": "minor", "instrument": "piano"}
    with torch.no_grad():
        before = pipe.unet(x, t, class_labels=pipe.tag_labels(tags, 3)).sample
        pipe.add_key_prior(torch.Generator().manual_seed(0))
        assert pipe.keyed and pipe.unet.config.in_channels == 2 * pipe.unet.config.out_channels
        assert pipe.latent_shape()[0] == pipe.unet.config.out_channels
        after = pipe.unet(x, t, class_labels=pipe.tag_labels(tags, 3)).sample  # tonic: any
        keyed = pipe.unet(x, t, class_labels=pipe.tag_labels({**tags, "tonic": "D"}, 3)).sample
    assert torch.allclose(before, after, atol=1e-5)
    assert (keyed - after).abs().max() > 1e-4


def test_the_key_image_is_laid_out_like_the_latents():
    pipe = keyed_pipeline()
    (hook,) = [h for h in pipe.unet._forward_pre_hooks.values()
               if isinstance(h, key_prior.KeyPriorHook)]
    x = torch.zeros(2, *pipe.latent_shape())
    image = hook.image(pipe.tag_labels({"mode": "minor", "tonic": "D"}, 2), x)
    ph, pw = pipe.patch
    rows = hook.table[12 + 2]  # D minor
    full = rows[None, None, :, None].expand(2, 1, TINY_MEL.y_res, TINY_MEL.x_res)
    assert torch.equal(image, patchify(full.contiguous(), ph, pw))
    for partial in ({"mode": "minor"}, {"tonic": "D"}, {}):  # "any" mode or tonic: no key
        assert hook.image(pipe.tag_labels(partial, 2), x).abs().sum() == 0


def test_a_track_that_asks_for_a_mode_is_played_in_a_key(tmp_path):
    pipe = keyed_pipeline()
    pipe.save_pretrained(tmp_path / "p")
    loaded = CrowdtunePipeline.from_pretrained(tmp_path / "p")
    assert loaded.keyed and loaded.tag_vocab["tonic"] == key_prior.TONICS
    seen = conv_in_inputs(loaded)
    loaded(num_inference_steps=2, tags={"mode": "major"})
    extra = torch.cat(seen)[:, pipe.unet.config.out_channels:]
    assert extra.abs().sum() > 0
    seen.clear()
    loaded(num_inference_steps=2, tags={"instrument": "piano"})  # no mode: no key
    assert torch.cat(seen)[:, pipe.unet.config.out_channels:].abs().sum() == 0
    # Same seed, same audio: the drawn tonic comes from the track's generator.
    a, b = (loaded(num_inference_steps=2, tags={"mode": "minor"},
                   generator=torch.Generator().manual_seed(3)).audios[0] for _ in range(2))
    assert np.array_equal(a, b)
    # What a track reports having been made with stays in the members' vocabulary.
    assert loaded.known_tags({"mode": "minor"}) == {"mode": "minor"}


def test_the_key_stage_trains_the_new_weights():
    pipe = keyed_pipeline()
    before = pipe.unet.conv_in.weight.detach().clone()
    images = torch.rand(8, 1, TINY_MEL.y_res, TINY_MEL.x_res) * 2 - 1
    tags = [{"mode": "major", "tonic": key_prior.TONICS[i]} for i in range(8)]
    train_denoiser(pipe, images, TrainConfig(steps=3, batch_size=4, seed=0), tags=tags)
    half = pipe.unet.config.out_channels
    assert (pipe.unet.conv_in.weight[:, half:] - before[:, half:]).abs().max() > 0
