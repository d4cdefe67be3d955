import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel

from model.pipeline import (
    STEPS,
    CheckpointError,
    CrowdtunePipeline,
    crossfade,
    patchify,
    slerp,
    unpatchify,
)
from model.train import TrainConfig, train_denoiser
from tests.helpers import TINY_MEL, tiny_pipeline


def test_patchify_round_trip():
    x = torch.randn(2, 1, 32, 40)
    p = patchify(x, 8, 4)
    assert p.shape == (2, 32, 4, 10)
    assert torch.equal(unpatchify(p, 8, 4), x)
    # A patch holds a contiguous 8x4 block of the image.
    assert torch.equal(p[0, :, 0, 0], x[0, 0, :8, :4].flatten())


def test_slerp_keeps_norm_and_endpoints():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=g), torch.randn(1000, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    assert abs(mid.norm() - a.norm()) / a.norm() < 0.05
    assert ((a + b) / 2).norm() < 0.8 * a.norm()  # what linear mixing would lose


def test_crossfade_length_and_continuity():
    w = [np.ones(100, np.float32), np.ones(100, np.float32)]
    out = crossfade(w, 20)
    assert len(out) == 180
    assert np.all(out > 0.99) and np.all(out < 1.42)  # equal-power: sin+cos peaks at sqrt 2


def test_same_seed_same_audio_after_save_and_load(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "p")
    loaded = CrowdtunePipeline.from_pretrained(tmp_path / "p")
    a = pipe(num_inference_steps=4, generator=torch.Generator().manual_seed(7)).audios[0]
    b = loaded(num_inference_steps=4, generator=torch.Generator().manual_seed(7)).audios[0]
    c = loaded(num_inference_steps=4, generator=torch.Generator().manual_seed(8)).audios[0]
    # Equal up to float rounding (BLAS may sum in another order for differently placed weights)
    assert np.abs(a - b).max() < 1e-4
    assert np.abs(a - c).max() > 1e-2
    assert len(a) == TINY_MEL.window_samples


def test_a_pipeline_ready_for_generation_makes_the_same_audio():
    pipe = tiny_pipeline()
    a = pipe(num_inference_steps=4, generator=torch.Generator().manual_seed(7)).audios[0]
    ready = pipe.for_generation()
    assert ready.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    b = ready(num_inference_steps=4, generator=torch.Generator().manual_seed(7)).audios[0]
    assert np.abs(a - b).max() < 1e-4


def test_the_bots_default_steps_are_the_pipelines():
    from bot.core.config import Settings

    assert Settings(_env_file=None).sampler_steps == STEPS


def test_long_tracks_are_windows_crossfaded():
    pipe = tiny_pipeline()
    out = pipe(batch_size=2, num_inference_steps=3, seconds=2.0)
    assert [len(a) for a in out.audios] == [32000, 32000]
    # 0.5 s windows with 0.125 s crossfades: ceil((2.0 - 0.125) / 0.375) = 5 windows.
    assert pipe.n_windows(2.0) == 5
    assert not np.array_equal(out.audios[0], out.audios[1])


def _chirps(n: int) -> np.ndarray:
    t = np.arange(TINY_MEL.window_samples * 2) / TINY_MEL.sample_rate
    return np.stack([0.5 * np.sin(2 * np.pi * (300 + 200 * i) * t * (1 + t)) for i in range(n)])


@pytest.fixture(scope="module")
def trained():
    """A tiny pipeline trained briefly on a few chirps, the low ones tagged major and the high
    ones minor, and its loss curve."""
    pipe = tiny_pipeline()
    wins = [pipe.mel.encode_windows(torch.from_numpy(c).float()) for c in _chirps(4)]
    tags = [{"mode": "major" if i < 2 else "minor"} for i, w in enumerate(wins) for _ in w]
    losses = train_denoiser(pipe, torch.cat(wins), TrainConfig(steps=200, batch_size=8,
                                                               lr=2e-3, warmup=5), tags=tags)
    return pipe, losses


def _mel_centroid(images: np.ndarray) -> float:
    """Mean mel bin weighted by level (images in [-1, 1], bins along axis -2)."""
    level = (images + 1).mean(axis=-1)
    bins = np.arange(level.shape[-1])
    return float((level * bins).sum() / level.sum())


def test_asked_tags_steer_generation(trained):
    pipe, _ = trained
    gen = torch.Generator
    low = pipe(batch_size=4, num_inference_steps=10, generator=gen().manual_seed(1),
               tags={"mode": "major"})
    high = pipe(batch_size=4, num_inference_steps=10, generator=gen().manual_seed(1),
                tags=[{"mode": "minor"}] * 4)
    # Measured: mel centroid 13.1 vs 15.4 (the training data's: 8.1 vs 13.8).
    assert _mel_centroid(np.stack(low.mels)) + 1 < _mel_centroid(np.stack(high.mels))
    # A field the model was not trained with values for is ignored, not an error.
    pipe(num_inference_steps=2, tags={"instrument": "theremin"})


def test_tag_vocabulary_survives_save_and_load(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "p")
    loaded = CrowdtunePipeline.from_pretrained(tmp_path / "p")
    assert loaded.accepts_tags and loaded.tag_vocab == pipe.tag_vocab
    plain = tiny_pipeline(tags=False)
    plain.save_pretrained(tmp_path / "q")
    loaded = CrowdtunePipeline.from_pretrained(tmp_path / "q")
    assert not loaded.accepts_tags
    assert loaded.tag_labels({"mode": "minor"}, 2) is None
    loaded(num_inference_steps=2, tags={"mode": "minor"})  # a model without tags ignores them


def test_training_lowers_the_loss_and_keeps_ema_weights(trained):
    pipe, losses = trained
    assert np.mean(losses[-20:]) < 0.9 * np.mean(losses[:20])  # measured ~0.77
    assert not pipe.unet.training


def test_ddim_inversion_round_trips_and_seeds_generation(trained):
    pipe, _ = trained
    audio = _chirps(2)[1].astype(np.float32)
    lat = pipe.invert(audio, steps=20, max_windows=2)
    assert lat.shape == (2, *pipe.latent_shape())
    # Denoising the inversion deterministically lands much nearer the song than denoising
    # fresh noise does.
    clean = pipe.images_to_latents(pipe.mel.encode_windows(torch.from_numpy(audio))[:2])
    rebuilt = pipe.denoise(lat, 20, deterministic=True)
    other = pipe.denoise(torch.randn(lat.shape, generator=torch.Generator().manual_seed(0)),
                         20, deterministic=True)
    assert (rebuilt - clean).abs().mean() < 0.5 * (other - clean).abs().mean()
    # Upload-seeded generation inverts only partway: from there the song survives better.
    part = pipe.invert(audio, steps=20, max_windows=2, strength=0.5)
    rebuilt_part = pipe.denoise(part, 20, deterministic=True, strength=0.5)
    assert (rebuilt_part - clean).abs().mean() < (rebuilt - clean).abs().mean()
    out = pipe(batch_size=2, num_inference_steps=5, seconds=1.0, seed_latents=part,
               seed_strength=0.5)
    assert len(out.audios) == 2 and all(np.isfinite(a).all() for a in out.audios)


def _audio_diffusion_checkpoint(folder, vae: bool) -> None:
    """A tiny random-weight checkpoint in diffusers' AudioDiffusionPipeline layout."""
    torch.manual_seed(0)
    latent = (16, 16) if vae else (32, 32)
    UNet2DModel(sample_size=latent, in_channels=1, out_channels=1, layers_per_block=1,
                block_out_channels=(16, 32), norm_num_groups=8,
                down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(folder / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(folder / "scheduler")
    (folder / "mel").mkdir()
    (folder / "mel" / "mel_config.json").write_text(json.dumps({
        "_class_name": "Mel", "x_res": 32, "y_res": 32, "sample_rate": 22050,
        "n_fft": 2048, "hop_length": 512, "top_db": 80, "n_iter": 4}))
    index = {"_class_name": "AudioDiffusionPipeline", "_diffusers_version": "0.12.0",
             "mel": ["diffusers", "Mel"], "scheduler": ["diffusers", "DDPMScheduler"],
             "unet": ["diffusers", "UNet2DModel"], "vqvae": [None, None]}
    if vae:
        AutoencoderKL(in_channels=1, out_channels=1, latent_channels=1, norm_num_groups=8,
                      block_out_channels=(8, 16),
                      down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2).save_pretrained(folder / "vqvae")
        index["vqvae"] = ["diffusers", "AutoencoderKL"]
    (folder / "model_index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("vae", [False, True])
def test_loads_audio_diffusion_format_checkpoints(tmp_path, vae):
    _audio_diffusion_checkpoint(tmp_path, vae)
    pipe = CrowdtunePipeline.from_pretrained(tmp_path)
    assert pipe.mel.config.sample_rate == 22050 and pipe.patch == (1, 1)
    assert (pipe.vqvae is not None) == vae
    out = pipe(num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert out.sample_rate == 22050 and len(out.audios[0]) == 32 * 512
    # It saves in the same layout and reloads to the same output.
    pipe.save_pretrained(tmp_path / "copy")
    again = CrowdtunePipeline.from_pretrained(tmp_path / "copy")
    out2 = again(num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(out.audios[0], out2.audios[0])


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no model_index.json"):
        CrowdtunePipeline.from_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="cannot load"):
        CrowdtunePipeline.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="cannot find or download"):
        CrowdtunePipeline.from_pretrained("nobody/no-such-model-offline")


def test_guidance_covers_only_its_share_of_the_steps():
    pipe = tiny_pipeline()
    batches = []
    forward = pipe.unet.forward

    def counting(x, t, **kw):
        batches.append(len(x))
        return forward(x, t, **kw)

    pipe.unet.forward = counting
    pipe(batch_size=2, num_inference_steps=4, tags={"mode": "minor"}, guidance_share=0.5)
    assert batches == [4, 4, 2, 2]  # guided steps run both passes in one batch
    batches.clear()
    pipe(batch_size=2, num_inference_steps=4, tags={"mode": "minor"})  # the default: all
    assert batches == [4, 4, 4, 4]
    batches.clear()
    pipe(batch_size=2, num_inference_steps=4, guidance_share=0.5)  # nothing asked: one pass
    assert batches == [2, 2, 2, 2]


def test_each_track_can_follow_its_tags_as_closely_as_asked():
    pipe = tiny_pipeline()
    tags = [{"mode": "minor"}, {"mode": "major"}]

    def mels(guidance) -> list[np.ndarray]:
        return pipe(batch_size=2, num_inference_steps=3, seconds=12.0, tags=tags,
                    generator=torch.Generator().manual_seed(4), guidance=guidance).mels

    loose, strict, mixed = mels(2.0), mels(8.0), mels([2.0, 8.0])
    assert not np.allclose(loose[1], strict[1])
    # Track 0 (and every one of its windows) as at 2, track 1 as at 8.
    np.testing.assert_allclose(mixed[0], loose[0], atol=1e-5)
    np.testing.assert_allclose(mixed[1], strict[1], atol=1e-5)
    with pytest.raises(ValueError, match="1 guidance scales for 2 tracks"):
        mels([3.0])
