"""The replay pool: clean starter-corpus clips a fine-tune rehearses, with their features.

Fine-tuning on the model's own generated tracks, even the best-rated half, made it worse
(measured: -0.19 stars after one round; training on its output amplifies its artifacts).
Rehearsing clean corpus clips chosen by the guild's reward model made it better (+0.46), so
the pool is where most of each fine-tuning batch comes from. Its reward vectors are computed
from the clips as the model would render them (codec round trip), since that is what the
reward model was fitted on: the round trip's spectral statistics and its mel images (the
tagger's embedding is read from those at fine-tuning time, `CorpusPool.heard`). They depend
only on the codec, so the pool is cached on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from model.codec import MelCodec, MelConfig
from model.contracts import POOL_SEED  # corpus seed of the pool
from model.features import extract
from model.files import atomic_path
from model.lora import full_model_dir
from model.reward_model import Heard, Listener, listener_codec, reward_vector
from model.train import corpus_images, keyed_tags

log = logging.getLogger(__name__)


@dataclass
class CorpusPool:
    images: torch.Tensor  # (n, 1, y_res, x_res) mel images
    vectors: np.ndarray  # (n, d) spectral reward vectors of their codec round trip
    tags: list[dict[str, str]]  # each clip's tags and key ({} for the synthesiser's corpus)
    round_trip: torch.Tensor  # the round trip's audio as the reward model hears it

    def heard(self, listener: Listener) -> Heard:
        """What the reward model reads of each clip."""
        return listener.read(self.round_trip, self.vectors)


def pool_corpus(model_dir: Path) -> str:
    """The corpus a model rehearses: the tagged starter corpus for a tag-conditioned
    (built-in) model, the synthesiser's for the older untagged base and imported models."""
    index = json.loads((full_model_dir(model_dir) / "model_index.json").read_text())
    return "scores" if index.get("tags") else "synth"


def _build(n: int, seed: int, mel: MelConfig, corpus: str, cache_dir: Path | None
           ) -> CorpusPool:
    images, records = corpus_images(n, seed, mel, corpus, cache_dir)
    # The clips' own keys, so a keyed model rehearses them with its key prior as it plays.
    tags = keyed_tags(records, mel.window_seconds, cache_dir) if corpus == "scores" else \
        [{} for _ in records]
    codec, heard_by = MelCodec(mel), listener_codec()
    vectors, round_trip = [], []
    for start in range(0, n, 32):
        audio = codec.decode(images[start:start + 32])
        vectors += [reward_vector(extract(a, mel.sample_rate)) for a in audio.numpy()]
        round_trip += [heard_by.encode_windows(a)[:1] for a in audio]
    return CorpusPool(images, np.stack(vectors), tags, torch.cat(round_trip))


def load_pool(n: int, seed: int = POOL_SEED, mel: MelConfig | None = None,
              cache_dir: Path | None = None, corpus: str = "scores") -> CorpusPool:
    """The pool of `n` clips from corpus seed `seed`, from `cache_dir` when it is there
    (`crowdtune pretrain` builds it once: 35 s for 512 clips on 2 cores, measured)."""
    mel = mel or MelConfig()
    if cache_dir is None:
        return _build(n, seed, mel, corpus, None)
    key = hashlib.sha1(json.dumps([asdict(mel), corpus], sort_keys=True).encode()).hexdigest()
    # 3: tags with each clip's key (2: with round_trip)
    path = Path(cache_dir) / f"pool3-{corpus}-{n}-{seed}-{key[:10]}.npz"
    if path.is_file():
        try:
            data = np.load(path)
            return CorpusPool(torch.from_numpy(data["images"].astype(np.float32)),
                              data["vectors"], json.loads(str(data["tags"])),
                              torch.from_numpy(data["round_trip"].astype(np.float32)))
        except (OSError, ValueError, KeyError) as exc:  # a torn write: rebuild it
            log.warning("corpus pool cache %s unreadable (%s); rebuilding", path, exc)
    pool = _build(n, seed, mel, corpus, Path(cache_dir))
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, images=pool.images.numpy().astype(np.float16), vectors=pool.vectors,
                 tags=np.array(json.dumps(pool.tags)),
                 round_trip=pool.round_trip.numpy().astype(np.float16))
    return pool
