"""What every timm family shares: the forward split, the data config, and the native checkpoint format.

A timm checkpoint folder is `config.json` (`architecture`, `num_classes`, `model_args`, `pretrained_cfg`) and
`model.safetensors`; `timm.create_model("local-dir:DIR", pretrained=True)` passes `model_args` to the
architecture's constructor and loads the weights strictly. A family subclass says which constructor
arguments rebuild its block-dropped model (`model_args`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from .base import BackboneFamily

#: pretrained_cfg entries that point at the original weights, not at the saved ones
_SOURCE_KEYS = ("file", "source", "state_dict", "url", "hf_hub_id", "hf_hub_filename", "test_input_size")


def json_safe(args: dict[str, Any]) -> dict[str, Any]:
    """The entries of `args` that survive a JSON round trip (tuples become lists, the rest is dropped)."""
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


class TimmFamily(BackboneFamily):
    """Base of the timm families: subclasses give the structure and `block_args`."""

    library_name = "timm"

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

    # ---- saving ------------------------------------------------------------------------------
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        """Constructor kwargs that fix the (possibly block-dropped) architecture, e.g. `{"depth": 10}`."""
        raise NotImplementedError

    def model_args(self, model: nn.Module) -> dict[str, Any]:
        """Constructor kwargs that rebuild this model with `timm.create_model(architecture, **model_args)`.

        The kwargs the model was created with (timm keeps them), less training-only ones, plus `block_args`.
        """
        args = json_safe(getattr(model, "_model_args", {}))
        for key in list(args):
            if key.startswith("drop_") or key.endswith("_drop_rate"):
                args.pop(key)
        args.update(self.block_args(model))
        # num_classes lives at the top level of config.json (transformers' TimmWrapper rejects it here too)
        args.pop("num_classes", None)
        return args

    def save_pretrained(self, model: nn.Module, save_dir: Path, *, source_config: dict[str, Any]) -> list[str]:
        pretrained_cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        pretrained_cfg.update(source_config.get("pretrained_cfg", {}))
        for key in _SOURCE_KEYS:
            pretrained_cfg.pop(key, None)
        architecture = source_config.get("architecture") or pretrained_cfg.get("architecture")
        if not architecture:
            raise ValueError("Cannot tell the timm architecture of this model; pass it in `source_config`.")
        pretrained_cfg.pop("architecture", None)
        pretrained_cfg["num_classes"] = model.num_classes
        model_args = self.model_args(model)
        config = {"architecture": architecture, "num_classes": model.num_classes, "num_features": model.num_features}
        if "global_pool" in model_args:
            config["global_pool"] = model_args["global_pool"]
        config.update(model_args=model_args, pretrained_cfg=json_safe(pretrained_cfg))
        for key in ("label_names", "label_descriptions"):
            if key in source_config:
                config[key] = source_config[key]
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(save_dir / "model.safetensors"), metadata={"format": "pt"})
        (save_dir / "config.json").write_text(json.dumps(config, indent=2))
        return ["config.json", "model.safetensors"]
