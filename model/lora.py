"""LoRA adapters: a guild's fine-tuning as a small low-rank change to a shared base.

A version that is an adapter stores only `adapter.safetensors` (the low-rank factors) and
`adapter.json` (rank, alpha, target layers, and the version whose full weights it changes:
its base), about 1-2 MB in half precision against 21 MB for a full copy. Loading a version
loads its base and merges the adapter into the weights (W + alpha/rank * B @ A), so sampling
costs what the base costs: nothing is added to the forward pass.

Training (model/finetune.py with `lora_rank` > 0) wraps the target layers of the base UNet
in `LoraLinear` / `LoraConv2d` (the base weights frozen, B zero-initialised, or initialised
from the parent's adapter so a lineage keeps one adapter of one rank over one base), trains
only the factors, and saves them. Targets: the attention projections and the resnet blocks'
3x3 convolutions, where most of the UNet's weights are.

The maths follows Hu et al. 2021 (LoRA); for a convolution, A is a k x k convolution to
`rank` channels and B a 1 x 1 convolution back, so B @ A is a k x k kernel.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model.registry import ADAPTER_CONFIG

ADAPTER_WEIGHTS = "adapter.safetensors"
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")  # module name endings


@dataclass(frozen=True)
class AdapterConfig:
    rank: int
    alpha: float
    base: str  # the version (a sibling folder) whose weights the adapter changes
    targets: tuple[str, ...] = TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def save(self, folder: Path) -> None:
        (Path(folder) / ADAPTER_CONFIG).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> AdapterConfig:
        d = json.loads((Path(folder) / ADAPTER_CONFIG).read_text())
        return cls(int(d["rank"]), float(d["alpha"]), str(d["base"]), tuple(d["targets"]))


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def full_model_dir(folder: Path) -> Path:
    """The folder holding the full model a version runs on: an adapter's base (a sibling
    version), else the folder itself. What reads a model's own files (its index, its mel
    settings) reads them here."""
    folder = Path(folder)
    return folder.parent / AdapterConfig.load(folder).base if is_adapter(folder) else folder


class _Lora(nn.Module):
    """A frozen base layer plus scale x B(A(x)); B starts at zero (no change)."""

    def __init__(self, base: nn.Module, lora_a: nn.Module, lora_b: nn.Module,
                 scale: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_a, self.lora_b, self.scale = lora_a, lora_b, scale
        nn.init.kaiming_uniform_(self.lora_a.weight, a=5 ** 0.5)
        nn.init.zeros_(self.lora_b.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * self.lora_b(self.lora_a(x))

    def delta(self) -> torch.Tensor:
        """The change to the base weight: scale x B @ A, in the weight's shape."""
        a = self.lora_a.weight.flatten(1)  # (rank, in [* k * k])
        b = self.lora_b.weight.flatten(1)  # (out, rank)
        return self.scale * (b @ a).view_as(self.base.weight)


class LoraLinear(_Lora):
    def __init__(self, base: nn.Linear, rank: int, scale: float) -> None:
        super().__init__(base, nn.Linear(base.in_features, rank, bias=False),
                         nn.Linear(rank, base.out_features, bias=False), scale)


class LoraConv2d(_Lora):
    def __init__(self, base: nn.Conv2d, rank: int, scale: float) -> None:
        super().__init__(base, nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride,
                                         base.padding, base.dilation, bias=False),
                         nn.Conv2d(rank, base.out_channels, 1, bias=False), scale)


def _targets(unet: nn.Module, cfg: AdapterConfig) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent module, attribute, layer) of every target layer."""
    out = []
    for name, module in unet.named_modules():
        if not any(name == t or name.endswith("." + t) for t in cfg.targets):
            continue
        if isinstance(module, (nn.Linear, nn.Conv2d)) and not isinstance(module, _Lora):
            parent_name, _, attr = name.rpartition(".")
            out.append((unet.get_submodule(parent_name), attr, module))
    return out


def add_adapter(unet: nn.Module, cfg: AdapterConfig,
                state: dict[str, torch.Tensor] | None = None) -> list[nn.Parameter]:
    """Freeze `unet` and wrap its target layers with trainable factors (from `state`, a
    parent's adapter, when given). Returns the trainable parameters."""
    unet.requires_grad_(False)
    for parent, attr, layer in _targets(unet, cfg):
        wrap = LoraLinear if isinstance(layer, nn.Linear) else LoraConv2d
        setattr(parent, attr, wrap(layer, cfg.rank, cfg.scale).to(layer.weight.device))
    if state is not None:
        missing = set(adapter_state(unet)) - set(state)
        if missing:
            raise ValueError(f"the parent adapter lacks {len(missing)} factors "
                             f"(e.g. {sorted(missing)[0]})")
        unet.load_state_dict(state, strict=False)
    return [p for n, p in unet.named_parameters() if ".lora_" in n]


def adapter_state(unet: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in unet.state_dict().items()
            if ".lora_" in n}


def remove_adapter(unet: nn.Module, merge: bool = True) -> None:
    """Unwrap the adapter's layers, merging their change into the base weights (or not)."""
    for name, module in list(unet.named_modules()):
        if isinstance(module, _Lora):
            if merge:
                with torch.no_grad():
                    module.base.weight += module.delta().to(module.base.weight.dtype)
            parent_name, _, attr = name.rpartition(".")
            setattr(unet.get_submodule(parent_name), attr, module.base)


def save_adapter(unet: nn.Module, cfg: AdapterConfig, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(unet), str(folder / ADAPTER_WEIGHTS))
    cfg.save(folder)


def load_adapter_state(folder: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_file(str(Path(folder) / ADAPTER_WEIGHTS)).items()}


def merge_into(unet: nn.Module, folder: Path) -> None:
    """Apply the adapter saved in `folder` to `unet` (its base's UNet) for good."""
    cfg = AdapterConfig.load(folder)
    add_adapter(unet, cfg, load_adapter_state(folder))
    remove_adapter(unet, merge=True)
