"""Settings from the environment and `.env` (every knob is documented in `.env.example`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CROWDTUNE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Path("data")
    # The bot token is read without the prefix, as Discord's docs name it; never logged.
    discord_token: SecretStr | None = Field(default=None, validation_alias="DISCORD_TOKEN")

    # Model: "builtin" pretrains (once) the small offline model; otherwise a folder or hub id
    # of a diffusers AudioDiffusionPipeline-format checkpoint.
    base_model: str = "builtin"
    # Pretraining budget of the built-in base (the README's first run must stay under 10 min).
    pretrain_steps: int = Field(default=1000, ge=1)
    pretrain_clips: int = Field(default=1024, ge=16)
    pretrain_seed: int = 0

    # Generation.
    track_seconds: float = Field(default=20.0, gt=0, le=300)
    sampler_steps: int = Field(default=20, ge=1, le=1000)
    audio_format: Literal["ogg", "mp3"] = "ogg"  # ogg is Opus
    keep_wav: bool = False
    torch_threads: int = 2

    @property
    def db_path(self) -> Path:
        return self.data_dir / "crowdtune.sqlite3"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def tracks_dir(self) -> Path:
        return self.data_dir / "tracks"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"


def load_settings(config: Path | None = None, **overrides: object) -> Settings:
    """Settings from the environment, an optional env-style config file, then overrides."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    if config is not None:
        return Settings(_env_file=config, **clean)  # type: ignore[call-arg]
    return Settings(**clean)  # type: ignore[call-arg]
