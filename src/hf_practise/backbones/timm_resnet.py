"""timm ResNets (BasicBlock and Bottleneck, plain and -d variants).

Stages are the `nn.Sequential` children of a `timm.models.resnet.ResNet` whose items are residual blocks.
A block is droppable when it has no downsample (identity shortcut, so input and output shapes match).
Dropping rebuilds the stage's Sequential without the block, so state-dict keys renumber and plain timm
reloads the result with `model_args={"layers": [...]}`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .base import BackboneFamily, BlockRef


def _resnet_classes() -> tuple[type, type, type]:
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    return ResNet, BasicBlock, Bottleneck


def _json_safe(args: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in args.items():
        if isinstance(value, tuple):
            value = list(value)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out


class TimmResNetFamily(BackboneFamily):
    name = "timm-resnet"
    library_name = "timm"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        try:
            resnet, _, _ = _resnet_classes()
        except ImportError:
            return False
        return isinstance(model, resnet)

    # ---- structure -------------------------------------------------------------------------------------
    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        _, basic, bottleneck = _resnet_classes()
        # a stage whose every block was dropped stays as an empty Sequential (timm builds `layers=[0, ...]` so)
        return [
            child
            for child in model.children()
            if isinstance(child, nn.Sequential) and all(isinstance(b, (basic, bottleneck)) for b in child)
        ]

    def is_droppable(self, block: nn.Module) -> bool:
        return block.downsample is None

    def _last_conv(self, block: nn.Module) -> nn.Module:
        _, _, bottleneck = _resnet_classes()
        return block.conv3 if isinstance(block, bottleneck) else block.conv2

    @staticmethod
    def _shortcut_conv(block: nn.Module) -> nn.Module | None:
        if block.downsample is None:
            return None
        convs = [m for m in block.downsample.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1] if convs else None

    def branch_outputs(self, block: nn.Module) -> list[nn.Module]:
        out = [self._last_conv(block)]
        shortcut = self._shortcut_conv(block)
        return out + ([shortcut] if shortcut is not None else [])

    def branch_inputs(self, block: nn.Module) -> list[nn.Module]:
        out = [block.conv1]
        shortcut = self._shortcut_conv(block)
        return out + ([shortcut] if shortcut is not None else [])

    # ---- forward -----------------------------------------------------------------------------------------
    def forward_features(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return model.forward_features(pixel_values)

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.forward_head(features)

    def classifier(self, model: nn.Module) -> nn.Module:
        return model.get_classifier()

    def data_config(self, model: nn.Module) -> dict[str, Any]:
        from timm.data import resolve_data_config

        return resolve_data_config({}, model=model)

    # ---- editing and saving ------------------------------------------------------------------------------
    def drop_blocks(self, model: nn.Module, blocks: Sequence[BlockRef]) -> None:
        stages = self.stages(model)
        gone = {(r.stage, r.index) for r in blocks}
        for ref in blocks:
            if not 0 <= ref.stage < len(stages) or not 0 <= ref.index < len(stages[ref.stage]):
                raise ValueError(f"Block {ref.path} (stage {ref.stage}, index {ref.index}) is not in this model.")
            if not self.is_droppable(stages[ref.stage][ref.index]):
                raise ValueError(f"Block {ref.path} changes shape (it has a downsample) and cannot be dropped.")
        parents = {id(child): (name, child) for name, child in model.named_children()}
        for s, stage in enumerate(stages):
            kept = [b for i, b in enumerate(stage) if (s, i) not in gone]
            if len(kept) != len(stage):
                name, _ = parents[id(stage)]
                setattr(model, name, nn.Sequential(*kept))

    def model_args(self, model: nn.Module) -> dict[str, Any]:
        """Constructor kwargs that rebuild this (possibly block-dropped) ResNet with `timm.create_model`."""
        args = _json_safe(getattr(model, "_model_args", {}))
        for key in list(args):
            if key.startswith("drop_") or key.endswith("_drop_rate"):
                args.pop(key)
        stages = self.stages(model)
        args["layers"] = [len(s) for s in stages]
        if all(len(s) for s in stages):
            args["channels"] = [self._last_conv(s[0]).out_channels // s[0].expansion for s in stages]
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        args["in_chans"] = first.in_channels
        args["global_pool"] = model.global_pool.pool_type if hasattr(model.global_pool, "pool_type") else "avg"
        # num_classes lives at the top level of config.json (transformers' TimmWrapper rejects it here too)
        args.pop("num_classes", None)
        return args

    def save_pretrained(self, model: nn.Module, save_dir: Path, *, source_config: dict[str, Any]) -> list[str]:
        pretrained_cfg = {k: v for k, v in dict(getattr(model, "pretrained_cfg", {}) or {}).items()}
        pretrained_cfg.update(source_config.get("pretrained_cfg", {}))
        for key in ("file", "source", "state_dict", "url", "hf_hub_id", "hf_hub_filename", "test_input_size"):
            pretrained_cfg.pop(key, None)
        architecture = source_config.get("architecture") or pretrained_cfg.get("architecture")
        if not architecture:
            raise ValueError("Cannot tell the timm architecture of this model; pass it in `source_config`.")
        pretrained_cfg.pop("architecture", None)
        pretrained_cfg["num_classes"] = model.num_classes
        config = {
            "architecture": architecture,
            "num_classes": model.num_classes,
            "num_features": model.num_features,
            "global_pool": self.model_args(model)["global_pool"],
            "model_args": self.model_args(model),
            "pretrained_cfg": _json_safe(pretrained_cfg),
        }
        for key in ("label_names", "label_descriptions"):
            if key in source_config:
                config[key] = source_config[key]
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(save_dir / "model.safetensors"), metadata={"format": "pt"})
        (save_dir / "config.json").write_text(json.dumps(config, indent=2))
        return ["config.json", "model.safetensors"]
