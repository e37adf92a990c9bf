"""What the transformers families share: the head split, the image processor, the native save.

A transformers image classifier keeps its blocks in stacks (`ModuleList`s) of its base model. Dropping
rebuilds a stack without the block; saving rebuilds the config with the new depths (`depths` or
`num_hidden_layers`, and without the backbone fields that would go stale) and calls the model's own
`save_pretrained` with it, so `AutoModelForImageClassification.from_pretrained(DIR)` reloads the result with
no missing or unexpected keys. Preprocessing comes from the checkpoint's `preprocessor_config.json`, which is
saved beside the model. Structure is found from classes, never from attribute paths (transformers 5 keeps
ViT's layers at `vit.layers` while saved keys say `vit.encoder.layer.N`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import fit_channels
from .base import BackboneFamily
from .saved_format import FORMAT_KEY, format_entry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: PIL resample codes of image processors -> timm interpolation names
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "lanczos"}
#: config fields of backbone-capable models that describe the original stages and go stale after a drop
_STALE = ("stage_names", "out_features", "out_indices", "_out_features", "_out_indices")
PREPROCESSOR = "preprocessor_config.json"


def layer_stacks(root: nn.Module, layer_type: type) -> list[nn.ModuleList | nn.Sequential]:
    """Every ModuleList/Sequential under `root` whose items are `layer_type`, in forward (registration) order."""
    return [
        m
        for m in root.modules()
        if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) and all(isinstance(b, layer_type) for b in m)
    ]


def _hw(size: Any) -> tuple[int, int] | None:
    """(height, width) of an image processor's `size` / `crop_size` entry."""
    if isinstance(size, dict):
        side = size.get("height") or size.get("shortest_edge")
        return (side, size.get("width") or side) if side else None
    return (size, size) if isinstance(size, int) else None


def _vision_field(config: Any, name: str, default: Any) -> Any:
    """`config.name`, or its vision tower's (CLIP and SigLIP keep image size and channels in `vision_config`)."""
    value = getattr(config, name, None)
    if value is None:
        value = getattr(getattr(config, "vision_config", None), name, None)
    return default if value is None else value


def processor_data_config(proc: dict[str, Any], config: Any) -> dict[str, Any]:
    """timm's data config (for `timm.data.create_transform`) that preprocesses as the image processor `proc` does."""
    resize = _hw(proc.get("size"))
    crop = _hw(proc.get("crop_size")) if proc.get("do_center_crop") else None
    if crop is not None:  # resize, then cut the centre crop out of it
        size, crop_pct = crop, (crop[0] / resize[0] if resize else 1.0)
    elif resize is not None:
        # ConvNeXt's processor resizes to size / crop_pct and crops back below 384 pixels, and ignores it above
        size, crop_pct = resize, ((proc.get("crop_pct") or 1.0) if resize[0] < 384 else 1.0)
    else:
        image_size = _vision_field(config, "image_size", 224)
        size = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size)
        crop_pct = 1.0
    channels = _vision_field(config, "num_channels", 3)
    data_config = {
        "input_size": (channels, int(size[0]), int(size[1])),
        "interpolation": _RESAMPLE.get(proc.get("resample", 2), "bilinear"),
        "mean": tuple(proc.get("image_mean") or IMAGENET_MEAN),
        "std": tuple(proc.get("image_std") or IMAGENET_STD),
        "crop_pct": crop_pct,
        "crop_mode": "center",
    }
    return fit_channels(data_config, channels)  # a grey model: one mean and std (see `fit_channels`)


class TransformersFamily(BackboneFamily):
    """Base of the transformers families: the head split, the image processor, the native save."""

    library_name = "transformers"
    #: the `*ForImageClassification` class this family handles, and the name of its base-model attribute where
    #: that is not the model's own `base_model_prefix` (empty: `model.base_model`)
    model_class_name: str = ""
    base_attr: str = ""
    #: config field holding the blocks per stage (dotted for a nested config: "vision_config.num_hidden_layers")
    depth_field: str = "depths"

    @classmethod
    def _model_class(cls) -> type | None:
        try:
            import transformers
        except ImportError:
            return None
        return getattr(transformers, cls.model_class_name, None)

    @classmethod
    def model_type(cls) -> type | None:
        return cls._model_class()

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        klass = cls._model_class()
        return klass is not None and isinstance(model, klass)

    def base_model(self, model: nn.Module) -> nn.Module:
        """The base model under the classification head (`base_attr`, else transformers' `model.base_model`)."""
        return getattr(model, self.base_attr) if self.base_attr else model.base_model

    # ---- forward -----------------------------------------------------------------------------------------
    def forward_features(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.base_model(model)(pixel_values).last_hidden_state

    def classifier(self, model: nn.Module) -> nn.Module:
        return model.classifier

    @staticmethod
    def _processor_file(model: nn.Module) -> Path | None:
        """The `preprocessor_config.json` beside the checkpoint the model was loaded from, if there is one."""
        name = str(getattr(model, "name_or_path", "") or "")
        if not name:  # built in memory, not loaded: no folder (and never the current directory's file)
            return None
        path = Path(name) / PREPROCESSOR
        return path if path.is_file() else None

    def data_config(self, model: nn.Module) -> dict[str, Any]:
        """The timm-style data config of the checkpoint's image processor (ImageNet defaults without one)."""
        path = self._processor_file(model)
        return processor_data_config(json.loads(path.read_text()) if path else {}, model.config)

    # ---- saving ------------------------------------------------------------------------------------------
    def depth_value(self, model: nn.Module) -> Any:
        return [len(s) for s in self.stages(model)]

    def pruned_config(self, model: nn.Module):
        """The model's config with the current depths, rebuilt (editing in place leaves stale stage fields)."""
        cfg = model.config
        d = cfg.to_dict()
        for key in _STALE:
            d.pop(key, None)
        *path, field = self.depth_field.split(".")  # e.g. "vision_config.num_hidden_layers" for CLIP
        target = d
        for key in path:
            target = target[key]
        target[field] = self.depth_value(model)
        new = type(cfg).from_dict(d)
        attn = getattr(cfg, "_attn_implementation", None)
        if attn is not None:
            new._attn_implementation = attn
        return new

    def save_pretrained(self, model: nn.Module, save_dir: Path, *, source_config: dict[str, Any]) -> list[str]:
        if not self.reloads_natively(model):
            self._save_compressed(model, save_dir)
        else:
            self._save_native(model, save_dir)
        proc = self._processor_file(model)
        if proc is not None:
            shutil.copyfile(proc, save_dir / PREPROCESSOR)
        return sorted(p.name for p in save_dir.iterdir())

    def _save_compressed(self, model: nn.Module, save_dir: Path) -> None:
        """hf_practise's format: the original config, whose `model_type` moves into the `hf_practise` entry (so
        plain transformers refuses the folder: "does not recognize this architecture" instead of building the
        original network with random weights where blocks are missing), and the weights as they are."""
        from safetensors.torch import save_model

        config = model.config.to_dict()
        config.pop("_name_or_path", None)  # where it was loaded from: a local path, as transformers' own save knows
        config[FORMAT_KEY] = {**format_entry(model, self.name, self.units), "model_type": config["model_type"]}
        config["model_type"] = FORMAT_KEY
        (save_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_model(model, str(save_dir / "model.safetensors"), metadata={"format": "pt"})

    def _save_native(self, model: nn.Module, save_dir: Path) -> None:
        new, old = self.pruned_config(model), model.config
        # every submodule holding the config shares the one object: swap it for the save, then put it back
        holders = [m for m in model.modules() if getattr(m, "config", None) is old]
        try:
            for m in holders:
                m.config = new
            model.save_pretrained(str(save_dir), safe_serialization=True)
        finally:
            for m in holders:
                m.config = old

    def load_snippet(self, repo_or_path: str, *, hub: bool, native: bool = True, revision: str | None = None) -> str:
        if not native:
            return super().load_snippet(repo_or_path, hub=hub, native=False, revision=revision)
        at = f", revision={revision!r}" if hub and revision else ""
        return (
            "from transformers import AutoModelForImageClassification\n\n"
            f'model = AutoModelForImageClassification.from_pretrained("{repo_or_path}"{at}).eval()'
        )
