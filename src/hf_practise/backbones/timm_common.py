"""What every timm family shares: the forward split, the data config, and the native checkpoint format.

A timm checkpoint folder is `config.json` (`architecture`, `num_classes`, `model_args`, `pretrained_cfg`) and
`model.safetensors`; `timm.create_model("local-dir:DIR", pretrained=True)` passes `model_args` to the
architecture's constructor and loads the weights strictly. A family subclass says which constructor
arguments rebuild its block-dropped model (`model_args`).
"""

from __future__ import annotations

import abc
import importlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import fit_channels
from .base import REMOVED_ATTR, BackboneFamily, layers_of
from .saved_format import FORMAT_KEY, format_entry

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


def built_input_size(model: nn.Module, config: dict[str, Any]) -> dict[str, Any]:
    """`config` with the input size `model` was built for (its `img_size`, which timm records): a model built with
    `img_size=32` keeps its architecture's pretrained_cfg, which may say 224, and a model whose position embedding
    or token mixing is fixed at build time takes no other size."""
    from timm.models._hub import get_model_args

    img_size = get_model_args(model).get("img_size")
    return config if img_size is None else {**config, "input_size": (config["input_size"][0], *img_size)}


def timm_class(name: str) -> type:
    """`module:Class` -> the class (ImportError / AttributeError when this timm lacks it)."""
    module, _, klass = name.partition(":")
    return getattr(importlib.import_module(module), klass)


class TimmFamily(BackboneFamily):
    """Base of the timm families: subclasses give the structure and `block_args`, and which models they handle
    (`model_class` and `block_classes`, or their own `matches`)."""

    library_name = "timm"
    #: the timm model class this family handles ("module:Class"); a subclass with a family of its own (e.g. DeiT
    #: distilled under ViT) goes to that family, which names the subclass (`get_family` takes the most specific)
    model_class: str = ""
    #: the classes ("module:Class") that every block of a handled model's `stages` is one of (none: any block)
    block_classes: tuple[str, ...] = ()

    @classmethod
    def model_type(cls) -> type | None:
        try:
            return timm_class(cls.model_class) if cls.model_class else None
        except (ImportError, AttributeError):
            return None

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Whether `model` is a `model_class` whose blocks are all `block_classes` (False when timm lacks them)."""
        klass = cls.model_type()
        if klass is None or not isinstance(model, klass):
            return False
        try:
            kinds = tuple(timm_class(name) for name in cls.block_classes)
        except (ImportError, AttributeError):
            return False
        return not kinds or all(isinstance(b, kinds) for stage in cls().stages(model) for b in stage)

    # ---- forward -----------------------------------------------------------------------------------------
    def forward_features(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        return model.forward_features(pixel_values)

    def forward_head(self, model: nn.Module, features: torch.Tensor) -> torch.Tensor:
        return model.forward_head(features)

    def classifier(self, model: nn.Module) -> nn.Module:
        return model.get_classifier()

    def data_config(self, model: nn.Module) -> dict[str, Any]:
        """timm's data config, with the channels the model takes: timm keeps the pretrained_cfg's (3, RGB
        statistics) for a model built with `in_chans=1` (see `fit_channels` for the grey statistics)."""
        from timm.data import resolve_data_config
        from timm.models._hub import get_model_args

        config = resolve_data_config({}, model=model)
        channels = get_model_args(model).get("in_chans")
        return fit_channels(config, int(channels)) if channels else config

    # ---- saving ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def block_args(self, model: nn.Module) -> dict[str, Any]:
        """Constructor kwargs that fix the (possibly block-dropped) architecture, e.g. `{"depth": 10}` (unused when
        `native_reload` is False: those families return {})."""

    native_reload_why = "the architecture's timm entry point passes its depth arguments itself (`model_args` cannot)"

    def reloads_natively(self, model: nn.Module) -> bool:
        """Whether `timm.create_model(architecture, **model_args)` builds this depth, as it is (`rebuilt_alike`):
        some entry points pass the depth arguments themselves (BiT's `layers`, MetaFormer's `depths`) and clash
        with ours. Built on the meta device, so the check costs no memory or time."""
        if not self.native_reload:
            return not getattr(model, REMOVED_ATTR, None)
        import timm
        from timm.models._hub import get_model_args

        architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        if not architecture:
            return True
        try:
            with torch.device("meta"):
                rebuilt = timm.create_model(
                    architecture, pretrained=False, **get_model_args(model, self.block_args(model))
                )
        except TypeError:
            return False
        return self.rebuilt_alike(model, rebuilt)

    def rebuilt_alike(self, model: nn.Module, rebuilt: nn.Module) -> bool:
        """Whether timm's rebuild of `model` from its `block_args` (`rebuilt`, on the meta device) computes what
        `model` computes: yes, unless a block's behaviour follows from its index (Swin's window shift)."""
        return True

    def save_pretrained(self, model: nn.Module, save_dir: Path, *, source_config: dict[str, Any]) -> list[str]:
        """timm's own `save_for_hf`: `model.safetensors` and a `config.json` whose `model_args` rebuild the model
        (the kwargs it was built with, which timm records, with `block_args` for the new depths)."""
        from timm.models import save_for_hf

        pretrained_cfg = {k: v for k, v in (source_config.get("pretrained_cfg") or {}).items() if k not in _SOURCE_KEYS}
        architecture = source_config.get("architecture") or (getattr(model, "pretrained_cfg", None) or {}).get(
            "architecture"
        )
        if not architecture:
            raise ValueError("Cannot tell the timm architecture of this model; pass it in `source_config`.")
        pretrained_cfg["architecture"] = architecture
        model_config: dict[str, Any] = {"pretrained_cfg": json_safe(pretrained_cfg)}
        for key in ("label_names", "label_descriptions"):
            if key in source_config:
                model_config[key] = source_config[key]
        native = self.reloads_natively(model)
        if not native:
            # the original architecture (timm records the kwargs it was built with) and the removed blocks
            model_config[FORMAT_KEY] = format_entry(model, self.name, self.units)
        block_args = self.block_args(model) if native else None
        save_for_hf(model, str(save_dir), model_config=model_config, model_args=block_args, safe_serialization=True)
        # the top-level `num_classes` carries the head size; a second one in `model_args` makes transformers'
        # TimmWrapper fail ("multiple values for keyword argument 'num_classes'"), plain timm needs neither twice
        config_path = save_dir / "config.json"
        config = json.loads(config_path.read_text())
        config.get("model_args", {}).pop("num_classes", None)
        config_path.write_text(json.dumps(config, indent=2))
        return ["config.json", "model.safetensors"]


class TimmDownsampledStagesFamily(TimmFamily):
    """Base of the timm families whose `model.stages[i]` hold `blocks` and open with their own `downsample`
    (ConvNeXt, MetaFormer): every block keeps its input's shape; the stream entering a stage is written by its
    downsampling conv (the stem's for the first stage) and read, after the last block, by the next stage's."""

    def stages(self, model: nn.Module) -> list[nn.Sequential]:
        return [stage.blocks for stage in model.stages]

    def stage_entry_outputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        convs = layers_of(getattr(model.stages[stage], "downsample", None), nn.Conv2d) or (
            layers_of(model.stem, nn.Conv2d) if stage == 0 else []
        )
        return convs[-1:]

    def stage_exit_inputs(self, model: nn.Module, stage: int) -> list[nn.Module]:
        if stage + 1 < len(model.stages):
            convs = layers_of(getattr(model.stages[stage + 1], "downsample", None), nn.Conv2d)
            if convs:
                return convs[:1]
        return super().stage_exit_inputs(model, stage)
